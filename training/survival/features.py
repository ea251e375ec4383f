"""TSFEL features of each variable's observed values, for the ``tsfel-*`` models.

For every variable of a window we take the series of its *observed* values in time
order (the hourly means of the grid; gaps are skipped, not imputed) and compute
features of the statistical and temporal domains of TSFEL, with TSFEL's definitions
(``tsfel.feature_extraction.features``), vectorised over all stays and variables at
once: calling TSFEL per series would take minutes for 4,000 stays x 35 variables, and
TSFEL 0.2.0 with pandas 3 fails in its spectral domain anyway (spectral features
assume a regular sampling rate that observed lab values do not have). The tests check
each feature against TSFEL's own function.

Statistical: mean, median, min, max, standard deviation, interquartile range, mean and
median absolute deviation, root mean square, skewness, kurtosis, peak-to-peak distance,
absolute energy, ECDF percentiles 0.2 and 0.8. Temporal: slope (per observation, as
TSFEL), mean / median (absolute) diff, sum of absolute diffs, signal distance, positive
and negative turning points, zero-crossing rate (crossings of the training mean, since
values are standardised). Left out: TSFEL's sampling-rate features (average power,
area under the curve, centroid), autocorrelation, entropy, histogram mode, ECDF and
neighbourhood peaks (they need more points than most series have).

The models use the ``compact`` set by default (:data:`COMPACT`: mean, median, min, max,
std, slope, mean absolute diff and the summaries below): with every feature above,
35 variables give 1,000+ columns, which 4,000 stays do not support (logistic
regression trained on PhysioNet 2012 set A, C = 0.01: AUROC on set B 0.848 with all
features, 0.864 with the compact set); the search
(:mod:`bedside.training.survival.search`) may still choose ``all``.

Beside them, summaries that TSFEL lacks but a clinician reads first: the first and last
observed value, how many steps were observed, the step of the first observation and the
steps since the last one (the window length when never observed). A feature that is
undefined for a series (fewer points than it needs) is NaN: gradient boosting handles
NaN, logistic regression gets the training median (the count says it was missing).

>>> x = np.array([[[1.0], [np.nan], [3.0], [2.0]]])          # one stay, one variable
>>> f = dict(zip(FEATURES, window_features(x)[0].tolist()))
>>> f["mean"], f["slope"], f["last"], f["count"], f["steps_since_last"]
(2.0, 0.5, 2.0, 3.0, 0.0)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

STATISTICAL = (
    *("mean", "median", "min", "max", "std", "interquartile_range"),
    *("mean_abs_deviation", "median_abs_deviation", "rms", "skewness", "kurtosis"),
    *("peak_to_peak", "abs_energy", "ecdf_percentile_20", "ecdf_percentile_80"),
)
TEMPORAL = (
    *("slope", "mean_diff", "mean_abs_diff", "median_diff", "median_abs_diff"),
    *("sum_abs_diff", "distance", "positive_turning", "negative_turning", "zero_crossings"),
)
SUMMARIES = ("first", "last", "count", "first_step", "steps_since_last")
#: Features of one variable, in the column order of :func:`window_features`.
FEATURES: tuple[str, ...] = (*STATISTICAL, *TEMPORAL, *SUMMARIES)


def _take(sorted_values: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.take_along_axis(sorted_values, np.maximum(index, 0)[:, None], axis=1)[:, 0]


def _quantile(sorted_values: np.ndarray, count: np.ndarray, q: float) -> np.ndarray:
    """numpy's default (linear) quantile of rows sorted with NaN last; NaN when empty."""
    position = q * (count - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, count - 1)
    a, b = _take(sorted_values, low), _take(sorted_values, high)
    fraction = position - low
    value = np.where(fraction >= 0.5, b - (b - a) * (1 - fraction), a + (b - a) * fraction)
    return np.where(count > 0, value, np.nan)


def _sorted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count = (~np.isnan(values)).sum(axis=1)
    return np.sort(values, axis=1), count


def _median(values: np.ndarray) -> np.ndarray:
    return _quantile(*_sorted(values), 0.5)


