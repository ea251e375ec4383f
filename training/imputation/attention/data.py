"""What the network sees of a window, and the masking that makes the training task.

:func:`classical_channels` turns standardised windows (NaN = missing) into
:data:`CHANNELS` numbers per step and variable, with vectorised numpy (cheaper than
torch for one window in the engine):

====  =========  ==============================================================
 ch   name       meaning
====  =========  ==============================================================
 0    value      the observed value, clipped to +-``clip``; 0 where missing
 1    mask       1 where observed
 2    linear     linear interpolation between the surrounding observations, the
                 nearest observation outside them, 0 (the training mean) if the
                 variable is never seen in the window
 3    carried    last observed value (the next one before the first observation)
 4    next       next observed value (the last one after the last observation)
 5    since      steps since the last observation / steps (1 if none)
 6    until      steps until the next observation / steps (1 if none)
 7    mean       mean of the variable's observations in the window (0 if none)
====  =========  ==============================================================

Values beyond ``clip`` standard deviations are clipped first: the raw data has
recording errors (pH 735 for 7.35, a WBC of 12,500) that would otherwise dominate the
inputs and the estimates next to them.

Training is masked-value reconstruction: every batch hides a fresh random share of the
*observed* values, which the network must estimate from the rest. Two kinds of hiding
are mixed, so both are learnt:

* scattered values (MCAR): each observed value is hidden with probability ``hide_rate``;
* sensor dropout (blocks): for each window and variable, with probability
  ``block_rate``, a run of 1-6 consecutive steps starting anywhere is hidden (as
  :func:`bedside.training.imputation.protocol.block_mask`).

>>> window = np.array([[[np.nan], [1.0], [np.nan], [3.0], [np.nan]]], dtype=np.float32)
>>> classical_channels(window, clip=10.0)[0, :, 0, LINEAR]
array([1., 1., 2., 3., 3.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

CHANNELS = 8
VALUE, MASK, LINEAR = 0, 1, 2
#: Longest run of steps one block hides during training (sensor dropout of 1-6 h).
MAX_BLOCK_STEPS = 6


def classical_channels(windows: np.ndarray, clip: float) -> np.ndarray:
    """The channels of the module doc: (n, steps, variables, CHANNELS) float32."""
    n, steps, variables = windows.shape
    observed = ~np.isnan(windows)
    values = np.where(observed, np.clip(windows, -clip, clip), 0).astype(np.float32)
    step = np.arange(steps)[:, None]
    last = np.maximum.accumulate(np.where(observed, step, -1), axis=1)
    following = np.minimum.accumulate(np.where(observed, step, steps)[:, ::-1], axis=1)[:, ::-1]
    has_last, has_next = last >= 0, following < steps
    last_value = np.take_along_axis(values, np.maximum(last, 0), axis=1)
    next_value = np.take_along_axis(values, np.minimum(following, steps - 1), axis=1)
    carried = np.where(has_last, last_value, next_value)
    backward = np.where(has_next, next_value, carried)
    weight = (step - last) / np.maximum(following - last, 1)
    linear = np.where(has_last & has_next, last_value + weight * (next_value - last_value), carried)
    mean = values.sum(axis=1, keepdims=True) / np.maximum(observed.sum(axis=1, keepdims=True), 1)
    channels = np.empty((n, steps, variables, CHANNELS), dtype=np.float32)
    channels[..., VALUE] = values
    channels[..., MASK] = observed
    channels[..., LINEAR] = linear
    channels[..., 3] = carried
    channels[..., 4] = backward
    channels[..., 5] = np.where(has_last, step - last, steps) / steps
    channels[..., 6] = np.where(has_next, following - step, steps) / steps
    channels[..., 7] = mean
    return channels


def hide(
    observed: np.ndarray, hide_rate: float, block_rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Which observed entries to hide for one training batch (see the module doc)."""
    n, steps, variables = observed.shape
    scattered = rng.random(observed.shape) < hide_rate
    chosen = rng.random((n, 1, variables)) < block_rate
    length = rng.integers(1, MAX_BLOCK_STEPS + 1, (n, 1, variables))
    start = rng.integers(0, steps, (n, 1, variables))
    step = np.arange(steps)[:, None]
    blocks = chosen & (step >= start) & (step < start + length)
    return (scattered | blocks) & observed


def training_inputs(
    windows: np.ndarray, hidden: np.ndarray, clip: float
) -> dict[str, torch.Tensor]:
    """Network inputs with ``hidden`` values removed, and those values as the target."""
    target = np.where(np.isnan(windows), 0, np.clip(windows, -clip, clip))
    return {
        "channels": torch.from_numpy(classical_channels(np.where(hidden, np.nan, windows), clip)),
        "target": torch.from_numpy(target.astype(np.float32)),
        "hidden": torch.from_numpy(hidden.astype(np.float32)),
    }


class ReconstructionBatches:
    """Shuffled training batches with freshly hidden values, one pass per iteration.

    >>> windows = np.full((5, 4, 2), np.nan, dtype=np.float32)
    >>> windows[:, ::2] = 1.0
    >>> batches = ReconstructionBatches(windows, clip=10.0, batch_size=2, hide_rate=0.5,
    ...                                 block_rate=0.0, seed=0)
    >>> [batch["channels"].shape for batch in batches]  # doctest: +NORMALIZE_WHITESPACE
    [torch.Size([2, 4, 2, 8]), torch.Size([2, 4, 2, 8]), torch.Size([1, 4, 2, 8])]
    >>> batch = next(iter(batches))
    >>> float(batch["hidden"][:, 1::2].sum())  # steps 1 and 3 were never observed
    0.0
    """

    def __init__(
        self,
        windows: np.ndarray,
        clip: float,
        batch_size: int,
        hide_rate: float,
        block_rate: float,
        seed: int,
    ) -> None:
        self.windows = windows
        self.observed = ~np.isnan(windows)
        self.clip = clip
        self.batch_size = batch_size
        self.hide_rate = hide_rate
        self.block_rate = block_rate
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return -(-len(self.windows) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = self.rng.permutation(len(self.windows))
        for first in range(0, len(order), self.batch_size):
            rows = order[first : first + self.batch_size]
            hidden = hide(self.observed[rows], self.hide_rate, self.block_rate, self.rng)
            yield training_inputs(self.windows[rows], hidden, self.clip)
