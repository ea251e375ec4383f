"""River's Half-Space Trees with the trees shared between beds and the masses compact."""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from river import base
from river.tree.padded import PaddedBranch, make_padded_tree

Limits = tuple[tuple[str, float, float], ...]


@dataclass(frozen=True)
class _Forest:
    """The fixed part of the trees, in heap order (node i has children 2i+1 and 2i+2)."""

    names: tuple[str, ...]  # the features, sorted
    features: tuple[str, ...]  # split feature of each branch node, "" for leaves
    feature_index: tuple[int, ...]  # its position in names (-1 for leaves)
    thresholds: tuple[float, ...]
    left_child: tuple[int, ...]  # the position of each node's left child (right: + 1)
    nodes_per_tree: int

    def stop_features(self, stops: list[int]) -> dict[str, int]:
        """How many trees' walks stopped below a split on each feature (``stops``: the node
        where each tree's scoring stopped), most first."""
        nodes = self.nodes_per_tree
        counts: dict[str, int] = {}
        for stop in stops:
            root, index = divmod(stop, nodes)
            if index == 0:
                continue
            feature = self.features[root * nodes + (index - 1) // 2]
            counts[feature] = counts.get(feature, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))


@lru_cache(maxsize=64)
def _forest(n_trees: int, height: int, seed: int, limits: Limits) -> _Forest:
    """Draw the trees exactly as ``river.anomaly.HalfSpaceTrees`` does, once per process."""
    rng = random.Random(seed)
    nodes = 2 ** (height + 1) - 1
    features = [""] * (n_trees * nodes)
    thresholds = [0.0] * (n_trees * nodes)
    for tree in range(n_trees):
        root = make_padded_tree(  # type: ignore[no-untyped-call]
            limits={name: (low, high) for name, low, high in limits},
            height=height,
            padding=0.15,
            rng=rng,
            r_mass=0,
            l_mass=0,
        )
        stack = [(root, 0)]
        while stack:
            node, index = stack.pop()
            if isinstance(node, PaddedBranch):
                features[tree * nodes + index] = node.feature
                thresholds[tree * nodes + index] = node.threshold
                stack.append((node.children[0], 2 * index + 1))
                stack.append((node.children[1], 2 * index + 2))
    names = tuple(name for name, _, _ in limits)
    position = {name: index for index, name in enumerate(names)}
    feature_index = tuple(position.get(feature, -1) for feature in features)
    left_child = tuple(node + node % nodes + 1 for node in range(n_trees * nodes))
    return _Forest(names, tuple(features), feature_index, tuple(thresholds), left_child, nodes)


