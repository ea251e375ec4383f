"""WardDetectors gives, sample by sample, the findings of one BedDetectors per bed."""

from __future__ import annotations

import pickle
import random
from collections.abc import Iterator
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.training.detectors import (
    BedDetectors,
    Consistency,
    Finding,
    Flatline,
    Multivariate,
    RobustSpike,
)
from bedside.training.detectors.rules import _value_rules
from bedside.training.detectors.ward import WardDetectors, _rules

#: Monitor vitals: (usual value, noise amplitude).
VITALS = {
    "heart_rate": (80.0, 3.0),
    "pulse_rate": (80.0, 3.0),
    "spo2": (97.0, 1.0),
    "respiratory_rate": (16.0, 2.0),
    "arterial_systolic_bp": (120.0, 4.0),
    "arterial_mean_bp": (80.0, 3.0),
    "arterial_diastolic_bp": (60.0, 3.0),
    "temperature": (37.0, 0.2),
}
CUFF = {
    "noninvasive_systolic_bp": (118.0, 5.0),
    "noninvasive_mean_bp": (79.0, 4.0),
    "noninvasive_diastolic_bp": (61.0, 4.0),
}
#: How far each vital goes over a stretch of shock.
SHOCK = {
    "heart_rate": 70.0,
    "pulse_rate": 70.0,
    "spo2": -20.0,
    "respiratory_rate": 20.0,
    "arterial_systolic_bp": -50.0,
    "arterial_mean_bp": -33.0,
    "arterial_diastolic_bp": -25.0,
}
#: Every (detector, kind) a bed can report: the streams below must produce them all.
ALL_KINDS = {
    ("plausibility", "implausible"),
    ("plausibility", "unit_error"),
    ("flatline", "flatline"),
    ("flatline", "sensor_off"),
    ("robust_spike", "spike"),
    ("robust_spike", "step"),
    ("consistency", "multivariate"),
    ("multivariate", "multivariate"),
}
BEDS = 6
SAMPLES = 700


def bed_stream(seed: int, length: int = SAMPLES) -> Iterator[dict[str, float]]:
    """One bed's samples (concepts in sorted order) with artefacts of every kind, in
    cycles of 250 samples that start at a different point for each bed: spikes, a step
    of the heart rate, a frozen heart rate and mean pressure, an arterial line and a
    probe off, temperatures in °F, SpO2 as a fraction, impossible values, broken pressure
    orders, a drifting pulse deficit, a long shock, missing values and samples without
    any vital the Half-Space Trees look at."""
    rng = random.Random(seed)
    frozen: dict[str, float] = {}
    for t in range(length):
        phase = (t + 41 * seed) % 250
        sample = {c: round(u + n * (2 * rng.random() - 1), 1) for c, (u, n) in VITALS.items()}
        if phase < 120 and (t % 5 == 0 or rng.random() < 0.1):  # then carried, and dropped
            sample |= {c: round(u + n * (2 * rng.random() - 1), 1) for c, (u, n) in CUFF.items()}
        if rng.random() < 0.03:
            spiked = rng.choice(sorted(sample))
            sample[spiked] = round(sample[spiked] * rng.choice((0.5, 1.7)), 1)
        if 20 <= phase < 40:  # a step of the heart rate alone: the pulse deficit jumps
            sample["heart_rate"] += 35.0
        for concept, start, stop in (("heart_rate", 50, 70), ("arterial_mean_bp", 55, 63)):
            if start <= phase < stop:
                sample[concept] = frozen.setdefault(concept, sample[concept])
            else:
                frozen.pop(concept, None)
        if 75 <= phase < 79:
            for concept in ("arterial_systolic_bp", "arterial_mean_bp", "arterial_diastolic_bp"):
                sample[concept] = 0.0
        if phase == 79:
            sample["spo2"], sample["temperature"] = 0.0, 0.2
        if phase in (85, 86):
            sample["temperature"] = round(sample["temperature"] * 9 / 5 + 32, 1)
        if phase == 87:
            sample["spo2"] = sample["spo2"] / 100
        if phase == 88:
            sample["heart_rate"] = 400.0
        if phase == 90:  # diastolic above systolic
            sample["arterial_diastolic_bp"] = sample["arterial_systolic_bp"] + 5.0
        if phase == 91:  # mean above systolic
            sample["arterial_mean_bp"] = sample["arterial_systolic_bp"] + 3.0
        if phase == 92:
            sample |= {
                "noninvasive_systolic_bp": 110.0,
                "noninvasive_mean_bp": 50.0,
                "noninvasive_diastolic_bp": 60.0,
            }
        if 100 <= phase < 170:  # the oximeter miscounts more and more
            sample["pulse_rate"] = round(sample["pulse_rate"] - (phase - 100) * 0.6, 1)
        if 170 <= phase < 240:  # a long shock: flagged, then learned (patience)
            for concept, change in SHOCK.items():
                sample[concept] = round(sample[concept] + change * min(phase - 170, 20) / 20, 1)
        for concept in list(sample):
            if rng.random() < 0.08:
                del sample[concept]
        if 245 <= phase < 248:
            sample = {"glucose": 120.0}  # no vital: nothing for the multivariate detectors
        yield dict(sorted(sample.items()))


