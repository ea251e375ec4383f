"""What both generators learn against: each variable's training distribution, the
categories, and how often each outcome and ICU type occurs.

Values are generated as *ranks*: a training value ``x`` of a variable becomes
``u = F(x)`` in (0, 1) through the variable's empirical distribution
(:class:`Marginal`, ``LEVELS`` quantiles of its training values), and a generated rank
``u`` becomes the quantile it falls on. So every generated value is one of the
variable's training quantiles: marginals match by construction once the ranks do, a
lattice of charted values (GCS 3-15, FiO2 0.21-1.0) stays a lattice, and no value more
extreme than the ``TAIL_VALUES``-th smallest or largest training value is ever written
(an outlier is the part of a record most likely to identify a patient). The quantiles
are many, and the clipping is that light, because a coarse or clipped set is itself a
tell: gradient boosting on the level features of stays (mean, median, min, max, first,
last) told real PhysioNet 2012 set-B stays from the same stays snapped to set A's
quantiles with AUROC 0.94 for 256 quantiles, 0.58 for 1,024, 0.52 for 2,048, 0.73 for
4,096 clipped at the 0.2nd-99.8th percentile and 0.50 for 4,096 clipped at the 10th
value from either end. Ties get a uniformly spread rank (the randomised probability
integral transform), so ranks are continuous; one stay's ties of a variable share their
place in the tie (:meth:`Encoding.ranks`), so a value held through a stay (GCS 15, FiO2
0.4) keeps one rank, as a continuous value would, instead of jumping about its tie. The GAN
works on normal scores ``Phi^-1(u)``, the language model on ``BINS`` equal-width bins of
``u``.

>>> m = Marginal.fit(np.array([1.0, 2.0, 2.0, 3.0]), levels=4)
>>> m.quantiles.tolist()
[1.0, 2.0, 2.0, 3.0]
>>> u = m.to_uniform(np.array([2.0, 2.0, 3.0]), np.random.default_rng(0))
>>> m.from_uniform(u).tolist()
[2.0, 2.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from bedside.training.synthetic.data import NUMERIC_STATICS, StaySet
from bedside.training.windows import Grid

#: Quantiles kept per variable.
LEVELS = 2048
#: The quantiles are clipped to the training values this many places from either end
#: (1 % of the values where that is fewer).
TAIL_VALUES = 10
#: Ranks are kept this far from 0 and 1 (their normal scores stay finite).
EDGE = 1e-6


@dataclass(frozen=True)
class Marginal:
    """The training distribution of one variable, as ``LEVELS`` observed quantiles."""

    quantiles: np.ndarray  # float64, non-decreasing

    @classmethod
    def fit(cls, values: np.ndarray, levels: int = LEVELS) -> Marginal:
        seen = np.asarray(values, dtype=np.float64)
        seen = seen[np.isfinite(seen)]
        if seen.size == 0:
            raise ValueError("a marginal needs at least one value")
        probabilities = (np.arange(levels) + 0.5) / levels
        quantiles = np.quantile(seen, probabilities, method="inverted_cdf")
        ordered = np.sort(seen)
        k = min(TAIL_VALUES, seen.size // 100)
        return cls(np.clip(quantiles, ordered[k], ordered[-1 - k]))

    def to_uniform(
        self,
        values: np.ndarray,
        rng: np.random.Generator,
        draw: np.ndarray | None = None,
    ) -> np.ndarray:
        """Ranks in (0, 1) of values (NaN stays NaN); tied values get spread ranks, at
        ``draw`` (uniform, broadcast to the values; default one draw per value) of the
        way through their tie."""
        q = self.quantiles
        levels = q.size
        x = np.asarray(values, dtype=np.float64)
        low = np.searchsorted(q, x, side="left").astype(np.float64)
        high = np.searchsorted(q, x, side="right").astype(np.float64)
        draw = rng.random(x.shape) if draw is None else np.broadcast_to(draw, x.shape)
        # Between two quantiles: the position interpolated between them, so the nearest
        # quantile is the one given back.
        below = np.clip(low.astype(np.int64) - 1, 0, levels - 1)
        above = np.clip(low.astype(np.int64), 0, levels - 1)
        gap = q[above] - q[below]
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = np.where(gap > 0, (x - q[below]) / gap, 0.5)
        position = np.where(
            low == 0,
            draw * 0.5,
            np.where(low >= levels, levels - 0.5 + draw * 0.5, low - 0.5 + fraction),
        )
        position = np.where(high > low, low + draw * (high - low), position)
        u = np.clip(position / levels, EDGE, 1 - EDGE)
        return np.where(np.isnan(x), np.nan, u)

    def from_uniform(self, u: np.ndarray) -> np.ndarray:
        """The quantile each rank falls on (NaN stays NaN)."""
        u = np.asarray(u, dtype=np.float64)
        k = np.clip(np.floor(np.nan_to_num(u, nan=0.5) * self.quantiles.size), 0, None)
        values = self.quantiles[np.minimum(k.astype(np.int64), self.quantiles.size - 1)]
        return np.where(np.isnan(u), np.nan, values)

    def to_list(self) -> list[float]:
        return [float(v) for v in self.quantiles]


def _category(value: Any) -> str:
    return "unknown" if value is None else str(value)


@dataclass(frozen=True)
class Encoding:
    """Fitted on the training stays; saved as JSON with the generator."""

    grid: Grid
    variables: tuple[Marginal, ...]  # one per grid concept
    statics: dict[str, Marginal]  # numeric static columns with at least one training value
    sexes: tuple[str, ...]  # categories ("F", "M", "unknown")
    icu_types: tuple[str, ...]
    #: Training stays by outcome (row 0 survived, row 1 died) and ICU type.
    condition_counts: np.ndarray

    @classmethod
    def fit(cls, stays: StaySet) -> Encoding:
        variables = []
        for j, concept in enumerate(stays.grid.concepts):
            column = stays.values[:, :, j]
            if not np.isfinite(column).any():
                raise ValueError(f"no training values for {concept}; drop it from the grid")
            variables.append(Marginal.fit(column))
        statics = {}
        for name in NUMERIC_STATICS:
            column = stays.statics[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
            if np.isfinite(column).any():
                statics[name] = Marginal.fit(column)
        sexes = tuple(sorted({_category(s) for s in stays.statics["sex"].to_list()}))
        icu = [_category(t) for t in stays.statics["icu_type"].to_list()]
        icu_types = tuple(sorted(set(icu)))
        counts = np.zeros((2, len(icu_types)), dtype=np.int64)
        np.add.at(counts, (stays.death, [icu_types.index(t) for t in icu]), 1)
        return cls(stays.grid, tuple(variables), statics, sexes, icu_types, counts)

    @property
    def death_share(self) -> float:
        return float(self.condition_counts[1].sum() / self.condition_counts.sum())

    # --- conditions ---------------------------------------------------------------------

    def icu_index(self, stays: StaySet) -> np.ndarray:
        index = {t: i for i, t in enumerate(self.icu_types)}
        return np.array(
            [index.get(_category(t), 0) for t in stays.statics["icu_type"].to_list()],
            dtype=np.int64,
        )

    def sex_index(self, stays: StaySet) -> np.ndarray:
        index = {t: i for i, t in enumerate(self.sexes)}
        return np.array(
            [index.get(_category(t), 0) for t in stays.statics["sex"].to_list()], dtype=np.int64
        )

    def conditions(
        self, n: int, rng: np.random.Generator, death_share: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Outcomes and ICU types of ``n`` stays to generate: ``round(n * death_share)``
        deaths (default: the training share), ICU types drawn as in the training stays of
        the same outcome."""
        share = self.death_share if death_share is None else death_share
        if not 0.0 <= share <= 1.0:
            raise ValueError("the share of deaths must lie in [0, 1]")
        deaths = round(n * share)
        death = rng.permutation(np.r_[np.ones(deaths, np.int64), np.zeros(n - deaths, np.int64)])
        icu = np.zeros(n, dtype=np.int64)
        for outcome in (0, 1):
            rows = np.flatnonzero(death == outcome)
            counts = self.condition_counts[outcome].astype(np.float64)
            if counts.sum() == 0:  # no such training stay: the other outcome's mix
                counts = self.condition_counts.sum(axis=0).astype(np.float64)
            icu[rows] = rng.choice(len(self.icu_types), size=rows.size, p=counts / counts.sum())
        return death, icu

    # --- values <-> ranks ----------------------------------------------------------------

    def ranks(self, stays: StaySet, rng: np.random.Generator) -> np.ndarray:
        """(n, steps, variables) ranks of the window values; NaN where missing. Tied
        values of one variable in one stay share their place in the tie."""
        return np.stack(
            [
                m.to_uniform(stays.values[:, :, j], rng, rng.random((len(stays), 1)))
                for j, m in enumerate(self.variables)
            ],
            axis=-1,
        )

    def values(self, ranks: np.ndarray) -> np.ndarray:
        """Window values of ranks (NaN where missing)."""
        return np.stack(
            [m.from_uniform(ranks[:, :, j]) for j, m in enumerate(self.variables)], axis=-1
        )

    def static_ranks(self, stays: StaySet, rng: np.random.Generator) -> np.ndarray:
        """(n, numeric statics) ranks; NaN where unknown."""
        columns = [
            m.to_uniform(stays.statics[name].cast(pl.Float64).fill_null(np.nan).to_numpy(), rng)
            for name, m in self.statics.items()
        ]
        return np.column_stack(columns) if columns else np.zeros((len(stays), 0))

    def stay_set(
        self,
        ranks: np.ndarray,
        static_ranks: np.ndarray,
        sex: np.ndarray,
        death: np.ndarray,
        icu: np.ndarray,
    ) -> StaySet:
        """Generated stays from their ranks (NaN = missing / unknown) and categories."""
        from bedside.training.synthetic.data import STATIC_SCHEMA, consistent_outcomes

        n = ranks.shape[0]
        columns: dict[str, Any] = {name: np.full(n, np.nan) for name in NUMERIC_STATICS}
        for k, (name, marginal) in enumerate(self.statics.items()):
            columns[name] = marginal.from_uniform(static_ranks[:, k])
        columns["sex"] = [None if self.sexes[s] == "unknown" else self.sexes[s] for s in sex]
        columns["icu_type"] = [
            None if self.icu_types[t] == "unknown" else self.icu_types[t] for t in icu
        ]
        statics = pl.DataFrame(columns, schema=STATIC_SCHEMA).with_columns(
            pl.col(name).fill_nan(None) for name in NUMERIC_STATICS
        )
        death = np.asarray(death, dtype=np.int64)
        return StaySet(self.grid, self.values(ranks), consistent_outcomes(statics, death), death)

    # --- saving ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": self.grid.to_dict(),
            "levels": int(self.variables[0].quantiles.size),
            "variables": {
                c: m.to_list() for c, m in zip(self.grid.concepts, self.variables, strict=True)
            },
            "statics": {name: m.to_list() for name, m in self.statics.items()},
            "sexes": list(self.sexes),
            "icu_types": list(self.icu_types),
            "condition_counts": {
                "rows": ["survived", "died"],
                "columns": list(self.icu_types),
                "counts": self.condition_counts.tolist(),
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Encoding:
        grid = Grid.from_dict(data["grid"])
        return cls(
            grid=grid,
            variables=tuple(Marginal(np.asarray(data["variables"][c])) for c in grid.concepts),
            statics={k: Marginal(np.asarray(v)) for k, v in data["statics"].items()},
            sexes=tuple(data["sexes"]),
            icu_types=tuple(data["icu_types"]),
            condition_counts=np.asarray(data["condition_counts"]["counts"], dtype=np.int64),
        )
