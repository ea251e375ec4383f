"""Spikes and step changes of one signal against its own recent readings (Hampel filter)."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterator
from typing import Any, ClassVar

from bedside.training.detectors.base import BedDetector, Finding
from bedside.training.detectors.rules import (
    HAMPEL_K,
    HAMPEL_MIN_PERIODS,
    HAMPEL_MIN_SCALE,
    HAMPEL_WINDOW,
    MAD_TO_SD,
    STEP_RUN,
    signals,
)


def median_of_sorted(values: list[float]) -> float:
    middle = len(values) // 2
    if len(values) % 2:
        return values[middle]
    return (values[middle - 1] + values[middle]) / 2


def hampel(
    ordered: list[float], value: float, k: float, floor: float, exact: bool = True
) -> tuple[float, float]:
    """Score of ``value`` against the previous readings (``ordered``: sorted), and their
    median.

    The score is the distance to the median in units of ``k`` robust standard deviations
    (1.4826 MAD, at least ``floor``): 1 or more is an outlier. With ``exact=False``, a
    value within ``k * floor`` of the median (which cannot be an outlier) scores 0
    without computing the MAD: what a bed needs, at half the cost.
    """
    median = median_of_sorted(ordered)
    distance = abs(value - median)
    if not exact and distance < k * floor:
        return 0.0, median
    mad = median_of_sorted(sorted([abs(v - median) for v in ordered]))
    scale = max(MAD_TO_SD * mad, floor)
    return distance / (k * scale), median


class SortedWindow:
    """The last ``size`` readings, in arrival order (``recent``) and sorted (``ordered``):
    a new reading costs a binary search, not a sort of the window.

    A pickle holds only the readings; the sorted copy is rebuilt on loading.

    >>> window = SortedWindow(3)
    >>> for reading in [5.0, 1.0, 3.0, 2.0]:
    ...     window.append(reading)
    >>> list(window.recent), window.ordered
    ([1.0, 3.0, 2.0], [1.0, 2.0, 3.0])
    """

    __slots__ = ("ordered", "recent")

    def __init__(self, size: int) -> None:
        self.recent: deque[float] = deque(maxlen=size)
        self.ordered: list[float] = []

    def __len__(self) -> int:
        return len(self.recent)

    def __iter__(self) -> Iterator[float]:
        return iter(self.recent)

    def append(self, value: float) -> None:
        recent, ordered = self.recent, self.ordered
        if len(recent) == recent.maxlen:
            del ordered[bisect_left(ordered, recent[0])]
        recent.append(value)
        insort(ordered, value)

    def __getstate__(self) -> tuple[deque[float]]:
        return (self.recent,)

    def __setstate__(self, state: tuple[deque[float]]) -> None:
        (self.recent,) = state
        self.ordered = sorted(self.recent)


class RobustSpike(BedDetector):
    """Hampel filter per signal: a reading far from the median of the previous ones.

    For each signal it keeps the last ``window_size`` usable readings (plausible, in the
    right unit, not a sensor-off zero; see :func:`~bedside.training.detectors.rules.is_signal`).
    A new reading scores ``|value - median| / (k * max(1.4826 MAD, floor))``; 1 or more
    is flagged. Every usable reading is learned, flagged or not: the median shrugs off a
    spike, and after a real change of level the window follows within half its length.
    ``step_run`` flagged readings in a row on the same side are a ``step`` (a level
    change: a bolus, a transducer moved) rather than a ``spike``.

    The thresholds are those of :mod:`bedside.training.detectors.rules`, shared with the
    batch path; readings are counted, not timed (at 1/min numerics, 9 readings = 9 min).

    Parameters
    ----------
    window_size
        Previous readings the median and MAD are taken over.
    k
        Robust standard deviations from the median that make an outlier.
    min_periods
        Fewest previous readings before a signal is judged.
    min_scale
        Least robust standard deviation per concept (a steady integer signal has a MAD
        of 0); only these concepts are judged. Default: ``rules.HAMPEL_MIN_SCALE``.
    step_run
        Outliers in a row on the same side that make a step.

    Examples
    --------
    >>> detector = RobustSpike()
    >>> for hr in [80, 82, 81, 79, 80, 83, 81]:
    ...     detector.learn_one({"heart_rate": hr})
    >>> detector.score_one({"heart_rate": 82})
    0.0625
    >>> finding, = detector.explain_one({"heart_rate": 140})
    >>> finding.kind, finding.detail
    ('spike', 'heart_rate 140: 3.7 × the spike threshold away from the median 81 of the last 7')
    """

    name: ClassVar[str] = "robust_spike"

    def __init__(
        self,
        window_size: int = HAMPEL_WINDOW,
        k: float = HAMPEL_K,
        min_periods: int = HAMPEL_MIN_PERIODS,
        min_scale: dict[str, float] | None = None,
        step_run: int = STEP_RUN,
    ) -> None:
        self.window_size = window_size
        self.k = k
        self.min_periods = min_periods
        self.min_scale = min_scale
        self.step_run = step_run
        self._floors = dict(HAMPEL_MIN_SCALE if min_scale is None else min_scale)
        self._windows: dict[str, SortedWindow] = {}
        # Signed count of the outliers in a row ending at the last reading (+ above).
        self._runs: dict[str, int] = {}

    def _judge(
        self, concept: str, value: float, exact: bool = True
    ) -> tuple[float, float, int] | None:
        """(score, median, signed run including this reading) of a usable reading, or None
        if its concept is not judged.

        ``exact=False`` scores 0 what cannot be an outlier (see :func:`hampel`)."""
        floor = self._floors.get(concept)
        if floor is None:
            return None
        return self._score(self._windows.get(concept), concept, value, floor, exact)

    def _score(
        self, window: SortedWindow | None, concept: str, value: float, floor: float, exact: bool
    ) -> tuple[float, float, int]:
        """:meth:`_judge` of a reading of a judged concept, given its window."""
        if window is None or len(window.recent) < self.min_periods:
            return 0.0, value, 0
        score, median = hampel(window.ordered, value, self.k, floor, exact)
        if score < 1.0:
            return score, median, 0
        side = 1 if value > median else -1
        run = self._runs.get(concept, 0)
        return score, median, run + side if run * side > 0 else side

    def _learn(self, concept: str, value: float, run: int) -> None:
        window = self._windows.get(concept)
        if window is None:
            window = self._windows[concept] = SortedWindow(self.window_size)
        window.append(value)
        self._runs[concept] = run

    def learn_one(self, x: dict[str, Any]) -> None:
        for concept, value in signals(x).items():
            judged = self._judge(concept, value, exact=False)
            if judged is not None:
                self._learn(concept, value, judged[2])

    def score_signals(self, x: dict[str, Any]) -> dict[str, float]:
        scores = {}
        for concept, value in signals(x).items():
            judged = self._judge(concept, value)
            if judged is not None:
                scores[concept] = judged[0]
        return scores

    def _finding(self, concept: str, value: float, judged: tuple[float, float, int]) -> Finding:
        score, median, run = judged
        count = len(self._windows[concept])
        return spike_finding(concept, value, score, median, run, count, self.step_run)

    def explain_one(self, x: dict[str, Any]) -> list[Finding]:
        findings = []
        for concept, value in signals(x).items():
            judged = self._judge(concept, value, exact=False)
            if judged is not None and judged[0] >= 1.0:
                findings.append(self._finding(concept, value, judged))
        return findings

    def process_signals(self, x: dict[str, Any], usable: dict[str, float]) -> list[Finding]:
        findings = []
        floors, windows, runs = self._floors, self._windows, self._runs
        for concept, value in usable.items():
            floor = floors.get(concept)
            if floor is None:
                continue
            window = windows.get(concept)
            if window is None:
                window = windows[concept] = SortedWindow(self.window_size)
            judged = self._score(window, concept, value, floor, exact=False)
            if judged[0] >= 1.0:
                findings.append(self._finding(concept, value, judged))
            window.append(value)
            runs[concept] = judged[2]
        return findings


def spike_finding(
    concept: str, value: float, score: float, median: float, run: int, count: int, step_run: int
) -> Finding:
    """The finding of an outlier ``value`` (its :func:`hampel` ``score`` and ``median`` over
    the last ``count`` readings; ``run``: signed outliers in a row, this one included): a
    ``step`` from ``step_run`` in a row, else a ``spike``."""
    if abs(run) >= step_run:
        detail = (
            f"{concept} {value:.4g}: {abs(run)} readings in a row away from the median "
            f"{median:.4g} of the last {count} (level change)"
        )
        return Finding(RobustSpike.name, concept, value, "step", score, detail)
    detail = (
        f"{concept} {value:.4g}: {score:.2g} × the spike threshold away from the median "
        f"{median:.4g} of the last {count}"
    )
    return Finding(RobustSpike.name, concept, value, "spike", score, detail)