@cache
def ward_stream() -> tuple[tuple[int, dict[str, float]], ...]:
    """The beds' streams interleaved at random: (bed, sample) in arrival order."""
    rng = random.Random(7)
    streams = [list(bed_stream(seed)) for seed in range(BEDS)]
    positions = [0] * BEDS
    arrivals = []
    while len(arrivals) < BEDS * SAMPLES:
        bed = rng.choice([b for b in range(BEDS) if positions[b] < SAMPLES])
        arrivals.append((bed, streams[bed][positions[bed]]))
        positions[bed] += 1
    return tuple(arrivals)


@cache
def reference() -> list[int]:
    """Half-Space Trees masses of a window of calm samples, as a population reference."""
    trees = Multivariate()
    for minute in range(trees.window_size):
        trees.learn_one({c: u + n * ((minute * 7919) % 13 - 6) / 6 for c, (u, n) in VITALS.items()})
    return trees.reference_masses()


def fresh_bed(with_reference: bool) -> BedDetectors:
    bed = BedDetectors()
    if with_reference:
        multivariate = bed.detectors["multivariate"]
        assert isinstance(multivariate, Multivariate)
        multivariate.load_reference(reference())
    return bed


@cache
def expected(with_reference: bool) -> tuple[tuple[Finding, ...], ...]:
    """The oracle: one BedDetectors per bed, fed the bed's samples in arrival order."""
    beds = [fresh_bed(with_reference) for _ in range(BEDS)]
    return tuple(tuple(beds[bed].process(sample)) for bed, sample in ward_stream())


