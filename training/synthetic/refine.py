"""Discriminator-guided selection: keep the generated stays a classifier finds most real.

A generator's stays differ from real ones in ways a classifier learns (the evaluation's
*discriminative score*). Discriminator rejection sampling (Azadi et al., 2019) corrects
a generator after training with such a classifier: if ``s(x)`` is the probability it
gives a stay of being synthetic, ``(1 - s(x)) / s(x)`` estimates (up to a constant) the
ratio of the real to the generator's density at ``x``, and stays drawn from the
generator and resampled in proportion to that ratio follow the real distribution as the
classifier sees it (sampling-importance-resampling).

:func:`select` does it one slot at a time, so outcomes and ICU types stay as asked: for
each of the ``n`` stays wanted it draws ``candidates`` stays with the same outcome and
ICU type, fits gradient boosting on the real training stays against all candidates
(cross-fitted: each candidate is scored by a classifier that did not see it) on the
features of the evaluation's classifier, and keeps one candidate of each slot with
probability proportional to its ratio. One candidate per slot is the generator as it
is; the more candidates, the closer to the real distribution and the longer sampling
takes (it is linear in ``candidates``).

The classifier sees only the generator's training stays, never the stays a synthetic
set is later evaluated against; the privacy of the kept stays is measured as for any
other sample (``bedside synth evaluate``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bedside.training.synthetic.data import StaySet
from bedside.training.synthetic.generator import Generator, GeneratorError

FOLDS = 5
#: Ratios are computed from probabilities kept inside this margin of 0 and 1, so that one
#: over-confident leaf cannot take a slot alone.
PROBABILITY_MARGIN = 1e-3


def realism(real: StaySet, candidates: StaySet, seed: int) -> tuple[np.ndarray, float]:
    """Cross-fitted probability of each candidate being synthetic, from the evaluation's
    gradient boosting of ``real`` stays against ``candidates``, and that classifier's
    AUROC."""
    from sklearn.metrics import roc_auc_score

    from bedside.training.synthetic.evaluate import boosted_scores

    y, score, _ = boosted_scores(real, candidates, folds=FOLDS, seed=seed)
    return score[len(real) :], float(roc_auc_score(y, score))


def select(
    generator: Generator,
    real: StaySet,
    n: int,
    *,
    candidates: int,
    seed: int,
    death_share: float | None = None,
    progress: Callable[[str], None] = print,
) -> tuple[StaySet, dict[str, Any]]:
    """``n`` stays, each the one kept of ``candidates`` drawn with its outcome and ICU
    type, by their estimated density ratio against the ``real`` (training) stays; and a
    summary for the data card."""
    if candidates < 1:
        raise GeneratorError(f"candidates {candidates}: expected 1 or more")
    rng = np.random.default_rng(seed)
    death, icu = generator.encoding.conditions(n, rng, death_share)
    progress(f"drawing {candidates} candidates for each of {n} stays")
    pool = generator.sample(
        n * candidates,
        seed=seed,
        conditions=(np.repeat(death, candidates), np.repeat(icu, candidates)),
    )
    if candidates == 1:
        return pool, {"candidates": 1}
    progress(f"scoring {len(pool)} candidates against {len(real)} real training stays")
    synthetic, auroc = realism(real.on_grid(pool.grid), pool, seed)
    s = np.clip(synthetic, PROBABILITY_MARGIN, 1 - PROBABILITY_MARGIN)
    ratio = ((1 - s) / s).reshape(n, candidates)
    weights = ratio / ratio.sum(axis=1, keepdims=True)
    u = rng.random(n)[:, None]
    kept = np.minimum((weights.cumsum(axis=1) < u).sum(axis=1), candidates - 1)
    rows = np.arange(n) * candidates + kept
    effective = 1.0 / (weights**2).sum(axis=1)  # Kish's effective number of candidates
    summary = {
        "candidates": candidates,
        "method": "discriminator-guided selection: one of each slot's candidates (same "
        "outcome and ICU type) kept with probability proportional to (1 - s) / s, s the "
        "cross-fitted gradient-boosting probability of being synthetic against the "
        "training stays",
        "classifier_auroc_candidates_vs_training": round(auroc, 4),
        "mean_effective_candidates": round(float(effective.mean()), 3),
        "mean_probability_synthetic": {
            "candidates": round(float(synthetic.mean()), 4),
            "kept": round(float(synthetic[rows].mean()), 4),
        },
    }
    return pool.take(rows), summary
