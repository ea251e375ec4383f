"""Values that cannot be right on their own: outside the plausible range, in a wrong unit,
or breaking the order of a sensor's pressures."""

from __future__ import annotations

from typing import Any, ClassVar

from bedside.schemas.concepts import load_concepts
from bedside.training.detectors.base import BedDetector, Finding
from bedside.training.detectors.rules import check_value, pressure_order_of_signals, signals


class Plausibility(BedDetector):
    """Flag values outside the concept dictionary's plausible ranges and unit errors.

    Stateless: every value is judged alone, except that the three pressures of one
    sensor in the same sample must keep diastolic <= mean <= systolic. The rules and
    thresholds are those of :mod:`bedside.training.detectors.rules`, shared with the
    batch path (:func:`bedside.training.detectors.flag_events`).

    Kinds: ``unit_error`` (a value that is only plausible in another unit, such as a
    temperature of 98.6 in a °C channel or a FiO2 of 40 in a fraction channel) and
    ``implausible`` (anything else out of range, or a broken pressure order). Zeros of
    sensors that read 0 when off (an arterial line being zeroed) are plausible values:
    :class:`~bedside.training.detectors.flatline.Flatline` flags them as ``sensor_off``.

    Examples
    --------
    >>> detector = Plausibility()
    >>> detector.score_one({"heart_rate": 82.0, "temperature": 37.2})
    0.0
    >>> for finding in detector.explain_one({"temperature": 98.6, "fio2": 40.0}):
    ...     print(finding.kind, "|", finding.detail)
    unit_error | temperature 98.6 looks like °F (37 °C)
    unit_error | fio2 40 looks like % (0.4 fraction)
    >>> [f.detail for f in detector.explain_one(
    ...     {"arterial_systolic_bp": 80.0, "arterial_diastolic_bp": 95.0})]
    ['diastolic 95 above systolic 80', 'diastolic 95 above systolic 80']
    """

    name: ClassVar[str] = "plausibility"

    def learn_one(self, x: dict[str, Any]) -> None:
        """Nothing to learn: the ranges come from the concept dictionary."""

    def _checks(
        self, x: dict[str, Any], usable: dict[str, float]
    ) -> dict[str, tuple[Any, float, str]]:
        checks = {}
        if len(usable) < len(x):  # usable values pass every check_value
            concepts = load_concepts()
            for concept, value in x.items():
                if concept in usable or concept not in concepts:
                    continue
                check = check_value(concept, value)
                if check is not None:
                    checks[concept] = check
        for concept, detail in pressure_order_of_signals(usable).items():
            checks.setdefault(concept, ("implausible", 1.0, detail))
        return checks

    def score_signals(self, x: dict[str, Any]) -> dict[str, float]:
        scores = dict.fromkeys((c for c in x if c in load_concepts()), 0.0)
        checks = self._checks(x, signals(x))
        scores.update((concept, check[1]) for concept, check in checks.items())
        return scores

    def _findings(self, x: dict[str, Any], usable: dict[str, float]) -> list[Finding]:
        return [
            Finding(self.name, concept, x[concept], kind, score, detail)
            for concept, (kind, score, detail) in self._checks(x, usable).items()
        ]

    def explain_one(self, x: dict[str, Any]) -> list[Finding]:
        return self._findings(x, signals(x))

    def process_signals(self, x: dict[str, Any], usable: dict[str, float]) -> list[Finding]:
        return self._findings(x, usable)  # nothing to learn
