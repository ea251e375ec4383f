"""Stays as token sequences, and the grammar every sampled sequence follows.

One stay is one sequence::

    BOS  OUTCOME  ICU_TYPE  SEX  STATIC_1 ... STATIC_S
    HOUR_0  CELL(v, b) CELL(v', b') ...  HOUR_1 ...  HOUR_{T-1} ...  END

* ``OUTCOME`` (survived / died) and ``ICU_TYPE`` are the conditions, given when sampling;
* each numeric static covariate is one token: the bin of its rank, or ``unknown``;
* ``HOUR_h`` opens step ``h`` of the window; the ``CELL`` tokens after it are the
  variables observed in that step, in grid order, each with the bin ``b`` of its
  value's rank (``BINS`` equal-width bins of the rank, so equally populated bins of the
  value). A variable without a cell in a step is missing there: missingness is the
  absence of its token, and an hour with nothing observed is a bare ``HOUR`` token.

Beside its token, the model reads at every position the *state* of the stay so far
(:func:`state_features`): for each variable, the rank of its last value, the mean rank
of its values so far, whether it has been observed, and the steps since it was.
Carrying a value from one hour to the next, or knowing that a lab is due, then needs no
search back through the sequence, which a small model trained for minutes would not
learn well (on PhysioNet 2012, 5 minutes of training without it left the
autocorrelation of the sampled values near 0).

Decoding draws a rank inside the bin and maps it to the variable's training quantile
(:class:`~bedside.training.synthetic.encoding.Marginal`): uniformly, so that a bin
stands for the training values it holds in their training proportions, or, with a
:class:`PositionChain`, near where the variable's previous value lay in its bin, as in
the training stays (real PhysioNet 2012 set-B stays told from the same stays binned
in 32 bins and decoded, by gradient boosting on their features: AUROC 0.725
uniformly, 0.672 with the chain).

:class:`Grammar` gives, for each sequence being sampled, the tokens allowed next: the
statics in order, then hours in order, cells of a step in increasing variable order,
``END`` only after the last hour. Every sampled sequence therefore decodes to a stay.

>>> vocab = Vocabulary(steps=2, variables=3, bins=4, statics=1, static_bins=2, sexes=2,
...                    icu_types=2)
>>> vocab.size, vocab.cell(2, 3) - vocab.first_cell
(26, 11)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

PAD, BOS, END = 0, 1, 2
#: Rank bins of each variable's values, and of each numeric static covariate. 32: on
#: PhysioNet 2012 (trained on set A, judged against set B) an ``lm`` trained 40 minutes
#: with 32 bins scored a train-on-synthetic AUROC of 0.814 (gap to real 0.042, the goal
#: met; 0.795 with another seed) and a discriminative AUROC of 0.963 (0.966), against
#: 0.797 and 0.970 with 64 bins (23,213 and 23,801 steps): within the seeds' spread, for
#: fewer parameters. After 15 minutes 64 bins did better (0.794 against 0.777)
#: but gained nothing from the next 25, and their finer encoding (set-B stays through
#: the token round trip told from set-B stays, the *encoding floor*: AUROC 0.587
#: against 0.659, 0.539 at 128) was not what gave the stays away. ``--set bins=64``.
BINS = 32
STATIC_BINS = 16


@dataclass(frozen=True)
class Vocabulary:
    """Token ids: specials, outcome, ICU type, sex, statics, hours, then cells."""

    steps: int
    variables: int
    bins: int
    statics: int
    static_bins: int
    sexes: int
    icu_types: int

    @property
    def first_outcome(self) -> int:
        return 3

    @property
    def first_icu(self) -> int:
        return self.first_outcome + 2

    @property
    def first_sex(self) -> int:
        return self.first_icu + self.icu_types

    def first_static(self, k: int) -> int:
        """Tokens of numeric static ``k``: its bins, then ``unknown``."""
        return self.first_sex + self.sexes + k * (self.static_bins + 1)

    @property
    def first_hour(self) -> int:
        return self.first_static(self.statics)

    @property
    def first_cell(self) -> int:
        return self.first_hour + self.steps

    def cell(self, variable: int | np.ndarray, b: int | np.ndarray) -> int | np.ndarray:
        return self.first_cell + variable * self.bins + b

    @property
    def size(self) -> int:
        return self.first_cell + self.variables * self.bins

    @property
    def choices(self) -> int:
        """What the model picks first: any token but a cell, or a variable (whose bin it
        picks next): ``first_cell + variables`` choices."""
        return self.first_cell + self.variables

    def choice(self, tokens: torch.Tensor) -> torch.Tensor:
        """The choice of each token: itself, or ``first_cell + variable`` for a cell."""
        cell = tokens >= self.first_cell
        return torch.where(cell, self.first_cell + (tokens - self.first_cell) // self.bins, tokens)

    @property
    def prefix(self) -> int:
        """Tokens before ``HOUR_0``: BOS, outcome, ICU type, sex, numeric statics."""
        return 4 + self.statics

    def groups(self) -> list[range]:
        """Allowed tokens at each position after the conditions: sex, then each static."""
        sex = range(self.first_sex, self.first_sex + self.sexes)
        statics = [
            range(self.first_static(k), self.first_static(k) + self.static_bins + 1)
            for k in range(self.statics)
        ]
        return [sex, *statics]


def encode(
    vocab: Vocabulary,
    death: np.ndarray,
    icu: np.ndarray,
    sex: np.ndarray,
    static_ranks: np.ndarray,
    ranks: np.ndarray,
) -> list[np.ndarray]:
    """Token sequences of stays (ranks NaN = missing / unknown)."""
    sequences = []
    static_bins = np.minimum(
        np.nan_to_num(static_ranks * vocab.static_bins).astype(np.int64), vocab.static_bins - 1
    )
    bins = np.minimum(np.nan_to_num(ranks * vocab.bins).astype(np.int64), vocab.bins - 1)
    observed = ~np.isnan(ranks)
    for i in range(ranks.shape[0]):
        tokens = [BOS, vocab.first_outcome + int(death[i]), vocab.first_icu + int(icu[i])]
        tokens.append(vocab.first_sex + int(sex[i]))
        for k in range(vocab.statics):
            unknown = np.isnan(static_ranks[i, k])
            tokens.append(
                vocab.first_static(k) + (vocab.static_bins if unknown else int(static_bins[i, k]))
            )
        for h in range(vocab.steps):
            tokens.append(vocab.first_hour + h)
            seen = np.flatnonzero(observed[i, h])
            tokens.extend(vocab.cell(seen, bins[i, h, seen]).tolist())
        tokens.append(END)
        sequences.append(np.asarray(tokens, dtype=np.int64))
    return sequences


def hours(vocab: Vocabulary, tokens: torch.Tensor) -> torch.Tensor:
    """The step each token belongs to (``steps`` for the prefix), for the hour embedding."""
    is_hour = (tokens >= vocab.first_hour) & (tokens < vocab.first_cell)
    opened = torch.cumsum(is_hour.long(), dim=-1) - 1
    return torch.where(opened < 0, torch.full_like(opened, vocab.steps), opened)


def _cell_parts(vocab: Vocabulary, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable (-1 for other tokens) and bin-centre rank of each token."""
    offset = (tokens - vocab.first_cell).clamp(min=0)
    variable = torch.where(tokens >= vocab.first_cell, offset // vocab.bins, -1)
    return variable, ((offset % vocab.bins).float() + 0.5) / vocab.bins


#: State features per variable (see :func:`state_features`).
STATE_FEATURES = 4


def _state(
    vocab: Vocabulary,
    rank: torch.Tensor,
    mean: torch.Tensor,
    last_hour: torch.Tensor,
    hour: torch.Tensor,
) -> torch.Tensor:
    seen = last_hour >= 0
    now = torch.where(hour >= vocab.steps, torch.zeros_like(hour), hour)[..., None]
    elapsed = torch.where(seen, now - last_hour, now + 1).float() / vocab.steps
    elapsed = torch.where((hour >= vocab.steps)[..., None], torch.zeros_like(elapsed), elapsed)
    return torch.cat(
        [torch.where(seen, rank, 0.0), torch.where(seen, mean, 0.0), seen.float(), elapsed],
        dim=-1,
    )


def state_features(vocab: Vocabulary, tokens: torch.Tensor) -> torch.Tensor:
    """(n, length, 4 x variables): after each token, for each variable, the rank of its last
    value and the mean rank of its values so far (bin centres; 0 before any), whether it
    has been observed, and the steps since (since the window start before any; all 0 in
    the prefix), divided by the steps."""
    n, length = tokens.shape
    variable, rank = _cell_parts(vocab, tokens)
    hour = hours(vocab, tokens)
    position = torch.arange(length).expand(n, length)
    hit = variable[..., None] == torch.arange(vocab.variables)
    last = torch.where(hit, position[..., None], -1).cummax(dim=1).values
    index = last.clamp(min=0)
    expand = (n, length, vocab.variables)
    last_rank = torch.gather(rank[..., None].expand(expand), 1, index)
    last_hour = torch.gather(hour[..., None].expand(expand), 1, index)
    last_hour = torch.where(last >= 0, last_hour, -1)
    total = torch.where(hit, rank[..., None], 0.0).cumsum(dim=1)
    mean = total / hit.cumsum(dim=1).clamp(min=1)
    return _state(vocab, last_rank, mean, last_hour, hour)


class StateTracker:
    """:func:`state_features` one token at a time, for sampling."""

    def __init__(self, vocab: Vocabulary, n: int) -> None:
        self.vocab = vocab
        self.rank = torch.zeros(n, vocab.variables)
        self.total = torch.zeros(n, vocab.variables)
        self.count = torch.zeros(n, vocab.variables)
        self.last_hour = torch.full((n, vocab.variables), -1, dtype=torch.long)

    def update(self, token: torch.Tensor, hour: torch.Tensor) -> torch.Tensor:
        """State after appending ``token`` (n,) in step ``hour`` (n,; ``steps`` in the
        prefix); returns (n, 4 x variables)."""
        variable, rank = _cell_parts(self.vocab, token)
        rows = torch.nonzero(variable >= 0).flatten()
        cells = (rows, variable[rows])
        self.rank[cells] = rank[rows]
        self.total[cells] += rank[rows]
        self.count[cells] += 1
        self.last_hour[cells] = hour[rows]
        mean = self.total / self.count.clamp(min=1)
        return _state(self.vocab, self.rank, mean, self.last_hour, hour)


@dataclass(frozen=True)
class PositionChain:
    """Where a value lies inside its bin, given where the variable's last value lay in
    its own: a Markov chain over ``parts`` equal slices of a bin, one per variable and
    bin step (the bin moved by -2 or less, -1, 0, +1, +2 or more), counted on the
    training stays.

    Drawn uniformly instead, a stay's values jitter inside their bins from hour to
    hour (a heart rate held at 80 comes back anywhere in the bin's 64 quantiles), a
    tell of its own (see the module's figures). In the training stays a value held in its bin
    stays near its place (:meth:`fit` counts how near), and one that crosses into the
    next bin lands near the edge it crossed.

    >>> ranks = np.array([[[0.51], [0.52], [0.53]]])  # one stay, three hours, one variable
    >>> chain = PositionChain.fit(ranks, bins=2, parts=4)
    >>> chain.counts[0, 2].tolist()  # same bin: from slice 0 to slice 0, twice
    [[2, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    """

    counts: np.ndarray  # (variables, 5 bin steps, parts, parts) int64
    bins: int

    @property
    def parts(self) -> int:
        return int(self.counts.shape[-1])

    @staticmethod
    def _step(delta: np.ndarray) -> np.ndarray:
        return np.clip(delta, -2, 2) + 2

    @classmethod
    def fit(cls, ranks: np.ndarray, bins: int, parts: int = 16) -> PositionChain:
        """Count the moves between consecutive observed values of each variable."""
        variables = ranks.shape[-1]
        counts = np.zeros((variables, 5, parts, parts), dtype=np.int64)
        scaled = np.clip(ranks * bins, 0, bins - 1e-9)
        for v in range(variables):
            column = scaled[:, :, v]
            seen = ~np.isnan(column)
            # Each observed value and the stay's previous observed value of the variable.
            stay, hour = np.nonzero(seen)
            values = column[stay, hour]
            follows = np.r_[False, stay[1:] == stay[:-1]]
            prev, cur = values[:-1][follows[1:]], values[1:][follows[1:]]
            step = cls._step(np.floor(cur) - np.floor(prev)).astype(np.int64)
            part_prev = ((prev % 1) * parts).astype(np.int64)
            part_cur = ((cur % 1) * parts).astype(np.int64)
            np.add.at(counts[v], (step, part_prev, part_cur), 1)
        return cls(counts, bins)

    def ranks(self, bins: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Ranks (n, steps, variables) of bin indices (-1 = missing), each value's slice
        drawn from the chain given the previous value's (the first uniformly), its
        place inside the slice uniformly."""
        n, steps, variables = bins.shape
        parts = self.parts
        # Add-one counts, so that a move never seen in training stays possible.
        cdf = np.cumsum(self.counts + 1, axis=-1, dtype=np.float64)
        cdf /= cdf[..., -1:]
        ranks = np.full(bins.shape, np.nan)
        last_bin = np.full((n, variables), -1, dtype=np.int64)
        last_part = np.zeros((n, variables), dtype=np.int64)
        columns = np.broadcast_to(np.arange(variables), (n, variables))
        for hour in range(steps):
            b = bins[:, hour]
            seen = b >= 0
            if not seen.any():
                continue
            step = self._step(b - last_bin)
            rows = cdf[columns, step, last_part]  # (n, variables, parts)
            drawn = (rows < rng.random((n, variables, 1))).sum(axis=-1)
            part = np.where(
                last_bin >= 0, np.minimum(drawn, parts - 1), rng.integers(0, parts, (n, variables))
            )
            rank = (b + (part + rng.random((n, variables))) / parts) / self.bins
            ranks[:, hour] = np.where(seen, rank, np.nan)
            last_bin = np.where(seen, b, last_bin)
            last_part = np.where(seen, part, last_part)
        return ranks

    def to_dict(self) -> dict[str, object]:
        return {"bins": self.bins, "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> PositionChain:
        return cls(
            np.asarray(data["counts"], dtype=np.int64),
            int(data["bins"]),  # type: ignore[call-overload]
        )


def decode(
    vocab: Vocabulary,
    sequences: list[np.ndarray],
    rng: np.random.Generator,
    chain: PositionChain | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ranks (n, steps, variables), static ranks (n, statics) and sex index of sampled
    sequences (prefix and grammar as :class:`Grammar` enforces). A value's place inside
    its bin is drawn from ``chain`` (:class:`PositionChain`), or uniformly without one."""
    n = len(sequences)
    bins = np.full((n, vocab.steps, vocab.variables), -1, dtype=np.int64)
    static_ranks = np.full((n, vocab.statics), np.nan)
    sex = np.zeros(n, dtype=np.int64)
    for i, tokens in enumerate(sequences):
        sex[i] = tokens[3] - vocab.first_sex
        for k in range(vocab.statics):
            b = tokens[4 + k] - vocab.first_static(k)
            if b < vocab.static_bins:
                static_ranks[i, k] = (b + rng.random()) / vocab.static_bins
        body = tokens[vocab.prefix :]
        hour = np.cumsum((body >= vocab.first_hour) & (body < vocab.first_cell)) - 1
        cells = body >= vocab.first_cell
        offset = body[cells] - vocab.first_cell
        variable, b = offset // vocab.bins, offset % vocab.bins
        bins[i, hour[cells], variable] = b
    if chain is not None:
        return chain.ranks(bins, rng), static_ranks, sex
    uniform = (bins + rng.random(bins.shape)) / vocab.bins
    return np.where(bins >= 0, uniform, np.nan), static_ranks, sex


class Grammar:
    """Which choices (:attr:`Vocabulary.choices`) may come next, for a batch of sequences
    sampled side by side."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        ids = torch.arange(vocab.choices)
        self.is_variable = ids >= vocab.first_cell
        self.variable = torch.where(self.is_variable, ids - vocab.first_cell, -1)
        self.is_hour = (ids >= vocab.first_hour) & (ids < vocab.first_cell)
        self.hour = torch.where(self.is_hour, ids - vocab.first_hour, -1)

    def _only(self, ids: range) -> torch.Tensor:
        mask = torch.zeros(self.vocab.choices, dtype=torch.bool)
        mask[ids.start : ids.stop] = True
        return mask

    @cached_property
    def prefix_masks(self) -> list[torch.Tensor]:
        first_hour = range(self.vocab.first_hour, self.vocab.first_hour + 1)
        return [self._only(group) for group in [*self.vocab.groups(), first_hour]]

    def allowed(
        self, position: int, hour: torch.Tensor, last_variable: torch.Tensor, done: torch.Tensor
    ) -> torch.Tensor:
        """(batch, choices) mask of what may come at ``position`` (the next token's index);
        ``hour`` is each sequence's open step, ``last_variable`` the last variable written
        in it (-1 after the hour token), ``done`` whether it ended."""
        n = hour.shape[0]
        start = 3  # BOS, outcome and ICU type are given; sex comes next
        if position < start + len(self.prefix_masks):
            return self.prefix_masks[position - start].expand(n, -1)
        variables = self.is_variable[None, :] & (self.variable[None, :] > last_variable[:, None])
        next_hour = self.is_hour[None, :] & (self.hour[None, :] == hour[:, None] + 1)
        last = (hour == self.vocab.steps - 1)[:, None]
        allowed = variables | next_hour | (self._only(range(END, END + 1))[None, :] & last)
        return torch.where(done[:, None], self._only(range(PAD, PAD + 1))[None, :], allowed)

    def advance(
        self,
        token: torch.Tensor,
        hour: torch.Tensor,
        last_variable: torch.Tensor,
        done: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The state after each sequence appends ``token`` (a token id, not a choice)."""
        vocab = self.vocab
        opens = (token >= vocab.first_hour) & (token < vocab.first_cell)
        cell = token >= vocab.first_cell
        hour = torch.where(opens, token - vocab.first_hour, hour)
        variable = (token - vocab.first_cell) // vocab.bins
        last_variable = torch.where(opens, -1, torch.where(cell, variable, last_variable))
        return hour, last_variable, done | (token == END)
