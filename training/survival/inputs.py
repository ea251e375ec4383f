"""Model inputs from raw windows and a stay's static covariates: one encoder, fitted once.

:class:`InputEncoder` turns raw windows (steps x variables in canonical units, NaN =
missing, exactly what :func:`bedside.training.windows.window` gives the engine and
:func:`~bedside.training.windows.stay_windows` gives training) into what every model
reads, in the same way for a batch of stays and for one window:

1. values outside the concept's plausible range (``concepts.toml``: recording errors
   such as a pH of 735, not merely abnormal values) become missing;
2. standardised with the training mean and std of each variable (and clipped to
   +-``CLIP`` standard deviations so that a rare extreme value cannot dominate a net);
3. ``mask``: 1 where a value was observed in the step;
4. ``elapsed``: hours since the variable was last observed (0 in an observed step;
   counted from the window start before the first observation), divided by the window
   length, so it lies in [0, 1];
5. ``values``: the standardised values with every gap filled by the imputer: linear
   interpolation fitted on the training stays by default, or a model of
   ``bedside train imputer`` (an
   :class:`~bedside.training.imputation.pipeline.ImputationModel`, which fills raw
   values with its own standardisation; its output is then standardised like the rest);
6. ``statics``: age, height and weight standardised (a missing or implausible one
   gets the training median and a 1 in its ``*_missing`` column), sex (1 = male,
   missing -> training share of males + indicator) and the ICU type one-hot (all zero
   when unknown).

Everything learnt (means, stds, medians, the imputer) is learnt from training stays only
(:meth:`InputEncoder.fit`) and saved as JSON (:meth:`InputEncoder.to_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from bedside.schemas.concepts import load_concepts
from bedside.schemas.tables import ICU_TYPES
from bedside.training.imputation.base import Imputer
from bedside.training.imputation.pipeline import ImputationModel
from bedside.training.windows import Grid, Standardiser, Windows

#: Standardised values are clipped to this many standard deviations.
CLIP = 8.0
#: Numeric static covariates: stays-table column -> concept giving its plausible range.
NUMERIC_STATICS: dict[str, str | None] = {"age": None, "height_cm": "height", "weight_kg": "weight"}
AGE_RANGE = (0.0, 120.0)


@dataclass(frozen=True)
class Inputs:
    """Encoded inputs of ``n`` stays."""

    observed: np.ndarray  # (n, T, D) float32 standardised, NaN where missing
    mask: np.ndarray  # (n, T, D) float32, 1 = observed
    elapsed: np.ndarray  # (n, T, D) float32, time since last observation / window length
    values: np.ndarray  # (n, T, D) float32 standardised and imputed
    statics: np.ndarray  # (n, S) float32

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def take(self, rows: np.ndarray) -> Inputs:
        return Inputs(
            observed=self.observed[rows],
            mask=self.mask[rows],
            elapsed=self.elapsed[rows],
            values=self.values[rows],
            statics=self.statics[rows],
        )

    def sequence(self) -> np.ndarray:
        """The deep models' input: values, mask and elapsed side by side, (n, T, 3 D)."""
        return np.concatenate([self.values, self.mask, self.elapsed], axis=-1)


def plausible_ranges(concepts: Sequence[str]) -> list[tuple[float, float]]:
    dictionary = load_concepts()
    ranges = []
    for name in concepts:
        low, high = dictionary[name].plausible
        ranges.append((float(low), float(high)))
    return ranges


def elapsed_since_observed(mask: np.ndarray) -> np.ndarray:
    """Steps since the last observation: 0 when observed, ``k + 1`` at step k before any.

    >>> elapsed_since_observed(np.array([[0, 1, 0, 0]], dtype=np.float32).T).ravel().tolist()
    [1.0, 0.0, 1.0, 2.0]
    """
    steps = np.arange(mask.shape[-2], dtype=np.float32)[:, None]
    last = np.maximum.accumulate(np.where(mask > 0, steps, -1.0), axis=-2)
    return (steps - last).astype(np.float32)


