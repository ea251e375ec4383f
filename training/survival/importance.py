"""Which variables a model relies on: permutation importance and integrated gradients.

* :func:`permutation_importance`: for each input variable (and each static covariate),
  shuffle it between the evaluation stays — all its columns together: for a net its
  value, mask and time-since-observation channels at every step, for a TSFEL model
  all its features — and measure how much the mortality AUROC drops, over a few
  repeats. Every feature of a variable comes from that variable alone, so this is
  shuffling the variable's raw series between patients.
* :func:`integrated_gradients` (deep models): per-stay attributions of the mortality
  log-odds, Sundararajan et al. 2017, with a plain torch implementation (captum is
  not a dependency): ``(x - x') * mean over alpha of d f(x' + alpha (x - x')) / dx``
  with the baseline ``x'`` = every variable at its training mean, unobserved, and
  statics at the training means. The attributions of a stay add up to
  ``f(x) - f(x')`` (the check ``completeness_gap`` shrinks with ``steps``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from bedside.training.survival.inputs import Inputs
from bedside.training.survival.model import Ensemble, NetPredictor, SurvivalModel


def _auroc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def permutation_importance(
    model: SurvivalModel, inputs: Inputs, y: np.ndarray, repeats: int = 3, seed: int = 2026
) -> pl.DataFrame:
    """AUROC drop when each variable is shuffled between stays: variable, importance, std."""
    if not 0 < y.sum() < y.size:
        return pl.DataFrame(
            schema={"variable": pl.String, "importance": pl.Float64, "std": pl.Float64}
        )
    predictor = model.predictor
    design = predictor.design(inputs)
    base = _auroc(y, predictor.mortality_logits(design))
    rng = np.random.default_rng(seed)
    rows = []
    for variable, columns in predictor.columns(model.encoder).items():
        drops = []
        for _ in range(repeats):
            order = rng.permutation(y.size)
            shuffled = dict(design)
            for key, cols in columns.items():
                shuffled[key] = design[key].copy()
                shuffled[key][..., cols] = design[key][order][..., cols]
            drops.append(base - _auroc(y, predictor.mortality_logits(shuffled)))
        rows.append((variable, float(np.mean(drops)), float(np.std(drops))))
    frame = pl.DataFrame(rows, schema=["variable", "importance", "std"], orient="row")
    return frame.sort("importance", descending=True)


def nets_of(predictor: Any) -> list[Any]:
    """The torch nets of a net predictor or an ensemble of them (empty for others)."""
    members = predictor.members if isinstance(predictor, Ensemble) else [predictor]
    return [m.net for m in members if isinstance(m, NetPredictor)]


def integrated_gradients(
    predictor: Any, inputs: Inputs, steps: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Attributions of the mortality log-odds to the sequence (n, T, C) and statics (n, S).

    ``predictor`` is a net or an ensemble of nets (whose log-odds are averaged). Also
    returns, per stay, ``f(x) - f(baseline) - sum of attributions`` (ideally 0).
    """
    import torch

    nets = nets_of(predictor)
    if not nets:
        raise ValueError("integrated gradients need a torch model")
    for net in nets:
        net.eval()

    def f(seq: torch.Tensor, sta: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(seq, sta)["mortality"] for net in nets]).mean(dim=0)

    design = predictor.design(inputs)
    sequence = torch.from_numpy(design["sequence"])
    statics = torch.from_numpy(design["statics"])
    # Baseline: every variable at its training mean, unobserved (values, mask and elapsed
    # all 0), and the static covariates at their training means (0).
    base_seq, base_sta = torch.zeros_like(sequence[0]), torch.zeros_like(statics[0])
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps  # midpoint rule
    seq_attr, sta_attr, gaps = [], [], []
    for i in range(sequence.shape[0]):
        path_seq = base_seq + alphas[:, None, None] * (sequence[i] - base_seq)
        path_sta = base_sta + alphas[:, None] * (statics[i] - base_sta)
        path_seq.requires_grad_(True)
        path_sta.requires_grad_(True)
        logit = f(path_seq, path_sta)
        grad_seq, grad_sta = torch.autograd.grad(logit.sum(), (path_seq, path_sta))
        a_seq = (sequence[i] - base_seq) * grad_seq.mean(dim=0)
        a_sta = (statics[i] - base_sta) * grad_sta.mean(dim=0)
        with torch.no_grad():
            ends = f(torch.stack([base_seq, sequence[i]]), torch.stack([base_sta, statics[i]]))
        gap = float(ends[1] - ends[0] - a_seq.sum() - a_sta.sum())
        seq_attr.append(a_seq.detach().numpy())
        sta_attr.append(a_sta.detach().numpy())
        gaps.append(gap)
    return np.stack(seq_attr), np.stack(sta_attr), np.array(gaps)


def attribution_examples(
    model: SurvivalModel,
    inputs: Inputs,
    stay_ids: np.ndarray,
    y: np.ndarray,
    risk: np.ndarray,
    top: int = 8,
) -> list[dict[str, Any]]:
    """Integrated gradients of a few telling stays, summed per variable over the window.

    The stays: the highest-risk death, the highest-risk survivor (a false alarm), the
    lowest-risk death (a missed one) and the stay of median risk.
    """
    if not nets_of(model.predictor) or not 0 < y.sum() < y.size:
        return []
    deaths, alive = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    picks = {
        "highest-risk death": deaths[np.argmax(risk[deaths])],
        "highest-risk survivor": alive[np.argmax(risk[alive])],
        "lowest-risk death": deaths[np.argmin(risk[deaths])],
        "median risk": int(np.argsort(risk)[risk.size // 2]),
    }
    rows = np.array(list(picks.values()))
    seq_attr, sta_attr, gaps = integrated_gradients(model.predictor, inputs.take(rows))
    concepts = model.encoder.grid.concepts
    d = len(concepts)
    per_variable = seq_attr.reshape(len(rows), -1, 3, d).sum(axis=(1, 2))
    statics_groups = model.encoder.statics.groups
    examples = []
    for k, (why, row) in enumerate(picks.items()):
        scores = dict(zip(concepts, per_variable[k].tolist(), strict=True))
        scores |= {name: float(sta_attr[k, cols].sum()) for name, cols in statics_groups.items()}
        ranked = sorted(scores.items(), key=lambda kv: -abs(kv[1]))[:top]
        examples.append(
            {
                "why": why,
                "stay_id": int(stay_ids[row]),
                "risk": round(float(risk[row]), 4),
                "died": int(y[row]),
                "top_log_odds_contributions": {name: round(v, 4) for name, v in ranked},
                "completeness_gap": round(float(gaps[k]), 5),
            }
        )
    return examples
