"""The engine's rolling window: a minute of samples added at once is what adding them
one by one gives (the engine adds a bed's pending samples in one call per score)."""

from __future__ import annotations

import numpy as np
import pytest

from bedside.training.windows import Grid, RollingWindow

CONCEPTS = ("heart_rate", "spo2", "respiratory_rate", "temperature")


def _samples(rng: np.random.Generator, start_s: float) -> list[tuple[float, dict[str, float]]]:
    """A batch of samples in time order: concepts in any order, some not in the grid,
    some values not finite, now and then one an hour late (before the ring's steps)."""
    samples = []
    time_s = start_s
    for _ in range(int(rng.integers(0, 80))):
        time_s += float(rng.exponential(120.0))
        late = 3600.0 * int(rng.integers(0, 3)) if rng.random() < 0.05 else 0.0
        chosen = rng.permutation((*CONCEPTS, "bilirubin"))[: int(rng.integers(0, 5))]
        values = {
            str(c): float(rng.normal(80.0, 10.0)) if rng.random() > 0.1 else float("nan")
            for c in chosen
        }
        samples.append((time_s - late, values))
    samples.sort(key=lambda sample: sample[0])
    return samples


@pytest.mark.parametrize("seed", range(20))
def test_samples_added_at_once_give_the_same_window(seed: int) -> None:
    rng = np.random.default_rng(seed)
    grid = Grid(concepts=CONCEPTS, step_minutes=60, steps=3)
    one_by_one, at_once = RollingWindow(grid, 0.0), RollingWindow(grid, 0.0)
    time_s = 0.0
    for _ in range(20):
        samples = _samples(rng, time_s)
        if samples:
            time_s = max(time_s, samples[-1][0])
        kept = sum(one_by_one.add_values(t, values) for t, values in samples)
        assert at_once.add_samples(samples) == kept
        np.testing.assert_array_equal(at_once.values(time_s), one_by_one.values(time_s))
        assert at_once.observed_fraction(time_s) == one_by_one.observed_fraction(time_s)
    assert time_s > 3 * 3600.0  # the ring turned over, several times


def test_values_outside_the_window_are_not_kept() -> None:
    grid = Grid(concepts=CONCEPTS, step_minutes=60, steps=3)
    window = RollingWindow(grid, anchor_s=3600.0)
    before_admission = (0.0, {"heart_rate": 80.0})
    assert window.add_samples([before_admission]) == 0
    assert window.add_samples([(4 * 3600.0, {"heart_rate": 80.0, "bilirubin": 1.0})]) == 1
    assert window.add_samples([(3600.0 + 10.0, {"heart_rate": 90.0})]) == 0  # ring moved on
    assert np.isnan(window.values(5 * 3600.0)).sum() == 3 * len(CONCEPTS) - 1
