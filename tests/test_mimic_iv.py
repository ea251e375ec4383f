"""MIMIC-IV CSV release -> canonical tables: a tiny layout written here, then the real demo."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from bedside.cli import main
from bedside.schemas.tables import EVENTS, STAYS
from bedside.training.data import mimic_iv
from bedside.training.data.bench import generate_mimic
from bedside.training.data.canonical import DataError

#: ../shared/data next to the repository (real data; tests skip without it).
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEMO = SHARED / "mimic-iv-demo-2.2"

CHART_HEADER = (
    "subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valuenum,"
    "valueuom,warning\n"
)
CHART_ROWS = [
    "1,11,101,7,2150-01-01 11:00:00,2150-01-01 11:05:00,220045,88,88,bpm,0",
    "1,11,101,7,2150-01-01 11:00:00,2150-01-01 11:05:00,223761,98.6,98.6,°F,0",
    "1,11,101,7,2150-01-01 10:30:00,2150-01-01 10:35:00,226531,176.37,176.37,lbs,0",
    "1,11,101,7,2150-01-02 08:00:00,2150-01-02 08:05:00,226512,81,81,kg,0",
    "1,11,101,7,2150-01-01 10:30:00,2150-01-01 10:35:00,226730,165,165,cm,0",
    "1,11,101,7,2150-01-01 12:00:00,2150-01-01 12:05:00,223835,50,50,%,0",
    '1,11,101,7,2150-01-01 12:00:00,2150-01-01 12:05:00,220048,"SR (Sinus Rhythm)",,,0',
    "1,11,101,7,2150-01-01 13:00:00,2150-01-01 13:05:00,220048,AF,,,0",
    "1,11,101,7,2150-01-01 13:00:00,2150-01-01 13:05:00,220045,Asleep,,bpm,0",
    "2,21,201,7,2150-05-01 09:00:00,2150-05-01 09:05:00,220045,110,110,bpm,0",
]


def _gz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)


def write_tiny_mimic(root: Path, chart_rows: list[str] = CHART_ROWS) -> Path:
    """Two subjects, three ICU stays; labs as plain .csv, the rest gzipped."""
    _gz(
        root / "icu" / "icustays.csv.gz",
        "subject_id,hadm_id,stay_id,first_careunit,last_careunit,intime,outtime,los\n"
        "1,11,101,Medical Intensive Care Unit (MICU),Medical Intensive Care Unit (MICU),"
        "2150-01-01 10:00:00,2150-01-03 10:00:00,2\n"
        "1,12,102,Cardiac Vascular Intensive Care Unit (CVICU),Coronary Care Unit (CCU),"
        "2150-02-01 00:00:00,2150-02-02 12:00:00,1.5\n"
        "2,21,201,Neuro Stepdown,Neuro Stepdown,2150-05-01 08:00:00,2150-05-01 20:00:00,0.5\n",
    )
    _gz(
        root / "hosp" / "patients.csv.gz",
        "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod\n"
        "1,F,60,2149,2011 - 2013,2150-02-05\n"
        "2,M,91,2150,2011 - 2013,\n",
    )
    _gz(
        root / "hosp" / "admissions.csv.gz",
        "subject_id,hadm_id,admittime,dischtime,deathtime,hospital_expire_flag\n"
        "1,11,2149-12-31 20:00:00,2150-01-06 12:00:00,,0\n"
        "1,12,2150-01-31 22:00:00,2150-02-05 00:00:00,2150-02-05 12:00:00,1\n"
        "2,21,2150-05-01 07:00:00,2150-05-03 10:00:00,,0\n",
    )
    _gz(root / "icu" / "chartevents.csv.gz", CHART_HEADER + "\n".join(chart_rows) + "\n")
    _gz(
        root / "icu" / "outputevents.csv.gz",
        "subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valueuom\n"
        "1,11,101,7,2150-01-01 14:00:00,2150-01-01 14:05:00,226559,100,ml\n"
        "1,11,101,7,2150-01-01 15:00:00,2150-01-01 15:05:00,226588,30,ml\n",
    )
    labs = root / "hosp" / "labevents.csv"
    labs.write_text(
        "labevent_id,subject_id,hadm_id,specimen_id,itemid,order_provider_id,charttime,"
        "storetime,value,valuenum,valueuom,ref_range_lower,ref_range_upper,flag,priority,"
        "comments\n"
        # Free-text comments may hold commas and line breaks inside quotes.
        '1,1,11,1,50912,,2150-01-02 06:00:00,,1.4,1.4,mg/dL,,,,,"drawn late,\nhemolysed"\n'
        "2,1,11,2,50912,,2150-01-05 06:00:00,,1.1,1.1,mg/dL,,,,,\n"
        "3,2,21,3,50971,,2150-05-01 10:00:00,,4.2,4.2,mEq/L,,,,,\n"
    )
    return root


def convert_cli(root: Path, out: Path, *options: str) -> int:
    return main(["data", "convert", "mimic-iv", str(root), "--out", str(out), *options])


def test_tiny_release_converts_to_canonical_tables(tmp_path: Path) -> None:
    root = write_tiny_mimic(tmp_path / "mimic")
    assert convert_cli(root, tmp_path / "out") == 0
    stays = pl.read_parquet(tmp_path / "out" / "stays.parquet")
    events = pl.read_parquet(tmp_path / "out" / "events.parquet")
    assert stays.schema == STAYS and events.schema == EVENTS
    assert stays.select("stay_id", "subject_id", "age", "sex", "icu_type").rows() == [
        (101, 1, 61.0, "F", "medical"),
        (102, 1, 61.0, "F", "cardiac_surgery"),
        (201, 2, 91.0, "M", "neuro"),
    ]
    assert stays["in_hospital_death"].to_list() == [0, 1, 0]
    # The patient's death (the in-hospital deathtime) ends both of her stays' survival.
    death = datetime(2150, 2, 5, 12, tzinfo=UTC)
    assert stays["death_time"].to_list() == [death, death, None]
    assert stays["survival_days"].to_list() == [pytest.approx(35 + 2 / 24), 4.5, None]
    assert stays["hospital_los_days"].to_list() == [
        pytest.approx(5 + 2 / 24),
        4.0,
        pytest.approx(2 + 2 / 24),
    ]
    # The first weight of the stay is the one in lbs, converted; no chart weight for 102.
    assert stays["weight_kg"].to_list() == [pytest.approx(80.0, abs=1e-3), None, None]
    assert stays["height_cm"].to_list() == [165.0, None, None]

    value = dict(events.filter(pl.col("stay_id") == 101).select("code", "numeric_value").rows())
    assert value["temperature"] == 37.0 and value["fio2"] == 0.5
    assert value["urine_output"] == 100.0
    # Labs carry no stay_id: the one inside stay 101 is placed there, the one after
    # the stay is counted and dropped.
    labs = events.filter(pl.col("code").is_in(["creatinine", "potassium"]))
    assert labs.select("stay_id", "code", "numeric_value").sort("stay_id").rows() == [
        (101, "creatinine", 1.4),
        (201, "potassium", 4.2),
    ]
    assert events.filter(pl.col("code") == "temperature")["source_code"].to_list() == [
        "mimic_iv//223761"
    ]


def test_report_counts_unmapped_text_and_outside_values(tmp_path: Path) -> None:
    report = mimic_iv.convert(write_tiny_mimic(tmp_path / "mimic"), tmp_path / "out")
    assert report.stays == 3 and report.deaths == 1
    assert report.rows_read == len(CHART_ROWS) + 2 + 3
    assert report.unmapped == {"mimic_iv//220048": 2, "mimic_iv//226588": 1}
    assert report.events == 10
    assert report.not_converted == {
        "icu/chartevents: no numeric valuenum (text result)": 1,
        "hosp/labevents: outside every ICU stay of the subject": 1,
    }


def test_unmapped_items_are_kept_on_request(tmp_path: Path) -> None:
    root = write_tiny_mimic(tmp_path / "mimic")
    report = mimic_iv.convert(root, tmp_path / "out", keep_unmapped=True)
    events = pl.read_parquet(tmp_path / "out" / "events.parquet")
    # Text-only rows stay out even then: there is no number to keep.
    assert events.filter(pl.col("code").str.starts_with("mimic_iv//"))["code"].to_list() == [
        "mimic_iv//226588"
    ]
    assert report.events == 11


def test_malformed_value_names_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [*CHART_ROWS[:3], "1,11,101,7,2150-01-01 25:00:00,,220045,80,80,bpm,0", *CHART_ROWS[3:]]
    root = write_tiny_mimic(tmp_path / "mimic", rows)
    with pytest.raises(DataError) as caught:
        mimic_iv.convert(root, tmp_path / "out")
    assert caught.value.path.endswith("chartevents.csv.gz")
    assert caught.value.line == 5 and "2150-01-01 25:00:00" in caught.value.reason
    assert convert_cli(root, tmp_path / "out") == 2
    assert "chartevents.csv.gz:5: charttime" in capsys.readouterr().err
    assert not (tmp_path / "out" / "events.parquet").exists()


def test_line_numbers_hold_across_blocks(tmp_path: Path) -> None:
    rows = [CHART_ROWS[0]] * 6000
    rows[4321] = rows[4321].replace(",88,88,", ",88,eighty-eight,")
    root = write_tiny_mimic(tmp_path / "mimic", rows)
    with pytest.raises(DataError) as caught:
        mimic_iv.convert(root, tmp_path / "out", block_bytes=16 << 10)
    assert caught.value.line == 4323 and "valuenum eighty-eight" in caught.value.reason


def test_row_with_missing_fields_names_the_file(tmp_path: Path) -> None:
    rows = [*CHART_ROWS, "1,11,101,7,2150-01-01 11:00:00"]
    with pytest.raises(DataError, match=r"chartevents\.csv\.gz: .*Expected 11 columns"):
        mimic_iv.convert(write_tiny_mimic(tmp_path / "mimic", rows), tmp_path / "out")


def test_bad_rows_can_be_skipped_and_are_counted(tmp_path: Path) -> None:
    rows = [
        *CHART_ROWS,
        "1,11,101,7,2150-01-01 25:00:00,,220045,80,80,bpm,0",
        "1,11,101,7,2150-01-01 11:00:00",
        "1,11,101,7,2150-01-01 11:00:00,,heart,80,80,bpm,0",
        "x,11,101,7,2150-01-01 11:00:00,,220045,eighty,80x,bpm,0",
    ]
    root = write_tiny_mimic(tmp_path / "mimic", rows)
    assert convert_cli(root, tmp_path / "out", "--skip-bad-rows") == 0
    report = mimic_iv.convert(root, tmp_path / "again", on_bad_row="skip")
    assert report.bad_rows == 4 and report.events == 10
    examples = "\n".join(report.bad_row_examples)
    assert "Expected 11 columns" not in examples  # our own wording, with the row
    assert "expected 11 fields, got 5" in examples
    assert "itemid heart is not a number" in examples


def test_missing_core_table_is_named(tmp_path: Path) -> None:
    root = write_tiny_mimic(tmp_path / "mimic")
    (root / "hosp" / "patients.csv.gz").unlink()
    with pytest.raises(DataError, match=r"hosp: no patients\.csv\.gz"):
        mimic_iv.convert(root, tmp_path / "out")


def test_missing_chartevents_is_a_warning(tmp_path: Path) -> None:
    root = write_tiny_mimic(tmp_path / "mimic")
    (root / "icu" / "chartevents.csv.gz").unlink()
    report = mimic_iv.convert(root, tmp_path / "out")
    assert report.stays == 3 and report.events == 3
    assert any("chartevents.csv.gz is absent" in w for w in report.warnings)


def test_small_blocks_give_the_same_tables(tmp_path: Path) -> None:
    """Streaming block by block changes nothing: 64 KiB blocks vs one block per table."""
    root = tmp_path / "generated"
    generate_mimic(root, 30_000, progress=False)
    small = mimic_iv.convert(root, tmp_path / "small", block_bytes=64 << 10)
    whole = mimic_iv.convert(root, tmp_path / "whole", block_bytes=64 << 20)
    assert small.to_dict() | {"seconds": 0} == whole.to_dict() | {"seconds": 0}
    for table in ("stays", "events"):
        a = pl.read_parquet(tmp_path / "small" / f"{table}.parquet")
        b = pl.read_parquet(tmp_path / "whole" / f"{table}.parquet")
        assert a.sort(a.columns).equals(b.sort(b.columns)), table
    assert small.events > 10_000 and small.unmapped


def test_bench_measures_both_sizes(tmp_path: Path) -> None:
    figures = tmp_path / "bench.json"
    argv = ["bench", "convert", "--chartevents-rows", "20000", "--work", str(tmp_path)]
    assert main([*argv, "--json", str(figures)]) == 0
    runs = json.loads(figures.read_text())["conversions"]
    assert [run["name"] for run in runs] == [
        "mimic-iv generated, 5,000 chart events",
        "mimic-iv generated, 20,000 chart events",
    ]
    assert all(run["peak_rss_mib"] > 50 and run["events"] > 0 for run in runs)


@pytest.mark.skipif(not DEMO.is_dir(), reason=f"real data not available: {DEMO} is missing")
def test_real_demo_gives_its_140_stays(tmp_path: Path) -> None:
    assert convert_cli(DEMO, tmp_path) == 0
    stays = pl.read_parquet(tmp_path / "stays.parquet")
    events = pl.read_parquet(tmp_path / "events.parquet")
    assert stays.height == 140 and stays["stay_id"].n_unique() == 140
    assert stays["in_hospital_death"].sum() == 20
    assert stays["death_time"].is_not_null().sum() == 49
    assert stays["icu_type"].null_count() == 0 and stays["sex"].null_count() == 0
    # No chartevents in the demo: urine output and labs only.
    codes = set(events["code"].unique())
    assert {"urine_output", "creatinine", "lactate", "potassium"} <= codes
    assert "heart_rate" not in codes
    # Every lab lies inside the window of the stay it was given.
    windows = events.join(stays, on="stay_id", how="left").filter(
        pl.col("source_code").str.contains(r"//5\d{4}$")
    )
    assert windows.height > 10_000 and windows["admit_time"].null_count() == 0
    assert windows.filter(
        (pl.col("time") < pl.col("admit_time")) | (pl.col("time") > pl.col("discharge_time"))
    ).is_empty()
    report = json.loads((tmp_path / "conversion_report.json").read_text())
    assert report["rows_read"] == 9_362 + 107_727  # outputevents + labevents
    assert report["unmapped_rows"] > 0 and report["bad_rows"] == 0
