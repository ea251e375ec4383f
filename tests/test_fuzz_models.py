"""Fuzzing the model loaders with corrupted and hostile artefacts.

Model folders travel (the registry, ``bedside train`` on another machine, a copy from a
colleague), so their loaders are fed damaged JSON, truncated files and files that
carry a pickle payload where weights belong. A loader may fail, but it must never run
what an artefact carries: weights are read with ``torch.load(weights_only=True)``,
arrays with ``np.load(allow_pickle=False)``, and configurations are JSON whose
``kind`` names are looked up in fixed registries, never imported by name.

The payload here creates a marker file when unpickled; every test checks that the
marker never appears. Resource exhaustion by a hostile artefact (a grid of 10^18
minutes) is out of scope: artefacts are trusted not to be malicious about size, which
``RELIABILITY.md`` states.
"""

from __future__ import annotations

import copy
import json
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bedside.errors import BedsideError
from bedside.training.detectors.bed import MODEL_FILE as DETECTORS_FILE
from bedside.training.detectors.bed import population_reference
from bedside.training.imputation.base import load_imputer
from bedside.training.survival.model import MODEL_FILE, OUTCOMES_FILE, SurvivalModel
from tests.test_fuzz_messages import fuzz
from tests.test_imputation import random_windows, small

#: What a failed load may raise: errors of a bad file, never of a bad interpreter.
LOAD_ERRORS = (
    ValueError,  # JSONDecodeError, UnpicklingError from weights_only, bad shapes
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    OSError,
    RuntimeError,  # torch's own (wrong state_dict keys or sizes)
    ArithmeticError,  # OverflowError: int(float("inf"))
    pickle.UnpicklingError,
    EOFError,
    BedsideError,
)


class Payload:
    """Unpickling this touches a marker file: proof that a loader ran a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.fixture
def marker() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "payload-ran"
        yield path
        assert not path.exists(), "a loader unpickled an artefact"


def plant_pickle(path: Path, marker: Path) -> None:
    """Replace a weights or array file with one that carries the payload."""
    if path.suffix == ".pt":
        torch.save({"weight": Payload(marker)}, path)
    elif path.suffix == ".npz":
        with open(path, "wb") as handle:
            np.savez(handle, time_h=np.array([Payload(marker)], dtype=object))
    elif path.suffix == ".npy":
        np.save(path, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))


def check_load(load: Any, folder: Path) -> Any:
    """Load; a failure must be one of LOAD_ERRORS."""
    try:
        return load(folder)
    except LOAD_ERRORS as error:
        return error


# --- survival models -------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_json(engine_model_dir: Path) -> dict[str, Any]:
    return json.loads((engine_model_dir / MODEL_FILE).read_text())


def test_the_session_model_loads(engine_model_dir: Path) -> None:
    assert isinstance(SurvivalModel.load(engine_model_dir), SurvivalModel)


@pytest.mark.parametrize("artefact", ["member-0/tabular.npz", OUTCOMES_FILE, "member-0/weights.pt"])
def test_survival_artefacts_with_a_pickle_inside_are_refused(
    engine_model_dir: Path, tmp_path: Path, marker: Path, artefact: str
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(engine_model_dir, folder)
    plant_pickle(folder / artefact, marker)
    if artefact.endswith(".pt"):  # a net's weights: make the folder claim a net
        document = json.loads((folder / MODEL_FILE).read_text())
        document["arch"] = "mlp"
        (folder / MODEL_FILE).write_text(json.dumps(document))
        with pytest.raises(LOAD_ERRORS):
            torch.load(folder / artefact, weights_only=True)
    result = check_load(SurvivalModel.load, folder)
    assert isinstance(result, BaseException)


#: JSON values put in place of a field of model.json (small: see the module docstring).
model_values = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(-10, 10)
    | st.sampled_from([float("nan"), float("inf")])
    | st.text(max_size=8)
)
model_values = model_values | st.lists(model_values, max_size=3)


def _places(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    if not isinstance(value, dict | list) or len(prefix) >= 4:
        return found
    items = value.items() if isinstance(value, dict) else enumerate(value[:3])
    for key, item in items:
        found.append((*prefix, key))
        found.extend(_places(item, (*prefix, key)))
    return found


@st.composite
def damaged_document(draw: st.DrawFn, document: dict[str, Any]) -> bytes:
    if draw(st.integers(0, 4)) == 0:  # a cut or garbled file
        text = json.dumps(document).encode()
        return text[: draw(st.integers(0, len(text)))] + draw(st.binary(max_size=4))
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        places = _places(document)
        if not places:
            break
        place = draw(st.sampled_from(places))
        parent = document
        for step in place[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[place[-1]]
        else:
            parent[place[-1]] = draw(model_values)
    return json.dumps(document).encode()


@fuzz(40)
@given(data=st.data())
def test_damaged_model_json_fails_cleanly(
    engine_model_dir: Path, model_json: dict[str, Any], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        shutil.copytree(engine_model_dir, folder)
        (folder / MODEL_FILE).write_bytes(data.draw(damaged_document(model_json)))
        check_load(SurvivalModel.load, folder)


# --- imputers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_imputers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imputers")
    windows = random_windows(40, seed=1)
    for kind in ("mean", "knn"):
        small(kind).fit(windows).save(root / kind)
    return root


def test_an_imputer_kind_is_looked_up_never_imported(saved_imputers: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mean"
    shutil.copytree(saved_imputers / "mean", folder)
    for kind in ("os:system", "builtins:eval", "bedside.training.imputation.classical:Path"):
        (folder / "imputer.json").write_text(json.dumps({"kind": kind, "config": {}}))
        with pytest.raises(ValueError, match="unknown imputer"):
            load_imputer(folder)


def test_a_pickled_knn_reference_is_refused(
    saved_imputers: Path, tmp_path: Path, marker: Path
) -> None:
    folder = tmp_path / "knn"
    shutil.copytree(saved_imputers / "knn", folder)
    plant_pickle(folder / "reference.npy", marker)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_imputer(folder)


@fuzz(30)
@given(kind=st.sampled_from(["mean", "knn"]), data=st.data())
def test_damaged_imputer_json_fails_cleanly(
    saved_imputers: Path, kind: str, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / kind
        shutil.copytree(saved_imputers / kind, folder)
        document = json.loads((folder / "imputer.json").read_text())
        (folder / "imputer.json").write_bytes(data.draw(damaged_document(document)))
        check_load(load_imputer, folder)


# --- detectors -----------------------------------------------------------------------


@fuzz(20)
@given(
    saved=st.none() | st.dictionaries(st.sampled_from(["params", "reference_masses"]), model_values)
)
def test_damaged_detector_references_fail_cleanly(saved: dict[str, Any] | None) -> None:
    from bedside.training.detectors.base import DetectorError

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / DETECTORS_FILE).write_text(json.dumps({"multivariate": saved}))
        try:
            population_reference(folder)
        except (DetectorError, *LOAD_ERRORS):
            pass