@dataclass
class StaticEncoder:
    """Static covariates as numbers: medians, means and stds learnt from training stays."""

    medians: dict[str, float]
    means: dict[str, float]
    stds: dict[str, float]
    male_share: float

    @staticmethod
    def _ranges() -> dict[str, tuple[float, float]]:
        dictionary = load_concepts()
        return {
            column: AGE_RANGE if concept is None else tuple(dictionary[concept].plausible)
            for column, concept in NUMERIC_STATICS.items()
        }

    @staticmethod
    def _numbers(stays: pl.DataFrame) -> dict[str, np.ndarray]:
        ranges = StaticEncoder._ranges()
        out = {}
        for column in NUMERIC_STATICS:
            # A list, not a polars expression: the engine encodes one stay per score, and a
            # lazy cast costs more than the whole model there.
            values = np.array(
                [np.nan if v is None else float(v) for v in stays[column].to_list()],
                dtype=np.float64,
            )
            low, high = ranges[column]
            values[(values < low) | (values > high)] = np.nan
            out[column] = values
        return out

    @classmethod
    def fit(cls, stays: pl.DataFrame) -> StaticEncoder:
        numbers = cls._numbers(stays)
        medians, means, stds = {}, {}, {}
        for column, values in numbers.items():
            seen = values[np.isfinite(values)]
            medians[column] = float(np.median(seen)) if seen.size else 0.0
            filled = np.where(np.isfinite(values), values, medians[column])
            means[column] = float(filled.mean()) if filled.size else 0.0
            stds[column] = float(filled.std()) or 1.0
        sex = stays["sex"].to_list()
        known = [s for s in sex if s in ("F", "M")]
        male_share = sum(s == "M" for s in known) / len(known) if known else 0.5
        return cls(medians=medians, means=means, stds=stds, male_share=male_share)

    @property
    def names(self) -> list[str]:
        numeric = [n for c in NUMERIC_STATICS for n in (c, f"{c}_missing")]
        return [*numeric, "sex_male", "sex_missing", *(f"icu_{t}" for t in ICU_TYPES)]

    @property
    def groups(self) -> dict[str, list[int]]:
        """Columns of each covariate (value and missing indicator together)."""
        index = {name: i for i, name in enumerate(self.names)}
        groups = {c: [index[c], index[f"{c}_missing"]] for c in NUMERIC_STATICS}
        groups["sex"] = [index["sex_male"], index["sex_missing"]]
        groups["icu_type"] = [index[f"icu_{t}"] for t in ICU_TYPES]
        return groups

    def transform(self, stays: pl.DataFrame) -> np.ndarray:
        numbers = self._numbers(stays)
        columns = []
        for column, values in numbers.items():
            missing = ~np.isfinite(values)
            filled = np.where(missing, self.medians[column], values)
            columns += [(filled - self.means[column]) / self.stds[column], missing]
        sex = stays["sex"].to_list()
        columns.append([1.0 if s == "M" else 0.0 if s == "F" else self.male_share for s in sex])
        columns.append([0.0 if s in ("F", "M") else 1.0 for s in sex])
        icu = stays["icu_type"].to_list()
        columns += [[1.0 if t == kind else 0.0 for t in icu] for kind in ICU_TYPES]
        return np.column_stack(columns).astype(np.float32).reshape(stays.height, -1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "medians": self.medians,
            "means": self.means,
            "stds": self.stds,
            "male_share": self.male_share,
            "columns": self.names,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StaticEncoder:
        return cls(
            medians=dict(data["medians"]),
            means=dict(data["means"]),
            stds=dict(data["stds"]),
            male_share=float(data["male_share"]),
        )


def statics_frame(statics: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Stays-table columns from dicts (the engine's view of a bed's patient)."""
    schema = {"age": pl.Float64, "sex": pl.String, "height_cm": pl.Float64}
    schema |= {"weight_kg": pl.Float64, "icu_type": pl.String}
    rows = [{name: row.get(name) for name in schema} for row in statics]
    return pl.DataFrame(rows, schema=schema)


@dataclass
class InputEncoder:
    """Raw windows + stays -> :class:`Inputs`, with everything learnt from training data."""

    grid: Grid
    ranges: list[tuple[float, float]]
    standardiser: Standardiser
    statics: StaticEncoder
    #: Fills gaps: an imputer of standardised windows, an imputation model of raw
    #: windows, or None for models that read only the observed values.
    imputer: Imputer | ImputationModel | None

    @classmethod
    def fit(
        cls,
        windows: Windows,
        stays: pl.DataFrame,
        imputer: Imputer | ImputationModel | None,
        *,
        fit_imputer: bool = True,
    ) -> InputEncoder:
        """Learn the standardisation, the static encoding and (``fit_imputer``) the imputer."""
        ranges = plausible_ranges(windows.grid.concepts)
        cleaned = Windows(windows.grid, windows.stay_ids, _drop_implausible(windows.values, ranges))
        encoder = cls(
            windows.grid, ranges, Standardiser.fit(cleaned), StaticEncoder.fit(stays), imputer
        )
        if isinstance(imputer, Imputer) and fit_imputer:
            imputer.fit(encoder.standardise(windows.values))
        if isinstance(imputer, ImputationModel):
            missing = set(windows.grid.concepts) - set(imputer.grid.concepts)
            if missing:
                raise ValueError(f"the imputation model has no {sorted(missing)}")
        return encoder

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        """Plausible values standardised and clipped; NaN where missing or implausible."""
        cleaned = _drop_implausible(raw, self.ranges)
        return np.clip(self.standardiser.transform(cleaned), -CLIP, CLIP)

    def encode(self, raw: np.ndarray, stays: pl.DataFrame) -> Inputs:
        """Encode raw windows (n, T, D) of the grid's concepts and the stays' covariates."""
        if raw.ndim != 3 or raw.shape[1:] != (self.grid.steps, len(self.grid.concepts)):
            raise ValueError(
                f"windows must be (n, {self.grid.steps}, {len(self.grid.concepts)}), "
                f"got {raw.shape}"
            )
        if stays.height != raw.shape[0]:
            raise ValueError(f"{raw.shape[0]} windows but {stays.height} rows of covariates")
        observed = self.standardise(raw)
        mask = (~np.isnan(observed)).astype(np.float32)
        elapsed = elapsed_since_observed(mask) / np.float32(self.grid.steps)
        if isinstance(self.imputer, ImputationModel):
            values = self._impute_raw(raw)
        elif self.imputer is not None:
            values = self.imputer.impute(observed)
        else:
            values = np.nan_to_num(observed, nan=0.0)
        return Inputs(
            observed=observed,
            mask=mask,
            elapsed=elapsed,
            values=values.astype(np.float32),
            statics=self.statics.transform(stays),
        )

    def _impute_raw(self, raw: np.ndarray) -> np.ndarray:
        """Fill with an imputation model: on its grid, in raw units, then standardise."""
        assert isinstance(self.imputer, ImputationModel)
        theirs = self.imputer.grid.concepts
        full = np.full((*raw.shape[:2], len(theirs)), np.nan, dtype=np.float32)
        mine = [theirs.index(c) for c in self.grid.concepts]
        full[..., mine] = _drop_implausible(raw, self.ranges)
        filled = self.imputer.impute(full)[..., mine]
        return np.clip(self.standardiser.transform(filled), -CLIP, CLIP)

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": self.grid.to_dict(),
            "plausible_ranges": [list(r) for r in self.ranges],
            "standardiser": self.standardiser.to_dict(),
            "statics": self.statics.to_dict(),
            "clip_sd": CLIP,
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], imputer: Imputer | ImputationModel | None
    ) -> InputEncoder:
        return cls(
            grid=Grid.from_dict(data["grid"]),
            ranges=[(float(lo), float(hi)) for lo, hi in data["plausible_ranges"]],
            standardiser=Standardiser.from_dict(data["standardiser"]),
            statics=StaticEncoder.from_dict(data["statics"]),
            imputer=imputer,
        )


def _drop_implausible(raw: np.ndarray, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    low = np.array([r[0] for r in ranges], dtype=np.float32)
    high = np.array([r[1] for r in ranges], dtype=np.float32)
    with np.errstate(invalid="ignore"):
        bad = (raw < low) | (raw > high)
    return np.where(bad, np.float32(np.nan), raw).astype(np.float32)
