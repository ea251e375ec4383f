"""How good synthetic stays are: fidelity, utility, privacy and rebalancing.

Every function takes :class:`~bedside.training.synthetic.data.StaySet` objects (or
canonical tables) and returns a JSON-able dict. The real data come in two parts: the
*training* stays the generator learnt from, and *test* stays it never saw (PhysioNet
2012: set A and set B).

Fidelity (synthetic vs test stays)
    per variable, the Kolmogorov-Smirnov statistic and the Wasserstein distance of the
    observed values (also divided by the real standard deviation, comparable across
    variables) and the share of steps observed; the correlation matrix of the stays'
    mean values (pairwise complete) and the autocorrelation of each variable at lags of
    1-24 steps, as mean absolute differences; the static covariates. The
    *discriminative score* is the AUROC of classifiers telling real from synthetic
    stays, on equally many of each: gradient boosting on the survival models' TSFEL
    features, observation counts and statics (5-fold out-of-fold), and a GRU over the
    windows and masks (the post-hoc classifier of TimeGAN; 2/3 to train, 1/3 to test).
    0.5 = indistinguishable; the headline is the higher of the two. Given the generator,
    the *encoding floor*: the same gradient boosting telling half of the real test stays
    from the other half passed through the generator's encoding and decoding (no model),
    the part of the score its representation accounts for.

Utility
    a mortality model (``tsfel-lr`` by default, :func:`~bedside.training.survival.fit.fit_model`,
    the code of ``bedside train survival``) trained on synthetic stays and tested on the
    real test stays (TSTR), against the same model trained on the real training stays
    (TRTR). The synthetic training set has as many stays and deaths as the real one.

Privacy
    records are compared as vectors: standardised hourly values (0 where missing), the
    mask, and the statics. *Distance to closest record* (DCR): of each synthetic stay to
    the training stays, against the same for real test stays, which the generator never
    saw; a generator that copies its training stays has synthetic DCRs far below the
    test stays'. *Membership inference*: an attacker holding the synthetic stays scores
    each real stay by its distance to the closest synthetic stay and tries to tell
    training stays (members) from test stays; AUROC 0.5 = no better than chance.

Rebalancing
    the real training stays plus synthetic deaths, up to each death share asked; the
    model is tested on the real test stays and compared with the one trained on the
    real stays only: AUROC, AUPRC and calibration (Brier, ECE, slope, intercept). The
    model's calibration is fitted on its own training stays, whose death share the
    augmentation raised, so its risks are also given with the prior shift undone
    (``prior_corrected``: Bayes' rule with the real and the augmented death shares).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from bedside.training.synthetic.data import NUMERIC_STATICS, StaySet, canonical_tables
from bedside.training.windows import Grid

#: Goals of issue 8 on PhysioNet 2012 (train A, evaluate against B).
GOALS = {"discriminative_auroc_max": 0.70, "tstr_gap_max": 0.05, "mia_auroc_max": 0.60}
#: Lags of the autocorrelation, in steps.
LAGS = (1, 2, 3, 6, 12, 24)
#: Values per variable and side compared by KS / Wasserstein (a seeded sample beyond).
MAX_VALUES = 50_000
#: Fewest pairs for an autocorrelation or correlation to be compared.
MIN_PAIRS = 30


@dataclass(frozen=True)
class EvaluationOptions:
    utility_arch: str = "tsfel-lr"
    folds: int = 5
    max_minutes: float = 10.0
    rebalance_shares: tuple[float, ...] = (0.3, 0.5)
    privacy_stays: int = 1000
    classifier_folds: int = 5
    gru_seconds: float = 120.0
    bootstrap: int = 200
    seed: int = 2026


# --- fidelity ---------------------------------------------------------------------------


def _sample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return values if values.size <= MAX_VALUES else rng.choice(values, MAX_VALUES, replace=False)


def marginals(real: StaySet, synthetic: StaySet, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for j, concept in enumerate(real.grid.concepts):
        a = real.values[:, :, j]
        b = synthetic.values[:, :, j]
        a_seen, b_seen = a[np.isfinite(a)], b[np.isfinite(b)]
        row: dict[str, Any] = {
            "concept": concept,
            "n_real": int(a_seen.size),
            "n_synthetic": int(b_seen.size),
            "observed_share_real": float(np.isfinite(a).mean()),
            "observed_share_synthetic": float(np.isfinite(b).mean()),
            "ks": None,
            "wasserstein": None,
            "wasserstein_std": None,
        }
        if a_seen.size and b_seen.size:
            a_s, b_s = _sample(a_seen, rng), _sample(b_seen, rng)
            row["ks"] = float(stats.ks_2samp(a_s, b_s).statistic)
            distance = float(stats.wasserstein_distance(a_s, b_s))
            row["wasserstein"] = distance
            row["wasserstein_std"] = distance / float(a_seen.std() or 1.0)
        rows.append(row)
    return rows


def pairwise_correlation(x: np.ndarray) -> np.ndarray:
    """Pearson correlation of columns over the rows where both are observed (NaN when
    fewer than ``MIN_PAIRS`` rows)."""
    seen = np.isfinite(x).astype(np.float64)
    z = np.nan_to_num(x)
    n = seen.T @ seen
    sx = z.T @ seen  # [i, j]: sum of column i over rows where j is observed too
    sxx = (z * z).T @ seen
    sxy = z.T @ z
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_i, mean_j = sx / n, sx.T / n
        cov = sxy / n - mean_i * mean_j
        var_i = sxx / n - mean_i**2
        var_j = var_i.T
        corr = cov / np.sqrt(var_i * var_j)
    corr[n < MIN_PAIRS] = np.nan
    return np.clip(corr, -1.0, 1.0)


def stay_means(stays: StaySet) -> np.ndarray:
    observed = stays.mask
    with np.errstate(invalid="ignore"):
        return np.where(
            observed.any(axis=1), np.nansum(stays.values, axis=1) / observed.sum(axis=1), np.nan
        )


def autocorrelation(stays: StaySet, lags: tuple[int, ...] = LAGS) -> np.ndarray:
    """(variables, lags): correlation of a variable's values ``lag`` steps apart."""
    out = np.full((len(stays.grid.concepts), len(lags)), np.nan)
    for j in range(len(stays.grid.concepts)):
        x = stays.values[:, :, j]
        for k, lag in enumerate(lags):
            if lag >= x.shape[1]:
                continue
            a, b = x[:, :-lag].ravel(), x[:, lag:].ravel()
            both = np.isfinite(a) & np.isfinite(b)
            if both.sum() >= MIN_PAIRS and a[both].std() > 0 and b[both].std() > 0:
                out[j, k] = float(np.corrcoef(a[both], b[both])[0, 1])
    return out


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float | None:
    diff = np.abs(a - b)
    return float(np.nanmean(diff)) if np.isfinite(diff).any() else None


