"""A small decoder-only transformer over stay tokens, with a cache for sampling.

Each token's input is the sum of its embedding, its position's, its step's (the hour it
belongs to, :func:`~bedside.training.synthetic.lm.tokens.hours`, so the model knows the
time without counting hour tokens) and a linear map of the stay's state so far
(:func:`~bedside.training.synthetic.lm.tokens.state_features`). Pre-norm blocks, causal
self-attention (``scaled_dot_product_attention``), GELU feed-forward; the next token is
chosen in two steps (:class:`TokenTransformer`). Training runs whole sequences (padding
at the end is never attended to by earlier tokens); sampling runs one token at a time
with each layer's keys and values cached, so a sequence of ``L`` tokens costs ``L``
single-token steps.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from bedside.training.synthetic.lm.tokens import STATE_FEATURES


class Block(nn.Module):
    def __init__(self, width: int, heads: int, feedforward: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.project = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.feedforward = nn.Sequential(
            nn.Linear(width, feedforward), nn.GELU(), nn.Linear(feedforward, width)
        )
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        return x.view(n, length, self.heads, width // self.heads).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, cache: dict[str, torch.Tensor] | None = None, position: int = 0
    ) -> torch.Tensor:
        n, length, width = x.shape
        q, k, v = (self._split(t) for t in self.qkv(self.norm1(x)).split(width, dim=-1))
        if cache is None:
            # No dropout on attention weights: it would force the slow math kernel.
            attended = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            cache["k"][:, :, position : position + length] = k
            cache["v"][:, :, position : position + length] = v
            keys = cache["k"][:, :, : position + length]
            values = cache["v"][:, :, : position + length]
            attended = functional.scaled_dot_product_attention(
                q, keys, values, is_causal=length > 1
            )
        attended = attended.transpose(1, 2).reshape(n, length, width)
        x = x + self.dropout(self.project(attended))
        return x + self.dropout(self.feedforward(self.norm2(x)))


class BinHead(nn.Module):
    """The bin of a variable's value, once the model has chosen the variable.

    Predicted from the context, the variable's embedding and the variable's own state
    (the bins of its last value and of its mean so far, or none, and the steps since),
    through weights shared by all variables: "a value near the last one" is one thing to
    learn, not one per variable.
    """

    def __init__(self, width: int, variables: int, bins: int, hidden: int = 64) -> None:
        super().__init__()
        self.variables, self.bins = variables, bins
        self.context = nn.Linear(width, hidden)
        self.embedding = nn.Embedding(variables, hidden)
        self.last_bin = nn.Embedding(bins + 1, hidden)  # the last value's bin; bins = none
        self.mean_bin = nn.Embedding(bins + 1, hidden)  # the bin of the mean rank so far
        self.elapsed = nn.Linear(1, hidden)
        self.out = nn.Linear(hidden, bins)

    def forward(
        self, x: torch.Tensor, variable: torch.Tensor, states: torch.Tensor
    ) -> torch.Tensor:
        """(n, bins) logits for ``variable`` (n,), given the hidden ``x`` (n, width) and
        the ``states`` (n, 4 x variables) of
        :func:`~bedside.training.synthetic.lm.tokens.state_features`."""
        rank, mean, seen, elapsed = (
            states.gather(-1, (variable + k * self.variables)[:, None])[:, 0]
            for k in range(STATE_FEATURES)
        )

        def bin_of(r: torch.Tensor) -> torch.Tensor:
            return torch.where(seen > 0, (r * self.bins).long().clamp(max=self.bins - 1), self.bins)

        z = self.context(x) + self.embedding(variable) + self.last_bin(bin_of(rank))
        z = z + self.mean_bin(bin_of(mean))
        z = z + self.elapsed(elapsed[:, None])
        return self.out(functional.gelu(z))


class TokenTransformer(nn.Module):
    """The model picks the next token in two steps: a *choice* (any token but a cell, or
    a variable), then, for a variable, the bin of its value (:class:`BinHead`). The
    probability of a cell is p(variable) x p(bin | variable), so the normaliser never
    needs every variable's bins: training computes the bins of the observed variable only.
    """

    def __init__(
        self,
        first_cell: int,
        variables: int,
        bins: int,
        steps: int,
        max_length: int,
        width: int = 128,
        layers: int = 4,
        heads: int = 4,
        feedforward: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.max_length = max_length
        self.token = nn.Embedding(first_cell + variables * bins, width)
        self.position = nn.Embedding(max_length, width)
        self.hour = nn.Embedding(steps + 1, width)
        self.state = nn.Linear(STATE_FEATURES * variables, width)
        self.blocks = nn.ModuleList(
            Block(width, heads, feedforward, dropout) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(width)
        self.choice = nn.Linear(width, first_cell + variables)
        self.bins = BinHead(width, variables, bins)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)
        nn.init.normal_(self.hour.weight, std=0.02)
        # On the embeddings' scale, so the state does not drown the token at first.
        nn.init.normal_(self.state.weight, std=0.02)
        nn.init.zeros_(self.state.bias)

    def _embed(
        self, tokens: torch.Tensor, hours: torch.Tensor, states: torch.Tensor, first: int
    ) -> torch.Tensor:
        positions = torch.arange(first, first + tokens.shape[1])
        x = self.token(tokens) + self.position(positions) + self.hour(hours) + self.state(states)
        return self.dropout(x)

    def forward(
        self, tokens: torch.Tensor, hours: torch.Tensor, states: torch.Tensor
    ) -> torch.Tensor:
        """The hidden state after each token (n, length, width): the input of
        :attr:`choice` and :attr:`bins` for the token that follows."""
        x = self._embed(tokens, hours, states, 0)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def new_cache(self, n: int) -> list[dict[str, torch.Tensor]]:
        first = self.blocks[0]
        width = first.qkv.in_features
        shape = (n, first.heads, self.max_length, width // first.heads)
        return [{"k": torch.zeros(shape), "v": torch.zeros(shape)} for _ in self.blocks]

    def step(
        self,
        tokens: torch.Tensor,
        hours: torch.Tensor,
        states: torch.Tensor,
        position: int,
        cache: list[dict[str, torch.Tensor]],
    ) -> torch.Tensor:
        """The hidden state (n, width) after ``tokens`` (n, length) placed at ``position``."""
        x = self._embed(tokens, hours, states, position)
        for block, kept in zip(self.blocks, cache, strict=True):
            x = block(x, kept, position)
        return self.norm(x[:, -1])
