"""PhysioNet 2012 -> canonical tables: exact counts on the real sets, clear errors on bad files."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from bedside.cli import main
from bedside.schemas.tables import EVENTS, STAYS, TIME_ANCHOR
from bedside.training.data import physionet2012
from bedside.training.data.canonical import DataError
from tests.realdata import shared

HEADER = "Time,Parameter,Value\n"
OUTCOMES_HEADER = "RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n"


def write_stay(folder: Path, record: int, body: str, descriptors: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if descriptors is None:
        descriptors = (
            f"00:00,RecordID,{record}\n00:00,Age,70\n00:00,Gender,1\n00:00,Height,-1\n"
            "00:00,ICUType,3\n00:00,Weight,80.5\n"
        )
    (folder / f"{record}.txt").write_text(HEADER + descriptors + body)


@pytest.fixture
def small_set(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "set-x"
    write_stay(folder, 1001, "00:07,HR,73\n00:07,Temp,35.1\n01:37,HR,77\n47:59,pH,735\n")
    # Descriptors interleaved with 00:00 measurements, as in the real files; Weight twice.
    write_stay(
        folder,
        1002,
        "00:30,Lactate,4.2\n",
        descriptors="00:00,RecordID,1002\n00:00,Age,54\n00:00,FiO2,1\n00:00,Gender,0\n"
        "00:00,Height,170.2\n00:00,HR,90\n00:00,ICUType,2\n00:00,Weight,-1\n00:00,Weight,71\n",
    )
    outcomes = tmp_path / "Outcomes-x.txt"
    outcomes.write_text(OUTCOMES_HEADER + "1001,10,2,5,-1,0\n1002,20,9,3,2,1\n")
    return folder, outcomes


def test_small_set_converts_to_canonical_tables(
    small_set: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, outcomes = small_set
    out = tmp_path / "out"
    assert (
        main(
            [
                "data",
                "convert",
                "physionet2012",
                str(folder),
                "--outcomes",
                str(outcomes),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    events = pl.read_parquet(out / "events.parquet")
    stays = pl.read_parquet(out / "stays.parquet")
    assert events.schema == EVENTS and stays.schema == STAYS
    assert stays.select("stay_id", "age", "sex", "height_cm", "weight_kg", "icu_type").rows() == [
        (1001, 70.0, "M", None, 80.5, "medical"),
        (1002, 54.0, "F", 170.2, None, "cardiac_surgery"),
    ]
    assert stays["in_hospital_death"].to_list() == [0, 1]
    assert stays["survival_days"].to_list() == [None, 2.0]
    assert stays["hospital_los_days"].to_list() == [5.0, 3.0]
    by_stay = {k: v.sort("time")["code"].to_list() for (k,), v in events.group_by("stay_id")}
    assert by_stay[1001] == ["heart_rate", "temperature", "heart_rate", "ph"]
    # FiO2 and HR at 00:00 are measurements, the second Weight at 00:00 is one too.
    assert sorted(by_stay[1002]) == ["fio2", "heart_rate", "lactate", "weight"]
    last = events.filter(pl.col("code") == "ph")
    assert last["time"][0] == TIME_ANCHOR.replace(day=2, hour=23, minute=59)
    assert last["numeric_value"][0] == 735.0  # kept as recorded; detectors judge it


def test_malformed_row_names_the_file_and_line(
    small_set: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, outcomes = small_set
    bad = folder / "1001.txt"
    bad.write_text(bad.read_text() + "48:00,HR,fast\n")
    with pytest.raises(DataError) as caught:
        physionet2012.convert(folder, tmp_path / "out", outcomes)
    assert caught.value.path == str(bad) and caught.value.line == 12
    assert "fast" in str(caught.value)


def test_bad_rows_can_be_skipped_and_are_counted(
    small_set: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, outcomes = small_set
    bad = folder / "1001.txt"
    bad.write_text(bad.read_text() + "48:00,HR,fast\n12:75,HR,80\n1,2\n")
    report = physionet2012.convert(folder, tmp_path / "out", outcomes, on_bad_row="skip")
    assert report.bad_rows == 3
    assert report.events == 8
    assert any(":13:" in example and "minutes" in example for example in report.bad_row_examples)


def test_unknown_parameters_are_counted_and_kept_on_request(
    small_set: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, outcomes = small_set
    write_stay(folder, 1003, "01:00,Troponin,0.4\n02:00,Troponin,0.5\n02:00,HR,88\n")
    outcomes.write_text(outcomes.read_text() + "1003,1,1,1,-1,0\n")
    report = physionet2012.convert(folder, tmp_path / "a", outcomes)
    assert report.unmapped == {"physionet2012//Troponin": 2}
    assert "physionet2012//Troponin (2)" in report.summary()
    kept = physionet2012.convert(folder, tmp_path / "b", outcomes, keep_unmapped=True)
    codes = pl.read_parquet(tmp_path / "b" / "events.parquet")["code"].to_list()
    assert codes.count("physionet2012//Troponin") == 2 and kept.events == report.events + 2


def test_outcomes_must_cover_every_stay(small_set: tuple[Path, Path], tmp_path: Path) -> None:
    folder, outcomes = small_set
    outcomes.write_text(OUTCOMES_HEADER + "1001,10,2,5,-1,0\n")
    with pytest.raises(DataError, match=r"no outcome row, e\.g\. RecordID 1002"):
        physionet2012.convert(folder, tmp_path / "out", outcomes)
    outcomes.write_text(OUTCOMES_HEADER + "1001,10,2,5,-1,0\n1002,1,1,1,1,yes\n")
    with pytest.raises(DataError, match=r"Outcomes-x\.txt:3"):
        physionet2012.convert(folder, tmp_path / "out", outcomes)


def test_wrong_header_is_refused(small_set: tuple[Path, Path], tmp_path: Path) -> None:
    folder, outcomes = small_set
    (folder / "1001.txt").write_text("time;parameter;value\n00:00;HR;80\n")
    assert (
        main(
            [
                "data",
                "convert",
                "physionet2012",
                str(folder),
                "--outcomes",
                str(outcomes),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )


@pytest.mark.parametrize(("name", "stays", "deaths"), [("a", 4000, 554), ("b", 4000, 568)])
def test_real_sets_give_the_challenge_counts(
    name: str, stays: int, deaths: int, tmp_path: Path
) -> None:
    root = shared("physionet2012")
    report = physionet2012.convert(root / f"set-{name}", tmp_path, root / f"Outcomes-{name}.txt")
    assert (report.stays, report.deaths) == (stays, deaths)
    assert report.unmapped == {} and report.bad_rows == 0
    table = pl.read_parquet(tmp_path / "stays.parquet")
    outcomes = pl.read_csv(root / f"Outcomes-{name}.txt")
    assert table["stay_id"].to_list() == sorted(outcomes["RecordID"].to_list())
    assert table["in_hospital_death"].sum() == outcomes["In-hospital_death"].sum()
    events = pl.read_parquet(tmp_path / "events.parquet")
    assert events["code"].n_unique() == 37
    assert events["time"].max() <= TIME_ANCHOR.replace(day=3)