def statics_fidelity(real: StaySet, synthetic: StaySet) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in NUMERIC_STATICS:
        a = real.statics[name].drop_nulls().to_numpy()
        b = synthetic.statics[name].drop_nulls().to_numpy()
        entry: dict[str, Any] = {
            "known_share_real": float(real.statics[name].is_not_null().mean()),
            "known_share_synthetic": float(synthetic.statics[name].is_not_null().mean()),
        }
        if a.size and b.size:
            entry["ks"] = float(stats.ks_2samp(a, b).statistic)
            entry["median_real"], entry["median_synthetic"] = (
                float(np.median(a)),
                float(np.median(b)),
            )
        out[name] = entry
    for name in ("sex", "icu_type"):
        a = real.statics[name].fill_null("unknown").value_counts(normalize=True)
        b = synthetic.statics[name].fill_null("unknown").value_counts(normalize=True)
        joined = a.join(b, on=name, how="full", coalesce=True, suffix="_synthetic").fill_null(0)
        shares = dict(zip(joined[name], joined["proportion"], strict=True))
        synth = dict(zip(joined[name], joined["proportion_synthetic"], strict=True))
        out[name] = {
            "total_variation": 0.5
            * float(np.abs(joined["proportion"] - joined["proportion_synthetic"]).sum()),
            "real": shares,
            "synthetic": synth,
        }
    out["death_share"] = {
        "real": float(real.death.mean()),
        "synthetic": float(synthetic.death.mean()),
    }
    return out


