"""The conditional GAN generator: fit on training stays, sample stays, save, load.

Training is WGAN-GP (Gulrajani et al. 2017): ``critic_steps`` critic updates per
generator update, the gradient penalty (``gp_weight``) computed on ``gp_stays`` stays
of each critic batch (an unbiased estimate; the double backward pass is the costly
part of a step on a CPU), a small drift term keeping the critic's scores near 0
(Karras et al. 2018), Adam with betas (0.5, 0.9) and a critic learning rate twice the
generator's (two time-scale updates, which let the critic keep up with fewer steps).
The generator starts from the training marginals and a random-intercept structure
(:meth:`~bedside.training.synthetic.gan.core.SequenceGenerator.start_from_marginals`).
Batches hold as many deaths as survivors, so the generator learns the stays of the
rarer outcome as well as the others (the critic judges a stay together with its
condition, so re-weighting the conditions does not change what is learnt for each).
Samples come from an exponential moving average of the generator's weights
(``ema_decay``, reached after the first few hundred steps), which is steadier than the
last step's. Training stops after ``max_steps`` generator steps or ``max_seconds``,
whichever comes first; the curves record, every ``log_every`` steps, the critic's
estimate of the Wasserstein distance (critic score of real minus fake stays), the
gradient penalty, and the critic's and generator's losses.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from scipy.special import ndtr, ndtri

from bedside.training.synthetic.data import StaySet
from bedside.training.synthetic.encoding import Encoding
from bedside.training.synthetic.gan.core import (
    Critic,
    SequenceGenerator,
    gradient_penalty,
    one_hot,
)
from bedside.training.synthetic.generator import (
    CURVES_FILE,
    WEIGHTS_FILE,
    GeneratorError,
    load_weights,
    read_config,
    save_curves,
    write_config,
)

#: Stays generated per forward pass when sampling (bounds memory, not results).
CHUNK = 1024


@dataclass(frozen=True)
class GanConfig:
    noise: int = 32
    hidden: int = 96
    critic_channels: int = 64
    batch_size: int = 128
    learning_rate: float = 1e-4
    critic_learning_rate: float = 2e-4
    critic_steps: int = 3
    gp_weight: float = 10.0
    #: Stays of each critic batch the gradient penalty is computed on (it is the costly part).
    gp_stays: int = 32
    drift_weight: float = 1e-3
    ema_decay: float = 0.999
    log_every: int = 10


@dataclass(frozen=True)
class Batch:
    sequence: torch.Tensor
    statics: torch.Tensor
    condition: torch.Tensor


def between_stays(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per variable, the variance of the stays' mean normal score (stays with at least 3
    values): the share of the (unit) variance that lies between stays."""
    count = mask.sum(dim=1)
    means = scores.sum(dim=1) / count.clamp(min=1)
    enough = count >= 3
    share = torch.zeros(scores.shape[-1])
    for j in range(scores.shape[-1]):
        if int(enough[:, j].sum()) >= 2:
            share[j] = means[enough[:, j], j].var()
    return share