class CompactHalfSpaceTrees(base.AnomalyDetector):
    """Half-Space Trees (Tan, Ting and Liu, 2011) that many beds can afford.

    The same algorithm and the same trees as ``river.anomaly.HalfSpaceTrees`` with the
    same parameters and seed (it calls River's ``make_padded_tree``, and scores are
    equal), stored differently:

    * the trees' splits (features, thresholds) depend only on the parameters, so they
      are built once per process and shared by every instance; a pickle holds none of
      them;
    * each instance keeps only its two mass counters per node, in unsigned 16-bit arrays
      (``window_size`` < 65,536): with 10 trees of height 6 that is 5 KB, where River's
      node objects take ~170 KB for its default 10 trees of height 8.

    The trees split on the features named in ``limits`` (River: on the first sample's
    features); a feature missing from a sample sends it down the busier branch, as in
    River. Scores are 0 during the first window, then ``1 - mass score / max``: higher
    is more anomalous.

    Parameters
    ----------
    n_trees
        Number of trees.
    height
        Height of each tree (``2 ** (height + 1) - 1`` nodes).
    window_size
        Samples per window; the masses of one window are the reference of the next.
    limits
        Range of each feature, as ``{name: (low, high)}``. Default: the first sample's
        features in [0, 1].
    seed
        Seed of the trees; instances with the same parameters share them.

    Examples
    --------
    >>> from river import anomaly
    >>> compact = CompactHalfSpaceTrees(n_trees=5, height=3, window_size=3, seed=42)
    >>> river_hst = anomaly.HalfSpaceTrees(n_trees=5, height=3, window_size=3, seed=42)
    >>> for x in [0.5, 0.45, 0.43, 0.44, 0.445, 0.45, 0.0]:
    ...     for model in (compact, river_hst):
    ...         model.learn_one({"x": x})
    ...     print(f"{compact.score_one({'x': x}):.3f} {river_hst.score_one({'x': x}):.3f}")
    0.000 0.000
    0.000 0.000
    0.107 0.107
    0.107 0.107
    0.107 0.107
    0.071 0.071
    0.853 0.853
    """

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 6,
        window_size: int = 250,
        limits: dict[str, tuple[float, float]] | None = None,
        seed: int = 42,
    ) -> None:
        if not 0 < window_size < 2**16:
            raise ValueError("window_size must be between 1 and 65,535")
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.limits = limits
        self.seed = seed
        self._forest_key: tuple[int, int, int, Limits] | None = None
        self._trees: _Forest | None = None
        self._l_mass: list[int] = []
        self._r_mass: list[int] = []
        self._scored: list[tuple[int, int] | None] = []  # see _walk
        self._counter = 0
        self._first_window = True

    def _build(self, x: dict[str, Any]) -> _Forest:
        names = sorted(self.limits) if self.limits is not None else sorted(x)
        bounds = self.limits or {}
        limits = tuple((name, *bounds.get(name, (0.0, 1.0))) for name in names)
        self._forest_key = (self.n_trees, self.height, self.seed, limits)
        self._trees = _forest(*self._forest_key)
        self._l_mass = [0] * len(self._trees.features)
        self._r_mass = [0] * len(self._trees.features)
        self._scored = [None] * len(self._trees.features)
        return self._trees

    def forest(self) -> _Forest:
        """The trees' splits (shared by every instance with the same parameters)."""
        return self._trees or self._build({})

    # Masses are lists while in use (faster to index) and 16-bit arrays when pickled.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_trees"] = None  # rebuilt from _forest_key: shared, not pickled
        del state["_scored"]  # found again as needed
        state["_l_mass"] = array("H", self._l_mass)
        state["_r_mass"] = array("H", self._r_mass)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._l_mass = state["_l_mass"].tolist()
        self._r_mass = state["_r_mass"].tolist()
        self._scored = [None] * len(self._r_mass)
        if self._forest_key is not None:
            self._trees = _forest(*self._forest_key)

    @property
    def size_limit(self) -> float:
        """Reference mass below which scoring stops going down (0.1 × window, as in the paper)."""
        return 0.1 * self.window_size

    def _walk(
        self, x: dict[str, Any], path: list[int], stops: list[int] | None = None, score: bool = True
    ) -> float:
        """Mass score of ``x`` summed over the trees (0 if not ``score``); appends the nodes
        ``x`` goes through to ``path`` (all levels) and, if asked, where each tree's scoring
        stopped to ``stops``.

        A tree's score depends only on the path down to a leaf, and the reference masses
        change once per window: each leaf's is worked out once per window (``_scored``).
        """
        trees = self._trees
        assert trees is not None
        features, thresholds, left_child = trees.feature_index, trees.thresholds, trees.left_child
        l_mass, scored = self._l_mass, self._scored
        levels = range(self.height)
        values = list(map(x.get, trees.names))
        append = path.append
        total = 0.0
        for root in range(0, len(features), trees.nodes_per_tree):
            start = len(path)
            node = root
            for _ in levels:
                append(node)
                left = left_child[node]
                value = values[features[node]]
                if value is None:  # the busier branch, as River
                    node = left + 1 if l_mass[left] < l_mass[left + 1] else left
                else:
                    node = left if value < thresholds[node] else left + 1
            append(node)
            if score:
                leaf = scored[node]
                if leaf is None:
                    leaf = scored[node] = self._score_tree(path[start:])
                total += leaf[0]
                if stops is not None:
                    stops.append(leaf[1])
        return total

    def _score_tree(self, path: list[int]) -> tuple[int, int]:
        """Mass score of one tree's walk down ``path`` and the node where it stopped: the
        reference masses from the root down, until one is too small to go on."""
        r_mass, size_limit = self._r_mass, self.size_limit
        total = 0
        depth_pow = 1
        for node in path:
            mass = r_mass[node]
            total += mass * depth_pow
            if mass < size_limit:
                break
            depth_pow <<= 1
        return total, node

    def learn_path(self, path: list[int]) -> None:
        """Learn a sample from the path :meth:`score_path` gave for it."""
        l_mass = self._l_mass
        for node in path:
            l_mass[node] += 1
        self._counter += 1
        if self._counter == self.window_size:
            self._r_mass = l_mass
            self._l_mass = [0] * len(l_mass)
            self._scored = [None] * len(l_mass)
            self._first_window = False
            self._counter = 0

    def score_path(self, x: dict[str, Any]) -> tuple[float, list[int]]:
        """The score of ``x`` and the nodes it goes through, for :meth:`learn_path`.

        ``score_path`` then ``learn_path`` equals ``score_one`` then ``learn_one`` with a
        single walk down the trees: how a protected detector learns only what it does
        not flag (River's ``protect_anomaly_detector``) at the cost of one.
        """
        if self._trees is None:
            self._build(x)
        path: list[int] = []
        total = self._walk(x, path, score=not self._first_window)
        if self._first_window:
            return 0.0, path
        return 1.0 - total / (self.n_trees * self.window_size * (2 ** (self.height + 1) - 1)), path

    def learn_one(self, x: dict[str, Any]) -> None:  # type: ignore[override]
        self.learn_path(self.score_path(x)[1])

    def score_one(self, x: dict[str, Any]) -> float:  # type: ignore[override]
        if self._first_window or self._trees is None:
            return 0.0
        return self.score_path(x)[0]

    def isolating_features(self, x: dict[str, Any]) -> dict[str, int]:
        """How many trees isolate ``x`` by a split on each feature (the last split taken
        before a walk reached too little mass), most first: which values make it odd."""
        if self._first_window or self._trees is None:
            return {}
        stops: list[int] = []
        self._walk(x, [], stops)
        return self._trees.stop_features(stops)

    def load_reference(self, masses: list[int], x: dict[str, Any]) -> None:
        """Start from reference masses learned elsewhere (a population), scoring at once.

        ``x`` names the features when ``limits`` does not.
        """
        trees = self._trees or self._build(x)
        if len(masses) != len(trees.features):
            raise ValueError(f"expected {len(trees.features)} masses, got {len(masses)}")
        self._r_mass = list(masses)
        self._scored = [None] * len(masses)
        self._first_window = False

    def reference_masses(self) -> list[int]:
        """The current reference masses (after the first window), to start other instances."""
        return list(self._r_mass)