def fidelity(real: StaySet, synthetic: StaySet, seed: int) -> dict[str, Any]:
    variables = marginals(real, synthetic, seed)
    corr_real = pairwise_correlation(stay_means(real))
    corr_synth = pairwise_correlation(stay_means(synthetic))
    off = ~np.eye(corr_real.shape[0], dtype=bool)
    acf_real, acf_synth = autocorrelation(real), autocorrelation(synthetic)
    ks = [v["ks"] for v in variables if v["ks"] is not None]
    wd = [v["wasserstein_std"] for v in variables if v["wasserstein_std"] is not None]
    missing = [abs(v["observed_share_real"] - v["observed_share_synthetic"]) for v in variables]
    per_step_real = real.mask.mean(axis=(0, 2))
    per_step_synth = synthetic.mask.mean(axis=(0, 2))
    return {
        "summary": {
            "ks_mean": float(np.mean(ks)) if ks else None,
            "ks_max": float(np.max(ks)) if ks else None,
            "wasserstein_std_mean": float(np.mean(wd)) if wd else None,
            "observed_share_real": float(real.mask.mean()),
            "observed_share_synthetic": float(synthetic.mask.mean()),
            "missingness_abs_diff_mean": float(np.mean(missing)),
            "correlation_abs_diff_mean": _mean_abs(corr_real[off], corr_synth[off]),
            "autocorrelation_abs_diff_mean": _mean_abs(acf_real, acf_synth),
        },
        "variables": variables,
        "missingness_by_step": {
            "real": per_step_real.tolist(),
            "synthetic": per_step_synth.tolist(),
        },
        "correlation": {
            "of": "stay means of each variable, pairwise complete",
            "concepts": list(real.grid.concepts),
            "real": _nan_none(corr_real),
            "synthetic": _nan_none(corr_synth),
        },
        "autocorrelation": {
            "lags_steps": list(LAGS),
            "real": _nan_none(acf_real),
            "synthetic": _nan_none(acf_synth),
        },
        "statics": statics_fidelity(real, synthetic),
    }


def _nan_none(array: np.ndarray) -> list[Any]:
    return [[None if not np.isfinite(v) else round(float(v), 5) for v in row] for row in array]


# --- the discriminative score ------------------------------------------------------------


def _standardise(stays: StaySet, reference: StaySet) -> np.ndarray:
    values = reference.values.reshape(-1, reference.values.shape[-1])
    mean = np.nan_to_num(np.nanmean(values, axis=0))
    std = np.nan_to_num(np.nanstd(values, axis=0), nan=1.0)
    std = np.where(std > 0, std, 1.0)
    return np.clip((stays.values - mean) / std, -8, 8)


