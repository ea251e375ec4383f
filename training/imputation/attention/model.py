"""The attention imputer: fit on training windows, impute a batch or one window, save, load.

The network is :class:`~bedside.training.imputation.attention.core.AttentionNetwork`
(self-attention across the steps of a window, a residual over linear interpolation);
the training task is masked-value reconstruction
(:mod:`bedside.training.imputation.attention.data`). :meth:`AttentionImputer.fit`
holds out ``validation_fraction`` of the training windows, hides 10% of their observed
values once (the evaluation protocol's rate), and keeps the weights of the epoch with
the lowest mean absolute error on them. Training stops after ``epochs`` epochs,
``patience`` epochs without improvement, or ``max_minutes`` of wall-clock time,
whichever comes first, and always ends at the best checkpoint. When the clock will not
allow every epoch, the learning-rate schedule is shortened to the epochs that fit, so it
still anneals before the deadline.

Values beyond ``clip`` standard deviations (default 10) are clipped in the network's
inputs and training targets, so recording errors of the raw data (pH 735 for 7.35) do
not wreck training or the estimates next to them; observed values are returned
unchanged whatever their size.

Batches of fewer than :data:`ONE_THREAD_BELOW` windows (the engine's one window per
bed) run on one torch thread: one window is about 0.5 ms of arithmetic, and on a busy
machine the threads' hand-offs cost far more (a median of 56 ms, up to 380 ms, with 2
threads on 2 shared cores, against 0.5 ms on one).

Weights are saved as a torch ``state_dict`` (``weights.pt``) and read back with
``torch.load(..., weights_only=True)``: no pickle of code.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from bedside.training.imputation.attention.core import AttentionNetwork
from bedside.training.imputation.attention.data import (
    ReconstructionBatches,
    classical_channels,
    hide,
    training_inputs,
)
from bedside.training.imputation.base import Imputer

WEIGHTS = "weights.pt"
#: Share of observed validation values hidden to choose the best epoch (the protocol's rate).
VALIDATION_HIDE_RATE = 0.1
#: Windows per forward pass when imputing or validating (bounds memory, not results).
CHUNK = 512
#: Batches smaller than this are imputed on one torch thread (see the module doc).
ONE_THREAD_BELOW = 32


@dataclass(frozen=True)
class AttentionSettings:
    """Everything that defines an attention imputer before it sees data.

    The network's size (``d_model``, ``heads``, ``layers``, ``d_ffn``; no dropout: the
    fresh masks of every batch regularise), the training task (``hide_rate``,
    ``block_rate``, ``reconstruction_weight``, see
    :mod:`~bedside.training.imputation.attention.data`), the optimiser (AdamW, learning
    rate warmed up over the first 5% of the planned steps to ``learning_rate``, then
    cosine-decayed to zero) and the stopping rules (``epochs``, ``patience``,
    ``max_minutes``). ``seed`` fixes the split, the masks and the initial weights.
    """

    d_model: int = 64
    heads: int = 4
    layers: int = 1
    d_ffn: int = 128
    clip: float = 10.0
    hide_rate: float = 0.2
    block_rate: float = 0.05
    reconstruction_weight: float = 0.0
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    epochs: int = 80
    patience: int = 15
    validation_fraction: float = 0.1
    max_minutes: float = 10.0
    seed: int = 0
    verbose: bool = True


class AttentionImputer(Imputer):
    """Self-attention imputer trained by masked-value reconstruction (SAITS-like).

    Keyword arguments are the fields of :class:`AttentionSettings`. The same data and
    seed give the same imputer on the same machine and thread count, unless
    ``max_minutes`` cuts training short. Set ``torch.set_num_threads`` before ``fit`` or
    ``impute`` to choose how many cores it uses; batches of fewer than
    :data:`ONE_THREAD_BELOW` windows always use one.
    """

    kind = "attention"

    def __init__(self, **settings: Any) -> None:
        self.settings = AttentionSettings(**settings)
        self.network: AttentionNetwork | None = None
        self.shape: tuple[int, int] | None = None  # (steps, variables) of the windows
        self.training: dict[str, Any] = {}

    @property
    def parameter_count(self) -> int:
        """Number of trained weights."""
        if self.network is None:
            return 0
        return sum(p.numel() for p in self.network.parameters())

    def _build(self, steps: int, variables: int) -> AttentionNetwork:
        s = self.settings
        self.shape = (steps, variables)
        return AttentionNetwork(
            steps,
            variables,
            d_model=s.d_model,
            heads=s.heads,
            layers=s.layers,
            d_ffn=s.d_ffn,
            reconstruction_weight=s.reconstruction_weight,
        )

    def fit(self, windows: np.ndarray) -> Self:
        if windows.ndim != 3 or len(windows) < 2:
            raise ValueError(f"fit needs a batch of at least 2 windows, got shape {windows.shape}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed)
            self._fit(windows.astype(np.float32, copy=False))
        return self

    def _fit(self, windows: np.ndarray) -> None:
        s = self.settings
        started = time.monotonic()
        deadline = started + 60 * s.max_minutes
        order = np.random.default_rng(s.seed).permutation(len(windows))
        held_out = min(max(1, round(s.validation_fraction * len(windows))), len(windows) - 1)
        validation = _validation_inputs(windows[order[:held_out]], s)
        batches = ReconstructionBatches(
            windows[order[held_out:]],
            clip=s.clip,
            batch_size=s.batch_size,
            hide_rate=s.hide_rate,
            block_rate=s.block_rate,
            seed=s.seed,
        )
        network = self._build(windows.shape[1], windows.shape[2])
        optimiser = torch.optim.AdamW(
            network.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay
        )

        best_score, best_epoch, best_state = float("inf"), 0, copy.deepcopy(network.state_dict())
        planned, step, stopped = s.epochs, 0, "epochs"
        for epoch in range(1, s.epochs + 1):
            network.train()
            losses = []
            for batch in batches:
                factor = _warmup_cosine(step / (planned * len(batches)))
                for group in optimiser.param_groups:
                    group["lr"] = s.learning_rate * factor
                loss = network(batch)["loss"]
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
                step += 1
                if time.monotonic() > deadline:
                    break
            score = _validation_error(network, validation)
            improved = score < best_score
            if improved:
                best_score, best_epoch, best_state = (
                    score,
                    epoch,
                    copy.deepcopy(network.state_dict()),
                )
            now = time.monotonic()
            if s.verbose:
                print(
                    f"epoch {epoch:3d}/{planned}  loss {np.mean(losses):.4f}  "
                    f"validation MAE {score:.4f}{' *' if improved else '  '}  "
                    f"{now - started:4.0f} s",
                    flush=True,
                )
            # Re-plan every epoch (the machine's load changes): as many epochs as fit.
            fits = epoch + int((deadline - now) / ((now - started) / epoch))
            planned = min(s.epochs, max(epoch + 1, fits))
            if now > deadline or epoch >= planned:
                stopped = "max_minutes" if now > deadline or planned < s.epochs else "epochs"
                break
            if epoch - best_epoch >= s.patience:
                stopped = "patience"
                break

        network.load_state_dict(best_state)
        network.eval()
        self.network = network
        self.training = {
            "epochs": epoch,
            "best_epoch": best_epoch,
            "validation_mae": best_score,
            "stopped_by": stopped,
            "seconds": round(time.monotonic() - started, 1),
            "windows": len(windows) - held_out,
            "validation_windows": held_out,
        }

    def _impute(self, windows: np.ndarray) -> np.ndarray:
        if self.network is None:
            raise RuntimeError("the attention imputer must be fitted or loaded before imputing")
        if windows.shape[1:] != self.shape:
            raise ValueError(f"windows of shape {windows.shape[1:]} given, {self.shape} expected")
        chunks = []
        threads = _one_thread if len(windows) < ONE_THREAD_BELOW else nullcontext()
        with threads, torch.inference_mode():
            for first in range(0, len(windows), CHUNK):
                channels = classical_channels(windows[first : first + CHUNK], self.settings.clip)
                outputs = self.network({"channels": torch.from_numpy(channels)})
                chunks.append(outputs["imputation"].numpy())
        if not chunks:
            return windows.copy()
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def config(self) -> dict[str, Any]:
        steps, variables = self.shape if self.shape else (None, None)
        return {
            **asdict(self.settings),
            "steps": steps,
            "variables": variables,
            "training": self.training,
        }

    def _save_weights(self, directory: Path) -> None:
        if self.network is None:
            raise RuntimeError("only a fitted attention imputer can be saved")
        torch.save(self.network.state_dict(), directory / WEIGHTS)

    @classmethod
    def _load(cls, config: dict[str, Any], directory: Path) -> Self:
        settings = dict(config)
        steps, variables = settings.pop("steps"), settings.pop("variables")
        training = settings.pop("training", {})
        imputer = cls(**settings)
        network = imputer._build(steps, variables)
        network.load_state_dict(torch.load(directory / WEIGHTS, weights_only=True))
        network.eval()
        imputer.network = network
        imputer.training = training
        return imputer


class _OneThread:
    """Context: torch runs on one thread meanwhile, then gets its thread count back.

    ``torch.set_num_threads`` is process-wide, so concurrent callers share one switch:
    the first to enter sets it, the last to leave restores it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._before = 1

    def __enter__(self) -> None:
        with self._lock:
            if self._inside == 0:
                self._before = torch.get_num_threads()
                torch.set_num_threads(1)
            self._inside += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0:
                torch.set_num_threads(self._before)


_one_thread = _OneThread()


def _warmup_cosine(progress: float, warmup: float = 0.05) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to zero at ``progress`` 1."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def _validation_inputs(windows: np.ndarray, settings: AttentionSettings) -> dict[str, torch.Tensor]:
    """The held-out windows with 10% of their observed values hidden, once for all epochs."""
    rng = np.random.default_rng(settings.seed + 1)
    hidden = hide(~np.isnan(windows), VALIDATION_HIDE_RATE, block_rate=0.0, rng=rng)
    return training_inputs(windows, hidden, settings.clip)


def _validation_error(network: AttentionNetwork, validation: dict[str, torch.Tensor]) -> float:
    """Mean absolute error on the hidden validation values (standardised, clipped)."""
    network.eval()
    total, count = 0.0, 0.0
    with torch.inference_mode():
        for first in range(0, len(validation["target"]), CHUNK):
            chunk = {name: tensor[first : first + CHUNK] for name, tensor in validation.items()}
            estimate = network(chunk)["estimate"]
            total += float((torch.abs(estimate - chunk["target"]) * chunk["hidden"]).sum())
            count += float(chunk["hidden"].sum())
    return total / max(count, 1.0)
