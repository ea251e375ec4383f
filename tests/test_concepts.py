"""The concept dictionary: complete for every source we read, consistent, and right."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from bedside.schemas.concepts import ConceptError, load_concepts
from tests.realdata import shared

#: The 37 time series of the PhysioNet/CinC Challenge 2012.
PHYSIONET_2012_SERIES = (
    *("Albumin", "ALP", "ALT", "AST", "Bilirubin", "BUN", "Cholesterol", "Creatinine"),
    *("DiasABP", "FiO2", "GCS", "Glucose", "HCO3", "HCT", "HR", "K", "Lactate", "Mg", "MAP"),
    *("MechVent", "Na", "NIDiasABP", "NIMAP", "NISysABP", "PaCO2", "PaO2", "pH", "Platelets"),
    *("RespRate", "SaO2", "SysABP", "Temp", "TroponinI", "TroponinT", "Urine", "WBC", "Weight"),
)


def test_every_physionet_2012_series_maps_to_a_concept() -> None:
    concepts = load_concepts()
    unmapped = [
        p for p in PHYSIONET_2012_SERIES if concepts.from_source("physionet2012", p) is None
    ]
    assert unmapped == []
    assert (
        len({concepts.from_source("physionet2012", p)[0].name for p in PHYSIONET_2012_SERIES}) == 37
    )


def test_the_vitals_a_monitor_sends_are_all_there() -> None:
    concepts = load_concepts()
    for name in (
        "heart_rate",
        "arterial_systolic_bp",
        "arterial_diastolic_bp",
        "arterial_mean_bp",
        "noninvasive_systolic_bp",
        "noninvasive_diastolic_bp",
        "noninvasive_mean_bp",
        "respiratory_rate",
        "spo2",
        "temperature",
        "gcs",
        "fio2",
        "urine_output",
        "weight",
    ):
        assert concepts[name].unit
    # A 1 Hz numerics record from MIMIC maps its usual signals.
    for signal in ("HR", "ABPSys", "ABPDias", "ABPMean", "PULSE", "RESP", "SpO2", "NBPSys"):
        assert load_concepts().from_source("wfdb", signal) is not None, signal


def test_conversions_bring_source_units_to_canonical_ones() -> None:
    concepts = load_concepts()
    fahrenheit = concepts.from_source("mimic_iv", 223761)
    assert fahrenheit is not None and fahrenheit[0].name == "temperature"
    assert fahrenheit[1].apply(212.0) == pytest.approx(100.0)
    assert concepts.from_source("mimic_iv", 226531)[1].apply(100.0) == pytest.approx(45.359237)
    assert concepts.from_source("mimic_iv", 223835)[1].apply(40.0) == pytest.approx(0.40)
    assert concepts.from_source("mimic_iv", 220045)[1].apply(80.0) == 80.0


def test_plausible_ranges_catch_the_known_recording_errors_of_physionet_2012() -> None:
    concepts = load_concepts()
    assert not concepts["ph"].is_plausible(735.0)  # pH charted as 735 instead of 7.35
    assert not concepts["temperature"].is_plausible(-17.8)
    assert concepts["ph"].is_plausible(7.35) and concepts["temperature"].is_plausible(38.2)
    assert not concepts["heart_rate"].is_plausible(float("nan"))


def test_waveforms_name_the_concepts_they_derive() -> None:
    concepts = load_concepts()
    assert concepts.waveform_for_wfdb("II").name == "ecg_ii"
    assert "arterial_mean_bp" in concepts.waveform_for_wfdb("ABP").derives
    assert concepts.waveform_for_wfdb("PLETH").derives == ("pulse_rate",)


def test_a_code_mapped_to_two_concepts_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "concepts.toml"
    path.write_text(
        '[concepts.a]\nlabel="A"\nunit="x"\nkind="vital"\nplausible=[0,1]\nphysionet2012=["HR"]\n'
        '[concepts.b]\nlabel="B"\nunit="x"\nkind="vital"\nplausible=[0,1]\nphysionet2012=["HR"]\n'
    )
    with pytest.raises(ConceptError, match="maps to both a and b"):
        load_concepts(path)


def test_a_bad_range_or_stray_conversion_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "concepts.toml"
    path.write_text('[concepts.a]\nlabel="A"\nunit="x"\nkind="vital"\nplausible=[5,1]\n')
    with pytest.raises(ConceptError, match="low < high"):
        load_concepts(path)
    path.write_text(
        '[concepts.a]\nlabel="A"\nunit="x"\nkind="vital"\nplausible=[0,1]\n'
        '[concepts.a.convert]\n"mimic_iv:1" = { scale = 2 }\n'
    )
    with pytest.raises(ConceptError, match="names no code"):
        load_concepts(path)


def test_mimic_itemids_exist_in_the_real_dictionaries() -> None:
    root = shared("mimic-iv-demo-2.2")
    items = pl.read_csv(root / "icu" / "d_items.csv.gz", columns=["itemid", "label"])
    labs = pl.read_csv(root / "hosp" / "d_labitems.csv.gz", columns=["itemid", "label"])
    known = dict(pl.concat([items, labs]).iter_rows())
    concepts = load_concepts()
    for concept in concepts.values():
        for itemid in concept.mimic_iv:
            assert itemid in known, f"{concept.name}: itemid {itemid} not in MIMIC-IV"
    # Spot-check the meaning, not only the existence.
    assert (
        known[220045] == "Heart Rate"
        and concepts.from_source("mimic_iv", 220045)[0].name == "heart_rate"
    )
    assert (
        known[50813] == "Lactate" and concepts.from_source("mimic_iv", 50813)[0].name == "lactate"
    )
    assert known[223761] == "Temperature Fahrenheit"


def test_wfdb_numerics_signal_names_in_a_real_record_map() -> None:
    import wfdb

    header = wfdb.rdheader(str(shared("mimic3wdb", "p000020") / "p000020-2183-04-28-17-47n"))
    concepts = load_concepts()
    assert [s for s in header.sig_name if concepts.from_source("wfdb", s) is None] == []
