"""The exported survival model: what ``bedside train survival`` writes and the engine loads.

A model folder holds

* ``model.json``: architecture and hyper-parameters, the input encoding (grid,
  concepts, plausible ranges, standardisation, static encoding), the imputer used, the
  task (prediction time, follow-up), the survival interval grid and horizons, the
  calibration, the alert threshold and how it was chosen, the software version and a
  fingerprint of the training data;
* ``member-0/`` ... ``member-{K-1}/``: the weights of each member (the model averages
  the log-odds of K members, each trained on K - 1 folds of the training stays; see
  :mod:`bedside.training.survival.fit`), without pickle: ``weights.pt`` (a torch
  ``state_dict``, read back with ``torch.load(..., weights_only=True)``) or
  ``tabular.npz`` (read with ``allow_pickle=False``; see
  :mod:`bedside.training.survival.tabular`); an ``lstm-tsfel`` member's quantile
  edges (:class:`~bedside.training.survival.nets.QuantileEncoding`) are buffers of
  its ``state_dict``; a ``deep-ensemble`` member (:class:`Blend`) has one folder per
  net, named after its architecture (numbered when it has several nets of one);
* ``imputer/``: the imputer fitted with the model, saved by its own ``save``, or
  ``imputation/``: the imputation model given with ``--imputer`` (deep models only);
* ``metrics.json``: the metrics of the out-of-fold predictions at training time;
* ``training_outcomes.npz``: the training stays' follow-up times and deaths, sorted (no
  stay ids), for the censoring weights of the survival metrics.

:meth:`SurvivalModel.predict_window` is what the engine calls on one window;
:meth:`SurvivalModel.predict_windows` is the same code on a batch (``bedside predict``
and ``bedside evaluate`` use it), so a stay gets the same score offline and live.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from bedside.training.survival.inputs import InputEncoder, Inputs, statics_frame
from bedside.training.survival.likelihood import survival_curve

MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
IMPUTER_DIR = "imputer"
IMPUTATION_DIR = "imputation"
OUTCOMES_FILE = "training_outcomes.npz"
#: Version of the model folder layout; bumped when a loader could misread an older one.
FORMAT_VERSION = 1
#: Stays per forward pass (bounds memory, not results).
CHUNK = 512

Design = dict[str, np.ndarray]


class Predictor(Protocol):
    """What turns encoded inputs into log-odds; nets and scikit-learn models alike.

    ``design`` gives the arrays the model reads, each with its *columns* on the last
    axis; ``columns`` says which columns of which array carry each input variable, so
    permutation importance can shuffle one variable at a time.
    """

    def design(self, inputs: Inputs) -> Design: ...

    def logits(self, design: Design) -> tuple[np.ndarray, np.ndarray]: ...

    def mortality_logits(self, design: Design) -> np.ndarray: ...

    def columns(self, encoder: InputEncoder) -> dict[str, dict[str, list[int]]]: ...

    def config(self) -> dict[str, Any]: ...

    def save(self, directory: Path) -> None: ...


class NetPredictor:
    """A :class:`~bedside.training.survival.nets.SurvivalNet` and the log-odds shift of its loss.

    A net that reads TSFEL features (``lstm-tsfel``) gets them in its design as
    ``"features"``: :func:`~bedside.training.survival.features.window_features` of the
    standardised observed values, as the ``tsfel-*`` models read them (without the
    statics, which the net reads apart); it encodes them itself.
    """

    def __init__(self, arch: str, params: dict[str, Any], net: Any, logit_shift: float) -> None:
        self.arch, self.params, self.net, self.logit_shift = arch, params, net, logit_shift

    @property
    def feature_set(self) -> str | None:
        return self.params.get("tsfel")

    def design(self, inputs: Inputs) -> Design:
        design = {"sequence": inputs.sequence(), "statics": inputs.statics}
        if self.feature_set:
            design["features"] = tsfel_features(inputs, self.feature_set)
        return design

    def net_inputs(self, design: Design, rows: slice | np.ndarray = slice(None)) -> dict[str, Any]:
        """The tensors ``net.forward`` takes, for ``rows`` of the design."""
        import torch

        tensors = {
            "sequence": torch.from_numpy(design["sequence"][rows]),
            "statics": torch.from_numpy(design["statics"][rows]),
        }
        if self.net.tsfel is not None:
            tensors["tsfel"] = self.net.tsfel(torch.from_numpy(design["features"][rows]))
        return tensors

    def logits(self, design: Design) -> tuple[np.ndarray, np.ndarray]:
        import torch

        mortality, hazards = [], []
        self.net.eval()
        with torch.no_grad():
            for start in range(0, design["sequence"].shape[0], CHUNK):
                out = self.net(**self.net_inputs(design, slice(start, start + CHUNK)))
                mortality.append(out["mortality"].double().numpy())
                hazards.append(out["hazards"].double().numpy())
        return np.concatenate(mortality) - self.logit_shift, np.concatenate(hazards)

    def mortality_logits(self, design: Design) -> np.ndarray:
        return self.logits(design)[0]

    def columns(self, encoder: InputEncoder) -> dict[str, dict[str, list[int]]]:
        d = len(encoder.grid.concepts)
        groups: dict[str, dict[str, list[int]]] = {
            concept: {"sequence": [i, d + i, 2 * d + i]}
            for i, concept in enumerate(encoder.grid.concepts)
        }
        if self.feature_set:
            from bedside.training.survival.features import FEATURE_SETS

            f = len(FEATURE_SETS[self.feature_set])
            for i, concept in enumerate(encoder.grid.concepts):
                groups[concept]["features"] = list(range(i * f, (i + 1) * f))
        return groups | {name: {"statics": cols} for name, cols in encoder.statics.groups.items()}

    def config(self) -> dict[str, Any]:
        return {"params": self.params, "logit_shift": self.logit_shift}

    def save(self, directory: Path) -> None:
        import torch

        torch.save(self.net.state_dict(), directory / WEIGHTS_FILE)

    @classmethod
    def load(
        cls, arch: str, config: Mapping[str, Any], directory: Path, sizes: Mapping[str, int]
    ) -> NetPredictor:
        import torch

        from bedside.training.survival.nets import SurvivalNet

        net = SurvivalNet(arch, **sizes, **config["params"])
        state = torch.load(directory / WEIGHTS_FILE, weights_only=True, map_location="cpu")
        net.load_state_dict(state)
        net.eval()
        return cls(arch, dict(config["params"]), net, float(config["logit_shift"]))


def tsfel_features(inputs: Inputs, feature_set: str) -> np.ndarray:
    """TSFEL features of each variable's observed values, float32, NaN where undefined."""
    from bedside.training.survival.features import FEATURE_SETS, window_features

    return window_features(inputs.observed, FEATURE_SETS[feature_set]).astype(np.float32)