def _ecdf_percentile(sorted_values: np.ndarray, count: np.ndarray, p: float) -> np.ndarray:
    """Largest value whose ECDF is at most ``p`` (TSFEL); NaN when none is."""
    ranks = np.arange(1, sorted_values.shape[1] + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        below = (ranks / count[:, None] <= p) & (ranks <= count[:, None])
    k = below.sum(axis=1)
    return np.where(k > 0, _take(sorted_values, k - 1), np.nan)


def _series_features(series: np.ndarray) -> np.ndarray:
    """Features (N, F) of N series (N, T): values in time order, NaN = not observed."""
    steps = series.shape[1]
    observed = ~np.isnan(series)
    count = observed.sum(axis=1)
    # Observed values first, in time order: the series TSFEL would be given.
    order = np.argsort(~observed, axis=1, kind="stable")
    values = np.take_along_axis(series, order, axis=1).astype(np.float64)
    valid = np.arange(steps)[None, :] < count[:, None]
    some = count > 0
    out: dict[str, np.ndarray] = {}

    # Empty slices (never-observed variables) warn in numpy; they are NaN by design.
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):
        ordered, _ = _sorted(values)
        mean = np.nanmean(values, axis=1)
        centred = values - mean[:, None]
        m2 = np.nanmean(centred**2, axis=1)
        m3 = np.nanmean(centred**3, axis=1)
        m4 = np.nanmean(centred**4, axis=1)
        flat = ~(m2 > 1e-12 * np.maximum(mean**2, 1.0))
        median = _quantile(ordered, count, 0.5)
        out["mean"] = mean
        out["median"] = median
        out["min"] = np.where(some, np.nanmin(np.where(valid, values, np.inf), axis=1), np.nan)
        out["max"] = np.where(some, np.nanmax(np.where(valid, values, -np.inf), axis=1), np.nan)
        out["std"] = np.sqrt(m2)
        out["interquartile_range"] = _quantile(ordered, count, 0.75) - _quantile(
            ordered, count, 0.25
        )
        out["mean_abs_deviation"] = np.nanmean(np.abs(centred), axis=1)
        out["median_abs_deviation"] = _median(np.abs(values - median[:, None]))
        out["rms"] = np.sqrt(np.nanmean(values**2, axis=1))
        out["skewness"] = np.where(flat, np.nan, m3 / m2**1.5)
        out["kurtosis"] = np.where(flat, np.nan, m4 / m2**2 - 3.0)
        out["peak_to_peak"] = out["max"] - out["min"]
        out["abs_energy"] = np.where(some, np.nansum(values**2, axis=1), np.nan)
        out["ecdf_percentile_20"] = _ecdf_percentile(ordered, count, 0.2)
        out["ecdf_percentile_80"] = _ecdf_percentile(ordered, count, 0.8)

        position = np.where(valid, np.arange(steps)[None, :], np.nan)
        t_centred = position - np.nanmean(position, axis=1)[:, None]
        slope = np.nansum(t_centred * centred, axis=1) / np.nansum(t_centred**2, axis=1)
        out["slope"] = np.where(count >= 2, slope, np.nan)

        diffs = values[:, 1:] - values[:, :-1]
        has_diff = count >= 2
        out["mean_diff"] = np.where(has_diff, np.nanmean(diffs, axis=1), np.nan)
        out["mean_abs_diff"] = np.where(has_diff, np.nanmean(np.abs(diffs), axis=1), np.nan)
        out["median_diff"] = _median(diffs)
        out["median_abs_diff"] = _median(np.abs(diffs))
        out["sum_abs_diff"] = np.nansum(np.abs(diffs), axis=1)
        out["distance"] = np.nansum(np.sqrt(1.0 + diffs**2), axis=1)
        rising, falling = diffs[:, :-1], diffs[:, 1:]
        out["positive_turning"] = ((rising > 0) & (falling < 0)).sum(axis=1).astype(np.float64)
        out["negative_turning"] = ((rising < 0) & (falling > 0)).sum(axis=1).astype(np.float64)
        signs = np.sign(values)
        changes = (signs[:, 1:] != signs[:, :-1]) & valid[:, 1:]
        out["zero_crossings"] = changes.sum(axis=1).astype(np.float64)

        first_step = np.where(some, order[:, 0], steps)
        last_step = np.where(some, _take(order.astype(np.float64), count - 1), -1)
        out["first"] = np.where(some, values[:, 0], np.nan)
        out["last"] = np.where(some, _take(values, count - 1), np.nan)
        out["count"] = count.astype(np.float64)
        out["first_step"] = first_step.astype(np.float64)
        out["steps_since_last"] = np.where(some, steps - 1 - last_step, steps).astype(np.float64)

    return np.column_stack([out[name] for name in FEATURES])


