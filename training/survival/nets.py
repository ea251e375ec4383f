"""The torch survival nets: a sequence encoder and the shared survival head.

Every net reads the sequence ``(batch, steps, 3 * variables)`` of
:meth:`bedside.training.survival.inputs.Inputs.sequence` (imputed values, mask,
time since last observation) and the static covariates ``(batch, statics)``, and
returns a dict with

* ``"mortality"``: the log-odds of in-hospital death, ``(batch,)``;
* ``"hazards"``: the log-odds of the hazard of each survival interval, ``(batch, K)``.

Encoders:

* ``lstm``: an LSTM over the steps; the summary is its last hidden state next to the
  mean and max of its outputs over time;
* ``cnn``: residual blocks of dilated 1-D temporal convolutions (receptive field 1 + 2
  (k - 1) (1 + 2 + ... + 2^(L-1)) steps), then mean and max over time;
* ``cnn-lstm``: one block of temporal convolutions (local patterns, hours) feeding an
  LSTM (the course over the window);
* ``lstm-tsfel``: the ``lstm`` with, next to its summary, the stay's TSFEL features
  (:func:`bedside.training.survival.features.window_features`, the ``tsfel-*``
  models' inputs) in a piecewise-linear encoding on their training quantiles
  (:class:`QuantileEncoding`). The features are what gives gradient boosting its
  lead over the sequence nets; standardised, a net gets no more from them than
  logistic regression does, while the encoding lets one linear layer bend each
  feature's effect, as a tree's splits do (5-fold cross-validation on PhysioNet 2012
  set A: AUROC 0.860 against lstm 0.845 and tsfel-gbm 0.863; distilled from tsfel-gbm,
  its default since, 0.862; see BENCHMARKS.md).

The :class:`SurvivalHead` is shared: the summary and the statics go through one
hidden layer to the mortality logit and the interval hazards, so both tasks shape the
same representation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from bedside.training.survival.features import FEATURE_SETS, piecewise_linear, quantile_edges

ARCHS = ("lstm", "cnn", "cnn-lstm", "lstm-tsfel")
#: Parameters of the nets themselves (the others are the training loop's).
NET_KEYS = frozenset(
    {"hidden", "layers", "dropout", "head", "channels", "kernel", "blocks", "summaries"}
    | {"tsfel", "bins"}
)

DEFAULTS: dict[str, dict[str, Any]] = {
    "lstm": {"hidden": 64, "layers": 1, "dropout": 0.3, "head": 64, "summaries": True},
    "cnn": {
        "channels": 64,
        "kernel": 3,
        "blocks": 4,
        "dropout": 0.3,
        "head": 64,
        "summaries": True,
    },
    "cnn-lstm": {
        "channels": 64,
        "kernel": 3,
        "hidden": 64,
        "dropout": 0.3,
        "head": 64,
        "summaries": True,
    },
}
#: ``tsfel``: the feature set (:data:`~bedside.training.survival.features.FEATURE_SETS`)
#: the net reads next to the sequence; ``bins``: quantile bins of each feature.
DEFAULTS["lstm-tsfel"] = DEFAULTS["lstm"] | {"tsfel": "compact", "bins": 8}


class SurvivalHead(nn.Module):
    """Summary + statics -> mortality logit and interval hazard logits."""

    def __init__(self, summary: int, statics: int, hidden: int, intervals: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(summary + statics, hidden), nn.ReLU(), nn.Dropout(dropout)
        )
        self.mortality = nn.Linear(hidden, 1)
        self.hazards = nn.Linear(hidden, intervals)

    def forward(self, summary: torch.Tensor, statics: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.body(torch.cat([summary, statics], dim=-1))
        return {"mortality": self.mortality(shared).squeeze(-1), "hazards": self.hazards(shared)}


def _pool(outputs: torch.Tensor) -> torch.Tensor:
    """Mean and max over time of (batch, steps, features)."""
    return torch.cat([outputs.mean(dim=1), outputs.amax(dim=1)], dim=-1)


class SequenceEncoder(nn.Module):
    """An encoder of the window: :meth:`steps` gives its state after each step, the
    summary is the last state next to the mean and max of the states over time."""

    def steps(self, sequence: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def summarise(self, states: torch.Tensor) -> torch.Tensor:
        return torch.cat([states[:, -1], _pool(states)], dim=-1)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        return self.summarise(self.steps(sequence))


class LstmEncoder(SequenceEncoder):
    def __init__(self, features: int, hidden: int, layers: int, dropout: float, **_: Any):
        super().__init__()
        self.lstm = nn.LSTM(
            features,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.size = 3 * hidden
        self.step_size = hidden
        self.lookahead = 0

    def steps(self, sequence: torch.Tensor) -> torch.Tensor:
        """The top layer's state after each step, (batch, steps, hidden): causal (its
        last one is the last hidden state)."""
        return self.lstm(sequence)[0]


class ConvBlock(nn.Module):
    """Two dilated convolutions with a residual connection ('same' length)."""

    def __init__(self, inputs: int, channels: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        padding = dilation * (kernel - 1) // 2
        self.layers = nn.Sequential(
            nn.Conv1d(inputs, channels, kernel, padding=padding, dilation=dilation),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv1d(channels, channels, kernel, padding=padding, dilation=dilation),
            nn.ReLU(),
        )
        self.skip = nn.Conv1d(inputs, channels, 1) if inputs != channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, channels, steps)
        return self.layers(x) + self.skip(x)


class CnnEncoder(SequenceEncoder):
    def __init__(
        self, features: int, channels: int, kernel: int, blocks: int, dropout: float, **_: Any
    ):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError("kernel must be odd (same-length convolutions)")
        self.blocks = nn.Sequential(
            *(
                ConvBlock(features if b == 0 else channels, channels, kernel, 2**b, dropout)
                for b in range(blocks)
            )
        )
        self.size = 3 * channels
        self.step_size = channels
        #: Steps ahead each state sees (the convolutions are centred, not causal).
        self.lookahead = (kernel - 1) * (2**blocks - 1)

    def steps(self, sequence: torch.Tensor) -> torch.Tensor:
        return self.blocks(sequence.transpose(1, 2)).transpose(1, 2)


class CnnLstmEncoder(SequenceEncoder):
    def __init__(
        self, features: int, channels: int, kernel: int, hidden: int, dropout: float, **_: Any
    ):
        super().__init__()
        self.conv = ConvBlock(features, channels, kernel, 1, dropout)
        self.lstm = LstmEncoder(channels, hidden, 1, dropout)
        self.size = self.lstm.size
        self.step_size = hidden
        #: Steps ahead each state sees (the block's two centred convolutions).
        self.lookahead = kernel - 1

    def steps(self, sequence: torch.Tensor) -> torch.Tensor:
        return self.lstm.steps(self.conv(sequence.transpose(1, 2)).transpose(1, 2))


ENCODERS: dict[str, type[SequenceEncoder]] = {
    "lstm": LstmEncoder,
    "cnn": CnnEncoder,
    "cnn-lstm": CnnLstmEncoder,
    "lstm-tsfel": LstmEncoder,
}


class QuantileEncoding(nn.Module):
    """:func:`~bedside.training.survival.features.piecewise_linear` encoding of tabular
    features, its edges at the training quantiles (``bins`` per feature).

    The edges are buffers: they travel with the weights. The encoding is not
    differentiated (integrated gradients follow a path through the encoded features).

    >>> encoding = QuantileEncoding(1, 2)
    >>> encoding.fit(np.array([[0.0], [1.0], [2.0], [np.nan]]))
    >>> encoding(torch.tensor([[0.5], [3.0], [float("nan")]])).tolist()
    [[0.5, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """

    def __init__(self, features: int, bins: int) -> None:
        super().__init__()
        self.register_buffer("edges", torch.zeros(features, bins + 1))
        self.size = features * (bins + 1)

    def fit(self, x: np.ndarray) -> None:
        """Edges at the quantiles of each feature's defined training values."""
        self.edges.copy_(torch.from_numpy(quantile_edges(x, self.edges.shape[1] - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, features), NaN = undefined
        return torch.from_numpy(piecewise_linear(x.numpy(), self.edges.numpy()))

    def source(self) -> torch.Tensor:
        """The feature behind each encoded column."""
        features, bins = self.edges.shape[0], self.edges.shape[1] - 1
        return torch.cat([torch.arange(features).repeat_interleave(bins), torch.arange(features)])


def observed_summaries(sequence: torch.Tensor) -> torch.Tensor:
    """Per variable: mean, min and max of its observed values, its last value and the
    share of steps observed — from the value and mask channels, no parameters.

    The sequence is (batch, steps, 3 D): values, mask, elapsed. A variable never
    observed gets 0 (its training mean) for the statistics.
    """
    d = sequence.shape[-1] // 3
    values, mask = sequence[..., :d], sequence[..., d : 2 * d]
    seen = mask.sum(dim=1)
    any_seen = seen > 0
    mean = (values * mask).sum(dim=1) / seen.clamp(min=1.0)
    low = torch.where(mask > 0, values, torch.full_like(values, torch.inf)).amin(dim=1)
    high = torch.where(mask > 0, values, torch.full_like(values, -torch.inf)).amax(dim=1)
    zero = torch.zeros_like(mean)
    return torch.cat(
        [
            mean,
            torch.where(any_seen, low, zero),
            torch.where(any_seen, high, zero),
            values[:, -1],
            seen / sequence.shape[1],
        ],
        dim=-1,
    )


class SurvivalNet(nn.Module):
    """Encoder of the window + shared survival head.

    With ``summaries`` (the default) the head also reads :func:`observed_summaries`, a
    parameter-free shortcut from the inputs (a "wide" path next to the deep encoder):
    the extremes and last values that clinicians and the TSFEL models read directly
    are then not left for the encoder to rediscover from 4,000 stays.

    With ``tsfel`` (a feature set) the head also reads the stay's TSFEL features of
    that set, encoded by :attr:`tsfel` (:class:`QuantileEncoding`, fitted on the
    training stays before training): :meth:`forward` takes them encoded, so that
    the encoding runs once per stay in training and integrated gradients can follow
    a path through the encoded features.
    """

    def __init__(
        self, arch: str, features: int, statics: int, intervals: int, **params: Any
    ) -> None:
        super().__init__()
        settings = {**DEFAULTS[arch], **params}
        self.encoder = ENCODERS[arch](features, **settings)
        self.summaries = bool(settings.get("summaries", True))
        wide = 5 * (features // 3) if self.summaries else 0
        self.tsfel: QuantileEncoding | None = None
        if settings.get("tsfel"):
            columns = (features // 3) * len(FEATURE_SETS[settings["tsfel"]])
            self.tsfel = QuantileEncoding(columns, settings["bins"])
            wide += self.tsfel.size
        self.dropout = nn.Dropout(settings["dropout"])
        self.head = SurvivalHead(
            self.encoder.size + wide, statics, settings["head"], intervals, settings["dropout"]
        )

    def forward(
        self,
        sequence: torch.Tensor,
        statics: torch.Tensor,
        tsfel: torch.Tensor | None = None,
        with_states: bool = False,
    ) -> dict[str, torch.Tensor]:
        """The outputs; with ``with_states`` also the encoder's per-step ``"states"``
        (what the training loop's forecasting task reads)."""
        states = self.encoder.steps(sequence)
        summary = self.encoder.summarise(states)
        if self.summaries:
            summary = torch.cat([summary, observed_summaries(sequence)], dim=-1)
        summary = self.dropout(summary)
        if self.tsfel is not None:
            if tsfel is None:
                raise ValueError("this net reads TSFEL features: pass them encoded")
            # Not dropped out: dropping encoded features cost AUROC on set A.
            summary = torch.cat([summary, tsfel], dim=-1)
        outputs = self.head(summary, statics)
        if with_states:
            outputs["states"] = states
        return outputs


def survival_loss(
    hazard_logits: torch.Tensor, at_risk: torch.Tensor, died: torch.Tensor
) -> torch.Tensor:
    """Mean over stays of the discrete-time negative log-likelihood (censoring-aware).

    Interval ``j`` adds ``-log h_j`` for a death in it, ``-log(1 - h_j)`` for a stay
    followed past its end, nothing for a stay censored before its end.
    """
    terms = nn.functional.binary_cross_entropy_with_logits(hazard_logits, died, reduction="none")
    return (terms * at_risk).sum(dim=-1).mean()
