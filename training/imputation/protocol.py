"""The imputation protocol: which values are hidden and how errors are counted.

It follows ``../shared/BASELINES.md`` so figures can be put next to the peers':
windows of :data:`bedside.training.windows.PHYSIONET_2012` (48 hourly steps x 35
variables, raw values as recorded), standardised with the training set's
per-variable mean and std (ddof 0); a test mask hides values of the *observed*
test entries; errors are computed on the hidden entries only, pooled.

* MCAR (:func:`mcar_mask`): ``rate`` of the observed entries, drawn without
  replacement with ``numpy.random.default_rng(seed)`` over the flat C-order indices
  of the observed entries (exactly the baseline's code).
* Blocks (:func:`block_mask`): sensor dropout; for each stay and variable, with
  probability ``rate``, one run of 1-6 consecutive hours (uniform) starting at a
  uniform step hides every observed value in it.

>>> x = np.array([[[1.0, np.nan], [3.0, 4.0]]], dtype=np.float32)
>>> mcar_mask(x, rate=0.5, seed=0).sum()
np.int64(2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def mcar_mask(values: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Boolean mask of the entries to hide: ``rate`` of the observed ones, at random."""
    if not 0 < rate < 1:
        raise ValueError("rate must be between 0 and 1")
    observed = np.flatnonzero(~np.isnan(values))
    size = round(rate * observed.size)
    hide = np.sort(np.random.default_rng(seed).choice(observed, size=size, replace=False))
    mask = np.zeros(values.size, dtype=bool)
    mask[hide] = True
    return mask.reshape(values.shape)


def block_mask(
    values: np.ndarray, rate: float, seed: int, min_steps: int = 1, max_steps: int = 6
) -> np.ndarray:
    """Boolean mask hiding runs of ``min_steps``..``max_steps`` steps (sensor dropout)."""
    if not 0 < rate <= 1:
        raise ValueError("rate must be in (0, 1]")
    n, steps, variables = values.shape
    rng = np.random.default_rng(seed)
    chosen = rng.random((n, variables)) < rate
    lengths = rng.integers(min_steps, max_steps + 1, size=(n, variables))
    starts = rng.integers(0, steps, size=(n, variables))
    step = np.arange(steps)[None, :, None]
    inside = (step >= starts[:, None, :]) & (step < (starts + lengths)[:, None, :])
    return inside & chosen[:, None, :] & ~np.isnan(values)


@dataclass(frozen=True)
class Errors:
    mae: float
    rmse: float
    mre: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"mae": self.mae, "rmse": self.rmse, "mre": self.mre, "n": self.n}


def errors(truth: np.ndarray, estimate: np.ndarray, hidden: np.ndarray) -> Errors:
    """MAE, RMSE and MRE (sum |err| / sum |truth|) over the hidden entries, pooled."""
    t = truth[hidden].astype(np.float64)
    e = estimate[hidden].astype(np.float64)
    if t.size == 0:
        return Errors(float("nan"), float("nan"), float("nan"), 0)
    diff = e - t
    return Errors(
        mae=float(np.abs(diff).mean()),
        rmse=float(np.sqrt((diff**2).mean())),
        mre=float(np.abs(diff).sum() / np.abs(t).sum()),
        n=int(t.size),
    )


def errors_per_variable(
    truth: np.ndarray, estimate: np.ndarray, hidden: np.ndarray
) -> list[Errors]:
    return [errors(truth[..., v], estimate[..., v], hidden[..., v]) for v in range(truth.shape[-1])]
