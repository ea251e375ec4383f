"""The synthetic ICU: reproducible, canonical, plausible, learnable, with honest ground truth."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bedside.cli import main
from bedside.replay.artefacts import Artefact
from bedside.replay.charting import MonitorClock, Observations
from bedside.replay.physiology import draw_patient
from bedside.replay.simulator import (
    SIMULATION_START,
    SimulatedStay,
    SimulationError,
    simulate_cohort,
    simulate_ward,
)
from bedside.schemas.concepts import load_concepts
from bedside.schemas.messages import (
    PATIENT_TOPIC,
    VITALS_TOPIC,
    Admit,
    Death,
    Discharge,
    Vitals,
    decode,
    encode,
)
from bedside.schemas.tables import ARTEFACTS, EVENTS, ICU_TYPES, STAYS

ARTERIAL = ("arterial_systolic_bp", "arterial_mean_bp", "arterial_diastolic_bp")


@pytest.fixture(scope="module")
def monitored() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """A small cohort with monitor numerics once a minute: artefacts show up in it."""
    return simulate_cohort(stays=12, hours=24, seed=11, monitor_hz=1 / 60)


@pytest.fixture(scope="module")
def charted() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """A cohort large enough to learn mortality from its first 24 hours."""
    return simulate_cohort(stays=600, hours=48, seed=3)


# --- reproducibility ----------------------------------------------------------------


def test_same_seed_gives_identical_tables_and_another_seed_does_not() -> None:
    first = simulate_cohort(stays=8, hours=12, seed=5, monitor_hz=1 / 60)
    again = simulate_cohort(stays=8, hours=12, seed=5, monitor_hz=1 / 60)
    other = simulate_cohort(stays=8, hours=12, seed=6, monitor_hz=1 / 60)
    assert all(a.equals(b) for a, b in zip(first, again, strict=True))
    assert not first[0].equals(other[0])
    assert not first[1].equals(other[1])


def test_a_stay_does_not_change_when_more_stays_are_asked_for() -> None:
    few_events, few_stays, few_artefacts = simulate_cohort(stays=3, hours=12, seed=9)
    many_events, many_stays, many_artefacts = simulate_cohort(stays=7, hours=12, seed=9)
    first_three = pl.col("stay_id") <= 3
    assert few_events.equals(many_events.filter(first_three))
    assert few_stays.equals(many_stays.filter(first_three))
    assert few_artefacts.equals(many_artefacts.filter(first_three))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.floats(0.0, 1.0), max_size=6),
    hz=st.sampled_from([1.0, 1 / 60]),
)
def test_reading_a_stay_in_any_windows_gives_the_same_values(
    seed: int, cuts: list[float], hz: float
) -> None:
    def stay() -> SimulatedStay:
        start_us = 1_900_000_000_000_000
        return SimulatedStay(
            np.random.SeedSequence(seed), 1, start_us, 3.0, MonitorClock.at(start_us, hz)
        )

    whole = stay()
    begin, end = whole.patient.admit_us, whole.patient.horizon_us + 1
    expected = whole.observe(begin, end)
    pieces = stay()
    bounds = [begin, *sorted(begin + round(c * (end - begin)) for c in cuts), end]
    parts = Observations.concat([pieces.observe(a, b) for a, b in pairwise(bounds)])
    for name in ("time_us", "code", "value", "source"):
        np.testing.assert_array_equal(getattr(parts, name), getattr(expected, name))


# --- canonical tables ----------------------------------------------------------------


def test_tables_are_canonical_and_consistent(
    monitored: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    events, stays, artefacts = monitored
    assert events.schema == EVENTS and stays.schema == STAYS and artefacts.schema == ARTEFACTS
    assert stays["stay_id"].is_unique().all() and stays.height == 12
    assert (stays["subject_id"] == stays["stay_id"]).all()
    assert set(stays["icu_type"]) <= set(ICU_TYPES) and set(stays["sex"]) <= {"F", "M"}
    assert stays["admit_time"].min() >= SIMULATION_START
    assert (stays["discharge_time"] > stays["admit_time"]).all()
    assert (stays["hospital_discharge_time"] >= stays["discharge_time"]).all()
    dead = stays.filter(pl.col("in_hospital_death") == 1)
    alive = stays.filter(pl.col("in_hospital_death") == 0)
    assert dead["death_time"].null_count() == 0 and dead["survival_days"].null_count() == 0
    assert alive["death_time"].null_count() == alive.height
    assert alive["survival_days"].null_count() == alive.height

    assert events.null_count().row(0) == (0,) * len(EVENTS)
    assert set(events["code"]) <= set(load_concepts())
    expected_source = pl.lit("simulator//") + pl.col("code")
    sources = events.select(pl.col("source_code").str.replace("monitor/", "") == expected_source)
    assert sources.to_series().all()
    # Values are recorded from admission until the stay ends or the 24 h are over.
    span = events.join(stays, on="stay_id").select(
        after_admission=pl.col("time") >= pl.col("admit_time"),
        before_the_end=pl.col("time")
        < pl.min_horizontal("discharge_time", pl.col("admit_time") + timedelta(hours=24)),
    )
    assert span["after_admission"].all() and span["before_the_end"].all()
    assert events.equals(events.sort("stay_id", "time", maintain_order=True))


def clean(events: pl.DataFrame, artefacts: pl.DataFrame) -> pl.DataFrame:
    """The events that no artefact touched."""
    touched = (
        events.with_row_index("row")
        .join(artefacts, on=["stay_id", "code"])
        .filter(pl.col("time").is_between(pl.col("start"), pl.col("end")))
        .select("row")
    )
    return events.with_row_index("row").join(touched, on="row", how="anti").drop("row")


def test_values_stay_in_plausible_ranges_except_artefacts(
    monitored: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    events, _, artefacts = monitored
    concepts = load_concepts()
    ranges = pl.DataFrame(
        [(name, *concepts[name].plausible) for name in events["code"].unique()],
        schema=["code", "low", "high"],
        orient="row",
    )
    implausible = (
        clean(events, artefacts)
        .join(ranges, on="code")
        .filter(~pl.col("numeric_value").is_between(pl.col("low"), pl.col("high")))
    )
    assert implausible.height == 0, implausible.head()
    assert events["numeric_value"].is_finite().all()  # artefacts included


def test_charting_is_irregular_and_as_often_as_on_a_real_unit(
    charted: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    events, _, _ = charted
    gaps = (
        events.filter(pl.col("code").is_in(["heart_rate", "creatinine", "temperature"]))
        .with_columns(gap=pl.col("time").diff().over("stay_id", "code").dt.total_minutes())
        .group_by("code")
        .agg(median=pl.col("gap").median(), spread=pl.col("gap").std())
    )
    minutes = {code: (median, spread) for code, median, spread in gaps.iter_rows()}
    assert 40 <= minutes["heart_rate"][0] <= 80 and minutes["heart_rate"][1] > 10
    assert 60 <= minutes["temperature"][0] <= 240
    assert 4 * 60 <= minutes["creatinine"][0] <= 12 * 60


def test_systolic_above_mean_above_diastolic(
    monitored: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    events, _, _ = monitored
    for prefix in ("arterial", "noninvasive"):
        wide = (
            events.filter(pl.col("code").str.starts_with(prefix))
            .with_columns(part=pl.col("code").str.split("_").list.get(1))
            .with_columns(monitor=pl.col("source_code").str.contains("monitor/"))
            .pivot(on="part", index=["stay_id", "time", "monitor"], values="numeric_value")
            .drop_nulls()
        )
        assert wide.height > 100
        ordered = (wide["systolic"] > wide["mean"]) & (wide["mean"] > wide["diastolic"])
        assert ordered.mean() > 0.97, prefix


def test_mortality_is_in_a_realistic_band_and_depends_on_age_and_icu_type() -> None:
    patients = [
        draw_patient(np.random.SeedSequence([21, i]), i, 0, horizon_h=1) for i in range(3000)
    ]
    died = np.array([p.dies or p.dies_after_icu for p in patients])
    age = np.array([p.age for p in patients])
    icu = np.array([p.icu_type for p in patients])
    assert 0.09 < died.mean() < 0.18
    assert age[died].mean() > age[~died].mean() + 3
    assert died[icu == "cardiac_surgery"].mean() < died[icu == "medical"].mean()


def test_the_dying_deteriorate_in_their_last_hours(
    charted: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    events, stays, _ = charted
    died_in_window = stays.filter(
        (pl.col("in_hospital_death") == 1)
        & (pl.col("death_time") == pl.col("discharge_time"))
        & (pl.col("los_days") < 2)
    )
    assert died_in_window.height >= 15
    timed = events.join(died_in_window, on="stay_id").with_columns(
        last_hours=pl.col("death_time") - pl.col("time") < timedelta(hours=3),
        first_hours=pl.col("time") - pl.col("admit_time") < timedelta(hours=3),
    )
    change = (
        timed.group_by("stay_id", "code")
        .agg(
            late=pl.col("numeric_value").filter("last_hours").median(),
            early=pl.col("numeric_value").filter("first_hours").median(),
        )
        .group_by("code")
        .agg((pl.col("late") - pl.col("early")).median())
    )
    change = dict(change.drop_nulls().iter_rows())
    assert change["heart_rate"] > 5 and change["respiratory_rate"] > 1
    assert change["spo2"] < -1


def test_a_simple_model_learns_mortality_but_not_perfectly(
    charted: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    events, stays, _ = charted
    codes = ["heart_rate", "arterial_mean_bp", "respiratory_rate", "spo2", "gcs", "lactate"]
    codes += ["creatinine", "urine_output", "temperature", "bicarbonate"]
    first_day = events.join(stays, on="stay_id").filter(
        pl.col("time") < pl.col("admit_time") + timedelta(hours=24)
    )
    events = first_day.with_columns(pl.col("code").str.replace("noninvasive_", "arterial_"))
    value = pl.col("numeric_value")
    features = events.group_by("stay_id").agg(
        stat(value.filter(pl.col("code") == c)).alias(f"{c}_{stat.__name__}")
        for c in codes
        for stat in (pl.Expr.mean, pl.Expr.min, pl.Expr.max)
    )
    table = stays.select("stay_id", "age", "in_hospital_death").join(features, on="stay_id")
    x = table.drop("stay_id", "in_hospital_death").to_numpy().astype(float)
    x = np.where(np.isnan(x), np.nanmedian(x, axis=0), x)
    y = table["in_hospital_death"].to_numpy()
    half = y.size // 2
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=2000))
    model.fit(x[:half], y[:half])
    auroc = roc_auc_score(y[half:], model.predict_proba(x[half:])[:, 1])
    assert 0.75 < auroc < 0.99


# --- artefacts -----------------------------------------------------------------------


def test_artefact_ground_truth_matches_the_events(
    monitored: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    events, _, artefacts = monitored
    assert set(artefacts["kind"]) == {"spike", "flatline", "dropout", "arterial_zero", "sensor_off"}
    inside = (
        artefacts.with_row_index("artefact")
        .join(events, on=["stay_id", "code"], how="left")
        .filter(pl.col("time").is_between(pl.col("start"), pl.col("end")))
        .group_by("artefact", "kind", "code")
        .agg(
            n=pl.len(),
            distinct=pl.col("numeric_value").n_unique(),
            top=pl.col("numeric_value").max(),
        )
    )
    by_kind = {kind: frame for (kind,), frame in inside.group_by("kind")}
    assert "dropout" not in by_kind  # nothing recorded while the monitor is off
    flat = by_kind["flatline"]
    assert (flat["n"] >= 2).all() and (flat["distinct"] == 1).all()
    for kind in ("arterial_zero", "sensor_off"):
        assert (by_kind[kind]["top"] == 0).all()
    assert set(by_kind["arterial_zero"]["code"]) == set(ARTERIAL)
    assert set(by_kind["sensor_off"]["code"]) <= {"spo2", "pulse_rate"}
    # Every artefact except dropouts changed at least one recorded value.
    assert inside.height == artefacts.filter(pl.col("kind") != "dropout").height


def test_artefacts_of_one_concept_never_overlap(
    monitored: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    _, _, artefacts = monitored
    following = artefacts.sort("stay_id", "code", "start").with_columns(
        next_start=pl.col("start").shift(-1).over("stay_id", "code")
    )
    assert (artefacts["end"] >= artefacts["start"]).all()
    assert (
        following.drop_nulls("next_start").select(pl.col("end") < pl.col("next_start"))["end"].all()
    )


# --- live ward -----------------------------------------------------------------------


def microseconds(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def check_ward(messages: list[Admit | Vitals | Discharge | Death]) -> None:
    """What every consumer of the ward stream relies on."""
    times = [m.time for m in messages]
    assert times == sorted(times)
    seqs: dict[str, list[int]] = defaultdict(list)
    current: dict[str, str | None] = defaultdict(lambda: None)
    for message in messages:
        topic = VITALS_TOPIC if isinstance(message, Vitals) else PATIENT_TOPIC
        assert decode(topic, encode(message)) == message
        if isinstance(message, Admit):
            assert current[message.bed] is None, "admitted to an occupied bed"
            current[message.bed] = message.stay_id
        elif isinstance(message, Discharge | Death):
            assert current[message.bed] == message.stay_id
            current[message.bed] = None
        else:
            assert current[message.bed] == message.stay_id, "vitals of no admitted patient"
            seqs[message.bed].append(message.seq)
    for numbers in seqs.values():
        assert numbers == list(range(len(numbers)))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    beds=st.integers(1, 4),
    hours=st.floats(0.1, 3.0),
    seed=st.integers(0, 2**31),
    monitor_hz=st.sampled_from([0.0, 1 / 60, 0.2]),
    los_scale=st.sampled_from([0.05, 1.0]),
)
def test_ward_stream_is_valid_ordered_and_numbered(
    beds: int, hours: float, seed: int, monitor_hz: float, los_scale: float
) -> None:
    check_ward(list(simulate_ward(beds, hours, seed, monitor_hz, los_scale=los_scale)))


def test_ward_turns_beds_over_and_is_reproducible_whatever_the_chunk() -> None:
    truth: list[Artefact] = []
    messages = list(
        simulate_ward(4, 24, seed=8, monitor_hz=1 / 60, los_scale=0.1, ground_truth=truth)
    )
    check_ward(messages)
    admits = [m for m in messages if isinstance(m, Admit)]
    leaves = [m for m in messages if isinstance(m, Discharge | Death)]
    assert len(admits) > 4 and leaves
    assert {m.bed for m in admits} == {"bed-01", "bed-02", "bed-03", "bed-04"}
    assert {a.stay_id for a in truth} <= {int(m.stay_id) for m in admits}
    again = simulate_ward(4, 24, seed=8, monitor_hz=1 / 60, los_scale=0.1, chunk_minutes=47)
    assert list(again) == messages

    # The ground truth holds in the stream too: a zeroed arterial line reads 0.
    zeroed = [a for a in truth if a.kind == "arterial_zero"]
    assert zeroed
    for artefact in zeroed[:20]:
        readings = [
            m.values[artefact.code]
            for m in messages
            if isinstance(m, Vitals)
            and m.stay_id == str(artefact.stay_id)
            and artefact.code in m.values
            and artefact.start_us <= microseconds(m.time) <= artefact.end_us
        ]
        assert readings and set(readings) == {0.0}


def test_ward_is_generated_lazily() -> None:
    messages = simulate_ward(beds=30, hours=24 * 365, seed=1, monitor_hz=1.0)
    first = [next(messages) for _ in range(100)]
    admitted = [m.bed for m in first if isinstance(m, Admit)]
    assert admitted == [f"bed-{i:02d}" for i in range(1, 31)]
    assert first[0].time == SIMULATION_START
    assert first[-1].time < SIMULATION_START + timedelta(seconds=10)


# --- errors and command line ---------------------------------------------------------


@pytest.mark.parametrize(
    ("stays", "hours", "seed", "hz"),
    [(0, 24, 1, 0), (5, 0, 1, 0), (5, 24, -1, 0), (5, 24, 1, -1), (5, 24, 1, 50)],
)
def test_impossible_requests_are_refused(stays: int, hours: float, seed: int, hz: float) -> None:
    with pytest.raises(SimulationError):
        simulate_cohort(stays, hours, seed, hz)


def test_cli_writes_the_tables_and_the_ground_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim"
    assert main(["data", "simulate", "--stays", "50", "--out", str(out)]) == 0
    stays = pl.read_parquet(out / "stays.parquet")
    events = pl.read_parquet(out / "events.parquet")
    artefacts = pl.read_parquet(out / "artefacts.parquet")
    assert stays.schema == STAYS and events.schema == EVENTS and artefacts.schema == ARTEFACTS
    assert stays.height == 50 and events.height > 10_000
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["stays"] == 50 and report["events"] == events.height
    summary = capsys.readouterr().out
    assert "simulated 50 stays" in summary and str(out) in summary

    assert main(["data", "simulate", "--stays", "0", "--out", str(out)]) == 2
    assert "bedside: error:" in capsys.readouterr().err
