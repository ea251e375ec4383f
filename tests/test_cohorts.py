"""Labels: horizons, censoring and in-ICU / in-hospital death, on hand-made and real stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.schemas.tables import STAYS
from bedside.training.cohorts import (
    DEFAULT_HORIZONS_H,
    Task,
    horizon_labels,
    in_icu_death,
    select_cohort,
    survival_targets,
)
from bedside.training.data import physionet2012
from tests.realdata import shared

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def stays_frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    full = [{name: row.get(name) for name in STAYS} for row in rows]
    return pl.DataFrame(full, schema=STAYS)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


@st.composite
def stays_strategy(draw: st.DrawFn) -> dict[str, object]:
    hospital_days = draw(st.floats(0.05, 60))
    icu_days = draw(st.floats(0.01, 1)) * hospital_days
    outcome = draw(st.sampled_from(["alive", "died_in_icu", "died_in_hospital", "died_later"]))
    death = {
        "alive": None,
        "died_in_icu": icu_days,
        "died_in_hospital": draw(st.floats(icu_days, hospital_days)),
        "died_later": hospital_days + draw(st.floats(0.5, 400)),
    }[outcome]
    return {
        "stay_id": 0,
        "admit_time": T0,
        "discharge_time": day(icu_days),
        "hospital_discharge_time": day(hospital_days),
        "death_time": None if death is None else day(death),
        "in_hospital_death": int(outcome in ("died_in_icu", "died_in_hospital")),
        "age": draw(st.floats(16, 100)),
    }


@given(
    st.lists(stays_strategy(), min_size=1, max_size=20),
    st.floats(0, 72),
    st.sampled_from([None, 30.0, 365.0]),
)
# No deadline: polars' first calls can take most of a second on a busy 2-core CI machine.
@settings(deadline=None)
def test_labels_agree_with_the_death_they_come_from(
    rows: list[dict[str, object]], prediction_h: float, follow_up: float | None
) -> None:
    for index, row in enumerate(rows):
        row["stay_id"] = index
    stays = stays_frame(rows)
    task = Task(prediction_time_h=prediction_h, follow_up_days=follow_up)
    targets = survival_targets(stays, task)
    labels = horizon_labels(targets, DEFAULT_HORIZONS_H)
    for row, target, label in zip(
        rows, targets.iter_rows(named=True), labels.iter_rows(named=True), strict=True
    ):
        death = row["death_time"]
        if follow_up is None:
            assert target["event"] == row["in_hospital_death"]
        elif death is not None:
            limit = row["hospital_discharge_time"] + timedelta(days=follow_up)
            assert target["event"] == int(death <= limit)
        assert target["time_h"] >= 0
        for horizon in DEFAULT_HORIZONS_H:
            value = label[f"death_{horizon:g}h"]
            if value == 1:
                assert target["event"] == 1 and target["time_h"] <= horizon
            elif value == 0:
                assert target["time_h"] >= horizon or target["event"] == 0
            else:  # unknown only when follow-up ended before the horizon, alive
                assert target["event"] == 0 and target["time_h"] < horizon
        # Risk can only grow with the horizon.
        known = [label[f"death_{h:g}h"] for h in DEFAULT_HORIZONS_H]
        ones = [v for v in known if v is not None]
        assert ones == sorted(ones)


def test_in_icu_and_in_hospital_death_differ() -> None:
    stays = stays_frame(
        [
            {
                "stay_id": 1,
                "admit_time": T0,
                "discharge_time": day(2),
                "hospital_discharge_time": day(9),
                "death_time": day(8),
                "in_hospital_death": 1,
            },
            {
                "stay_id": 2,
                "admit_time": T0,
                "discharge_time": day(2),
                "hospital_discharge_time": day(2),
                "death_time": day(2),
                "in_hospital_death": 1,
            },
            {
                "stay_id": 3,
                "admit_time": T0,
                "hospital_discharge_time": day(9),
                "in_hospital_death": 0,
            },
        ]
    )
    assert in_icu_death(stays)["in_icu_death"].to_list() == [0, 1, None]
    assert survival_targets(stays, Task())["event"].to_list() == [1, 1, 0]


def test_cohort_selection_counts_what_it_excludes() -> None:
    stays = stays_frame(
        [
            {"stay_id": 1, "admit_time": T0, "age": 15.0, "in_hospital_death": 0},
            {
                "stay_id": 2,
                "admit_time": T0,
                "age": 60.0,
                "death_time": day(1),
                "in_hospital_death": 1,
            },
            {"stay_id": 3, "admit_time": T0, "age": 70.0, "in_hospital_death": 0},
        ]
    )
    kept, excluded = select_cohort(stays, Task(min_age=18, alive_at_prediction=True))
    assert kept["stay_id"].to_list() == [3]
    assert excluded == {"age < 18 or unknown": 1, "died before 48 h": 1}


def test_bad_tasks_are_refused() -> None:
    with pytest.raises(ValueError, match="increasing"):
        Task(horizons_h=(72.0, 24.0))
    with pytest.raises(ValueError, match=">= 0"):
        Task(prediction_time_h=-1)


def test_physionet_in_hospital_labels_match_the_outcomes_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = shared("physionet2012")
    physionet2012.convert(root / "set-a", tmp_path, root / "Outcomes-a.txt")
    stays = pl.read_parquet(tmp_path / "stays.parquet")
    targets = survival_targets(stays, Task())
    assert targets["event"].sum() == 554
    # Deaths known after discharge become events only with death-registry follow-up.
    linked = survival_targets(stays, Task(follow_up_days=3650))
    assert linked["event"].sum() > 554