class ConditionalGan:
    """Conditional WGAN-GP over windows, masks and static covariates."""

    kind = "gan"

    def __init__(self, config: GanConfig | None = None, **overrides: Any) -> None:
        self.config = GanConfig(**{**asdict(config or GanConfig()), **overrides})
        self.encoding: Encoding | None = None
        self.generator: SequenceGenerator | None = None
        self.training: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []

    # --- tensors ----------------------------------------------------------------------

    def _networks(self, encoding: Encoding) -> tuple[SequenceGenerator, Critic]:
        c = self.config
        variables, numeric = len(encoding.grid.concepts), len(encoding.statics)
        conditions = 2 + len(encoding.icu_types)
        generator = SequenceGenerator(
            variables,
            encoding.grid.steps,
            numeric,
            len(encoding.sexes),
            conditions,
            noise=c.noise,
            hidden=c.hidden,
        )
        critic = Critic(variables, 2 * numeric + len(encoding.sexes), conditions, c.critic_channels)
        return generator, critic

    def _condition(self, death: np.ndarray, icu: np.ndarray) -> torch.Tensor:
        assert self.encoding is not None
        return torch.cat(
            [
                one_hot(torch.tensor(death, dtype=torch.long), 2),
                one_hot(torch.tensor(icu, dtype=torch.long), len(self.encoding.icu_types)),
            ],
            dim=-1,
        )

    def _real(self, stays: StaySet, rng: np.random.Generator) -> Batch:
        assert self.encoding is not None
        ranks = self.encoding.ranks(stays, rng)
        mask = ~np.isnan(ranks)
        scores = np.where(mask, ndtri(np.nan_to_num(ranks, nan=0.5)), 0.0)
        static = self.encoding.static_ranks(stays, rng)
        known = ~np.isnan(static)
        static_scores = np.where(known, ndtri(np.nan_to_num(static, nan=0.5)), 0.0)
        sex = one_hot(torch.as_tensor(self.encoding.sex_index(stays)), len(self.encoding.sexes))
        return Batch(
            sequence=torch.as_tensor(np.concatenate([scores, mask], axis=-1), dtype=torch.float32),
            statics=torch.cat(
                [
                    torch.as_tensor(np.concatenate([static_scores, known], axis=-1)).float(),
                    sex,
                ],
                dim=-1,
            ),
            condition=self._condition(stays.death, self.encoding.icu_index(stays)),
        )

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
        torch_rng = torch.Generator().manual_seed(seed)
        self.encoding = Encoding.fit(stays)
        real = self._real(stays, rng)
        generator, critic = self._networks(self.encoding)
        variables, numeric = len(self.encoding.grid.concepts), len(self.encoding.statics)
        scores, mask = real.sequence.split(variables, dim=-1)
        generator.start_from_marginals(
            mask.mean(dim=(0, 1)),
            real.statics[:, numeric : 2 * numeric].mean(dim=0),
            real.statics[:, 2 * numeric :].mean(dim=0),
            between_stays(scores, mask),
        )
        average = copy.deepcopy(generator).requires_grad_(False)
        betas = (0.5, 0.9)
        optimise_g = torch.optim.Adam(generator.parameters(), lr=c.learning_rate, betas=betas)
        optimise_c = torch.optim.Adam(critic.parameters(), lr=c.critic_learning_rate, betas=betas)
        by_outcome = [np.flatnonzero(stays.death == k) for k in (0, 1)]
        by_outcome = [rows for rows in by_outcome if rows.size]

        def batch() -> Batch:
            per = max(c.batch_size // len(by_outcome), 1)
            rows = rng.permutation(np.concatenate([rng.choice(r, size=per) for r in by_outcome]))
            return Batch(real.sequence[rows], real.statics[rows], real.condition[rows])

        self.history = []
        step = 0
        last_report = started
        stop = "max steps"
        while step < max_steps:
            for _ in range(c.critic_steps):
                b = batch()
                with torch.no_grad():
                    fake = generator(b.condition, torch_rng)
                score_real = critic(b.sequence, b.statics, b.condition)
                score_fake = critic(fake["sequence"], fake["statics"], b.condition)
                k = min(c.gp_stays, len(b.condition))
                penalty = gradient_penalty(
                    critic,
                    (b.sequence[:k], b.statics[:k]),
                    (fake["sequence"][:k], fake["statics"][:k]),
                    b.condition[:k],
                    torch_rng,
                )
                wasserstein = score_real.mean() - score_fake.mean()
                loss_c = -wasserstein + c.gp_weight * penalty
                loss_c = loss_c + c.drift_weight * score_real.pow(2).mean()
                optimise_c.zero_grad()
                loss_c.backward()
                optimise_c.step()
            b = batch()
            fake = generator(b.condition, torch_rng)
            loss_g = -critic(fake["sequence"], fake["statics"], b.condition).mean()
            optimise_g.zero_grad()
            loss_g.backward()
            optimise_g.step()
            # The average forgets fast at first, so that it is useful after few steps too.
            decay = min(c.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for kept, new in zip(average.parameters(), generator.parameters(), strict=True):
                    kept.lerp_(new, 1.0 - decay)
            step += 1
            elapsed = time.monotonic() - started
            if step % c.log_every == 0 or step == max_steps or elapsed > max_seconds:
                self.history.append(
                    {
                        "step": step,
                        "seconds": round(elapsed, 2),
                        "wasserstein": wasserstein.item(),
                        "gradient_penalty": penalty.item(),
                        "critic_loss": loss_c.item(),
                        "generator_loss": loss_g.item(),
                    }
                )
            if progress is not None and time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                progress(f"  step {step}: Wasserstein estimate {wasserstein.item():.3f}")
            if elapsed > max_seconds:
                stop = "time budget"
                break
        self.generator = average.eval()
        self.training = {
            "steps": step,
            "seconds": round(time.monotonic() - started, 2),
            "stopped_by": stop,
            "seed": seed,
            "n_stays": len(stays),
            "n_deaths": int(stays.death.sum()),
            "weights": "exponential moving average of the generator's",
            "parameters": {
                "generator": sum(p.numel() for p in generator.parameters()),
                "critic": sum(p.numel() for p in critic.parameters()),
            },
        }
        return self

    # --- sampling ----------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        seed: int,
        death_share: float | None = None,
        conditions: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> StaySet:
        """``n`` stays; outcomes and ICU types from ``conditions`` or drawn (see
        :meth:`~bedside.training.synthetic.encoding.Encoding.conditions`)."""
        if self.encoding is None or self.generator is None:
            raise RuntimeError("fit or load the GAN first")
        rng = np.random.default_rng(seed)
        death, icu = conditions or self.encoding.conditions(n, rng, death_share)
        if len(death) == 0:
            raise GeneratorError("asked for no stays")
        torch_rng = torch.Generator().manual_seed(seed)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("ranks", "static", "sex")}
        for first in range(0, len(death), CHUNK):
            rows = slice(first, first + CHUNK)
            out = self.generator(self._condition(death[rows], icu[rows]), torch_rng)
            mask = out["mask"].numpy() > 0.5
            parts["ranks"].append(np.where(mask, ndtr(out["values"].double().numpy()), np.nan))
            known = out["static_known"].numpy() > 0.5
            static = ndtr(out["static_values"].double().numpy())
            parts["static"].append(np.where(known, static, np.nan))
            parts["sex"].append(out["sex"].argmax(dim=-1).numpy())
        joined = {k: np.concatenate(v) for k, v in parts.items()}
        return self.encoding.stay_set(joined["ranks"], joined["static"], joined["sex"], death, icu)

    def round_trip(self, stays: StaySet, *, seed: int) -> StaySet:
        """``stays`` through the encoding's ranks and back (the GAN writes ranks as they
        are, unbinned)."""
        if self.encoding is None:
            raise RuntimeError("fit or load the GAN first")
        rng = np.random.default_rng(seed)
        enc = self.encoding
        stays = stays.on_grid(enc.grid)
        return enc.stay_set(
            enc.ranks(stays, rng),
            enc.static_ranks(stays, rng),
            enc.sex_index(stays),
            stays.death,
            enc.icu_index(stays),
        )

    # --- saving ------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        if self.encoding is None or self.generator is None:
            raise RuntimeError("fit the GAN before saving it")
        write_config(directory, self.kind, asdict(self.config), self)
        torch.save(self.generator.state_dict(), directory / WEIGHTS_FILE)
        save_curves(directory, self.history, "conditional WGAN-GP")

    @classmethod
    def load(cls, directory: Path) -> Self:
        data = read_config(directory)
        gan = cls(GanConfig(**data["config"]))
        gan.encoding = Encoding.from_dict(data["encoding"])
        gan.training = data["training"]
        generator, _ = gan._networks(gan.encoding)
        load_weights(generator, directory)
        gan.generator = generator.eval()
        if (directory / CURVES_FILE).exists():
            gan.history = json.loads((directory / CURVES_FILE).read_text())
        return gan
