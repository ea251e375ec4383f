"""The conditional time-series GAN's networks (RCGAN-style, trained as a WGAN-GP).

Both networks see the condition: the outcome (in-hospital death) and the ICU type,
one-hot. A stay is, in the networks' terms:

* ``sequence`` (n, steps, 2 x variables): normal scores of the values' ranks times the
  mask, then the mask (1 = observed), so a missing value is 0 and says it is missing;
* ``statics`` (n, 2 x numeric + sexes): normal scores of the numeric static covariates
  times their known flag, the flags, then sex one-hot.

:class:`SequenceGenerator`: noise -> an MLP for the static covariates and a latent
"patient" vector; a 2-layer GRU reads, at each step, fresh noise, the condition, the
patient vector and the time, and writes for each variable the mean and log standard
deviation of its value (drawn with noise of its own, around a level drawn per stay) and
the probability it is observed. It starts from the training marginals
(:meth:`~SequenceGenerator.start_from_marginals`): with minutes, not days, of training,
the GAN should spend them on how values depend on each other, not on finding their
ranges. Masks and sex are sampled hard (0/1) with straight-through gradients, so the
critic never sees a soft mask that real data could not have.

:class:`Critic`: the sequence (with the condition and statics broadcast over time)
through strided 1-D convolutions, flattened (the position in the stay matters: labs
come at admission), joined to the statics and condition, to one score. No batch norm
(the gradient penalty is per sample).
"""

from __future__ import annotations

import torch
from torch import nn


def one_hot(index: torch.Tensor, size: int) -> torch.Tensor:
    return nn.functional.one_hot(index, size).float()


