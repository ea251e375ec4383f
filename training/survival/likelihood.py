"""Discrete-time survival: the interval grid, who is at risk where, and the likelihood.

Time runs in hours from the prediction time (see :mod:`bedside.training.cohorts`).
The grid cuts it into intervals ``(0, 24], (24, 48], ... (336, 720]``; a model gives
the *hazard* ``h_j`` of each, the probability of dying in interval ``j`` having
survived the ones before, so that the survival curve is

    S(end_j) = (1 - h_1) (1 - h_2) ... (1 - h_j)

and the risk at horizon ``end_j`` is ``1 - S(end_j)``: non-increasing and in [0, 1]
whatever the hazards.

Who contributes to interval ``j`` (the usual discrete-time rule, Singer & Willett):

* a stay that died in it (``start_j < time_h <= end_j``; a death at time 0 falls in
  the first interval) contributes ``log h_j``;
* a stay still followed at its end (``time_h >= end_j``) contributes ``log(1 - h_j)``;
* a stay censored inside it contributes nothing for it (nor for later intervals): we
  do not know whether it survived the interval.

>>> at_risk, died = interval_targets(np.array([30.0, 30.0, 0.0]), np.array([1, 0, 1]),
...                                  (24.0, 48.0, 72.0))
>>> at_risk.astype(int).tolist(), died.astype(int).tolist()
([[1, 1, 0], [1, 0, 0], [1, 0, 0]], [[0, 1, 0], [0, 0, 0], [1, 0, 0]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Ends of the hazard intervals, hours after the prediction time: up to 30 days.
INTERVAL_ENDS_H: tuple[float, ...] = (24.0, 48.0, 72.0, 120.0, 168.0, 336.0, 720.0)


def check_grid(ends_h: Sequence[float], horizons_h: Sequence[float]) -> None:
    """The grid must increase and contain every horizon (risks are read off it)."""
    ends = list(ends_h)
    if not ends or ends != sorted(set(ends)) or ends[0] <= 0:
        raise ValueError(f"interval ends must be positive and increasing, got {ends}")
    missing = [h for h in horizons_h if h not in ends]
    if missing:
        raise ValueError(f"horizons {missing} are not interval ends {ends}")


def interval_targets(
    time_h: np.ndarray, event: np.ndarray, ends_h: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """``at_risk`` (n, K): the stay contributes to interval j; ``died`` (n, K): it died in j.

    A NaN time (follow-up unknown) contributes to no interval.
    """
    ends = np.asarray(ends_h, dtype=np.float64)[None, :]
    starts = np.concatenate([[-np.inf], ends[0, :-1]])[None, :]
    time = np.asarray(time_h, dtype=np.float64)[:, None]
    dead = np.asarray(event).astype(bool)[:, None]
    known = np.isfinite(time)
    died = known & dead & (time > starts) & (time <= ends)
    survived = known & (time >= ends) & ~(dead & (time <= ends))
    return died | survived, died


def survival_curve(hazards: np.ndarray) -> np.ndarray:
    """S at the end of each interval from hazards (n, K): cumulative product of 1 - h."""
    return np.cumprod(1.0 - np.clip(hazards, 0.0, 1.0), axis=-1)


def negative_log_likelihood(
    hazards: np.ndarray, at_risk: np.ndarray, died: np.ndarray
) -> np.ndarray:
    """Per-stay discrete-time negative log-likelihood (numpy reference of the torch loss)."""
    h = np.clip(hazards, 1e-12, 1 - 1e-12)
    terms = np.where(died, np.log(h), np.log1p(-h))
    return -(terms * at_risk).sum(axis=-1)