def table(
    ward: WardDetectors, slots: list[int], stream: tuple[tuple[int, dict[str, float]], ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a stream: each sample's slot and its values (NaN: absent)."""
    values = np.full((len(stream), len(ward.columns)), np.nan)
    for row, (_, sample) in enumerate(stream):
        for concept, value in sample.items():
            values[row, ward.columns[concept]] = value
    return np.array([slots[bed] for bed, _ in stream], np.int64), values


def new_ward(with_reference: bool) -> tuple[WardDetectors, list[int]]:
    """A ward whose beds do not sit in slots 0..BEDS-1 in order (released slots reused)."""
    ward = WardDetectors(reference() if with_reference else None)
    spare = [ward.new_bed() for _ in range(3)]
    slots = [ward.new_bed() for _ in range(BEDS - 2)]
    ward.release(spare[0])
    ward.release(spare[2])
    slots += [ward.new_bed(), ward.new_bed()]
    return ward, slots[::-1]


def assert_same(found: list[list[Finding]], oracle: tuple[tuple[Finding, ...], ...]) -> None:
    assert len(found) == len(oracle)
    for row, (got, want) in enumerate(zip(found, oracle, strict=True)):
        assert got == list(want), f"row {row}: {ward_stream()[row]}"


@pytest.mark.parametrize("with_reference", [False, True], ids=["first-window", "reference"])
def test_a_ward_flags_what_each_bed_flags(with_reference: bool) -> None:
    """Whole stream in one batch: the same findings, row by row, in the same order (the
    samples' concepts are in column order), scores equal to the last bit."""
    oracle = expected(with_reference)
    ward, slots = new_ward(with_reference)
    assert_same(ward.process(*table(ward, slots, ward_stream())), oracle)

    kinds = {(f.detector, f.kind) for findings in oracle for f in findings}
    assert kinds == ALL_KINDS
    counts = {name: sum(f.detector == name for fs in oracle for f in fs) for name, _ in kinds}
    assert min(counts.values()) >= 20, counts


def test_the_stream_exercises_patience_and_window_swaps() -> None:
    """The oracle beds go through flagged stretches longer than the detectors' patience
    (after which they learn what they flag) and several windows of the trees: paths a
    short or calm stream would leave untested."""
    beds = [fresh_bed(False) for _ in range(BEDS)]
    longest = {"consistency": 0, "multivariate": 0}
    for bed, sample in ward_stream():
        beds[bed].process(sample)
        consistency = beds[bed].detectors["consistency"]
        multivariate = beds[bed].detectors["multivariate"]
        assert isinstance(consistency, Consistency) and isinstance(multivariate, Multivariate)
        longest["consistency"] = max(longest["consistency"], *consistency._flagged_run.values(), 0)
        longest["multivariate"] = max(longest["multivariate"], multivariate._flagged_run)
    assert longest["consistency"] > Consistency().patience  # type: ignore[operator]
    assert longest["multivariate"] > Multivariate().patience  # type: ignore[operator]
    assert 4 * Multivariate().window_size < SAMPLES


def bed_state(bed: BedDetectors) -> dict[str, object]:
    """What a bed's detectors remember, in plain values."""
    flatline, spike = bed.detectors["flatline"], bed.detectors["robust_spike"]
    consistency, multivariate = bed.detectors["consistency"], bed.detectors["multivariate"]
    assert isinstance(flatline, Flatline) and isinstance(spike, RobustSpike)
    assert isinstance(consistency, Consistency) and isinstance(multivariate, Multivariate)
    trees = multivariate._trees
    nodes = len(trees.forest().features)
    return {
        "flatline": {c: (last, int(run)) for c, (last, run) in flatline._runs.items()},
        "spike": {c: (list(w), w.ordered, spike._runs[c]) for c, w in spike._windows.items()},
        "relations": {name: (list(w), w.ordered) for name, w in consistency._windows.items()},
        "relation_runs": {name: run for name, run in consistency._flagged_run.items() if run},
        "relation_last": dict(consistency._last),
        "masses": (trees._l_mass or [0] * nodes, trees._r_mass or [0] * nodes),
        "trees": (trees._counter, trees._first_window, multivariate._flagged_run),
        "carried": {c: (value, int(age)) for c, (value, age) in multivariate._carried.items()},
    }


def ward_state(ward: WardDetectors, slot: int) -> dict[str, object]:
    """:func:`bed_state` of a ward's bed, from its record."""
    names, forest, relations = _rules().names, _rules().forest, _rules().relations
    rules, bed = _rules().record[0], ward._beds[slot]

    def window(kind: str, index: int) -> tuple[list[float], list[float]]:
        count, head = bed[f"{kind}_count"][index], bed[f"{kind}_head"][index]
        recent = np.roll(bed[f"{kind}_recent"][index], -head)[:count]
        return recent.tolist(), bed[f"{kind}_ordered"][index][:count].tolist()

    def indexed(name: str) -> dict[str, int]:
        index = rules[name]
        return {names[c]: int(index[c]) for c in np.flatnonzero(index >= 0)}

    return {
        "flatline": {
            c: (bed["flat_last"][f], bed["flat_run"][f])
            for c, f in indexed("flat_index").items()
            if bed["flat_run"][f]
        },
        "spike": {
            c: (*window("spike", k), bed["spike_run"][k])
            for c, k in indexed("spike_index").items()
            if bed["spike_count"][k]
        },
        "relations": {
            r.name: window("relation", i)
            for i, r in enumerate(relations)
            if bed["relation_count"][i]
        },
        "relation_runs": {
            r.name: bed["relation_flagged_run"][i]
            for i, r in enumerate(relations)
            if bed["relation_flagged_run"][i]
        },
        "relation_last": {
            r.name: tuple(bed["relation_last"][i][: len(r.concepts)].tolist())
            for i, r in enumerate(relations)
            if bed["relation_has_last"][i]
        },
        "masses": (bed["l_mass"].tolist(), bed["r_mass"].tolist()),
        "trees": (bed["tree_counter"], bed["first_window"], bed["hst_flagged_run"]),
        "carried": {
            name: (bed["carried"][f], bed["carried_age"][f])
            for f, name in enumerate(forest.names)
            if bed["carried_age"][f] >= 0
        },
    }


def test_each_bed_remembers_what_its_detectors_remember() -> None:
    """After every sample, a bed's arrays hold the state of its BedDetectors: windows,
    runs, carried vitals and their ages, the trees' masses (state a finding may show
    only much later, or never in a given stream)."""
    beds = [fresh_bed(False) for _ in range(BEDS)]
    ward, slots = new_ward(False)
    rows, values = table(ward, slots, ward_stream())
    for row, (bed, sample) in enumerate(ward_stream()):
        beds[bed].process(sample)
        ward.process(rows[row : row + 1], values[row : row + 1])
        assert ward_state(ward, slots[bed]) == bed_state(beds[bed]), f"row {row}"


@pytest.mark.parametrize("sizes", [(1,), (2, 3, 1, 7), (50, 13, 200), (997,)])
def test_batch_sizes_do_not_matter(sizes: tuple[int, ...]) -> None:
    """Batches of any size, with a bed several times in one, give the same findings."""
    oracle = expected(True)
    ward, slots = new_ward(True)
    slot_rows, values = table(ward, slots, ward_stream())
    found: list[list[Finding]] = []
    start, turn = 0, 0
    while start < len(values):
        stop = start + sizes[turn % len(sizes)]
        found += ward.process(slot_rows[start:stop], values[start:stop])
        start, turn = stop, turn + 1
    assert_same(found, oracle)


def test_process_one_takes_samples_as_dicts() -> None:
    oracle = expected(False)[:1500]
    ward, slots = new_ward(False)
    found = [
        ward.process_one(slots[bed], sample | {"not_a_concept": 1.0})
        for bed, sample in ward_stream()[:1500]
    ]
    assert_same(found, oracle)


def test_a_pickled_ward_goes_on_as_the_original() -> None:
    oracle = expected(True)
    ward, slots = new_ward(True)
    slot_rows, values = table(ward, slots, ward_stream())
    half = len(values) // 2
    first = ward.process(slot_rows[:half], values[:half])
    saved = pickle.dumps(ward)
    assert len(saved) < 12_000 * (BEDS + 1)  # per bed, about a pickled BedDetectors
    restored = pickle.loads(saved)
    assert_same(first + restored.process(slot_rows[half:], values[half:]), oracle)
    assert_same(first + ward.process(slot_rows[half:], values[half:]), oracle)


def test_a_released_slot_comes_back_with_fresh_detectors() -> None:
    ward, slots = new_ward(False)
    slot_rows, values = table(ward, slots, ward_stream())
    ward.process(slot_rows[:2000], values[:2000])
    ward.release(slots[3])
    assert ward.new_bed() == slots[3]
    stream = tuple((0, sample) for sample in bed_stream(11, 400))
    bed = fresh_bed(False)
    rows, values = table(ward, [slots[3]], stream)
    assert ward.process(rows, values) == [bed.process(sample) for _, sample in stream]


def test_a_vital_two_relations_blame_equally_is_blamed_by_the_first() -> None:
    """The arterial mean against the arterial pressures and against the cuff mean, with
    the same residuals: a jump of the mean flags both relations with the same score, and
    the finding is the first relation's, as in a bed."""
    bed, ward = BedDetectors(), WardDetectors()
    slot = ward.new_bed()
    rng = random.Random(1)
    for i in range(41):
        if i < 40:  # swings: no pressure is a spike; integers: residuals are exact
            swing, offset = rng.randint(-30, 30), rng.randint(-9, 9)
        else:  # the mean alone jumps
            offset = 35
        sample = {
            "arterial_diastolic_bp": 60.0 + swing,
            "arterial_mean_bp": 80.0 + swing + offset,
            "arterial_systolic_bp": 120.0 + swing,
            "noninvasive_mean_bp": 80.0 + swing,
        }
        if i == 40:
            consistency = bed.detectors["consistency"]
            assert isinstance(consistency, Consistency)
            scores = [judged[1] for judged in consistency._judge(sample) if judged[1] >= 1.0]
            assert len(scores) == 2 and scores[0] == scores[1]
        found = ward.process_one(slot, sample)
        assert found == bed.process(sample)
    (finding,) = found
    assert finding.detector == "consistency"
    assert finding.detail.startswith("arterial mean − (diastolic")


def test_docstring_examples() -> None:
    import doctest

    from bedside.training.detectors import ward as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_a_slot_without_a_bed_is_refused() -> None:
    ward = WardDetectors()
    slot = ward.new_bed()
    ward.release(slot)
    values = np.full((1, len(ward.columns)), np.nan)
    with pytest.raises(ValueError, match="holds no bed"):
        ward.process(np.array([slot]), values)
    with pytest.raises(ValueError, match="holds no bed"):
        ward.release(slot)
    with pytest.raises(ValueError, match="reference masses"):
        WardDetectors([1, 2, 3])
    with pytest.raises(ValueError, match="shape"):
        ward.process(np.array([ward.new_bed()]), values[:, :-1])


# --- any values at all: edges of every range -------------------------------------------

#: Concepts of the property test (with and without sensor-off zeros, unit errors, flatline
#: runs, spike floors, relations, multivariate limits), and values at the edges of their
#: rules.
CONCEPTS = sorted([*VITALS, *CUFF, "central_venous_pressure", "cardiac_output", "fio2", "glucose"])


def edges(concept: str) -> list[float]:
    low, high, _, units = _value_rules()[concept]
    points = [low, high, -0.0, 0.0, 0.49, 0.5, -0.5, np.nextafter(low, -np.inf)]
    points += [np.nextafter(high, np.inf)] + [bound for unit in units for bound in unit]
    return [float(p) for p in points]


sample_values = st.fixed_dictionaries(
    {},
    optional={
        c: st.one_of(
            st.sampled_from(edges(c)),
            st.sampled_from([VITALS.get(c, CUFF.get(c, (1.0, 1.0)))[0]] * 3),
            st.floats(-20.0, 400.0).map(lambda v: round(v, 1)),
        )
        for c in CONCEPTS
    },
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), sample_values), min_size=1, max_size=80))
def test_any_stream_is_flagged_as_each_bed_flags_it(
    stream: list[tuple[int, dict[str, float]]],
) -> None:
    beds = [fresh_bed(True), fresh_bed(True)]
    ward = WardDetectors(reference())
    slots = [ward.new_bed(), ward.new_bed()]
    rows, values = table(ward, slots, tuple(stream))
    found = ward.process(rows, values)
    for (bed, sample), got in zip(stream, found, strict=True):
        assert got == beds[bed].process(dict(sorted(sample.items())))


def test_input_rows_hold_each_samples_values_in_their_columns() -> None:
    ward = WardDetectors()
    names = list(ward.columns)
    rng = np.random.default_rng(3)
    for _ in range(50):  # one source (the usual wave), several, unknown concepts, empty
        layouts = [
            [names[i] for i in rng.permutation(len(names))[: rng.integers(0, 9)]]
            + (["not_a_concept"] if rng.random() < 0.2 else [])
            for _ in range(int(rng.integers(1, 4)))
        ]
        samples = [
            {c: float(rng.normal()) for c in layouts[int(rng.integers(0, len(layouts)))]}
            for _ in range(int(rng.integers(0, 30)))
        ]
        expected = np.full((len(samples), len(names)), np.nan)
        for row, sample in enumerate(samples):
            for concept, value in sample.items():
                if concept in ward.columns:
                    expected[row, ward.columns[concept]] = value
        np.testing.assert_array_equal(ward.rows(samples), expected)