def straight_through_bernoulli(probability: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    hard = torch.bernoulli(probability.detach(), generator=rng)
    return hard + probability - probability.detach()


def straight_through_categorical(logits: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """A one-hot sample whose gradient is the softmax's (Gumbel-max, hard)."""
    uniform = torch.rand(logits.shape, generator=rng).clamp(1e-9, 1 - 1e-9)
    gumbel = -torch.log(-torch.log(uniform))
    soft = torch.softmax(logits, dim=-1)
    hard = one_hot((logits.detach() + gumbel).argmax(dim=-1), logits.shape[-1])
    return hard + soft - soft.detach()


class SequenceGenerator(nn.Module):
    def __init__(
        self,
        variables: int,
        steps: int,
        numeric_statics: int,
        sexes: int,
        conditions: int,
        noise: int = 32,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        self.variables, self.steps, self.numeric, self.sexes = (
            variables,
            steps,
            numeric_statics,
            sexes,
        )
        self.noise = noise
        self.patient = nn.Sequential(
            nn.Linear(noise + conditions, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
        )
        self.static_head = nn.Linear(hidden, 3 * numeric_statics + sexes)
        self.initial = nn.Linear(hidden, 2 * hidden)
        self.gru = nn.GRU(noise + conditions + hidden + 1, hidden, num_layers=2, batch_first=True)
        self.out = nn.Linear(hidden, 3 * variables)
        #: Each variable's level in a stay, straight from the stay's noise.
        self.level = nn.Linear(noise, variables, bias=False)
        #: Observation log-odds moved together by each step's noise (lab panels, rounds),
        #: straight from it; starts at 0.
        self.together = nn.Linear(noise, variables, bias=False)
        nn.init.zeros_(self.together.weight)

    @torch.no_grad()
    def start_from_marginals(
        self,
        observed: torch.Tensor,
        known: torch.Tensor,
        sexes: torch.Tensor,
        between_stays: torch.Tensor,
    ) -> None:
        """Start as a random-intercept model with the training marginals: each variable's
        value is a level drawn per stay plus noise drawn per step, with the training share
        of the variance that lies ``between_stays``, summing to N(0, 1) (the normal
        scores' distribution); each variable observed, each static known and each sex as
        often as in training. Training then only has to learn the rest of how values
        depend on each other and on the condition."""
        share = between_stays.clamp(0.0, 0.95)
        weight = torch.randn(self.level.weight.shape)
        self.level.weight.copy_(weight / weight.norm(dim=1, keepdim=True) * share.sqrt()[:, None])
        for layer, rates, categories in (
            (self.out, observed, None),
            (self.static_head, known, sexes),
        ):
            layer.weight.mul_(0.1)
            layer.bias.zero_()
            k = rates.numel()
            rates = rates.clamp(1e-4, 1 - 1e-4)
            layer.bias[2 * k : 3 * k] = torch.log(rates / (1 - rates))
            if categories is not None:
                layer.bias[3 * k :] = torch.log(categories.clamp(min=1e-4))
        self.out.bias[self.variables : 2 * self.variables] = 0.5 * torch.log(1.0 - share)

    def forward(self, condition: torch.Tensor, rng: torch.Generator) -> dict[str, torch.Tensor]:
        n = condition.shape[0]
        noise = torch.randn(n, self.noise, generator=rng)
        patient = self.patient(torch.cat([noise, condition], dim=-1))
        mean, log_sd, known_logit, sex_logit = self.static_head(patient).split(
            [self.numeric, self.numeric, self.numeric, self.sexes], dim=-1
        )
        static_values = mean + log_sd.exp() * torch.randn(mean.shape, generator=rng)
        known = straight_through_bernoulli(torch.sigmoid(known_logit), rng)
        sex = straight_through_categorical(sex_logit, rng)
        time = torch.linspace(0.0, 1.0, self.steps).expand(n, self.steps)[..., None]
        step_noise = torch.randn(n, self.steps, self.noise, generator=rng)
        inputs = torch.cat(
            [
                step_noise,
                condition[:, None, :].expand(n, self.steps, -1),
                patient[:, None, :].expand(n, self.steps, -1),
                time,
            ],
            dim=-1,
        )
        h0 = self.initial(patient).view(n, 2, -1).transpose(0, 1).contiguous()
        outputs, _ = self.gru(inputs, torch.tanh(h0))
        mean, log_sd, logits = self.out(outputs).split(self.variables, dim=-1)
        level = self.level(noise)[:, None, :]
        values = level + mean + log_sd.exp() * torch.randn(mean.shape, generator=rng)
        mask = straight_through_bernoulli(torch.sigmoid(logits + self.together(step_noise)), rng)
        return {
            "sequence": torch.cat([values * mask, mask], dim=-1),
            "statics": torch.cat([static_values * known, known, sex], dim=-1),
            "values": values,
            "mask": mask,
            "static_values": static_values,
            "static_known": known,
            "sex": sex,
        }


class Critic(nn.Module):
    def __init__(
        self, variables: int, static_width: int, conditions: int, channels: int = 96
    ) -> None:
        super().__init__()
        given = conditions + static_width
        self.convolutions = nn.Sequential(
            nn.Conv1d(2 * variables + given, channels, 5, padding=2),
            nn.LeakyReLU(0.2),
            nn.Conv1d(channels, channels, 5, stride=2, padding=2),
            nn.LeakyReLU(0.2),
            nn.Conv1d(channels, 2 * channels, 5, stride=2, padding=2),
            nn.LeakyReLU(0.2),
            nn.Conv1d(2 * channels, 2 * channels, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool1d(6),
        )
        self.score = nn.Sequential(
            nn.Linear(12 * channels + given, 2 * channels),
            nn.LeakyReLU(0.2),
            nn.Linear(2 * channels, 1),
        )

    def forward(
        self, sequence: torch.Tensor, statics: torch.Tensor, condition: torch.Tensor
    ) -> torch.Tensor:
        given = torch.cat([condition, statics], dim=-1)
        steps = sequence.shape[1]
        x = torch.cat([sequence, given[:, None, :].expand(-1, steps, -1)], dim=-1)
        features = self.convolutions(x.transpose(1, 2)).flatten(1)
        return self.score(torch.cat([features, given], dim=-1)).squeeze(-1)


def gradient_penalty(
    critic: Critic,
    real: tuple[torch.Tensor, torch.Tensor],
    fake: tuple[torch.Tensor, torch.Tensor],
    condition: torch.Tensor,
    rng: torch.Generator,
) -> torch.Tensor:
    """WGAN-GP: (||grad critic|| - 1)^2 at random points between real and fake stays."""
    n = condition.shape[0]
    alpha = torch.rand(n, 1, generator=rng)
    sequence = (alpha[:, :, None] * real[0] + (1 - alpha[:, :, None]) * fake[0]).requires_grad_()
    statics = (alpha * real[1] + (1 - alpha) * fake[1]).requires_grad_()
    score = critic(sequence, statics, condition)
    grads = torch.autograd.grad(score.sum(), (sequence, statics), create_graph=True)
    norm = torch.sqrt(grads[0].pow(2).sum(dim=(1, 2)) + grads[1].pow(2).sum(dim=1) + 1e-12)
    return ((norm - 1.0) ** 2).mean()