class TabularAdapter:
    """A :class:`~bedside.training.survival.tabular.TabularPredictor` seen as a Predictor."""

    def __init__(self, tabular: Any) -> None:
        self.tabular = tabular

    def design(self, inputs: Inputs) -> Design:
        from bedside.training.survival.tabular import design_matrix

        return {"features": design_matrix(inputs, self.tabular.params["features"])}

    def logits(self, design: Design) -> tuple[np.ndarray, np.ndarray]:
        mortality, hazards = self.tabular.logits(design["features"])
        return mortality.astype(np.float64), hazards.astype(np.float64)

    def mortality_logits(self, design: Design) -> np.ndarray:
        return self.tabular.mortality_logit(design["features"]).astype(np.float64)

    def columns(self, encoder: InputEncoder) -> dict[str, dict[str, list[int]]]:
        from bedside.training.survival.features import FEATURE_SETS

        f = len(FEATURE_SETS[self.tabular.params["features"]])
        d = len(encoder.grid.concepts)
        groups = {
            concept: {"features": list(range(i * f, (i + 1) * f))}
            for i, concept in enumerate(encoder.grid.concepts)
        }
        return groups | {
            name: {"features": [d * f + c for c in cols]}
            for name, cols in encoder.statics.groups.items()
        }

    def config(self) -> dict[str, Any]:
        return dict(self.tabular.config())

    def save(self, directory: Path) -> None:
        self.tabular.save(directory)


