"""The attention imputer on small synthetic windows: it learns, keeps what was observed,
and comes back identical from disk."""

from __future__ import annotations

import doctest
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from bedside.training.imputation.attention import data
from bedside.training.imputation.attention.data import LINEAR, classical_channels
from bedside.training.imputation.attention.model import AttentionImputer
from bedside.training.imputation.base import imputer_class, load_imputer
from bedside.training.imputation.protocol import block_mask, errors, mcar_mask

#: A network small enough to train in about a second on one core.
TINY = {
    "d_model": 16,
    "heads": 2,
    "layers": 1,
    "d_ffn": 32,
    "batch_size": 32,
    "learning_rate": 3e-3,
    "epochs": 12,
    "patience": 12,
    "verbose": False,
}


def sinusoids(stays: int, seed: int) -> np.ndarray:
    """Standardised windows (stays, 24 steps, 5 variables) of correlated sinusoids.

    Each stay has its own phase and level; variable 4 is the mean of variables 0 and 1,
    so a model can learn it across variables. About 60 % of values are missing, and one
    variable is never seen in some stays.
    """
    rng = np.random.default_rng(seed)
    hours = np.arange(24)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, (stays, 1, 1))
    level = rng.normal(0, 1, (stays, 1, 4))
    period = np.array([12.0, 8.0, 24.0, 6.0])[None, None, :]
    base = level + np.sin(2 * np.pi * hours / period + phase)
    values = np.concatenate([base, base[..., :2].mean(-1, keepdims=True)], axis=-1)
    values += rng.normal(0, 0.1, values.shape)
    values[rng.random(values.shape) < 0.6] = np.nan
    values[rng.random(stays) < 0.1, :, 3] = np.nan
    values = (values - np.nanmean(values, axis=(0, 1))) / np.nanstd(values, axis=(0, 1))
    return values.astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    return sinusoids(160, seed=1)


@pytest.fixture(scope="module")
def test() -> np.ndarray:
    return sinusoids(60, seed=2)


@pytest.fixture(scope="module")
def fitted(train: np.ndarray) -> AttentionImputer:
    return AttentionImputer(**TINY, seed=7).fit(train)


def test_is_the_registered_attention_imputer() -> None:
    assert imputer_class("attention") is AttentionImputer


@pytest.mark.parametrize("masking", [mcar_mask, block_mask])
def test_beats_mean_and_linear_interpolation_on_hidden_values(
    fitted: AttentionImputer, test: np.ndarray, masking
) -> None:
    hidden = masking(test, 0.2, 2026)
    windows = np.where(hidden, np.nan, test)
    error = errors(test, fitted.impute(windows), hidden).mae
    mean = np.zeros_like(test)  # the training mean, once standardised
    assert error < 0.6 * errors(test, mean, hidden).mae
    # The untrained network is exactly linear interpolation: training must improve on it.
    linear = classical_channels(windows, clip=10.0)[..., LINEAR]
    assert error < 0.97 * errors(test, linear, hidden).mae


def test_keeps_observed_values_and_fills_every_gap(
    fitted: AttentionImputer, test: np.ndarray
) -> None:
    windows = test.copy()
    windows[0] = np.nan  # a stay with nothing recorded yet
    windows[1, :, 2] = 50.0  # a recording error far beyond the clip bound
    filled = fitted.impute(windows)
    observed = ~np.isnan(windows)
    assert not np.isnan(filled).any()
    np.testing.assert_array_equal(filled[observed], windows[observed])
    assert np.abs(filled[1, :, :2]).max() < 10  # the error does not leak into neighbours


def test_save_and_load_give_identical_imputations(
    fitted: AttentionImputer, test: np.ndarray, tmp_path: Path
) -> None:
    fitted.save(tmp_path)
    saved = json.loads((tmp_path / "imputer.json").read_text())
    assert saved["kind"] == "attention"
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert all(isinstance(tensor, torch.Tensor) for tensor in state.values())
    loaded = load_imputer(tmp_path)
    np.testing.assert_array_equal(loaded.impute(test), fitted.impute(test))
    assert loaded.config() == fitted.config()


def test_same_seed_same_imputer(
    fitted: AttentionImputer, train: np.ndarray, test: np.ndarray
) -> None:
    again = AttentionImputer(**TINY, seed=7).fit(train)
    np.testing.assert_array_equal(again.impute(test), fitted.impute(test))
    other = AttentionImputer(**TINY, seed=8).fit(train)
    assert not np.array_equal(other.impute(test), fitted.impute(test))


def test_one_window_is_imputed_as_in_a_batch(fitted: AttentionImputer, test: np.ndarray) -> None:
    batch = fitted.impute(test)
    for i in (0, 17, 59):
        np.testing.assert_allclose(fitted.impute(test[i]), batch[i], rtol=0, atol=1e-5)


def test_one_window_runs_on_one_thread_and_gives_the_threads_back(
    fitted: AttentionImputer, test: np.ndarray
) -> None:
    """Threads cost more than they save on one window (hundreds of ms on a busy machine)."""
    seen: list[int] = []
    hook = fitted.network.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    torch.set_num_threads(2)
    try:
        batch = fitted.impute(test)
        one = [fitted.impute(test[i]) for i in (0, 17, 59)]
        assert torch.get_num_threads() == 2
    finally:
        hook.remove()
        torch.set_num_threads(1)
    assert seen == [2, 1, 1, 1]
    for i, window in zip((0, 17, 59), one, strict=True):
        np.testing.assert_allclose(window, batch[i], rtol=0, atol=1e-5)


def test_concurrent_single_windows_restore_the_thread_count(
    fitted: AttentionImputer, test: np.ndarray
) -> None:
    torch.set_num_threads(2)
    try:
        with ThreadPoolExecutor(4) as pool:
            filled = list(pool.map(fitted.impute, test[:40]))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    np.testing.assert_allclose(np.stack(filled), fitted.impute(test[:40]), rtol=0, atol=1e-5)


def test_config_is_json_and_rebuilds_the_imputer(fitted: AttentionImputer) -> None:
    config = json.loads(json.dumps(fitted.config()))
    assert config["d_model"] == 16 and config["steps"] == 24 and config["variables"] == 5
    assert config["training"]["epochs"] >= config["training"]["best_epoch"] >= 1
    assert config["clip"] == 10.0


def test_stops_at_the_wall_clock_budget_with_a_usable_imputer(
    train: np.ndarray, test: np.ndarray
) -> None:
    budget = {"epochs": 10_000, "patience": 10_000, "max_minutes": 0.02}
    quick = AttentionImputer(**{**TINY, **budget}).fit(train)
    assert quick.training["stopped_by"] == "max_minutes"
    assert quick.training["seconds"] < 10
    assert not np.isnan(quick.impute(test)).any()


def test_rejects_windows_of_another_shape(fitted: AttentionImputer) -> None:
    with pytest.raises(ValueError, match="expected"):
        fitted.impute(np.zeros((2, 12, 5), dtype=np.float32))


def test_rejects_unknown_settings() -> None:
    with pytest.raises(TypeError, match="d_modle"):
        AttentionImputer(d_modle=32)


def test_masking_examples_run() -> None:
    result = doctest.testmod(data, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
