"""TSFEL features of each variable's observed values, for the ``tsfel-*`` models.

For every variable of a window we take the series of its *observed* values in time
order (the hourly means of the grid; gaps are skipped, not imputed) and compute
features of the statistical and temporal domains of TSFEL, with TSFEL's definitions
(``tsfel.feature_extraction.features``), in one compiled loop over all series (numba):
calling TSFEL per series would take minutes for 4,000 stays x 35 variables, numpy's
calls on one window's short series cost the engine milliseconds a score, and
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

from collections.abc import Sequence
from typing import Final

import numba
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

# Columns of the compiled loop (module constants: numba reads them as literals).
_N_FEATURES: Final = len(FEATURES)
_C_MEAN: Final = FEATURES.index("mean")
_C_MEDIAN: Final = FEATURES.index("median")
_C_MIN: Final = FEATURES.index("min")
_C_MAX: Final = FEATURES.index("max")
_C_STD: Final = FEATURES.index("std")
_C_IQR: Final = FEATURES.index("interquartile_range")
_C_MEAN_ABS_DEVIATION: Final = FEATURES.index("mean_abs_deviation")
_C_MEDIAN_ABS_DEVIATION: Final = FEATURES.index("median_abs_deviation")
_C_RMS: Final = FEATURES.index("rms")
_C_SKEWNESS: Final = FEATURES.index("skewness")
_C_KURTOSIS: Final = FEATURES.index("kurtosis")
_C_PEAK_TO_PEAK: Final = FEATURES.index("peak_to_peak")
_C_ABS_ENERGY: Final = FEATURES.index("abs_energy")
_C_ECDF_20: Final = FEATURES.index("ecdf_percentile_20")
_C_ECDF_80: Final = FEATURES.index("ecdf_percentile_80")
_C_SLOPE: Final = FEATURES.index("slope")
_C_MEAN_DIFF: Final = FEATURES.index("mean_diff")
_C_MEAN_ABS_DIFF: Final = FEATURES.index("mean_abs_diff")
_C_MEDIAN_DIFF: Final = FEATURES.index("median_diff")
_C_MEDIAN_ABS_DIFF: Final = FEATURES.index("median_abs_diff")
_C_SUM_ABS_DIFF: Final = FEATURES.index("sum_abs_diff")
_C_DISTANCE: Final = FEATURES.index("distance")
_C_POSITIVE_TURNING: Final = FEATURES.index("positive_turning")
_C_NEGATIVE_TURNING: Final = FEATURES.index("negative_turning")
_C_ZERO_CROSSINGS: Final = FEATURES.index("zero_crossings")
_C_FIRST: Final = FEATURES.index("first")
_C_LAST: Final = FEATURES.index("last")
_C_COUNT: Final = FEATURES.index("count")
_C_FIRST_STEP: Final = FEATURES.index("first_step")
_C_STEPS_SINCE_LAST: Final = FEATURES.index("steps_since_last")


@numba.njit(cache=True, inline="always")
def _quantile(ordered: np.ndarray, n: int, q: float) -> float:
    """numpy's default (linear) quantile of ``ordered[:n]`` (sorted); NaN when empty."""
    if n == 0:
        return np.nan
    position = q * (n - 1)
    low = int(np.floor(position))
    high = min(low + 1, n - 1)
    a, b = ordered[low], ordered[high]
    fraction = position - low
    if fraction >= 0.5:  # numpy's lerp, exact at both ends
        return b - (b - a) * (1.0 - fraction)
    return a + (b - a) * fraction


@numba.njit(cache=True, inline="always")
def _ecdf_percentile(ordered: np.ndarray, n: int, p: float) -> float:
    """Largest value whose ECDF is at most ``p`` (TSFEL); NaN when none is."""
    k = 0
    for rank in range(1, n + 1):
        if rank / n <= p:
            k += 1
    return ordered[k - 1] if k > 0 else np.nan