class Blend:
    """Nets of several architectures trained on the same stays; their log-odds averaged.

    The member of a ``deep-ensemble`` model (:data:`~bedside.training.survival.fit.BLENDS`),
    possibly with several nets of one architecture, trained with different seeds
    (:data:`~bedside.training.survival.fit.SEEDS`): its design holds what each of its
    nets reads, and each net is saved in its own folder, named after its architecture,
    numbered when the blend has several of that architecture (``cnn-lstm-1``,
    ``cnn-lstm-2``). Models saved before the numbering have no ``folder`` in the
    configuration of their parts, and one net of each architecture.
    """

    def __init__(self, parts: Sequence[NetPredictor]) -> None:
        if not parts:
            raise ValueError("a blend needs parts")
        self.parts = list(parts)

    @property
    def folders(self) -> list[str]:
        """The folder of each part: its architecture, numbered if it is not the only one."""
        archs = [part.arch for part in self.parts]
        return [
            arch if archs.count(arch) == 1 else f"{arch}-{archs[: i + 1].count(arch)}"
            for i, arch in enumerate(archs)
        ]

    def design(self, inputs: Inputs) -> Design:
        return {key: v for part in self.parts for key, v in part.design(inputs).items()}

    def logits(self, design: Design) -> tuple[np.ndarray, np.ndarray]:
        outputs = [part.logits(design) for part in self.parts]
        return (
            np.mean([m for m, _ in outputs], axis=0),
            np.mean([h for _, h in outputs], axis=0),
        )

    def mortality_logits(self, design: Design) -> np.ndarray:
        return np.mean([part.mortality_logits(design) for part in self.parts], axis=0)

    def columns(self, encoder: InputEncoder) -> dict[str, dict[str, list[int]]]:
        merged: dict[str, dict[str, list[int]]] = {}
        for part in self.parts:
            for variable, columns in part.columns(encoder).items():
                merged.setdefault(variable, {}).update(columns)
        return merged

    def config(self) -> dict[str, Any]:
        return {
            "parts": [
                {"arch": part.arch, "folder": folder, **part.config()}
                for part, folder in zip(self.parts, self.folders, strict=True)
            ]
        }

    def save(self, directory: Path) -> None:
        for part, folder in zip(self.parts, self.folders, strict=True):
            (directory / folder).mkdir(parents=True, exist_ok=True)
            part.save(directory / folder)

    @classmethod
    def load(cls, config: Mapping[str, Any], directory: Path, sizes: Mapping[str, int]) -> Blend:
        return cls(
            [
                NetPredictor.load(
                    part["arch"], part, directory / part.get("folder", part["arch"]), sizes
                )
                for part in config["parts"]
            ]
        )


class Ensemble:
    """Members of one architecture trained on different folds; their log-odds averaged.

    Averaging the hazard log-odds keeps every member's hazards in (0, 1), so the
    ensemble's survival curve is still a product of ``1 - h`` (monotone).
    """

    def __init__(self, members: Sequence[Predictor]) -> None:
        if not members:
            raise ValueError("an ensemble needs members")
        self.members = list(members)

    def design(self, inputs: Inputs) -> Design:
        return self.members[0].design(inputs)

    def logits(self, design: Design) -> tuple[np.ndarray, np.ndarray]:
        outputs = [member.logits(design) for member in self.members]
        return (
            np.mean([m for m, _ in outputs], axis=0),
            np.mean([h for _, h in outputs], axis=0),
        )

    def mortality_logits(self, design: Design) -> np.ndarray:
        return np.mean([member.mortality_logits(design) for member in self.members], axis=0)

    def columns(self, encoder: InputEncoder) -> dict[str, dict[str, list[int]]]:
        return self.members[0].columns(encoder)

    def config(self) -> dict[str, Any]:
        return {"members": [member.config() for member in self.members]}

    def save(self, directory: Path) -> None:
        for k, member in enumerate(self.members):
            folder = directory / f"member-{k}"
            folder.mkdir(parents=True, exist_ok=True)
            member.save(folder)


