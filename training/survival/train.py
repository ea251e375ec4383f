"""One training loop for the survival nets, readable in one screen (skorch's shape).

``fit_net`` runs epochs; each epoch is ``run_single_epoch(train_step)`` over shuffled
training batches then ``run_single_epoch(valid_step)`` over the validation stays; then
the callbacks see the epoch's record: :class:`Scoring` adds the validation AUROC,
:class:`Checkpoint` keeps the weights of the best epoch so far, :class:`EarlyStopping`
stops after ``patience`` epochs without improvement, :class:`TimeBudget` stops when the
budget is spent. Training always ends on the best checkpoint.

The optimiser is AdamW; the sequence encoder may learn at its own rate
(``encoder_learning_rate``; :data:`TRAIN_DEFAULTS` holds each architecture's settings).

Loss = mortality log-loss + ``survival_weight`` x discrete-time survival likelihood
(:func:`bedside.training.survival.nets.survival_loss`). Class imbalance: deaths are
weighted ``pos_weight`` times in the mortality log-loss (more gradient from the rare
class); the log-odds the net learns are then shifted by ``log(pos_weight)``, which the
exported model subtracts (:attr:`TrainConfig.logit_shift`). Distillation: with
``distil`` = w > 0, a training stay's mortality target is (1 - w) x its outcome + w x a
teacher's risk for it (the validation stays keep their outcomes), so the net also learns
what the teacher read from stays like it; ``distil_hazards`` does the same for the
interval hazards (the teacher's cross-fitted hazards as soft targets). Self-supervision
(off by default): with ``pretrain_epochs`` the encoder first learns to forecast the
next observed values of the training stays (:class:`Forecaster`, no outcome read), and
with ``forecast_weight`` that task stays in the loss; on PhysioNet 2012 set A it gained
nothing beyond the folds' noise (BENCHMARKS.md). Seeds: ``torch`` and the batch order
are seeded from ``seed``, so the same data, seed and thread count give the same net.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from bedside.training.survival.nets import SurvivalNet, survival_loss

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 1e-3
    #: Learning rate of the sequence encoder (None: ``learning_rate``).
    encoder_learning_rate: float | None = None
    weight_decay: float = 1e-4
    batch_size: int = 64
    max_epochs: int = 60
    patience: int = 8
    pos_weight: float = 1.0
    survival_weight: float = 0.5
    #: Weight of the teacher's risk in the mortality target of the training stays
    #: (knowledge distillation; 0: the outcome alone). See ``fit.Workspace.teacher``.
    distil: float = 0.0
    #: Weight of the teacher's hazards in the interval targets of the training stays
    #: (the survival likelihood's), as ``distil`` is for the mortality target. Off by
    #: default: in 5-fold cross-validation on PhysioNet 2012 set A, ``deep-ensemble``
    #: with both parts at 1 gained survival (C-index 0.825 -> 0.829, integrated Brier
    #: 0.0784 -> 0.0754) and lost mortality (AUROC 0.861 -> 0.859, ECE 0.006 -> 0.010).
    distil_hazards: float = 0.0
    #: Self-supervised forecasting (:class:`Forecaster`): ``pretrain_epochs`` epochs of
    #: it alone before the supervised ones, and ``forecast_weight`` x its loss added to
    #: the supervised loss; ``forecast_steps`` steps past what a state sees.
    pretrain_epochs: int = 0
    forecast_weight: float = 0.0
    forecast_steps: int = 1
    max_seconds: float = 600.0
    seed: int = 2026

    @property
    def logit_shift(self) -> float:
        return math.log(self.pos_weight)


#: Training settings of an architecture that differ from :class:`TrainConfig`'s.
#: ``lstm-tsfel``: with one learning rate the LSTM overfits (validation AUROC at its
#: best after 1-5 epochs) before the head has learnt the encoded TSFEL features, so
#: the head learns 3 times faster than the LSTM. It is distilled from tsfel-gbm
#: (``distil`` 1: its mortality target is the risk of a tsfel-gbm cross-fitted inside
#: its training stays; its hazards still learn the outcomes): on PhysioNet 2012 set A
#: one member per fold scored an out-of-fold AUROC of 0.860 (4 seeds, 0.859-0.861)
#: against 0.851 undistilled (0.849-0.855), 0.850 at ``distil`` 0.5 and 0.856 at 0.8;
#: in 5-fold cross-validation 0.862 against 0.860, AUPRC 0.517 against 0.503.
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "lstm-tsfel": {"learning_rate": 3e-3, "encoder_learning_rate": 1e-3, "distil": 1.0},
}


@dataclass
class TrainData:
    """Tensors of a set of stays; ``mortality`` is 0/1, ``at_risk`` and ``died`` (n, K);
    ``tsfel`` the encoded TSFEL features of the nets that read them."""

    sequence: torch.Tensor
    statics: torch.Tensor
    mortality: torch.Tensor
    at_risk: torch.Tensor
    died: torch.Tensor
    tsfel: torch.Tensor | None = None

    @classmethod
    def of(
        cls,
        sequence: np.ndarray,
        statics: np.ndarray,
        mortality: np.ndarray,
        at_risk: np.ndarray,
        died: np.ndarray,
        tsfel: torch.Tensor | None = None,
    ) -> TrainData:
        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        return cls(
            tensor(sequence),
            tensor(statics),
            tensor(mortality),
            tensor(at_risk),
            tensor(died),
            tsfel,
        )

    def __len__(self) -> int:
        return int(self.sequence.shape[0])

    def batches(self, size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        order = (
            torch.randperm(len(self), generator=generator)
            if generator is not None
            else torch.arange(len(self))
        )
        names = [name for name in self.__dataclass_fields__ if getattr(self, name) is not None]
        for start in range(0, len(self), size):
            rows = order[start : start + size]
            yield {name: getattr(self, name)[rows] for name in names}


def batch_loss(
    net: SurvivalNet,
    batch: Batch,
    pos_weight: float,
    survival_weight: float,
    forecaster: Forecaster | None = None,
    forecast_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    forecasting = forecaster is not None and forecast_weight > 0
    outputs = net(batch["sequence"], batch["statics"], batch.get("tsfel"), forecasting)
    mortality = nn.functional.binary_cross_entropy_with_logits(
        outputs["mortality"], batch["mortality"], pos_weight=torch.tensor(pos_weight)
    )
    survival = survival_loss(outputs["hazards"], batch["at_risk"], batch["died"])
    loss = mortality + survival_weight * survival
    if forecasting:
        loss = loss + forecast_weight * forecaster.loss(outputs.pop("states"), batch["sequence"])
    return loss, outputs


class Forecaster(nn.Module):
    """A self-supervised task for the encoder: from its state after step t, forecast the
    standardised values observed at step t + ``lookahead`` + ``ahead`` (``lookahead``:
    the steps that state already sees). The loss is the mean squared error over the
    observed values only. Training-time only: the exported net does not hold it.
    """

    def __init__(self, net: SurvivalNet, variables: int, ahead: int) -> None:
        super().__init__()
        if ahead < 1:
            raise ValueError("forecast_steps must be at least 1")
        self.shift = int(net.encoder.lookahead) + ahead
        self.linear = nn.Linear(net.encoder.step_size, variables)

    def loss(self, states: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
        d = self.linear.out_features
        if self.shift >= sequence.shape[1]:
            raise ValueError(f"cannot forecast {self.shift} steps ahead in {sequence.shape[1]}")
        predicted = self.linear(states[:, : -self.shift])
        values = sequence[:, self.shift :, :d]
        mask = sequence[:, self.shift :, d : 2 * d]
        return ((predicted - values) ** 2 * mask).sum() / mask.sum().clamp(min=1.0)


# --- callbacks --------------------------------------------------------------------------


class Scoring:
    """Validation AUROC of the mortality output (needs both outcomes in validation)."""

    def on_epoch_end(self, net: nn.Module, record: dict[str, Any]) -> None:
        from sklearn.metrics import roc_auc_score

        y, score = record.pop("_valid_y"), record.pop("_valid_score")
        record["valid_auroc"] = float(roc_auc_score(y, score)) if 0 < y.sum() < y.size else 0.5


@dataclass
class Checkpoint:
    """Keeps the weights of the epoch with the best ``monitor`` (higher is better)."""

    monitor: str = "valid_auroc"
    best: float = -math.inf
    best_epoch: int = -1
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def on_epoch_end(self, net: nn.Module, record: dict[str, Any]) -> None:
        if record[self.monitor] > self.best:
            self.best, self.best_epoch = record[self.monitor], record["epoch"]
            self.state = copy.deepcopy(net.state_dict())
            record["best"] = True


@dataclass
class EarlyStopping:
    checkpoint: Checkpoint
    patience: int

    def on_epoch_end(self, net: nn.Module, record: dict[str, Any]) -> None:
        if record["epoch"] - self.checkpoint.best_epoch >= self.patience:
            record["stop"] = "no improvement"


@dataclass
class TimeBudget:
    seconds: float
    started: float = field(default_factory=time.monotonic)

    def on_epoch_end(self, net: nn.Module, record: dict[str, Any]) -> None:
        if time.monotonic() - self.started > self.seconds:
            record["stop"] = "time budget"


# --- the loop ---------------------------------------------------------------------------


def run_single_epoch(
    net: SurvivalNet, batches: Iterator[Batch], step_fn: Callable[[Batch], float]
) -> float:
    """Mean of ``step_fn`` over the batches, weighted by batch size."""
    total, count = 0.0, 0
    for batch in batches:
        total += step_fn(batch) * len(batch["mortality"])
        count += len(batch["mortality"])
    return total / max(count, 1)


def pretrain(
    net: SurvivalNet,
    forecaster: Forecaster,
    train: TrainData,
    config: TrainConfig,
    generator: torch.Generator,
    budget: TimeBudget,
) -> dict[str, Any]:
    """``config.pretrain_epochs`` epochs of the encoder on the forecasting task alone
    (no outcome read), within the first half of the time budget; their mean losses."""
    parameters = [*net.encoder.parameters(), *forecaster.parameters()]
    optimiser = torch.optim.AdamW(
        parameters,
        lr=config.encoder_learning_rate or config.learning_rate,
        weight_decay=config.weight_decay,
    )

    def step(batch: Batch) -> float:
        loss = forecaster.loss(net.encoder.steps(batch["sequence"]), batch["sequence"])
        optimiser.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        return loss.item()

    losses: list[float] = []
    net.train()
    for _ in range(config.pretrain_epochs):
        if time.monotonic() - budget.started > budget.seconds / 2:
            break
        losses.append(run_single_epoch(net, train.batches(config.batch_size, generator), step))
    return {
        "epochs": len(losses),
        "losses": [round(v, 4) for v in losses],
        "seconds": round(time.monotonic() - budget.started, 2),
    }


def fit_net(
    net: SurvivalNet, train: TrainData, valid: TrainData, config: TrainConfig
) -> list[dict[str, Any]]:
    """Train ``net`` in place; return one record per epoch. Ends at the best epoch."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    budget = TimeBudget(config.max_seconds)
    forecaster = None
    pretraining: dict[str, Any] = {}
    if config.pretrain_epochs > 0 or config.forecast_weight > 0:
        forecaster = Forecaster(net, train.sequence.shape[-1] // 3, config.forecast_steps)
        pretraining = pretrain(net, forecaster, train, config, generator, budget)
    rest = [p for name, p in net.named_parameters() if not name.startswith("encoder.")]
    if forecaster is not None:
        rest += list(forecaster.parameters())
    optimiser = torch.optim.AdamW(
        [
            {
                "params": net.encoder.parameters(),
                "lr": config.encoder_learning_rate or config.learning_rate,
            },
            {"params": rest},
        ],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    checkpoint = Checkpoint()
    callbacks = [
        Scoring(),
        checkpoint,
        EarlyStopping(checkpoint, config.patience),
        budget,
    ]
    scores: list[torch.Tensor] = []

    def train_step(batch: Batch) -> float:
        loss, _ = batch_loss(
            net,
            batch,
            config.pos_weight,
            config.survival_weight,
            forecaster,
            config.forecast_weight,
        )
        optimiser.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimiser.step()
        return loss.item()

    @torch.no_grad()
    def valid_step(batch: Batch) -> float:
        loss, outputs = batch_loss(net, batch, 1.0, config.survival_weight)
        scores.append(outputs["mortality"])
        return loss.item()

    history: list[dict[str, Any]] = []
    for epoch in range(config.max_epochs):
        started = time.monotonic()
        net.train()
        train_loss = run_single_epoch(net, train.batches(config.batch_size, generator), train_step)
        net.eval()
        scores.clear()
        valid_loss = run_single_epoch(net, valid.batches(1024), valid_step)
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": train_loss,
            "valid_loss": valid_loss,
            "_valid_y": valid.mortality.numpy(),
            "_valid_score": torch.cat(scores).numpy(),
        }
        if epoch == 0 and pretraining:
            record["pretraining"] = pretraining
        for callback in callbacks:
            callback.on_epoch_end(net, record)
        record["seconds"] = time.monotonic() - started
        history.append(record)
        if "stop" in record:
            break
    net.load_state_dict(checkpoint.state)
    net.eval()
    return history