@numba.njit(cache=True)
def _series_features(series: np.ndarray) -> np.ndarray:
    """Features (N, F) of N series (N, T): values in time order, NaN = not observed.

    One compiled pass per series (a score in the engine computes one window's, where
    numpy's calls on small arrays cost more than their arithmetic)."""
    rows, steps = series.shape
    out = np.full((rows, _N_FEATURES), np.nan)
    values = np.empty(steps)  # the observed values in time order: the series TSFEL gets
    where = np.empty(steps, np.int64)  # their steps
    work = np.empty(steps)
    for row in range(rows):
        f = out[row]
        n = 0
        for t in range(steps):
            v = series[row, t]
            if v == v:
                values[n] = v
                where[n] = t
                n += 1
        f[_C_COUNT] = n
        f[_C_SUM_ABS_DIFF] = f[_C_DISTANCE] = 0.0
        f[_C_POSITIVE_TURNING] = f[_C_NEGATIVE_TURNING] = f[_C_ZERO_CROSSINGS] = 0.0
        if n == 0:
            f[_C_FIRST_STEP] = f[_C_STEPS_SINCE_LAST] = steps
            continue
        total = 0.0
        squares = 0.0
        low, high = np.inf, -np.inf
        for i in range(n):
            v = values[i]
            total += v
            squares += v * v
            low, high = min(low, v), max(high, v)
        mean = total / n
        m2 = m3 = m4 = absolute = 0.0
        for i in range(n):
            c = values[i] - mean
            m2 += c * c
            m3 += c * c * c
            m4 += c * c * c * c
            absolute += abs(c)
        m2, m3, m4 = m2 / n, m3 / n, m4 / n
        ordered = np.sort(values[:n])
        median = _quantile(ordered, n, 0.5)
        f[_C_MEAN] = mean
        f[_C_MEDIAN] = median
        f[_C_MIN], f[_C_MAX] = low, high
        f[_C_STD] = np.sqrt(m2)
        f[_C_IQR] = _quantile(ordered, n, 0.75) - _quantile(ordered, n, 0.25)
        f[_C_MEAN_ABS_DEVIATION] = absolute / n
        for i in range(n):
            work[i] = abs(values[i] - median)
        f[_C_MEDIAN_ABS_DEVIATION] = _quantile(np.sort(work[:n]), n, 0.5)
        f[_C_RMS] = np.sqrt(squares / n)
        if m2 > 1e-12 * max(mean * mean, 1.0):  # else flat: no skewness or kurtosis
            f[_C_SKEWNESS] = m3 / m2**1.5
            f[_C_KURTOSIS] = m4 / m2**2 - 3.0
        f[_C_PEAK_TO_PEAK] = high - low
        f[_C_ABS_ENERGY] = squares
        f[_C_ECDF_20] = _ecdf_percentile(ordered, n, 0.2)
        f[_C_ECDF_80] = _ecdf_percentile(ordered, n, 0.8)
        f[_C_FIRST], f[_C_LAST] = values[0], values[n - 1]
        f[_C_FIRST_STEP] = where[0]
        f[_C_STEPS_SINCE_LAST] = steps - 1 - where[n - 1]
        crossings = 0
        for i in range(n - 1):
            if np.sign(values[i + 1]) != np.sign(values[i]):
                crossings += 1
        f[_C_ZERO_CROSSINGS] = crossings
        if n < 2:
            continue
        centre = (n - 1) / 2.0
        covariance = spread = 0.0
        for i in range(n):
            covariance += (i - centre) * (values[i] - mean)
            spread += (i - centre) ** 2
        f[_C_SLOPE] = covariance / spread
        d = n - 1
        diff_sum = abs_sum = distance = 0.0
        peaks = troughs = 0
        for i in range(d):
            diff = values[i + 1] - values[i]
            work[i] = diff
            diff_sum += diff
            abs_sum += abs(diff)
            distance += np.sqrt(1.0 + diff * diff)
            if i > 0:
                before = work[i - 1]
                if before > 0 and diff < 0:
                    peaks += 1
                elif before < 0 and diff > 0:
                    troughs += 1
        f[_C_MEAN_DIFF] = diff_sum / d
        f[_C_MEAN_ABS_DIFF] = abs_sum / d
        f[_C_MEDIAN_DIFF] = _quantile(np.sort(work[:d]), d, 0.5)
        f[_C_MEDIAN_ABS_DIFF] = _quantile(np.sort(np.abs(work[:d])), d, 0.5)
        f[_C_SUM_ABS_DIFF] = abs_sum
        f[_C_DISTANCE] = distance
        f[_C_POSITIVE_TURNING] = peaks
        f[_C_NEGATIVE_TURNING] = troughs
    return out


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
    series = np.ascontiguousarray(observed.transpose(0, 2, 1), dtype=np.float64)
    series = series.reshape(n * variables, steps)
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