@dataclass
class Predictions:
    """Scores of ``n`` stays: calibrated mortality, survival curve, risk at each horizon."""

    mortality: np.ndarray  # (n,) calibrated probability of in-hospital death
    survival: np.ndarray  # (n, K) S at the end of each interval
    intervals_h: tuple[float, ...]
    horizons_h: tuple[float, ...]

    @property
    def risks(self) -> dict[float, np.ndarray]:
        """Probability of death within each horizon: 1 - S(horizon)."""
        return {h: 1.0 - self.survival[:, self.intervals_h.index(h)] for h in self.horizons_h}

    def frame(self, stay_ids: np.ndarray) -> pl.DataFrame:
        columns: dict[str, Any] = {"stay_id": stay_ids, "mortality": self.mortality}
        columns |= {f"risk_{h:g}h": r for h, r in self.risks.items()}
        columns |= {f"surv_{t:g}h": self.survival[:, j] for j, t in enumerate(self.intervals_h)}
        return pl.DataFrame(columns)


@dataclass
class SurvivalModel:
    """Encoder + predictor + calibration + threshold: everything the engine needs."""

    arch: str
    encoder: InputEncoder
    predictor: Predictor
    intervals_h: tuple[float, ...]
    horizons_h: tuple[float, ...]
    calibration: Any  # a bedside.training.evaluation.calibration.Calibrator
    threshold: float
    threshold_rule: str
    info: dict[str, Any] = field(default_factory=dict)
    #: Follow-up of the training stays (hours, death 0/1), sorted by time so that no row
    #: links to a stay: the censoring distribution of the survival metrics (Uno's C).
    training_outcomes: tuple[np.ndarray, np.ndarray] | None = None

    # --- scoring --------------------------------------------------------------------

    def raw_logits(self, inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
        return self.predictor.logits(self.predictor.design(inputs))

    def scores(self, mortality_logit: np.ndarray, hazard_logit: np.ndarray) -> Predictions:
        uncalibrated = 1.0 / (1.0 + np.exp(-mortality_logit))
        mortality = np.asarray(self.calibration.transform(uncalibrated), dtype=np.float64)
        hazards = 1.0 / (1.0 + np.exp(-hazard_logit))
        return Predictions(mortality, survival_curve(hazards), self.intervals_h, self.horizons_h)

    def predict_windows(
        self, windows: np.ndarray, statics: pl.DataFrame | Sequence[Mapping[str, Any]]
    ) -> Predictions:
        """Score raw windows (n, steps, variables) of the model's grid, with each stay's
        static covariates (a stays-table frame, or one dict per stay with ``age``,
        ``sex``, ``height_cm``, ``weight_kg``, ``icu_type``; missing keys are missing)."""
        frame = statics if isinstance(statics, pl.DataFrame) else statics_frame(statics)
        inputs = self.encoder.encode(np.asarray(windows, dtype=np.float32), frame)
        return self.scores(*self.raw_logits(inputs))

    def predict_window(self, window: np.ndarray, statics: Mapping[str, Any]) -> dict[str, Any]:
        """Score one raw window (steps, variables) — the engine's call.

        Returns ``{"mortality": p, "risks": {horizon_h: risk}, "survival": [(t_h, S)]}``.
        """
        scored = self.predict_windows(np.asarray(window)[None], [statics])
        return {
            "mortality": float(scored.mortality[0]),
            "risks": {h: float(r[0]) for h, r in scored.risks.items()},
            "survival": [
                (t, float(s)) for t, s in zip(self.intervals_h, scored.survival[0], strict=True)
            ],
        }

    @property
    def grid(self) -> Any:
        return self.encoder.grid

    # --- saving and loading -----------------------------------------------------------

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        from bedside.training.imputation.pipeline import ImputationModel

        if isinstance(self.encoder.imputer, ImputationModel):
            self.encoder.imputer.save(directory / IMPUTATION_DIR)
        elif self.encoder.imputer is not None:
            self.encoder.imputer.save(directory / IMPUTER_DIR)
        self.predictor.save(directory)
        if self.training_outcomes is not None:
            time_h, event = self.training_outcomes
            order = np.lexsort((event, time_h))
            with open(directory / OUTCOMES_FILE, "wb") as handle:
                np.savez(handle, time_h=time_h[order], event=event[order].astype(np.int8))
        document = {
            "format_version": FORMAT_VERSION,
            "arch": self.arch,
            **self.info,
            "inputs": self.encoder.to_dict(),
            "predictor": self.predictor.config(),
            "intervals_h": list(self.intervals_h),
            "horizons_h": list(self.horizons_h),
            "calibration": self.calibration.to_dict(),
            "threshold": {"value": self.threshold, "rule": self.threshold_rule},
        }
        (directory / MODEL_FILE).write_text(json.dumps(document, indent=2, default=_json) + "\n")

    @classmethod
    def load(cls, directory: Path) -> SurvivalModel:
        from bedside.training.evaluation.calibration import load_calibration
        from bedside.training.imputation.base import load_imputer
        from bedside.training.imputation.pipeline import ImputationModel

        path = directory / MODEL_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: not a survival model folder (no {MODEL_FILE})")
        data = json.loads(path.read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: model format {data.get('format_version')} not supported")
        imputer: Any = None
        if (directory / IMPUTATION_DIR).exists():
            imputer = ImputationModel.load(directory / IMPUTATION_DIR)
        elif (directory / IMPUTER_DIR).exists():
            imputer = load_imputer(directory / IMPUTER_DIR)
        encoder = InputEncoder.from_dict(data["inputs"], imputer)
        arch = data["arch"]
        intervals = tuple(float(t) for t in data["intervals_h"])
        sizes = {
            "features": 3 * len(encoder.grid.concepts),
            "statics": len(encoder.statics.names),
            "intervals": len(intervals),
        }
        members = [
            _load_member(arch, config, directory / f"member-{k}", sizes)
            for k, config in enumerate(data["predictor"]["members"])
        ]
        outcomes = None
        if (directory / OUTCOMES_FILE).exists():
            with np.load(directory / OUTCOMES_FILE, allow_pickle=False) as saved:
                outcomes = (saved["time_h"], saved["event"])
        info_keys = set(data) - {
            *("format_version", "arch", "inputs", "predictor", "intervals_h", "horizons_h"),
            *("calibration", "threshold"),
        }
        return cls(
            arch=arch,
            encoder=encoder,
            predictor=Ensemble(members),
            intervals_h=intervals,
            horizons_h=tuple(float(h) for h in data["horizons_h"]),
            calibration=load_calibration(data["calibration"]),
            threshold=float(data["threshold"]["value"]),
            threshold_rule=str(data["threshold"]["rule"]),
            info={key: data[key] for key in info_keys},
            training_outcomes=outcomes,
        )


def _load_member(
    arch: str, config: Mapping[str, Any], directory: Path, sizes: Mapping[str, int]
) -> Predictor:
    if arch.startswith("tsfel"):
        from bedside.training.survival.tabular import TabularPredictor

        return TabularAdapter(TabularPredictor.load(arch, config, directory))
    if "parts" in config:
        return Blend.load(config, directory, sizes)
    return NetPredictor.load(arch, config, directory, sizes)


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
