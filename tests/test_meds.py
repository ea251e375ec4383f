"""MEDS event parquet -> canonical tables: a tiny extract written here, then the real demo."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from bedside.cli import main
from bedside.schemas.tables import EVENTS, STAYS
from bedside.training.data import meds, mimic_iv
from bedside.training.data.canonical import ConversionReport, DataError

#: ../shared/data next to the repository (real data; tests skip without it).
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEMO_MEDS = SHARED / "mimic-iv-demo-meds" / "mimic_iv_demo_meds_events.parquet"
DEMO_CSV = SHARED / "mimic-iv-demo-2.2"

T0 = datetime(2150, 3, 1, 8, 0)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


#: (subject_id, time, code, value): subject 1 dies the day of a discharge recorded at
#: midnight; subject 2 has two back-to-back hospital admissions, one ICU stay in each,
#: and dies long after.
ROWS: list[tuple[int, datetime | None, str, float | None]] = [
    (1, datetime(2090, 6, 15), "MEDS_BIRTH", None),
    (1, None, "GENDER//F", None),
    (1, at(0), "HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM", None),
    (1, at(1), "ICU_ADMISSION//Coronary Care Unit (CCU)", None),
    (1, at(2), "LAB//220045//bpm", 91.0),
    (1, at(2), "LAB//223761//°F", 98.6),
    (1, at(2), "LAB//226531//UNK", 176.37),
    (1, at(3), "SUBJECT_FLUID_OUTPUT//226559//ml", 150.0),
    (1, at(3), "LAB//50912//mg/dL", 1.4),
    (1, at(3), "LAB//220048//UNK", None),  # text result of an unmapped item
    (1, at(4), "LAB//220045//bpm", None),  # text result of a mapped item
    (1, at(4), "MEDICATION//START//Aspirin", None),
    (1, at(5), "SUBJECT_WEIGHT_AT_INFUSION//KG", 80.0),
    (1, at(40), "ICU_DISCHARGE//Coronary Care Unit (CCU)", None),
    (1, at(50), "LAB//50912//mg/dL", 1.2),  # after the ICU stay
    (1, datetime(2150, 3, 4), "HOSPITAL_DISCHARGE//HOME", None),
    (1, datetime(2150, 3, 4, 15, 0), "MEDS_DEATH", None),
    (2, datetime(2080, 1, 1), "MEDS_BIRTH", None),
    (2, None, "GENDER//M", None),
    (2, at(0), "HOSPITAL_ADMISSION//URGENT//TRANSFER FROM HOSPITAL", None),
    (2, at(1), "ICU_ADMISSION//Neuro Stepdown", None),
    (2, at(2), "LAB//220045//bpm", 120.0),
    (2, at(10), "ICU_DISCHARGE//Neuro Stepdown", None),
    (2, at(20), "HOSPITAL_DISCHARGE//ACUTE HOSPITAL", None),
    (2, at(20), "HOSPITAL_ADMISSION//EW EMER.//TRANSFER FROM HOSPITAL", None),
    (2, at(21), "ICU_ADMISSION//Trauma SICU (TSICU)", None),
    (2, at(22), "LAB//220045//bpm", 130.0),
    (2, at(30), "ICU_DISCHARGE//Trauma SICU (TSICU)", None),
    (2, at(40), "HOSPITAL_DISCHARGE//HOME", None),
    (2, at(24 * 200), "MEDS_DEATH", None),
]


def meds_frame(rows: list[tuple[int, datetime | None, str, float | None]] = ROWS) -> pl.DataFrame:
    """As MEDS stores them: microsecond times without a zone, float32 values."""
    return pl.DataFrame(
        rows,
        schema={
            "subject_id": pl.Int64,
            "time": pl.Datetime("us"),
            "code": pl.String,
            "numeric_value": pl.Float32,
        },
        orient="row",
    )


def convert_cli(path: Path, out: Path, *options: str) -> int:
    return main(["data", "convert", "meds", str(path), "--out", str(out), *options])


@pytest.mark.parametrize("value_column", ["numeric_value", "value"])
def test_tiny_extract_converts_to_canonical_tables(tmp_path: Path, value_column: str) -> None:
    path = tmp_path / "events.parquet"
    meds_frame().rename({"numeric_value": value_column}).write_parquet(path)
    assert convert_cli(path, tmp_path / "out") == 0
    stays = pl.read_parquet(tmp_path / "out" / "stays.parquet")
    events = pl.read_parquet(tmp_path / "out" / "events.parquet")
    assert stays.schema == STAYS and events.schema == EVENTS
    assert stays.select("stay_id", "subject_id", "age", "sex", "icu_type").rows() == [
        (1001, 1, 59.0, "F", "coronary"),
        (2001, 2, 70.0, "M", "neuro"),
        (2002, 2, 70.0, "M", "surgical"),
    ]
    # Died 15 h after a discharge stamped at midnight: in hospital (24 h tolerance).
    assert stays["in_hospital_death"].to_list() == [1, 0, 0]
    assert stays["survival_days"].to_list() == [pytest.approx(3 + 6 / 24)] + [
        pytest.approx(200 - i / 24) for i in (1, 21)
    ]
    # Back-to-back hospital admissions: each ICU stay has its own hospital discharge.
    utc = T0.replace(tzinfo=UTC)
    assert stays["hospital_discharge_time"].to_list() == [
        datetime(2150, 3, 4, tzinfo=UTC),
        utc + timedelta(hours=20),
        utc + timedelta(hours=40),
    ]
    assert stays["los_days"].to_list() == [pytest.approx(39 / 24), 9 / 24, 9 / 24]
    assert stays["weight_kg"][0] == pytest.approx(80.0, abs=1e-3)
    values = dict(events.select("code", "numeric_value").rows())
    # float32 98.6 °F is read back as 98.6, then converted exactly.
    assert values["temperature"] == 37.0 and values["urine_output"] == 150.0
    assert events.filter(pl.col("code") == "creatinine")["numeric_value"].to_list() == [1.4]
    assert events.filter(pl.col("code") == "heart_rate").select(
        "stay_id", "numeric_value"
    ).rows() == [
        (1001, 91.0),
        (2001, 120.0),
        (2002, 130.0),
    ]
    assert "meds//LAB//223761//°F" in events["source_code"].to_list()


def test_report_counts_unmapped_codes_and_values_outside_stays(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    meds_frame().write_parquet(path)
    report = meds.convert(path, tmp_path / "out")
    assert (report.stays, report.deaths, report.rows_read) == (3, 1, len(ROWS))
    assert report.unmapped == {
        "meds//LAB//220048//UNK": 1,
        "meds//MEDICATION//START//Aspirin": 1,
        "meds//SUBJECT_WEIGHT_AT_INFUSION//KG": 1,
    }
    assert report.events == 7
    assert report.not_converted == {
        "mapped code without a numeric value": 1,
        "outside every ICU stay of the subject": 1,
    }
    kept = meds.convert(path, tmp_path / "kept", keep_unmapped=True)
    codes = pl.read_parquet(tmp_path / "kept" / "events.parquet")["code"].to_list()
    assert "meds//SUBJECT_WEIGHT_AT_INFUSION//KG" in codes and kept.events == 8


def test_folder_of_shards_with_stay_ids(tmp_path: Path) -> None:
    """A MEDS release: data/ shards (read) and metadata/ (left alone); stay_id column used."""
    frame = meds_frame().with_columns(
        stay_id=pl.when(pl.col("code").str.starts_with("ICU_ADMISSION//Coronary"))
        .then(pl.lit(30_000_001))
        .when(pl.col("code").str.starts_with("ICU_ADMISSION//Neuro"))
        .then(pl.lit(30_000_002))
    )
    (tmp_path / "meds" / "data" / "train").mkdir(parents=True)
    (tmp_path / "meds" / "metadata").mkdir()
    frame.filter(pl.col("subject_id") == 1).write_parquet(tmp_path / "meds/data/train/0.parquet")
    frame.filter(pl.col("subject_id") == 2).write_parquet(tmp_path / "meds/data/train/1.parquet")
    pl.DataFrame({"code": ["LAB//220045//bpm"], "description": ["HR"]}).write_parquet(
        tmp_path / "meds" / "metadata" / "codes.parquet"
    )
    report = meds.convert(tmp_path / "meds", tmp_path / "out")
    stays = pl.read_parquet(tmp_path / "out" / "stays.parquet")
    # A given stay id wins; the stay without one gets subject_id * 1000 + rank.
    assert stays["stay_id"].to_list() == [2002, 30_000_001, 30_000_002]
    assert report.rows_read == len(ROWS) and report.events == 7


def test_rows_without_code_are_bad_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.parquet"
    meds_frame([*ROWS, (1, at(3), None, 1.0)]).write_parquet(path)
    with pytest.raises(DataError, match=r"events\.parquet: 1 rows have no code"):
        meds.convert(path, tmp_path / "out")
    assert convert_cli(path, tmp_path / "out") == 2
    assert "events.parquet: 1 rows have no code" in capsys.readouterr().err
    report = meds.convert(path, tmp_path / "out", on_bad_row="skip")
    assert report.bad_rows == 1 and report.events == 7


def test_missing_columns_and_no_stays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    meds_frame().drop("numeric_value").write_parquet(path)
    with pytest.raises(DataError, match=r"lacks MEDS columns \['numeric_value \(or value\)'\]"):
        meds.convert(path, tmp_path / "out")
    meds_frame([row for row in ROWS if "ICU_" not in row[2]]).write_parquet(path)
    with pytest.raises(DataError, match="no ICU_ADMISSION events"):
        meds.convert(path, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no parquet files"):
        meds.convert(tmp_path / "empty", tmp_path / "out")


@pytest.mark.skipif(not DEMO_MEDS.is_file(), reason=f"real data not available: {DEMO_MEDS}")
def test_real_demo_gives_its_140_stays(tmp_path: Path) -> None:
    report = meds.convert(DEMO_MEDS, tmp_path / "meds")
    assert (report.stays, report.deaths, report.rows_read) == (140, 20, 916_166)
    assert report.bad_rows == 0 and sum(report.unmapped.values()) > 0
    stays = pl.read_parquet(tmp_path / "meds" / "stays.parquet")
    events = pl.read_parquet(tmp_path / "meds" / "events.parquet")
    assert stays["hospital_discharge_time"].null_count() == 0
    assert stays["weight_kg"].is_not_null().sum() > 100
    # Chart events are in this extract: vitals, in their canonical units.
    by_code = events.group_by("code").agg(pl.len(), pl.col("numeric_value").median())
    medians = dict(by_code.select("code", "numeric_value").rows())
    assert set(medians) >= {"heart_rate", "spo2", "temperature", "creatinine", "urine_output"}
    assert 36 < medians["temperature"] < 38 and 0.21 <= medians["fio2"] <= 1.0
    windows = events.join(stays, on="stay_id")
    assert windows.height == events.height
    assert windows.filter(
        (pl.col("time") < pl.col("admit_time")) | (pl.col("time") > pl.col("discharge_time"))
    ).is_empty()
    if DEMO_CSV.is_dir():
        # The same patients as the CSV release: same stays, outcomes and covariates.
        csv = mimic_iv.read_stays(DEMO_CSV, ConversionReport("mimic_iv"), "error")
        columns = ["subject_id", "admit_time", "discharge_time", "hospital_discharge_time"]
        columns += ["age", "sex", "icu_type", "in_hospital_death", "death_time"]
        assert stays.select(columns).sort(columns[:2]).equals(csv.select(columns).sort(columns[:2]))
