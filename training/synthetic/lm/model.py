"""The language-model generator: fit on token sequences, sample stays, save, load.

Trained from scratch here (no downloaded weights) by next-token cross-entropy on the
sequences of :mod:`~bedside.training.synthetic.lm.tokens`, the conditions (outcome, ICU
type) excluded from the loss since sampling gives them. With ``balance_outcomes``, the
stays of the rarer outcome (deaths) are repeated until they are about as many as the
others: since the outcome is given, not learnt, this changes nothing in what the model
should learn for each outcome, and gives the deaths' stays as much training (as the GAN
does with its batches). Batches gather sequences of similar length up to
``batch_tokens`` tokens; AdamW with ``warmup_steps`` of linear
warm-up, then a cosine decay over the budget (steps or seconds, whichever runs out
first, so the rate has annealed when the clock stops training). ``validation_share`` of
the stays are held out; the weights kept are those of the lowest validation loss,
checked every ``evaluate_every`` steps. Sampling is constrained by the grammar
(:class:`~bedside.training.synthetic.lm.tokens.Grammar`) at ``temperature`` 1, i.e.
from the model's own distribution, unless asked for *outcome guidance* ``W``
(:meth:`TokenLanguageModel.with_guidance`, ``synth sample --guidance W``): each sequence
is then run a second time with the other outcome given, and every choice is drawn from
the logits ``l(y) + W (l(y) - l(not y))`` (classifier-free guidance with the other
outcome as the negative condition, no retraining needed). The stays lean further
towards what tells their outcome apart: synthetic deaths for rebalancing then cost a
mortality model much less, but the stays are less like the real ones (on PhysioNet
2012 at W = 1: AUROC on real stays after rebalancing to 30 % deaths 0.852 against
0.830, mean KS 0.057 against 0.043; BENCHMARKS.md). A value's place inside its sampled
bin follows the place of the variable's previous value
(:class:`~bedside.training.synthetic.lm.tokens.PositionChain`, counted on the training
stays and saved in ``positions.json``), not a fresh uniform draw.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from torch.nn import functional

from bedside.training.synthetic.data import StaySet
from bedside.training.synthetic.encoding import Encoding
from bedside.training.synthetic.generator import (
    CURVES_FILE,
    WEIGHTS_FILE,
    GeneratorError,
    load_weights,
    read_config,
    save_curves,
    write_config,
)
from bedside.training.synthetic.lm.core import TokenTransformer
from bedside.training.synthetic.lm.tokens import (
    BINS,
    BOS,
    END,
    PAD,
    STATIC_BINS,
    Grammar,
    PositionChain,
    StateTracker,
    Vocabulary,
    decode,
    encode,
    hours,
    state_features,
)

#: Sequences sampled side by side: at most this many, and at most what a key/value
#: cache of ``CACHE_BYTES`` holds.
SAMPLE_BATCH = 512
CACHE_BYTES = 512 * 2**20
#: Steps between two estimates of the pace of training (for the learning-rate schedule).
PACE_STEPS = 20
#: Tokens a sampled sequence may have beyond the longest training sequence.
LENGTH_MARGIN = 64
POSITIONS_FILE = "positions.json"


@dataclass(frozen=True)
class LmConfig:
    # Small enough to see several epochs of PhysioNet 2012 in 15 minutes on 2 CPU cores.
    width: int = 64
    layers: int = 2
    heads: int = 4
    feedforward: int = 256
    dropout: float = 0.1
    bins: int = BINS
    static_bins: int = STATIC_BINS
    batch_tokens: int = 4096
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    validation_share: float = 0.05
    evaluate_every: int = 200
    log_every: int = 10
    temperature: float = 1.0
    #: Outcome guidance at sampling: logits ``l(y) + guidance * (l(y) - l(not y))``, the
    #: model run beside itself with the other outcome given (0: the model's own
    #: distribution).
    guidance: float = 0.0
    balance_outcomes: bool = True


def _pad(sequences: list[np.ndarray]) -> torch.Tensor:
    longest = max(len(s) for s in sequences)
    out = np.full((len(sequences), longest), PAD, dtype=np.int64)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = s
    return torch.from_numpy(out)


def _batches(lengths: np.ndarray, rows: np.ndarray, batch_tokens: int) -> list[np.ndarray]:
    """Rows grouped by similar length, each group at most ``batch_tokens`` tokens padded."""
    ordered = rows[np.argsort(lengths[rows], kind="stable")]
    batches, current = [], []
    for row in ordered:
        if current and (len(current) + 1) * lengths[row] > batch_tokens:
            batches.append(np.asarray(current))
            current = []
        current.append(row)
    if current:
        batches.append(np.asarray(current))
    return batches


def balanced(rows: np.ndarray, death: np.ndarray) -> np.ndarray:
    """``rows`` with the rarer outcome's stays repeated to about as many as the other's."""
    dead, alive = rows[death[rows] == 1], rows[death[rows] == 0]
    rare, common = (dead, alive) if dead.size < alive.size else (alive, dead)
    if rare.size == 0:
        return rows
    repeats = max(1, round(common.size / rare.size))
    return np.concatenate([common, np.tile(rare, repeats)])


class TokenLanguageModel:
    """Autoregressive transformer over tokenised stays, conditioned by its first tokens."""

    kind = "lm"

    def __init__(self, config: LmConfig | None = None, **overrides: Any) -> None:
        self.config = LmConfig(**{**asdict(config or LmConfig()), **overrides})
        self.encoding: Encoding | None = None
        self.network: TokenTransformer | None = None
        self.max_length = 0
        #: Places inside the bins (:class:`PositionChain`); None: uniform (older models).
        self.positions: PositionChain | None = None
        self.training: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []

    @property
    def vocabulary(self) -> Vocabulary:
        assert self.encoding is not None
        return Vocabulary(
            steps=self.encoding.grid.steps,
            variables=len(self.encoding.grid.concepts),
            bins=self.config.bins,
            statics=len(self.encoding.statics),
            static_bins=self.config.static_bins,
            sexes=len(self.encoding.sexes),
            icu_types=len(self.encoding.icu_types),
        )

    def _network(self) -> TokenTransformer:
        c = self.config
        vocab = self.vocabulary
        return TokenTransformer(
            vocab.first_cell,
            vocab.variables,
            vocab.bins,
            vocab.steps,
            self.max_length,
            width=c.width,
            layers=c.layers,
            heads=c.heads,
            feedforward=c.feedforward,
            dropout=c.dropout,
        )

    def _loss(self, network: TokenTransformer, tokens: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per predicted token: of its choice, plus of its
        bin for a cell."""
        vocab = self.vocabulary
        inputs, targets = tokens[:, :-1], tokens[:, 1:].clone()
        targets[:, :2] = PAD  # the outcome and ICU type are given, not predicted
        states = state_features(vocab, inputs)
        x = network(inputs, hours(vocab, inputs), states)
        nll = functional.cross_entropy(
            network.choice(x).flatten(0, 1),
            vocab.choice(targets).flatten(),
            ignore_index=PAD,
            reduction="sum",
        )
        cells = targets >= vocab.first_cell
        offset = targets[cells] - vocab.first_cell
        bins = network.bins(x[cells], offset // vocab.bins, states[cells])
        nll = nll + functional.cross_entropy(bins, offset % vocab.bins, reduction="sum")
        return nll / (targets != PAD).sum().clamp(min=1)

    # --- fitting ------------------------------------------------------------------------

    def fit(
        self,
        stays: StaySet,
        *,
        max_seconds: float,
        max_steps: int,
        seed: int,
        progress: Callable[[str], None] | None = None,
    ) -> Self:
        c = self.config
        started = time.monotonic()
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        self.encoding = Encoding.fit(stays)
        vocab = self.vocabulary
        ranks = self.encoding.ranks(stays, rng)
        self.positions = PositionChain.fit(ranks, vocab.bins)
        sequences = encode(
            vocab,
            stays.death,
            self.encoding.icu_index(stays),
            self.encoding.sex_index(stays),
            self.encoding.static_ranks(stays, rng),
            ranks,
        )
        lengths = np.array([len(s) for s in sequences])
        self.max_length = int(lengths.max()) + LENGTH_MARGIN
        network = self._network()
        order = rng.permutation(len(sequences))
        held = round(c.validation_share * len(sequences)) if len(sequences) >= 20 else 0
        valid_rows, train_rows = order[:held], order[held:]
        if c.balance_outcomes:
            train_rows = balanced(train_rows, stays.death)
        optimiser = torch.optim.AdamW(
            network.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay
        )
        train_batches = _batches(lengths, train_rows, c.batch_tokens)
        valid_batches = _batches(lengths, valid_rows, c.batch_tokens) if held else []

        @torch.no_grad()
        def validation_loss() -> float:
            network.eval()
            total, count = 0.0, 0
            for rows in valid_batches:
                tokens = _pad([sequences[r] for r in rows])
                n = int((tokens[:, 3:] != PAD).sum())
                total += self._loss(network, tokens).item() * n
                count += n
            network.train()
            return total / max(count, 1)

        best = (math.inf, copy.deepcopy(network.state_dict()), 0)
        self.history = []
        step, epoch, running, stop = 0, 0, [], "max steps"
        # Steps the schedule anneals over: max_steps, or fewer when the clock will stop
        # training first (re-estimated as training goes, from its pace so far).
        planned = max_steps
        training_started = time.monotonic()
        network.train()
        while step < max_steps and stop == "max steps":
            for b in rng.permutation(len(train_batches)):
                if step >= PACE_STEPS and step % PACE_STEPS == 0:
                    spent = time.monotonic() - training_started
                    left = max_seconds - (time.monotonic() - started)
                    planned = min(max_steps, step + max(int(left * step / spent), 1))
                warm = min(1.0, (step + 1) / c.warmup_steps)
                annealed = 0.5 * (1 + math.cos(math.pi * min(step / planned, 1.0)))
                rate = c.learning_rate * warm * annealed
                for group in optimiser.param_groups:
                    group["lr"] = rate
                loss = self._loss(network, _pad([sequences[r] for r in train_batches[b]]))
                optimiser.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
                optimiser.step()
                running.append(loss.item())
                step += 1
                elapsed = time.monotonic() - started
                out_of_time = elapsed > max_seconds
                last = step >= max_steps or out_of_time
                if step % c.log_every == 0 or last:
                    record = {"step": step, "seconds": round(elapsed, 2), "epoch": epoch}
                    record |= {"train_loss": float(np.mean(running)), "learning_rate": rate}
                    self.history.append(record)
                    running = []
                if valid_batches and (step % c.evaluate_every == 0 or last):
                    loss_v = validation_loss()
                    self.history.append(
                        {"step": step, "seconds": round(elapsed, 2), "validation_loss": loss_v}
                    )
                    if progress is not None:
                        progress(f"  step {step} (epoch {epoch}): validation loss {loss_v:.4f}")
                    if loss_v < best[0]:
                        best = (loss_v, copy.deepcopy(network.state_dict()), step)
                if out_of_time:
                    stop = "time budget"
                if last:
                    break
            epoch += 1
        if valid_batches:
            network.load_state_dict(best[1])
        self.network = network.eval()
        self.training = {
            "steps": step,
            "epochs": round(step / max(len(train_batches), 1), 2),
            "seconds": round(time.monotonic() - started, 2),
            "stopped_by": stop,
            "seed": seed,
            "n_stays": len(stays),
            "n_deaths": int(stays.death.sum()),
            "tokens_per_stay": {"mean": float(lengths.mean()), "max": int(lengths.max())},
            "vocabulary": vocab.size,
            "max_length": self.max_length,
            "validation_stays": int(held),
            "best_validation_loss": None if not valid_batches else round(best[0], 5),
            "best_step": best[2] if valid_batches else step,
            "parameters": sum(p.numel() for p in network.parameters()),
        }
        return self

    # --- sampling ----------------------------------------------------------------------

    @torch.no_grad()
    def _sample_batch(
        self, death: np.ndarray, icu: np.ndarray, rng: torch.Generator
    ) -> list[np.ndarray]:
        assert self.network is not None
        vocab = self.vocabulary
        grammar = Grammar(vocab)
        n = len(death)
        guidance, temperature = self.config.guidance, self.config.temperature
        # With guidance, rows n..2n are the same stays with the other outcome given.
        copies = 2 if guidance else 1
        outcomes = np.concatenate([death, 1 - death][:copies])
        prompt = torch.stack(
            [
                torch.full((copies * n,), BOS),
                torch.as_tensor(vocab.first_outcome + outcomes),
                torch.as_tensor(vocab.first_icu + np.tile(icu, copies)),
            ],
            dim=1,
        )
        cache = self.network.new_cache(copies * n)
        tracker = StateTracker(vocab, n)
        state = state_features(vocab, prompt)
        x = self.network.step(prompt, hours(vocab, prompt), state, 0, cache)
        state = state[:, -1]

        def guided(logits: torch.Tensor) -> torch.Tensor:
            if not guidance:
                return logits / temperature
            given, other = logits.chunk(2)
            return (given + guidance * (given - other)) / temperature

        hour = torch.full((n,), -1, dtype=torch.long)
        last_variable = torch.full((n,), -1, dtype=torch.long)
        done = torch.zeros(n, dtype=torch.bool)
        written = [prompt[:n]]
        for position in range(prompt.shape[1], self.max_length):
            allowed = grammar.allowed(position, hour, last_variable, done)
            logits = guided(self.network.choice(x)).masked_fill(~allowed, -math.inf)
            token = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=rng)[:, 0]
            chose = token >= vocab.first_cell
            if bool(chose.any()):
                variable = token[chose] - vocab.first_cell
                both = chose.repeat(copies)
                bins = guided(self.network.bins(x[both], variable.repeat(copies), state[both]))
                b = torch.multinomial(torch.softmax(bins, dim=-1), 1, generator=rng)[:, 0]
                token[chose] = vocab.first_cell + variable * vocab.bins + b
            hour, last_variable, done = grammar.advance(token, hour, last_variable, done)
            written.append(token[:, None])
            if bool(done.all()) or position + 1 == self.max_length:
                break
            token_hour = torch.where(hour < 0, torch.full_like(hour, vocab.steps), hour)
            state = tracker.update(token, token_hour).repeat(copies, 1)
            x = self.network.step(
                token.repeat(copies)[:, None],
                token_hour.repeat(copies)[:, None],
                state[:, None],
                position,
                cache,
            )
        tokens = torch.cat(written, dim=1).numpy()
        out = []
        for row in tokens:
            ends = np.flatnonzero(row == END)
            out.append(row[: ends[0]] if ends.size else row[row != PAD])
        return out

    def sample(
        self,
        n: int,
        *,
        seed: int,
        death_share: float | None = None,
        conditions: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> StaySet:
        if self.encoding is None or self.network is None:
            raise RuntimeError("fit or load the language model first")
        rng = np.random.default_rng(seed)
        death, icu = conditions or self.encoding.conditions(n, rng, death_share)
        if len(death) == 0:
            raise GeneratorError("asked for no stays")
        torch_rng = torch.Generator().manual_seed(seed)
        per_sequence = 4 * 2 * self.config.layers * self.max_length * self.config.width
        per_sequence *= 2 if self.config.guidance else 1  # beside the other outcome's
        batch = max(1, min(SAMPLE_BATCH, CACHE_BYTES // per_sequence))
        sequences: list[np.ndarray] = []
        for first in range(0, len(death), batch):
            rows = slice(first, first + batch)
            sequences += self._sample_batch(death[rows], icu[rows], torch_rng)
        ranks, static_ranks, sex = decode(self.vocabulary, sequences, rng, self.positions)
        return self.encoding.stay_set(ranks, static_ranks, sex, death, icu)

    def with_guidance(self, guidance: float) -> Self:
        """This model sampling with outcome ``guidance`` (:class:`LmConfig`); a copy that
        shares the weights."""
        if not guidance >= 0:
            raise GeneratorError(f"guidance {guidance}: expected 0 or more")
        guided = copy.copy(self)
        guided.config = replace(self.config, guidance=float(guidance))
        return guided

    def round_trip(self, stays: StaySet, *, seed: int) -> StaySet:
        """``stays`` encoded to tokens and decoded back: binned ranks (values and
        statics), places inside the bins from the chain."""
        if self.encoding is None:
            raise RuntimeError("fit or load the language model first")
        rng = np.random.default_rng(seed)
        stays = stays.on_grid(self.encoding.grid)
        icu = self.encoding.icu_index(stays)
        sequences = encode(
            self.vocabulary,
            stays.death,
            icu,
            self.encoding.sex_index(stays),
            self.encoding.static_ranks(stays, rng),
            self.encoding.ranks(stays, rng),
        )
        ranks, static_ranks, sex = decode(self.vocabulary, sequences, rng, self.positions)
        return self.encoding.stay_set(ranks, static_ranks, sex, stays.death, icu)

    # --- saving ------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        if self.encoding is None or self.network is None:
            raise RuntimeError("fit the language model before saving it")
        write_config(
            directory, self.kind, asdict(self.config) | {"max_length": self.max_length}, self
        )
        torch.save(self.network.state_dict(), directory / WEIGHTS_FILE)
        if self.positions is not None:
            (directory / POSITIONS_FILE).write_text(json.dumps(self.positions.to_dict()) + "\n")
        save_curves(directory, self.history, "token language model")

    @classmethod
    def load(cls, directory: Path) -> Self:
        data = read_config(directory)
        config = dict(data["config"])
        max_length = int(config.pop("max_length"))
        model = cls(LmConfig(**config))
        model.encoding = Encoding.from_dict(data["encoding"])
        model.training = data["training"]
        model.max_length = max_length
        network = model._network()
        load_weights(network, directory)
        model.network = network.eval()
        if (directory / POSITIONS_FILE).exists():
            model.positions = PositionChain.from_dict(
                json.loads((directory / POSITIONS_FILE).read_text())
            )
        if (directory / CURVES_FILE).exists():
            model.history = json.loads((directory / CURVES_FILE).read_text())
        return model
