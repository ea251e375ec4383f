"""Unusual combinations of a bed's vitals: Half-Space Trees that do not learn what they flag."""

from __future__ import annotations

from typing import Any, ClassVar

from bedside.training.detectors.base import BedDetector, Finding
from bedside.training.detectors.half_space_trees import CompactHalfSpaceTrees
from bedside.training.detectors.rules import MULTIVARIATE_LIMITS, signals

#: Half-Space Trees score (0 to 1) from which a sample is flagged.
DEFAULT_THRESHOLD = 0.9


class Multivariate(BedDetector):
    """Half-Space Trees over a bed's current vitals, scaled to [0, 1].

    Each sample is completed with the bed's last usable value of every vital from the
    last ``carry`` samples (charted values arrive a few at a time), scaled by ``limits``
    and scored by :class:`~bedside.training.detectors.half_space_trees.CompactHalfSpaceTrees`
    (River's algorithm; its trees are shared by all beds, so a bed's state is a few KB).
    A sample scoring ``threshold`` or more is flagged; as with River's
    ``protect_anomaly_detector``, a flagged sample is neither learned nor carried, so
    that an artefact does not become the norm (unless ``patience`` samples in a row are
    flagged). The score is ``HST score / threshold``
    (1 = flagged); the finding names the vital most trees isolate the sample by.

    The trees score nothing during their first window (``window_size`` samples) unless
    given population masses (:meth:`load_reference`, what ``bedside train detectors``
    learns), after which each bed's own last window is its reference.

    Parameters
    ----------
    limits
        Vitals to look at, with the range each is scaled from. Default:
        ``rules.MULTIVARIATE_LIMITS``.
    threshold
        Half-Space Trees score (0 to 1) from which a sample is flagged.
    carry
        Samples a vital's last value stays part of the bed's current state.
    n_trees, height, window_size, seed
        Of the Half-Space Trees.
    protect_anomaly_detector
        Do not learn flagged samples (River's name for it)...
    patience
        ... unless that many samples in a row are flagged: a change that lasts is the
        patient's new state, not an artefact (None: never learn them).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(0)
    >>> detector = Multivariate(limits={"heart_rate": (30.0, 180.0), "spo2": (70.0, 100.0)},
    ...                         window_size=50)
    >>> for _ in range(100):
    ...     detector.learn_one({"heart_rate": rng.gauss(80, 3), "spo2": rng.gauss(97, 1)})
    >>> round(detector.score_one({"heart_rate": 81.0, "spo2": 97.0}), 2)
    0.27
    >>> finding, = detector.explain_one({"heart_rate": 150.0, "spo2": 97.0})
    >>> finding.concept, finding.detail
    ('heart_rate', 'unusual combination of vitals (score 0.932); isolated by heart_rate (10 trees)')
    """

    name: ClassVar[str] = "multivariate"
    multivariate: ClassVar[bool] = True

    def __init__(
        self,
        limits: dict[str, tuple[float, float]] | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        carry: int = 30,
        n_trees: int = 10,
        height: int = 6,
        window_size: int = 120,
        seed: int = 42,
        protect_anomaly_detector: bool = True,
        patience: int | None = 30,
    ) -> None:
        self.limits = limits
        self.threshold = threshold
        self.carry = carry
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.protect_anomaly_detector = protect_anomaly_detector
        self.patience = patience
        self._flagged_run = 0
        self._limits = dict(MULTIVARIATE_LIMITS if limits is None else limits)
        self._scale = {name: (low, high - low) for name, (low, high) in self._limits.items()}
        self._trees = CompactHalfSpaceTrees(
            n_trees=n_trees,
            height=height,
            window_size=window_size,
            limits=dict.fromkeys(self._limits, (0.0, 1.0)),
            seed=seed,
        )
        # vital -> [last usable value, samples since]
        self._carried: dict[str, list[float]] = {}

    def _present(self, usable: dict[str, float]) -> dict[str, float]:
        """The vitals this detector looks at among a sample's usable values."""
        scale = self._scale
        return {c: v for c, v in usable.items() if c in scale}

    def _vector(self, present: dict[str, float]) -> dict[str, float]:
        """The scaled vitals: those present, and those carried from earlier samples."""
        scale = self._scale
        vector = {}
        for concept, (value, _) in self._carried.items():
            if concept not in present:
                low, width = scale[concept]
                vector[concept] = (value - low) / width
        for concept, value in present.items():
            low, width = scale[concept]
            vector[concept] = (value - low) / width
        return vector

    def _carry(self, present: dict[str, float]) -> None:
        carried = self._carried
        if not carried.keys() <= present.keys():  # some not in this sample age
            for concept in list(carried):
                if concept not in present:
                    entry = carried[concept]
                    entry[1] += 1
                    if entry[1] > self.carry:
                        del carried[concept]
        for concept, value in present.items():
            entry = carried.get(concept)
            if entry is None:
                carried[concept] = [value, 0]
            else:  # in place: no new list per sample
                entry[0], entry[1] = value, 0

    def _protects(self, score: float) -> bool:
        """Whether a sample with this score is kept from the trees (and counts the run)."""
        if score < self.threshold:
            self._flagged_run = 0
            return False
        self._flagged_run += 1
        if not self.protect_anomaly_detector:
            return False
        return self.patience is None or self._flagged_run <= self.patience

    def learn_one(self, x: dict[str, Any]) -> None:
        present = self._present(signals(x))
        if not present:
            return
        score, path = self._trees.score_path(self._vector(present))
        if not self._protects(score):
            self._trees.learn_path(path)
            self._carry(present)

    def score_signals(self, x: dict[str, Any]) -> dict[str, float]:
        present = self._present(signals(x))
        if not present:
            return {}
        score = self._trees.score_one(self._vector(present)) / self.threshold
        return dict.fromkeys(present, score)

    def _finding(
        self, present: dict[str, float], vector: dict[str, float], score: float
    ) -> Finding:
        isolating = self._trees.isolating_features(vector)
        return multivariate_finding(present, isolating, score, self.threshold)

    def explain_one(self, x: dict[str, Any]) -> list[Finding]:
        present = self._present(signals(x))
        if not present:
            return []
        vector = self._vector(present)
        score = self._trees.score_one(vector)
        if score < self.threshold:
            return []
        return [self._finding(present, vector, score)]

    def process_signals(self, x: dict[str, Any], usable: dict[str, float]) -> list[Finding]:
        present = self._present(usable)
        if not present:
            return []
        vector = self._vector(present)
        score, path = self._trees.score_path(vector)
        findings = [self._finding(present, vector, score)] if score >= self.threshold else []
        if not self._protects(score):
            self._trees.learn_path(path)
            self._carry(present)
        return findings

    def tree_params(self) -> dict[str, Any]:
        """What the trees' structure depends on: population masses fit only the same."""
        return {
            "limits": {name: list(bounds) for name, bounds in self._limits.items()},
            "n_trees": self.n_trees,
            "height": self.height,
            "window_size": self.window_size,
            "seed": self.seed,
        }

    def observe(self, x: dict[str, Any]) -> dict[str, float] | None:
        """The scaled vitals the trees would see for a sample (carried values included),
        carrying its values on but learning nothing: to build population references."""
        present = self._present(signals(x))
        if not present:
            return None
        vector = self._vector(present)
        self._carry(present)
        return vector

    def load_reference(self, masses: list[int]) -> None:
        """Start from population reference masses, so that a new bed is judged at once."""
        self._trees.load_reference(masses, {})

    def reference_masses(self) -> list[int]:
        return self._trees.reference_masses()


def multivariate_finding(
    present: dict[str, float], isolating: dict[str, int], score: float, threshold: float
) -> Finding:
    """The finding of a flagged sample (Half-Space Trees ``score``; ``present``: the vitals
    it has, in its order): on the vital most trees isolate it by, or its first."""
    concept = next((c for c in isolating if c in present), next(iter(present)))
    named = ", ".join(f"{c} ({n} trees)" for c, n in list(isolating.items())[:3])
    detail = f"unusual combination of vitals (score {score:.3f}); isolated by {named}"
    value = present[concept]
    return Finding(Multivariate.name, concept, value, "multivariate", score / threshold, detail)