def static_matrix(stays: StaySet, icu_types: list[str], reference: StaySet) -> np.ndarray:
    columns = []
    for name in NUMERIC_STATICS:
        x = stays.statics[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        ref = reference.statics[name].drop_nulls().to_numpy()
        mean, std = (float(ref.mean()), float(ref.std() or 1.0)) if ref.size else (0.0, 1.0)
        columns += [(x - mean) / std, np.isfinite(x).astype(np.float64)]
    sex = stays.statics["sex"].to_list()
    columns += [[s == "M" for s in sex], [s is None for s in sex]]
    icu = stays.statics["icu_type"].fill_null("unknown").to_list()
    columns += [[t == kind for t in icu] for kind in icu_types]
    columns.append(stays.death)
    return np.column_stack(columns).astype(np.float64)


def stay_features(stays: StaySet, reference: StaySet, icu_types: list[str]) -> np.ndarray:
    from bedside.training.survival.features import COMPACT, window_features

    return np.hstack(
        [
            window_features(_standardise(stays, reference), COMPACT),
            static_matrix(stays, icu_types, reference),
        ]
    )


def _balanced(
    real: StaySet, synthetic: StaySet, rng: np.random.Generator
) -> tuple[StaySet, StaySet]:
    n = min(len(real), len(synthetic))
    return (
        real.take(np.sort(rng.choice(len(real), n, replace=False))),
        synthetic.take(np.sort(rng.choice(len(synthetic), n, replace=False))),
    )


def discriminative_score(
    real: StaySet, synthetic: StaySet, options: EvaluationOptions
) -> dict[str, Any]:
    """AUROC of classifiers telling real from synthetic stays (equal numbers of each)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(options.seed)
    real, synthetic = _balanced(real, synthetic, rng)
    y, score, folds = boosted_scores(
        real, synthetic, folds=options.classifier_folds, seed=options.seed
    )
    gbm = float(roc_auc_score(y, score))
    gru = gru_discriminator(real, synthetic, options)
    return {
        "auroc": max(gbm, gru["auroc"]),
        "gradient_boosting": {
            "auroc": gbm,
            "features": "TSFEL compact features of each variable, observation counts, statics",
            "validation": f"{folds}-fold out-of-fold",
        },
        "gru": gru,
        "n_each": len(real),
        "note": "0.5 = indistinguishable; the headline is the higher of the two classifiers",
        "_roc": {"y": y.tolist(), "gradient_boosting": score.tolist()},
    }


def boosted_scores(
    real: StaySet, synthetic: StaySet, *, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Labels (1 = synthetic), out-of-fold scores of gradient boosting on the stays'
    features (real ones the reference of the standardisation) and the folds used."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    icu_types = sorted(set(real.statics["icu_type"].fill_null("unknown").to_list()))
    x = np.vstack([stay_features(real, real, icu_types), stay_features(synthetic, real, icu_types)])
    y = np.r_[np.zeros(len(real)), np.ones(len(synthetic))].astype(np.int64)
    x[:, np.isnan(x).all(axis=0)] = 0.0
    folds = min(folds, len(real), len(synthetic))
    score = np.zeros(y.size)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(x, y):
        model = HistGradientBoostingClassifier(
            max_iter=200,
            learning_rate=0.1,
            max_leaf_nodes=15,
            early_stopping=False,
            random_state=seed,
        )
        score[test] = model.fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    return y, score, folds


def encoding_floor(
    real: StaySet, round_trip: Callable[[StaySet], StaySet], options: EvaluationOptions
) -> dict[str, Any]:
    """The discriminative score of the generator's representation alone: half of the
    real test stays against the other half passed through ``round_trip`` (the
    generator's encoding and decoding, no model), by the gradient boosting of
    :func:`discriminative_score`. A generator whose model were perfect would still be
    told apart this well; what its samples score above it is the model's."""
    from sklearn.metrics import roc_auc_score

    order = np.random.default_rng(options.seed).permutation(len(real))
    half = len(real) // 2
    kept, passed = real.take(np.sort(order[:half])), real.take(np.sort(order[half:]))
    passed = round_trip(passed).on_grid(real.grid)
    y, score, _ = boosted_scores(kept, passed, folds=options.classifier_folds, seed=options.seed)
    return {
        "auroc": float(roc_auc_score(y, score)),
        "n_each": [half, len(real) - half],
        "note": "real test stays against other real test stays passed through the "
        "generator's encoding and decoding: the part of the discriminative score that "
        "the representation, not the model, accounts for",
    }


def gru_discriminator(
    real: StaySet, synthetic: StaySet, options: EvaluationOptions
) -> dict[str, Any]:
    """TimeGAN's post-hoc classifier: a GRU over windows and masks, plus the statics."""
    import torch
    from sklearn.metrics import roc_auc_score
    from torch import nn

    torch.manual_seed(options.seed)
    icu_types = sorted(set(real.statics["icu_type"].fill_null("unknown").to_list()))

    def tensors(stays: StaySet) -> tuple[torch.Tensor, torch.Tensor]:
        z = _standardise(stays, real)
        sequence = np.concatenate([np.nan_to_num(z), stays.mask], axis=-1)
        statics = np.nan_to_num(static_matrix(stays, icu_types, real))
        return torch.as_tensor(sequence, dtype=torch.float32), torch.as_tensor(statics).float()

    seq_r, st_r = tensors(real)
    seq_s, st_s = tensors(synthetic)
    sequence, statics = torch.cat([seq_r, seq_s]), torch.cat([st_r, st_s])
    y = torch.cat([torch.zeros(len(real)), torch.ones(len(synthetic))])
    order = np.random.default_rng(options.seed).permutation(len(y))
    cut = (2 * len(y)) // 3
    train, test = order[:cut], order[cut:]

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(sequence.shape[-1], 32, batch_first=True)
            self.head = nn.Linear(32 + statics.shape[-1], 1)

        def forward(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            _, h = self.gru(s)
            return self.head(torch.cat([h[-1], x], dim=-1)).squeeze(-1)

    net = Classifier()
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    started, epochs = time.monotonic(), 0
    generator = torch.Generator().manual_seed(options.seed)
    for _ in range(30):
        for rows in torch.randperm(len(train), generator=generator).split(128):
            batch = train[rows.numpy()]
            loss = nn.functional.binary_cross_entropy_with_logits(
                net(sequence[batch], statics[batch]), y[batch]
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        epochs += 1
        if time.monotonic() - started > options.gru_seconds:
            break
    with torch.no_grad():
        score = net(sequence[test], statics[test]).numpy()
    labels = y[test].numpy()
    auroc = float(roc_auc_score(labels, score)) if 0 < labels.sum() < labels.size else 0.5
    return {
        "auroc": auroc,
        "epochs": epochs,
        "validation": "2/3 of the stays to train, 1/3 to test",
    }


# --- utility and rebalancing ---------------------------------------------------------


Tables = tuple[pl.DataFrame, pl.DataFrame]


def mortality_metrics(
    train: Tables,
    test: Tables,
    options: EvaluationOptions,
    prior: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Train the mortality model on ``train``; its metrics on ``test``. ``prior`` =
    (real share, trained share) of deaths adds the prior-corrected calibration."""
    from bedside.training.evaluation.metrics import binary_metrics
    from bedside.training.survival.data import FOLLOW_UP_DAYS, build_cohort
    from bedside.training.survival.fit import FitOptions, fit_model

    started = time.monotonic()
    fit_options = FitOptions(
        arch=options.utility_arch,
        max_minutes=options.max_minutes,
        seed=options.seed,
        folds=options.folds,
    )
    model, _ = fit_model(train[0], train[1], fit_options)
    cohort = build_cohort(test[0], test[1], model.grid, FOLLOW_UP_DAYS)
    risk = model.predict_windows(cohort.windows, cohort.stays).mortality
    metrics = binary_metrics(
        cohort.mortality,
        risk,
        model.threshold,
        model.threshold_rule,
        n_bootstrap=options.bootstrap,
        seed=options.seed,
    )
    keep = ("n", "n_events", "auroc", "auprc", "brier", "ece", "calibration_slope")
    out = {k: metrics[k] for k in (*keep, "calibration_intercept", "event1")}
    out["ci"] = {k: v for k, v in metrics["ci"].items() if k in ("auroc", "auprc")}
    out["n_train"] = int(train[1].height)
    out["n_train_deaths"] = int(train[1]["in_hospital_death"].sum())
    if prior is not None:
        real, trained = prior
        odds = (real / (1 - real)) / (trained / (1 - trained))
        corrected = risk * odds / (risk * odds + 1 - risk)
        again = binary_metrics(cohort.mortality, corrected, 0.5, "fixed:0.5", n_bootstrap=0)
        out["prior_corrected"] = {
            k: again[k] for k in ("brier", "ece", "calibration_slope", "calibration_intercept")
        }
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def _matched(synthetic: StaySet, n: int, deaths: int, rng: np.random.Generator) -> StaySet:
    """As many stays and deaths as the real training set, where the synthetic set allows."""
    dead = np.flatnonzero(synthetic.death == 1)
    alive = np.flatnonzero(synthetic.death == 0)
    take_dead = rng.choice(dead, min(deaths, dead.size), replace=False)
    take_alive = rng.choice(alive, min(n - deaths, alive.size), replace=False)
    return synthetic.take(np.sort(np.r_[take_dead, take_alive]))


def utility(
    train: Tables, train_set: StaySet, synthetic: StaySet, test: Tables, options: EvaluationOptions
) -> dict[str, Any]:
    rng = np.random.default_rng(options.seed)
    matched = _matched(synthetic, len(train_set), int(train_set.death.sum()), rng)
    real = mortality_metrics(train, test, options)
    synth = mortality_metrics(canonical_tables(matched, "synthetic", options.seed), test, options)
    gap = (
        None if real["auroc"] is None or synth["auroc"] is None else real["auroc"] - synth["auroc"]
    )
    return {
        "model": options.utility_arch,
        "trtr": real,
        "tstr": synth,
        "auroc_gap": gap,
        "note": "TRTR: trained on the real training stays; TSTR: on as many synthetic stays "
        "and deaths; both tested on the real test stays",
    }


#: The mortality metrics the rebalancing runs compare with real stays alone.
COMPARED = ("auroc", "auprc", "brier", "ece", "calibration_slope", "calibration_intercept")


def rebalancing(
    train: Tables,
    train_set: StaySet,
    deaths: Callable[[int], StaySet],
    test: Tables,
    options: EvaluationOptions,
    baseline: dict[str, Any],
) -> dict[str, Any]:
    """The real training stays plus synthetic deaths up to each share; ``deaths(k)`` gives
    ``k`` synthetic deaths."""
    n, dead = len(train_set), int(train_set.death.sum())
    real_share = dead / n
    runs = []
    for share in options.rebalance_shares:
        if share <= real_share or share >= 1:
            continue
        extra = math.ceil((share * n - dead) / (1 - share))
        added = deaths(extra)
        events, stays = canonical_tables(added, "synthetic", options.seed)
        combined = (
            pl.concat([train[0], events.select(train[0].columns)], how="vertical_relaxed"),
            pl.concat([train[1], stays.select(train[1].columns)], how="vertical_relaxed"),
        )
        reached = (dead + len(added)) / (n + len(added))
        metrics = mortality_metrics(combined, test, options, prior=(real_share, reached))
        change = {
            k: (metrics[k] - baseline[k])
            if metrics[k] is not None and baseline[k] is not None
            else None
            for k in COMPARED
        }
        runs.append(
            {
                "death_share": round(reached, 4),
                "synthetic_deaths_added": len(added),
                **metrics,
                "change_vs_real_only": change,
            }
        )
    return {
        "real_death_share": real_share,
        "baseline": {k: baseline[k] for k in COMPARED},
        "runs": runs,
    }


# --- privacy ----------------------------------------------------------------------------


def record_vectors(stays: StaySet, reference: StaySet, icu_types: list[str]) -> np.ndarray:
    z = np.nan_to_num(_standardise(stays, reference))
    flat = np.concatenate([z, stays.mask], axis=-1).reshape(len(stays), -1)
    return np.hstack([flat, np.nan_to_num(static_matrix(stays, icu_types, reference))])


def _closest(queries: np.ndarray, records: np.ndarray) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(records)
    return index.kneighbors(queries)[0][:, 0]


def privacy(
    train: StaySet, holdout: StaySet, synthetic: StaySet, options: EvaluationOptions
) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(options.seed)
    icu_types = sorted(set(train.statics["icu_type"].fill_null("unknown").to_list()))
    m = min(options.privacy_stays, len(train), len(holdout), len(synthetic))
    train_v = record_vectors(train, train, icu_types)
    holdout_v = record_vectors(holdout, train, icu_types)
    synth_v = record_vectors(synthetic, train, icu_types)
    synth_rows = rng.choice(len(synthetic), m, replace=False)
    holdout_rows = rng.choice(len(holdout), m, replace=False)
    dcr_synth = _closest(synth_v[synth_rows], train_v)
    dcr_holdout = _closest(holdout_v[holdout_rows], train_v)
    threshold = float(np.quantile(dcr_holdout, 0.05))
    # Membership inference: members are training stays, non-members test stays.
    members = train_v[rng.choice(len(train), m, replace=False)]
    outsiders = holdout_v[rng.choice(len(holdout), m, replace=False)]
    distance = _closest(np.vstack([members, outsiders]), synth_v)
    y = np.r_[np.ones(m), np.zeros(m)]
    mia = float(roc_auc_score(y, -distance))
    fpr, tpr, _ = roc_curve(y, -distance)
    return {
        "representation": "standardised hourly values (0 where missing), mask, statics",
        "dcr": {
            "synthetic_to_train": _quantiles(dcr_synth),
            "holdout_to_train": _quantiles(dcr_holdout),
            "ratio_of_medians": float(np.median(dcr_synth) / np.median(dcr_holdout)),
            "share_closer_than_holdout_5th_percentile": float(np.mean(dcr_synth < threshold)),
            "copies": int(np.sum(dcr_synth < 1e-6)),
            "n": int(m),
        },
        "membership_inference": {
            "auroc": mia,
            "advantage": float(np.max(tpr - fpr)),
            "attack": "distance of a real stay to its closest synthetic stay (closer = member)",
            "members": "training stays",
            "non_members": "test stays",
            "n_each": int(m),
        },
        "_dcr": {"synthetic": dcr_synth.tolist(), "holdout": dcr_holdout.tolist()},
        "_mia": {"y": y.tolist(), "score": (-distance).tolist()},
    }


def _quantiles(x: np.ndarray) -> dict[str, float]:
    return {
        "p05": float(np.quantile(x, 0.05)),
        "median": float(np.median(x)),
        "p95": float(np.quantile(x, 0.95)),
    }


# --- all of it ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sets:
    """The three sets of stays evaluated, as canonical tables and on the evaluation grid
    (the grid's concepts observed in the real training stays)."""

    train: Tables
    test: Tables
    synthetic: Tables
    train_set: StaySet
    test_set: StaySet
    synthetic_set: StaySet

    @classmethod
    def build(cls, train: Tables, test: Tables, synthetic: Tables, grid: Grid) -> Sets:
        from bedside.training.survival.fit import observed_grid
        from bedside.training.synthetic.data import stay_set

        train_set = stay_set(*train, grid)
        grid = observed_grid(train_set.values, grid)
        return cls(
            train,
            test,
            synthetic,
            train_set.on_grid(grid),
            stay_set(*test, grid),
            stay_set(*synthetic, grid),
        )


def evaluate(
    sets: Sets,
    options: EvaluationOptions,
    more_deaths: Callable[[int], StaySet] | None = None,
    progress: Callable[[str], None] = print,
    round_trip: Callable[[StaySet], StaySet] | None = None,
) -> dict[str, Any]:
    """The whole evaluation; ``more_deaths(k)`` draws ``k`` more synthetic deaths when the
    rebalancing needs more than the synthetic set has (without it, those are used up);
    with the generator's ``round_trip``, the discriminative score of its representation
    alone (:func:`encoding_floor`) is reported beside that of its samples."""
    started = time.monotonic()
    train_set, test_set, synth_set = sets.train_set, sets.test_set, sets.synthetic_set
    grid = train_set.grid

    def counts(stays: StaySet) -> dict[str, int]:
        return {"stays": len(stays), "deaths": int(stays.death.sum())}

    report: dict[str, Any] = {
        "data": {
            "train": counts(train_set),
            "test": counts(test_set),
            "synthetic": counts(synth_set),
            "grid": grid.to_dict(),
        },
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.__dict__.items()},
    }
    progress("fidelity: marginals, missingness, correlations")
    report["fidelity"] = fidelity(test_set, synth_set, options.seed)
    progress("fidelity: discriminative score (real test stays vs synthetic)")
    report["discriminative"] = discriminative_score(test_set, synth_set, options)
    if round_trip is not None:
        progress("fidelity: encoding floor (real test stays vs the same passed through it)")
        report["discriminative"]["encoding_floor"] = encoding_floor(test_set, round_trip, options)
    progress("privacy: distance to closest record, membership inference")
    report["privacy"] = privacy(train_set, test_set, synth_set, options)
    progress(f"utility: {options.utility_arch} trained on real and on synthetic stays")
    report["utility"] = utility(sets.train, train_set, synth_set, sets.test, options)
    synthetic_deaths = synth_set.take(np.flatnonzero(synth_set.death == 1))

    def deaths(k: int) -> StaySet:
        if k <= len(synthetic_deaths) or more_deaths is None:
            return synthetic_deaths.take(np.arange(min(k, len(synthetic_deaths))))
        return StaySet.concat(
            [synthetic_deaths, more_deaths(k - len(synthetic_deaths)).on_grid(grid)]
        )

    progress("rebalancing: real training stays plus synthetic deaths")
    report["rebalancing"] = rebalancing(
        sets.train, train_set, deaths, sets.test, options, report["utility"]["trtr"]
    )
    report["goals"] = goals(report)
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def goals(report: dict[str, Any]) -> dict[str, Any]:
    disc = report["discriminative"]["auroc"]
    gap = report["utility"]["auroc_gap"]
    mia = report["privacy"]["membership_inference"]["auroc"]
    return {
        "discriminative_auroc": {
            "value": disc,
            "goal": f"<= {GOALS['discriminative_auroc_max']}",
            "met": disc <= GOALS["discriminative_auroc_max"],
        },
        "tstr_vs_trtr_auroc_gap": {
            "value": gap,
            "goal": f"<= {GOALS['tstr_gap_max']}",
            "met": gap is not None and gap <= GOALS["tstr_gap_max"],
        },
        "membership_inference_auroc": {
            "value": mia,
            "goal": f"<= {GOALS['mia_auroc_max']}",
            "met": mia <= GOALS["mia_auroc_max"],
        },
    }


def public(report: Any) -> Any:
    """The report without the raw arrays kept for the plots (keys starting with ``_``)."""
    if isinstance(report, dict):
        return {k: public(v) for k, v in report.items() if not k.startswith("_")}
    if isinstance(report, list):
        return [public(v) for v in report]
    return report