#: The default set: the statistical and temporal features that carry the signal on
#: PhysioNet 2012 without the near-duplicates (the full set overfits 4,000 stays; see
#: BENCHMARKS.md), and the summaries.
COMPACT: tuple[str, ...] = (
    *("mean", "median", "min", "max", "std", "slope", "mean_abs_diff"),
    *("first", "last", "count", "steps_since_last"),
)
FEATURE_SETS: dict[str, tuple[str, ...]] = {"compact": COMPACT, "all": FEATURES}


def window_features(observed: np.ndarray, names: Sequence[str] = FEATURES) -> np.ndarray:
    """Features ``names`` of windows (n, T, D) (NaN = missing): (n, D * len(names)),
    variable-major columns (all features of the first variable, then the second...)."""
    n, steps, variables = observed.shape
    series = np.ascontiguousarray(observed.transpose(0, 2, 1)).reshape(n * variables, steps)
    chosen = [FEATURES.index(name) for name in names]
    return _series_features(series)[:, chosen].reshape(n, variables * len(chosen))


def feature_names(concepts: Sequence[str], names: Sequence[str] = FEATURES) -> list[str]:
    return [f"{concept}.{feature}" for concept in concepts for feature in names]


def quantile_edges(x: np.ndarray, bins: int) -> np.ndarray:
    """Edges (columns, bins + 1) at the quantiles of each column's defined values (0 when
    a column has none): what :func:`piecewise_linear` cuts each column into."""
    quantiles = np.linspace(0.0, 1.0, bins + 1)
    edges = np.zeros((x.shape[1], bins + 1))
    for j in range(x.shape[1]):
        defined = x[:, j][np.isfinite(x[:, j])]
        if defined.size:
            edges[j] = np.quantile(defined, quantiles)
    return edges


def piecewise_linear(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Piecewise-linear encoding of the columns of ``x`` (Gorishniy et al. 2022, "PLE").

    Each column's ``edges`` (:func:`quantile_edges` of the training values) cut it into
    bins; a value becomes, per bin, how far through the bin it lies (0 below it, 1
    above it), so a linear function of the encoding is a piecewise-linear function of
    the value: a linear model can bend each feature's effect, as a tree's splits do. A
    bin of zero width (tied quantiles of a discrete column, such as a count) is a step
    at its edge. An undefined value (NaN) is all zeros and a 1 in its column's missing
    indicator. Returns (n, columns * bins + columns): the bins of every column, column
    by column, then the missing indicators; in ``x``'s float type.

    >>> edges = quantile_edges(np.array([[0.0], [1.0], [2.0], [np.nan]]), 2)
    >>> piecewise_linear(np.array([[0.5], [3.0], [np.nan]]), edges).tolist()
    [[0.5, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    edges = edges.astype(x.dtype, copy=False)
    low, high = edges[:, :-1], edges[:, 1:]
    width = np.where(high > low, high - low, x.dtype.type(1e-6))
    missing = np.isnan(x)
    with np.errstate(invalid="ignore"):
        parts = np.clip((x[..., None] - low) / width, 0.0, 1.0)
    parts[missing] = 0.0
    return np.concatenate([parts.reshape(x.shape[0], -1), missing.astype(x.dtype)], axis=1)
