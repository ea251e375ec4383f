"""Offline multivariate cleaning: scikit-learn's Isolation Forest over a stay's vitals.

Saved without pickle: the model folder holds the parameters and the training sample
(``detectors.json``, ``isolation_forest_sample.parquet``), and loading refits the forest
on that sample with the same seed, which scikit-learn makes deterministic (about a
second). A few training scores are stored with it and checked after the refit, so a
scikit-learn version that grows different trees fails loudly instead of flagging other
values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

from bedside.training.detectors.batch import ROW, DetectorError, prepare
from bedside.training.detectors.bed import MODEL_FILE
from bedside.training.detectors.rules import MULTIVARIATE_LIMITS

SAMPLE_FILE: Final = "isolation_forest_sample.parquet"
FORMAT: Final = "bedside.detectors/1"
#: Training scores kept to check that a refit grows the same forest.
_CHECKED: Final = 32


def feature_rows(frame: pl.DataFrame, carry_minutes: float) -> pl.DataFrame:
    """One row per stay and time at which a vital was recorded, with every vital's
    current value scaled by ``rules.MULTIVARIATE_LIMITS`` (carried forward for at most
    ``carry_minutes``; null when older or never seen), and ``_row_<vital>`` the row of
    the value recorded at that time (null for a carried one). ``frame`` comes from
    :func:`~bedside.training.detectors.batch.prepare` (only usable values count)."""
    vitals = list(MULTIVARIATE_LIMITS)
    usable = frame.filter(pl.col("code").is_in(vitals) & pl.col("_signal"))
    if usable.is_empty():
        schema: dict[str, pl.DataType] = {"stay_id": pl.Int64(), "time": frame.schema["time"]}
        schema |= {v: pl.Float64() for v in vitals} | {f"{ROW}_{v}": pl.UInt32() for v in vitals}
        return pl.DataFrame(schema=schema)
    wide = usable.pivot(
        on="code",
        index=["stay_id", "time"],
        values=["numeric_value", ROW],
        aggregate_function="first",
    ).sort("stay_id", "time")
    carry = pl.duration(microseconds=int(carry_minutes * 60e6))
    columns = []
    for vital in vitals:
        value, row = f"numeric_value_{vital}", f"{ROW}_{vital}"
        if value not in wide.columns:
            wide = wide.with_columns(pl.lit(None, pl.Float64).alias(value))
            wide = wide.with_columns(pl.lit(None, pl.UInt32).alias(row))
        low, high = MULTIVARIATE_LIMITS[vital]
        seen = pl.when(pl.col(value).is_not_null()).then(pl.col("time"))
        last_seen = seen.forward_fill().over("stay_id")
        current = pl.col(value).forward_fill().over("stay_id")
        columns.append(
            pl.when(pl.col("time") - last_seen <= carry)
            .then((current - low) / (high - low))
            .alias(vital)
        )
        columns.append(pl.col(row).cast(pl.UInt32))
    return wide.select("stay_id", "time", *columns)


class OfflineIsolationForest:
    """Isolation Forest over the vitals of each recorded time of a stay, for batch cleaning.

    Each row is a stay at a time some vital was recorded, with every vital's current
    value (:func:`feature_rows`); missing ones are filled with the training median. The
    forest flags the ``contamination`` share of training rows that are easiest to
    isolate, and as many on new data as look like them. A flagged row is blamed on the
    vital recorded at that time that is furthest from the training median (in
    interquartile ranges): that value gets ``anomaly_kind = "multivariate"``.

    Examples
    --------
    >>> from bedside.replay.simulator import simulate_cohort
    >>> events, _, _ = simulate_cohort(stays=4, hours=12, seed=1)
    >>> forest = OfflineIsolationForest(n_estimators=20, seed=1).fit(events)
    >>> flagged = forest.flag_rows(prepare(events))
    >>> flagged.columns, 0 < flagged.height < 0.05 * events.height
    (['_row', 'kind'], True)
    """

    def __init__(
        self,
        n_estimators: int = 200,
        max_samples: int = 256,
        contamination: float = 0.002,
        carry_minutes: float = 120.0,
        sample_size: int = 20_000,
        seed: int = 2026,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.contamination = contamination
        self.carry_minutes = carry_minutes
        self.sample_size = sample_size
        self.seed = seed
        self.features: tuple[str, ...] = tuple(MULTIVARIATE_LIMITS)
        self.sample: pl.DataFrame | None = None
        self.medians: dict[str, float] = {}
        self.spreads: dict[str, float] = {}
        self._forest: Any = None
        self._check: list[float] = []

    def params(self) -> dict[str, Any]:
        return {
            "n_estimators": self.n_estimators,
            "max_samples": self.max_samples,
            "contamination": self.contamination,
            "carry_minutes": self.carry_minutes,
            "sample_size": self.sample_size,
            "seed": self.seed,
        }

    def _matrix(self, rows: pl.DataFrame) -> np.ndarray:
        filled = rows.select(pl.col(f).fill_null(self.medians[f]) for f in self.features)
        return filled.to_numpy().astype(np.float64)

    def _refit(self) -> None:
        from sklearn.ensemble import IsolationForest

        assert self.sample is not None
        for feature in self.features:
            column = self.sample[feature].drop_nulls().to_numpy()
            median = float(np.median(column)) if column.size else 0.5
            spread = float(np.subtract(*np.quantile(column, [0.75, 0.25]))) if column.size else 0.0
            self.medians[feature] = median
            self.spreads[feature] = max(spread, 0.01)
        self._forest = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, self.sample.height),
            contamination=self.contamination,
            random_state=self.seed,
        ).fit(self._matrix(self.sample))

    def fit(self, events: pl.DataFrame) -> OfflineIsolationForest:
        """Fit on the usable values of canonical events (a seeded sample of their rows)."""
        rows = feature_rows(prepare(events), self.carry_minutes).select(self.features)
        rows = rows.filter(pl.any_horizontal(pl.col(f).is_not_null() for f in self.features))
        if rows.height < 2:
            raise DetectorError("too few recorded vitals to fit an isolation forest")
        if rows.height > self.sample_size:
            rows = rows.sample(self.sample_size, seed=self.seed)
        self.sample = rows
        self._refit()
        self._check = self._scores(rows.head(_CHECKED)).tolist()
        return self

    def _scores(self, rows: pl.DataFrame) -> np.ndarray:
        if self._forest is None:
            raise DetectorError("the isolation forest is not fitted")
        return np.asarray(self._forest.score_samples(self._matrix(rows)))

    def flag_rows(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Rows of a prepared frame (``batch.prepare``) to flag: ``(_row, kind)``."""
        rows = feature_rows(frame, self.carry_minutes)
        if rows.is_empty():
            return pl.DataFrame(schema={ROW: pl.UInt32, "kind": pl.String})
        outlier = self._forest.predict(self._matrix(rows)) == -1
        flagged = rows.filter(pl.Series(outlier))
        # Blame the vital recorded at that time that is furthest from the training median.
        distance = [
            pl.when(pl.col(f"{ROW}_{f}").is_not_null())
            .then((pl.col(f) - self.medians[f]).abs() / self.spreads[f])
            .otherwise(-1.0)
            for f in self.features
        ]
        blamed = flagged.with_columns(_worst=pl.concat_list(distance).list.arg_max())
        row = pl.concat_list([pl.col(f"{ROW}_{f}") for f in self.features]).list.get(
            pl.col("_worst")
        )
        return blamed.select(row.alias(ROW)).drop_nulls().select(ROW, kind=pl.lit("multivariate"))

    def save(self, model_dir: Path) -> None:
        """Write the parameters and the training sample into ``model_dir`` (no pickle)."""
        if self.sample is None:
            raise DetectorError("fit the isolation forest before saving it")
        import sklearn

        model_dir.mkdir(parents=True, exist_ok=True)
        self.sample.write_parquet(model_dir / SAMPLE_FILE)
        path = model_dir / MODEL_FILE
        model = json.loads(path.read_text()) if path.exists() else {"format": FORMAT}
        model["isolation_forest"] = {
            "params": self.params(),
            "features": list(self.features),
            "sample": SAMPLE_FILE,
            "sklearn": sklearn.__version__,
            "check_scores": self._check,
        }
        path.write_text(json.dumps(model, indent=2))

    @classmethod
    def load(cls, model_dir: Path) -> OfflineIsolationForest:
        """Refit the forest saved in ``model_dir`` and check it is the same one."""
        path = model_dir / MODEL_FILE
        if not path.exists():
            raise DetectorError(f"{model_dir} has no {MODEL_FILE}: run `bedside train detectors`")
        saved = json.loads(path.read_text()).get("isolation_forest")
        if saved is None:
            raise DetectorError(f"{path} has no isolation forest")
        forest = cls(**saved["params"])
        forest.features = tuple(saved["features"])
        forest.sample = pl.read_parquet(model_dir / saved["sample"])
        forest._refit()
        forest._check = saved["check_scores"]
        again = forest._scores(forest.sample.head(_CHECKED))
        if not np.allclose(again, forest._check, rtol=0, atol=1e-12):
            raise DetectorError(
                f"refitting the isolation forest of {model_dir} with scikit-learn "
                f"{_sklearn_version()} does not reproduce the one trained with "
                f"{saved['sklearn']}: retrain it"
            )
        return forest


def _sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)
