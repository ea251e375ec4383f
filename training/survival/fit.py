"""Fit a survival model end to end: encode, (search,) train K members, calibrate, threshold.

1. The grid is PhysioNet 2012's (48 hourly steps), keeping the concepts that have at
   least one training value (a model cannot standardise a variable it never saw).
2. The input encoder (standardisation, static encoding, imputer) is fitted on the
   training stays (:class:`~bedside.training.survival.inputs.InputEncoder`).
3. The training stays are cut into ``folds`` stratified folds (by in-hospital death,
   seeded; :data:`FOLDS` per architecture). Member ``k`` of the model is trained on
   the other folds and validated on fold ``k``: nets stop early on its AUROC. The
   exported model averages the members' log-odds, so every training stay is used,
   and every training stay has an *out-of-fold* prediction from the member that did
   not see it.
   A net trained with ``distil`` (``lstm-tsfel``, both parts of ``deep-ensemble``)
   learns its mortality output from the risks of a ``tsfel-gbm`` teacher cross-fitted
   inside the member's training folds (:meth:`Workspace.teacher`), so no outcome of
   the member's validation fold reaches it.
4. Post-hoc calibration and the alert threshold are fitted on those out-of-fold
   predictions only — the validation data of the training set — and ``metrics.json``
   reports them. The calibration is logistic (Platt) and made for what the model
   serves, the mean of the members' log-odds, which is less spread than one member's
   out-of-fold log-odds (:func:`~bedside.training.evaluation.calibration.fit_ensemble_calibration`);
   the threshold (:func:`~bedside.training.evaluation.metrics.choose_threshold`, rule
   ``"event1"``) is chosen on the calibrated out-of-fold log-odds shrunk to that spread.
5. ``tsfel-lr`` chooses its regularisation on the same folds, by out-of-fold log loss
   (:func:`~bedside.training.survival.tabular.choose_c`), unless the search or the
   caller gives it.
6. The hyper-parameter search (:mod:`bedside.training.survival.search`), when asked
   for, runs first on fold 0's split; a net keeps its best trial as member 0.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bedside import __version__
from bedside.training.cohorts import DEFAULT_HORIZONS_H
from bedside.training.imputation.base import Imputer, imputer_class
from bedside.training.imputation.pipeline import ImputationModel
from bedside.training.survival import ARCHS
from bedside.training.survival.data import FOLLOW_UP_DAYS, Cohort, build_cohort
from bedside.training.survival.inputs import InputEncoder, Inputs
from bedside.training.survival.likelihood import INTERVAL_ENDS_H, check_grid
from bedside.training.survival.model import (
    IMPUTATION_DIR,
    Blend,
    Ensemble,
    NetPredictor,
    Predictor,
    SurvivalModel,
    TabularAdapter,
    tsfel_features,
)
from bedside.training.windows import PHYSIONET_2012, Grid, Windows

#: Architectures whose member is a :class:`~bedside.training.survival.model.Blend` of
#: nets of other architectures, trained on the same folds: each part with its defaults,
#: then the settings given here, then the parameters given under its name; :data:`SEEDS`
#: nets of each. Both parts are distilled from tsfel-gbm (``distil`` 1, as
#: ``lstm-tsfel`` is by default; see ``TRAIN_DEFAULTS``): one ``cnn-lstm`` member per
#: fold on set A, out-of-fold AUROC 0.853 distilled against 0.842 (two seeds each).
#: ``deep-ensemble``: the hybrid ``lstm-tsfel`` (TSFEL features) and the pure sequence
#: ``cnn-lstm``, the pair of nets whose averaged out-of-fold log-odds ranked best on
#: PhysioNet 2012 set A (one member per fold, 5 folds; AUROC 0.861, against 0.853 for
#: ``lstm-tsfel`` alone and 0.859-0.860 for its pairs and triples with ``cnn`` and ``lstm``).
#: In 5-fold cross-validation on set A it matched ``lstm-tsfel``'s AUROC (0.860) with a
#: better AUPRC, Brier score and event 1 (BENCHMARKS.md).
BLENDS: dict[str, dict[str, dict[str, Any]]] = {
    "deep-ensemble": {"lstm-tsfel": {}, "cnn-lstm": {"distil": 1.0}}
}
#: Folds, hence members, of each architecture. One net stops after a few epochs on
#: 4,000 stays and is noisy (on PhysioNet 2012 set A, one LSTM member's out-of-fold
#: AUROC is 0.83, the mean of five 0.85 on stays none of them saw), so the LSTM, which
#: trains fastest, averages ten members, each trained on 90 % of the stays. Not
#: ``lstm-tsfel``: in 5-fold cross-validation on set A, ten members (each stopped on a
#: tenth of the stays) scored below five (AUROC 0.854 against 0.857).
FOLDS: dict[str, int] = {arch: 5 for arch in ARCHS} | {"lstm": 10}
#: Nets of each part of a blend member, trained on the member's folds with different seeds
#: (``params["seeds"]`` overrides). Seed ``s`` of a part is the member's seed plus
#: ``s * SEED_STRIDE``, so the first net is the one a single seed trains, and no
#: seed is another fold's (member ``k`` has seed ``options.seed + k``).
#: ``deep-ensemble``: 1. On set A (5 folds), the out-of-fold AUROC with one seed per
#: part was 0.857-0.861 for each of three seeds, with two 0.862-0.864, with three 0.864;
#: but the model serves the mean of its 5 members, which already averages most of the
#: seeds' noise: in a nested check on set A (5 outer folds) two seeds gained 0.001 of
#: held-out AUROC on average (-0.001 to +0.003 per fold), and on set B (trained on A)
#: 0.8705 against 0.871, for twice the training time (554 s against 272 s).
SEEDS: dict[str, int] = {"deep-ensemble": 1}
SEED_STRIDE = 1000
#: The teachers of nets trained with ``distil`` > 0 (:meth:`Workspace.teacher`: the
#: mean of their log-odds), and their folds inside a member's training stays. A stronger
#: teacher did not make stronger nets: on set A (one member per fold, seed 2026) the mean
#: of tsfel-gbm and tsfel-lr ranks better than tsfel-gbm alone (out-of-fold AUROC 0.8645
#: against 0.8593), but ``deep-ensemble`` distilled from it scored 0.8647, from
#: tsfel-gbm alone 0.8646, for 1.2 times the training time.
TEACHERS: tuple[str, ...] = ("tsfel-gbm",)
TEACHER_FOLDS = 4
THRESHOLD_RULE = "event1"
#: Share of the time budget the search may use (the members train in the rest).
SEARCH_SHARE = 0.5


@dataclass
class FitOptions:
    arch: str = "lstm"
    imputer_dir: Path | None = None
    search_trials: int = 0
    max_minutes: float = 10.0
    seed: int = 2026
    folds: int | None = None  # None: FOLDS[arch]
    params: dict[str, Any] = field(default_factory=dict)  # overrides of the defaults
    intervals_h: tuple[float, ...] = INTERVAL_ENDS_H
    horizons_h: tuple[float, ...] = DEFAULT_HORIZONS_H
    follow_up_days: float | None = FOLLOW_UP_DAYS


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def observed_grid(windows: np.ndarray, grid: Grid) -> Grid:
    """The grid without the concepts never observed in ``windows``."""
    seen = ~np.isnan(windows).all(axis=(0, 1))
    return Grid(
        concepts=tuple(c for c, s in zip(grid.concepts, seen, strict=True) if s),
        step_minutes=grid.step_minutes,
        steps=grid.steps,
    )


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, validation rows) of each fold, each outcome spread evenly."""
    if folds < 2:
        raise ValueError("a model needs at least 2 folds (members)")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(y.size, dtype=np.int64)
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        fold_of[rows] = np.arange(rows.size) % folds
    return [(np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(folds)]


def _imputer(
    options: FitOptions,
) -> tuple[Imputer | ImputationModel | None, bool, dict[str, Any]]:
    """The imputer, whether it still needs fitting, and how model.json describes it."""
    if options.arch.startswith("tsfel"):
        if options.imputer_dir is not None:
            print(f"note: {options.arch} reads observed values only; --imputer is not used")
        return None, False, {"kind": None, "note": "TSFEL features read observed values only"}
    if options.imputer_dir is None:
        return imputer_class("linear")(), True, {"kind": "linear", "source": "fitted here"}
    model = ImputationModel.load(options.imputer_dir)
    return (
        model,
        False,
        {
            "kind": model.imputer.kind,
            "source": str(options.imputer_dir.resolve()),
            "copied_to": IMPUTATION_DIR,
            "training": model.training,
        },
    )


@dataclass
class Workspace:
    """Everything members are trained from; design matrices computed once."""

    inputs: Inputs
    cohort: Cohort
    intervals_h: tuple[float, ...]
    _cache: dict[str, np.ndarray] = field(default_factory=dict)
    _teachers: dict[str, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.at_risk, self.died = self.cohort.intervals(self.intervals_h)

    def features(self, feature_set: str) -> np.ndarray:
        from bedside.training.survival.tabular import design_matrix

        if feature_set not in self._cache:
            self._cache[feature_set] = design_matrix(self.inputs, feature_set)
        return self._cache[feature_set]

    def sequence(self) -> np.ndarray:
        if "sequence" not in self._cache:
            self._cache["sequence"] = self.inputs.sequence()
        return self._cache["sequence"]

    def tsfel(self, feature_set: str) -> np.ndarray:
        """The TSFEL features a net reads (without the statics)."""
        key = f"tsfel:{feature_set}"
        if key not in self._cache:
            self._cache[key] = tsfel_features(self.inputs, feature_set)
        return self._cache[key]

    def teacher(self, train_rows: np.ndarray, seed: int, max_seconds: float) -> np.ndarray:
        """Risk of death of each of ``train_rows`` by :data:`TEACHERS` (the mean of their
        log-odds), cross-fitted inside those rows (:data:`TEACHER_FOLDS` folds): a stay's
        risk comes from models that did not see it, nor any stay outside ``train_rows``.
        Cached per set of rows, so the nets of one blend member share it."""
        return self._teach(train_rows, seed, max_seconds, hazards=False)[0]

    def teacher_hazards(self, train_rows: np.ndarray, seed: int, max_seconds: float) -> np.ndarray:
        """The same teachers' hazard of each interval, ``(len(train_rows), K)``,
        cross-fitted as :meth:`teacher`'s risks (the same fits, with their hazards)."""
        hazards = self._teach(train_rows, seed, max_seconds, hazards=True)[1]
        assert hazards is not None
        return hazards

    def _teach(
        self, train_rows: np.ndarray, seed: int, max_seconds: float, hazards: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The teachers' risks and, if asked for, hazards: without them the teachers fit
        their mortality output only (the same risks, for less time)."""
        key = f"teacher:{hash(train_rows.tobytes())}"
        cached = self._teachers.get(key)
        if cached is None or (hazards and cached[1] is None):
            started = time.monotonic()
            logits = np.zeros(train_rows.size)
            hazard_logits = np.zeros((train_rows.size, len(self.intervals_h)))
            inner = stratified_folds(self.cohort.mortality[train_rows], TEACHER_FOLDS, seed)
            fits = [(i, arch) for i in range(len(inner)) for arch in TEACHERS]
            for j, (i, arch) in enumerate(fits):
                fit_rows, held_rows = inner[i]
                share = max(max_seconds - (time.monotonic() - started), 0.0) / (len(fits) - j)
                fitted = fit_member(
                    arch,
                    {},
                    self,
                    train_rows[fit_rows],
                    train_rows[held_rows],
                    seed + i,
                    share,
                    mortality_only=not hazards,
                )
                logits[held_rows] += fitted.valid_mortality / len(TEACHERS)
                if hazards:
                    hazard_logits[held_rows] += fitted.valid_hazards / len(TEACHERS)
            self._teachers[key] = (
                _sigmoid(logits),
                _sigmoid(hazard_logits) if hazards else None,
            )
        return self._teachers[key]

    def design(self, predictor: Predictor) -> dict[str, np.ndarray]:
        """What ``predictor`` reads for every stay (``predictor.design``, from the cache)."""
        if isinstance(predictor, TabularAdapter):
            return {"features": self.features(predictor.tabular.params["features"])}
        if isinstance(predictor, Blend):
            return {key: v for part in predictor.parts for key, v in self.design(part).items()}
        design = {"sequence": self.sequence(), "statics": self.inputs.statics}
        if isinstance(predictor, NetPredictor) and predictor.feature_set:
            design["features"] = self.tsfel(predictor.feature_set)
        return design


@dataclass
class Fitted:
    """A trained member, its log-odds on its validation rows, and how it was trained."""

    predictor: Predictor
    valid_rows: np.ndarray
    valid_mortality: np.ndarray
    valid_hazards: np.ndarray
    valid_auroc: float
    training: dict[str, Any]


def fit_member(
    arch: str,
    params: dict[str, Any],
    work: Workspace,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    seed: int,
    max_seconds: float,
    mortality_only: bool = False,
) -> Fitted:
    """Train one architecture with ``params`` on ``train_rows``, score on ``valid_rows``."""
    from sklearn.metrics import roc_auc_score

    started = time.monotonic()
    cohort = work.cohort
    predictor: Predictor
    if arch in BLENDS:
        # Parameters, if any, per part: {"cnn-lstm": {"hidden": 32}}; nets per part: "seeds".
        # The first seed of every part first: if the budget runs short, the extra seeds
        # get less time, and a net that stops early leaves its time to the next ones.
        seeds = int(params.get("seeds", SEEDS.get(arch, 1)))
        runs = [(part, seed + SEED_STRIDE * s) for s in range(seeds) for part in BLENDS[arch]]
        fitted = []
        for i, (part, net_seed) in enumerate(runs):
            share = max(max_seconds - (time.monotonic() - started), 0.0) / (len(runs) - i)
            fitted.append(
                fit_member(
                    part,
                    BLENDS[arch][part] | params.get(part, {}),
                    work,
                    train_rows,
                    valid_rows,
                    net_seed,
                    share,
                )
            )
        nets = [f.predictor for f in fitted if isinstance(f.predictor, NetPredictor)]
        predictor = Blend(nets)
        design = {key: values[valid_rows] for key, values in work.design(predictor).items()}
        training = {
            "params": params,
            "seeds": seeds,
            "parts": {
                folder: f.training | {"seed": net_seed}
                for folder, f, (_, net_seed) in zip(predictor.folders, fitted, runs, strict=True)
            },
        }
    elif arch.startswith("tsfel"):
        from bedside.training.survival.tabular import GBM_DEFAULTS, LR_DEFAULTS, TabularPredictor

        defaults = LR_DEFAULTS if arch == "tsfel-lr" else GBM_DEFAULTS
        tabular = TabularPredictor(arch, {**defaults, **params})
        x = work.features(tabular.params["features"])
        at_risk = work.at_risk[train_rows]
        tabular.fit(
            x[train_rows],
            cohort.mortality[train_rows],
            at_risk[:, :0] if mortality_only else at_risk,
            work.died[train_rows],
            seed,
        )
        predictor = TabularAdapter(tabular)
        design = {"features": x[valid_rows]}
        training: dict[str, Any] = {"params": tabular.params}
    else:
        import torch

        from bedside.training.survival.nets import DEFAULTS, NET_KEYS, SurvivalNet
        from bedside.training.survival.train import (
            TRAIN_DEFAULTS,
            TrainConfig,
            TrainData,
            fit_net,
        )

        net_params = {**DEFAULTS[arch], **{k: v for k, v in params.items() if k in NET_KEYS}}
        settings = TRAIN_DEFAULTS.get(arch, {}) | {
            k: v for k, v in params.items() if k not in NET_KEYS
        }
        config = TrainConfig(**settings, seed=seed, max_seconds=max_seconds)
        torch.manual_seed(seed)
        sequence = work.sequence()
        statics = work.inputs.statics
        net = SurvivalNet(
            arch, sequence.shape[-1], statics.shape[1], len(work.intervals_h), **net_params
        )

        predictor = NetPredictor(arch, net_params, net, config.logit_shift)
        everyone = work.design(predictor)
        tsfel = None
        if net.tsfel is not None:
            # The encoding is learnt from the member's training stays, then fixed.
            net.tsfel.fit(everyone["features"][train_rows])
            tsfel = net.tsfel(torch.from_numpy(everyone["features"]))

        target = cohort.mortality.astype(np.float64)
        if config.distil > 0:
            risk = work.teacher(train_rows, seed, max_seconds / 2)
            target[train_rows] = (1 - config.distil) * target[train_rows] + config.distil * risk
        died = work.died.astype(np.float64)
        if config.distil_hazards > 0:
            # Where a stay is not at risk, its term is masked out of the likelihood.
            weight = config.distil_hazards
            teacher = work.teacher_hazards(train_rows, seed, max_seconds / 2)
            died[train_rows] = (1 - weight) * died[train_rows] + weight * teacher

        def data(rows: np.ndarray) -> TrainData:
            return TrainData.of(
                sequence[rows],
                statics[rows],
                target[rows],
                work.at_risk[rows],
                died[rows],
                None if tsfel is None else tsfel[rows],
            )

        history = fit_net(net, data(train_rows), data(valid_rows), config)
        design = {key: values[valid_rows] for key, values in everyone.items()}
        best = max(history, key=lambda r: r["valid_auroc"])
        training = {
            "params": {**net_params, **asdict(config)},
            "epochs": len(history),
            "best_epoch": best["epoch"],
            "stopped": history[-1].get("stop", "max epochs"),
            "teacher": (
                {
                    "archs": list(TEACHERS),
                    "folds": TEACHER_FOLDS,
                    "weight": config.distil,
                    "hazards_weight": config.distil_hazards,
                }
                if config.distil > 0 or config.distil_hazards > 0
                else None
            ),
            "history": [
                {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                for r in history
            ],
        }
    mortality, hazards = predictor.logits(design)
    y = cohort.mortality[valid_rows]
    auroc = float(roc_auc_score(y, mortality)) if 0 < y.sum() < y.size else 0.5
    training["seconds"] = round(time.monotonic() - started, 2)
    training["valid_auroc"] = round(auroc, 4)
    return Fitted(predictor, valid_rows, mortality, hazards, auroc, training)


def prepare(
    events: Any, stays: Any, options: FitOptions
) -> tuple[Workspace, InputEncoder, dict[str, Any]]:
    """The training stays' workspace, the input encoder fitted on them, and how
    model.json describes the imputer (steps 1 and 2 above)."""
    cohort = build_cohort(events, stays, PHYSIONET_2012, options.follow_up_days)
    grid = observed_grid(cohort.windows, PHYSIONET_2012)
    if grid.concepts != PHYSIONET_2012.concepts:
        keep = [PHYSIONET_2012.concepts.index(c) for c in grid.concepts]
        cohort = Cohort(
            cohort.stays,
            cohort.windows[:, :, keep],
            cohort.stay_ids,
            cohort.mortality,
            cohort.time_h,
            cohort.event,
        )
    imputer, fit_imputer, imputer_info = _imputer(options)
    encoder = InputEncoder.fit(
        Windows(grid, cohort.stay_ids, cohort.windows),
        cohort.stays,
        imputer,
        fit_imputer=fit_imputer,
    )
    work = Workspace(encoder.encode(cohort.windows, cohort.stays), cohort, options.intervals_h)
    return work, encoder, imputer_info


def fit_model(
    events: Any, stays: Any, options: FitOptions, fingerprint: dict[str, Any] | None = None
) -> tuple[SurvivalModel, dict[str, Any]]:
    """Train a model on canonical ``events`` and ``stays``; return it and the metrics of
    its out-of-fold predictions on the training stays."""
    from bedside.training.evaluation.calibration import fit_ensemble_calibration
    from bedside.training.evaluation.metrics import choose_threshold

    if options.arch not in ARCHS:
        raise ValueError(f"unknown architecture {options.arch!r}; known: {', '.join(ARCHS)}")
    check_grid(options.intervals_h, options.horizons_h)
    started = time.monotonic()
    budget = 60.0 * options.max_minutes
    work, encoder, imputer_info = prepare(events, stays, options)
    cohort, grid = work.cohort, encoder.grid
    k_folds = options.folds or FOLDS[options.arch]
    folds = stratified_folds(cohort.mortality, k_folds, options.seed)

    params = dict(options.params)
    search_info: dict[str, Any] | None = None
    reuse: Fitted | None = None
    if options.search_trials > 0:
        if options.arch in BLENDS:
            raise ValueError(f"{options.arch}: search its parts' architectures instead")
        from bedside.training.survival.search import search

        result = search(options.arch, work, folds[0], options, seconds=SEARCH_SHARE * budget)
        params |= result.best_params
        search_info = result.summary()
        reuse = result.best_fitted

    regularisation: dict[str, Any] | None = None
    if options.arch == "tsfel-lr" and "C" not in params:
        from bedside.training.survival.tabular import LR_DEFAULTS, choose_c

        lr_params = LR_DEFAULTS | params
        params["C"], losses = choose_c(
            work.features(lr_params["features"]), cohort.mortality, folds, lr_params, options.seed
        )
        regularisation = {"C": params["C"], "chosen_by": "out-of-fold log loss", "log_loss": losses}

    members: list[Fitted] = []
    for k, (train_rows, valid_rows) in enumerate(folds):
        if k == 0 and reuse is not None:
            members.append(reuse)
            continue
        left = budget - (time.monotonic() - started)
        per_member = max(left / (len(folds) - k), 30.0)
        members.append(
            fit_member(
                options.arch, params, work, train_rows, valid_rows, options.seed + k, per_member
            )
        )
        print(
            f"{options.arch}: member {k + 1}/{len(folds)} trained, validation AUROC "
            f"{members[-1].valid_auroc:.3f} ({members[-1].training['seconds']:.0f} s)",
            flush=True,
        )

    n = len(cohort)
    held_out_by = np.zeros(n, dtype=np.int64)
    oof_hazards = np.zeros((n, len(options.intervals_h)))
    for k, member in enumerate(members):
        held_out_by[member.valid_rows] = k
        oof_hazards[member.valid_rows] = member.valid_hazards
    member_logits = np.stack(
        [m.predictor.mortality_logits(work.design(m.predictor)) for m in members]
    )
    calibration, as_served = fit_ensemble_calibration(member_logits, held_out_by, cohort.mortality)
    model = SurvivalModel(
        arch=options.arch,
        encoder=encoder,
        predictor=Ensemble([m.predictor for m in members]),
        intervals_h=tuple(options.intervals_h),
        horizons_h=tuple(options.horizons_h),
        calibration=calibration,
        threshold=0.5,
        threshold_rule=THRESHOLD_RULE,
    )
    known = np.isfinite(cohort.time_h)
    model.training_outcomes = (cohort.time_h[known], cohort.event[known])
    out_of_fold = model.scores(as_served, oof_hazards)
    model.threshold = choose_threshold(cohort.mortality, out_of_fold.mortality, THRESHOLD_RULE)
    validation = f"out-of-fold predictions of the {n} training stays ({k_folds} folds)"
    model.info = {
        "bedside_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": options.seed,
        "task": {
            "mortality": "in-hospital death",
            "prediction_time_h": grid.minutes / 60.0,
            "follow_up_days_after_discharge": options.follow_up_days,
        },
        "imputer": imputer_info,
        "calibration_fitted_on": f"{validation}, for the mean of the members' log-odds",
        "threshold_chosen_on": f"calibrated {validation}, shrunk to the spread of the "
        f"members' mean, rule {THRESHOLD_RULE}: max min(sensitivity, PPV)",
        "folds": {"k": k_folds, "stratified_by": "in-hospital death", "seed": options.seed},
        "concepts_dropped": [c for c in PHYSIONET_2012.concepts if c not in grid.concepts],
        "training_data": fingerprint or {},
        "training": {
            "params": members[0].training["params"],
            "members": [{k: v for k, v in m.training.items() if k != "params"} for m in members],
            "total_seconds": round(time.monotonic() - started, 2),
            "n_train": n,
            "torch_threads": _threads(),
            "machine": platform.machine(),
        },
        "search": search_info,
    }
    if regularisation is not None:
        model.info["training"]["regularisation"] = regularisation
    metrics = out_of_fold_metrics(model, out_of_fold, cohort)
    return model, metrics


def _threads() -> int | None:
    import torch

    return int(torch.get_num_threads())


def out_of_fold_metrics(model: SurvivalModel, scored: Any, cohort: Cohort) -> dict[str, Any]:
    """Metrics of the training stays' out-of-fold predictions."""
    from bedside.training.evaluation.metrics import binary_metrics

    out = binary_metrics(
        cohort.mortality,
        scored.mortality,
        model.threshold,
        model.threshold_rule,
        n_bootstrap=200,
        seed=2026,
    )
    out["survival"] = survival_block(model, scored.survival, cohort)
    out["c_index"] = out["survival"].get("c_index")
    out["note"] = (
        "out-of-fold predictions of the training stays, each from the member that did not "
        "train on it; calibration and threshold were fitted on these same predictions, so "
        "calibration and event 1 are optimistic here: evaluate on other data"
    )
    return out


def survival_block(
    model: SurvivalModel, survival: np.ndarray, cohort: Cohort, with_training: bool = True
) -> dict[str, Any]:
    """survival_metrics on the stays whose follow-up is known; censoring weights from the
    model's training stays when it has them (``with_training``)."""
    from bedside.training.evaluation.metrics import survival_metrics

    known = np.isfinite(cohort.time_h)
    training: dict[str, Any] = {}
    if with_training and model.training_outcomes is not None:
        training = {
            "train_time_h": model.training_outcomes[0],
            "train_event": model.training_outcomes[1],
        }
    return survival_metrics(
        cohort.time_h[known],
        cohort.event[known],
        survival[known],
        np.asarray(model.intervals_h),
        np.asarray(model.horizons_h),
        **training,
    )


def fit_and_save(
    folders: Sequence[Path], options: FitOptions, out: Path
) -> tuple[SurvivalModel, dict[str, Any]]:
    from bedside.training.survival.data import fingerprint, read_folders

    events, stays = read_folders(folders)
    model, metrics = fit_model(events, stays, options, fingerprint(folders, stays))
    model.save(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return model, metrics
