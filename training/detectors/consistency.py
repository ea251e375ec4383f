"""Vitals that stop agreeing with each other: a drifting transducer, a miscounting ECG."""

from __future__ import annotations

from operator import itemgetter
from typing import Any, ClassVar

from bedside.training.detectors.base import BedDetector, Finding
from bedside.training.detectors.robust_spike import SortedWindow, hampel
from bedside.training.detectors.rules import (
    HAMPEL_K,
    HAMPEL_MIN_SCALE,
    RELATIONS,
    Relation,
    signals,
)

_RELATIONS = {relation.name: relation for relation in RELATIONS}
#: The vitals each relation needs (a sample has them all or is not judged on it), and
#: their values in a sample, as a tuple.
_NEEDS = {relation.name: frozenset(relation.concepts) for relation in RELATIONS}
_INPUTS = {relation.name: itemgetter(*relation.concepts) for relation in RELATIONS}


class Consistency(BedDetector):
    """Robust tracking of the relations between a bed's vitals.

    Some vitals measure the same thing twice or are tied by physiology and the way a
    monitor computes them (``rules.RELATIONS``): the heart rate from the ECG and the
    pulse rate from the oximeter; the systolic, mean and diastolic of one pressure
    (mean ≈ diastolic + pulse pressure / 3); the arterial and the cuff mean. For a bed,
    each relation's residual is steady while the sensors work, and moves when one of
    them drifts, is damped or miscounts, even while every vital alone looks normal.

    For each relation present in a sample, the residual is compared with the median of
    its last ``window_size`` unflagged residuals (Hampel: ``|r - median| / (k *
    max(1.4826 MAD, floor))``; 1 or more is flagged). Flagged residuals are not learned
    (River's ``protect_anomaly_detector``) unless ``patience`` samples in a row are
    flagged: a change that lasts is the patient's new state, not an artefact. The finding
    blames the vital of the relation that moved most since the relation's last unflagged
    sample (in units of its ``rules.HAMPEL_MIN_SCALE``).

    Parameters
    ----------
    window_size
        Residuals the median and MAD are taken over.
    k
        Robust standard deviations from the median that make an outlier.
    min_periods
        Fewest residuals before a relation is judged.
    patience
        Flagged samples in a row after which a relation learns again (None: never).
    relations
        Names of the relations to watch (default: all of ``rules.RELATIONS``).

    Examples
    --------
    >>> detector = Consistency()
    >>> for minute in range(30):
    ...     detector.learn_one({"heart_rate": 80.0 + minute % 4, "pulse_rate": 79.0 + minute % 4})
    >>> detector.score_one({"heart_rate": 84.0, "pulse_rate": 82.0})
    0.0625
    >>> finding, = detector.explain_one({"heart_rate": 160.0, "pulse_rate": 81.0})
    >>> finding.concept, finding.kind
    ('heart_rate', 'multivariate')
    >>> finding.detail
    'heart rate (ECG) − pulse rate (oximeter) = 79, usually 1 (median of the last 30)'
    """

    name: ClassVar[str] = "consistency"
    multivariate: ClassVar[bool] = True

    def __init__(
        self,
        window_size: int = 60,
        k: float = HAMPEL_K,
        min_periods: int = 10,
        patience: int | None = 30,
        relations: tuple[str, ...] | None = None,
    ) -> None:
        self.window_size = window_size
        self.k = k
        self.min_periods = min_periods
        self.patience = patience
        self.relations = relations
        self._relations = [_RELATIONS[name] for name in (relations or tuple(_RELATIONS))]
        self._windows: dict[str, SortedWindow] = {}
        # relation -> flagged samples in a row, and the inputs of its last unflagged one
        self._flagged_run: dict[str, int] = {}
        self._last: dict[str, tuple[float, ...]] = {}

    def _judge(
        self, usable: dict[str, float], exact: bool = False
    ) -> list[tuple[str, float, float, float, tuple[float, ...]]]:
        """(relation, score, residual, median, inputs) for each relation whose vitals are
        all usable in a sample (``usable = rules.signals(x)``; ``exact=False``: 0 for a
        residual that cannot be an outlier, as ``hampel``)."""
        judged = []
        present = usable.keys()
        for relation in self._relations:
            if not present >= _NEEDS[relation.name]:
                continue
            values = _INPUTS[relation.name](usable)
            residual = relation.residual(*values)
            window = self._windows.get(relation.name)
            if window is None or len(window.recent) < self.min_periods:
                judged.append((relation.name, 0.0, residual, residual, values))
            else:
                score, median = hampel(window.ordered, residual, self.k, relation.floor, exact)
                judged.append((relation.name, score, residual, median, values))
        return judged

    def _learn(self, name: str, score: float, residual: float, values: tuple[float, ...]) -> None:
        run = self._flagged_run.get(name, 0) + 1 if score >= 1.0 else 0
        self._flagged_run[name] = run
        if score < 1.0 or (self.patience is not None and run > self.patience):
            window = self._windows.get(name)
            if window is None:
                window = self._windows[name] = SortedWindow(self.window_size)
            window.append(residual)
            self._last[name] = values

    def learn_one(self, x: dict[str, Any]) -> None:
        for name, score, residual, _, values in self._judge(signals(x)):
            self._learn(name, score, residual, values)

    def score_signals(self, x: dict[str, Any]) -> dict[str, float]:
        scores: dict[str, float] = {}
        for name, score, *_ in self._judge(signals(x), exact=True):
            for concept in _RELATIONS[name].concepts:
                scores[concept] = max(scores.get(concept, 0.0), score)
        return scores

    def _finding(
        self, name: str, score: float, residual: float, median: float, values: tuple[float, ...]
    ) -> Finding:
        relation = _RELATIONS[name]
        blamed = blame(relation, values, self._last.get(name, values))
        count = len(self._windows[name])
        return relation_finding(relation, blamed, values, score, residual, median, count)

    def _findings(
        self, judged: list[tuple[str, float, float, float, tuple[float, ...]]]
    ) -> list[Finding]:
        """The flagged relations' findings, one per blamed vital (the highest score)."""
        findings: dict[str, Finding] = {}
        for name, score, residual, median, values in judged:
            if score >= 1.0:
                finding = self._finding(name, score, residual, median, values)
                kept = findings.get(finding.concept)
                if kept is None or finding.score > kept.score:
                    findings[finding.concept] = finding
        return list(findings.values())

    def explain_one(self, x: dict[str, Any]) -> list[Finding]:
        return self._findings(self._judge(signals(x)))

    def process_signals(self, x: dict[str, Any], usable: dict[str, float]) -> list[Finding]:
        judged = self._judge(usable)
        findings = self._findings(judged)
        for name, score, residual, _, values in judged:
            self._learn(name, score, residual, values)
        return findings


def blame(relation: Relation, values: tuple[float, ...], last: tuple[float, ...]) -> int:
    """Which of a relation's vitals (its position) moved most between its ``last`` unflagged
    inputs and ``values``, in units of its ``rules.HAMPEL_MIN_SCALE`` (the first on ties)."""
    moved = [
        abs(value - before) / HAMPEL_MIN_SCALE.get(concept, 1.0)
        for concept, value, before in zip(relation.concepts, values, last, strict=True)
    ]
    return moved.index(max(moved))


def relation_finding(
    relation: Relation,
    blamed: int,
    values: tuple[float, ...],
    score: float,
    residual: float,
    median: float,
    count: int,
) -> Finding:
    """The finding of a flagged relation: its ``blamed`` vital, the residual and the median
    of the last ``count`` residuals."""
    detail = (
        f"{relation.meaning} = {residual:.3g}, usually {median:.3g} (median of the last {count})"
    )
    concept = relation.concepts[blamed]
    return Finding(Consistency.name, concept, values[blamed], "multivariate", score, detail)
