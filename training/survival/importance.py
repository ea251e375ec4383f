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
  statics at the training means (for ``lstm-tsfel``, the TSFEL features of an empty
  window, integrated along their encoding). The attributions of a stay add up to
  ``f(x) - f(x')`` (the check ``completeness_gap`` shrinks with ``steps``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from bedside.training.survival.inputs import Inputs
from bedside.training.survival.model import Blend, Ensemble, NetPredictor, SurvivalModel


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


def nets_of(predictor: Any) -> list[NetPredictor]:
    """The nets of a net predictor, a blend, or an ensemble of either (empty for others)."""
    members = predictor.members if isinstance(predictor, Ensemble) else [predictor]
    parts = [part for m in members for part in (m.parts if isinstance(m, Blend) else [m])]
    return [part for part in parts if isinstance(part, NetPredictor)]


def integrated_gradients(
    predictor: Any, inputs: Inputs, steps: int = 64
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Attributions of the mortality log-odds to each array of the design: the sequence
    (n, T, C), the statics (n, S) and, for nets that read them, the TSFEL features (n, F).

    ``predictor`` is a net, a blend of nets or an ensemble of either (whose log-odds are
    averaged, so are their attributions). Also returns, per stay, ``f(x) - f(baseline) -
    sum of attributions`` (ideally 0).

    The baseline is a stay with every variable unobserved (values, mask and elapsed
    all 0: each at its training mean) and the static covariates at their training
    means (0); its TSFEL features are those of an empty window. A net that reads
    TSFEL features is integrated along their *encoding*
    (:class:`~bedside.training.survival.nets.QuantileEncoding`), where the path is
    continuous (an undefined feature is not a number); each encoded column's
    attribution goes to the feature it encodes.
    """
    import torch

    from bedside.training.survival.model import tsfel_features

    members = nets_of(predictor)
    if not members:
        raise ValueError("integrated gradients need a torch model")
    design = predictor.design(inputs)
    empty = Inputs(
        observed=np.full_like(inputs.observed[:1], np.nan),
        mask=np.zeros_like(inputs.mask[:1]),
        elapsed=np.zeros_like(inputs.elapsed[:1]),
        values=np.zeros_like(inputs.values[:1]),
        statics=np.zeros_like(inputs.statics[:1]),
    )
    baseline_design = {"sequence": empty.sequence(), "statics": empty.statics}
    if "features" in design:
        feature_set = next(m.feature_set for m in members if m.feature_set)
        baseline_design["features"] = tsfel_features(empty, feature_set)
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps  # midpoint rule
    n = len(inputs)
    attributions = {key: np.zeros(values.shape) for key, values in design.items()}
    gaps = np.zeros(n)
    for member in members:
        net = member.net
        net.eval()
        x_all = member.net_inputs(design)
        base = {key: t[0] for key, t in member.net_inputs(baseline_design).items()}
        for i in range(n):
            x = {key: t[i] for key, t in x_all.items()}
            path = {
                key: (base[key] + alphas.view(-1, *[1] * x[key].dim()) * (x[key] - base[key]))
                .detach()
                .requires_grad_(True)
                for key in x
            }
            logit = net(**path)["mortality"]
            grads = torch.autograd.grad(logit.sum(), list(path.values()))
            with torch.no_grad():
                ends = net(**{key: torch.stack([base[key], x[key]]) for key in x})["mortality"]
            total = 0.0
            for key, grad in zip(path, grads, strict=True):
                attribution = ((x[key] - base[key]) * grad.mean(dim=0)).detach()
                total += float(attribution.sum())
                if key == "tsfel":
                    assert net.tsfel is not None
                    per_feature = torch.zeros(design["features"].shape[1], dtype=attribution.dtype)
                    per_feature.index_add_(0, net.tsfel.source(), attribution)
                    attributions["features"][i] += per_feature.numpy() / len(members)
                else:
                    attributions[key][i] += attribution.numpy() / len(members)
            gaps[i] += (float(ends[1] - ends[0]) - total) / len(members)
    return attributions, gaps


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
    attributions, gaps = integrated_gradients(model.predictor, inputs.take(rows))
    # Each variable's (or covariate's) columns in every array, summed over time.
    columns = model.predictor.columns(model.encoder)
    examples = []
    for k, (why, row) in enumerate(picks.items()):
        scores = {
            name: float(sum(attributions[key][k][..., cols].sum() for key, cols in where.items()))
            for name, where in columns.items()
        }
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
