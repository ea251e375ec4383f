"""Stuck sensors (the same reading again and again) and sensors that are off (reading 0)."""

from __future__ import annotations

from typing import Any, ClassVar

from bedside.training.detectors.base import BedDetector, Finding
from bedside.training.detectors.rules import FLATLINE_REPEATS, sensor_off, signals


class Flatline(BedDetector):
    """Flag a signal that repeats one reading too long, or reads 0 when its sensor is off.

    *Flatline*: a signal that normally changes from one reading to the next (a heart rate,
    an arterial pressure; not SpO2 at 100 or a ventilator-set respiratory rate) is stuck
    once it has repeated one value ``repeats[concept]`` times in a row; that reading and
    every further repeat are flagged, scored ``run length / repeats``. A run is broken
    by any other usable reading; unusable ones (implausible, sensor-off) are skipped.

    *Sensor off*: a reading of 0 from a sensor that cannot read 0 while it measures a
    living patient (arterial and pulmonary pressures, SpO2, pulse rate, cardiac output,
    temperature; ``rules.SENSOR_OFF``), flagged at once with score 1.

    Readings are counted, not timed: at 1/min numerics, 15 readings are 15 minutes.

    Parameters
    ----------
    repeats
        Readings in a row that make a flatline, per concept; other concepts are not
        checked for flatlines. Default: ``rules.FLATLINE_REPEATS``.

    Examples
    --------
    >>> detector = Flatline(repeats={"arterial_mean_bp": 4})
    >>> for _ in range(3):
    ...     detector.learn_one({"arterial_mean_bp": 71.0})
    >>> finding, = detector.explain_one({"arterial_mean_bp": 71.0})
    >>> finding.kind, finding.score, finding.detail
    ('flatline', 1.0, 'arterial_mean_bp stuck at 71 for 4 readings')
    >>> [(f.kind, f.concept) for f in detector.explain_one({"spo2": 0.0})]
    [('sensor_off', 'spo2')]
    """

    name: ClassVar[str] = "flatline"

    def __init__(self, repeats: dict[str, int] | None = None) -> None:
        self.repeats = repeats
        self._repeats = dict(FLATLINE_REPEATS if repeats is None else repeats)
        # concept -> [last usable reading, how many times in a row]
        self._runs: dict[str, list[float]] = {}

    def _run(self, concept: str, value: float) -> int:
        """Length of the run this reading makes (1 if it breaks the run)."""
        last = self._runs.get(concept)
        if last is not None and last[0] == value:
            return int(last[1]) + 1
        return 1

    def learn_one(self, x: dict[str, Any]) -> None:
        for concept, value in signals(x).items():
            if concept in self._repeats:
                self._runs[concept] = [value, self._run(concept, value)]

    def score_signals(self, x: dict[str, Any]) -> dict[str, float]:
        usable = signals(x)
        scores = {}
        for concept, value in x.items():
            if sensor_off(concept, value) is not None:
                scores[concept] = 1.0
            elif concept in self._repeats and concept in usable:
                scores[concept] = self._run(concept, value) / self._repeats[concept]
        return scores

    def _flatline(self, concept: str, value: float, run: int) -> Finding:
        return flatline_finding(concept, value, run, self._repeats[concept])

    def explain_one(self, x: dict[str, Any]) -> list[Finding]:
        usable = signals(x)
        findings = []
        for concept, value in x.items():
            if concept in usable:
                if concept in self._repeats:
                    run = self._run(concept, value)
                    if run >= self._repeats[concept]:
                        findings.append(self._flatline(concept, value, run))
            else:
                off = sensor_off(concept, value)
                if off is not None:
                    findings.append(Finding(self.name, concept, value, *off))
        return findings

    def process_signals(self, x: dict[str, Any], usable: dict[str, float]) -> list[Finding]:
        findings = []
        repeats, runs = self._repeats, self._runs
        for concept, value in x.items():
            if concept in usable:
                if concept not in repeats:
                    continue
                last = runs.get(concept)
                run = int(last[1]) + 1 if last is not None and last[0] == value else 1
                if last is None:
                    runs[concept] = [value, run]
                else:  # in place: no new list per reading
                    last[0], last[1] = value, run
                if run >= repeats[concept]:
                    findings.append(self._flatline(concept, value, run))
            else:
                off = sensor_off(concept, value)
                if off is not None:
                    findings.append(Finding(self.name, concept, value, *off))
        return findings


def flatline_finding(concept: str, value: float, run: int, repeats: int) -> Finding:
    """The finding of a reading that makes a run of ``run`` identical readings (``repeats``
    or more make a flatline)."""
    detail = f"{concept} stuck at {value:.4g} for {run} readings"
    return Finding(Flatline.name, concept, value, "flatline", run / repeats, detail)
