"""The engine's dataflow in process: scores, accounting, dead letters, alerts, waveforms.

Every test runs the real Bytewax flow (``run_records``) with a small model trained
here on simulated stays; the Kafka and recovery tests are in ``test_engine_kafka.py``.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from bedside.engine import metrics
from bedside.engine.bed import Engine
from bedside.engine.flow import SHARDS, run_records, shard_of
from bedside.engine.intake import Incoming, Outgoing
from bedside.engine.settings import EngineSettings
from bedside.replay.faults import FaultInjector, FaultRates
from bedside.replay.simulator import simulate_cohort, simulate_ward
from bedside.replay.ward import topic_of
from bedside.schemas.messages import (
    ALERT_ACKS_TOPIC,
    ALERTS_TOPIC,
    ANOMALIES_TOPIC,
    DEADLETTER_TOPIC,
    SCORES_TOPIC,
    VITALS_TOPIC,
    Admit,
    AlertAck,
    Vitals,
    WaveformChunk,
    decode,
    encode,
)
from bedside.training.survival.model import SurvivalModel
from bedside.training.windows import stay_windows

START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def model_dir(engine_model_dir: Path) -> Path:
    return engine_model_dir


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Engine:
    return Engine(EngineSettings(model_dir=model_dir, future_limit_s=None))


def records_of(messages: list) -> list[Incoming]:
    return [Incoming(topic_of(m), encode(m), m.bed.encode()) for m in messages]


def by_topic(outputs: list[Outgoing]) -> dict[str, list]:
    found: dict[str, list] = {}
    for record in outputs:
        found.setdefault(record.topic, []).append(decode(record.topic, record.value))
    return found


def same_records(got: dict, expected: dict) -> None:
    """The same records by key, but that numbers may differ in their last bits: a model
    scores the minutes of a batch together, and how many share its call can round them
    differently (1e-16)."""
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        assert len(got[key]) == len(values), key
        for mine, theirs in zip(got[key], values, strict=True):
            if mine != theirs:
                a, b = leaves(json.loads(mine)), leaves(json.loads(theirs))
                numbers = [isinstance(v, float) for v in b]
                assert [v for v, n in zip(a, numbers, strict=True) if not n] == [
                    v for v, n in zip(b, numbers, strict=True) if not n
                ], key
                assert [v for v, n in zip(a, numbers, strict=True) if n] == pytest.approx(
                    [v for v, n in zip(b, numbers, strict=True) if n], rel=1e-12
                ), key


def leaves(document: object) -> list:
    """The values of a JSON document, depth first (keys in order)."""
    if isinstance(document, dict):
        return [*(k for k in document), *(v for d in document.values() for v in leaves(d))]
    if isinstance(document, list):
        return [v for d in document for v in leaves(d)]
    return [document]


def accounting() -> Counter[str]:
    return Counter({k: v for k, v in metrics.totals().items()})


def test_a_simulated_ward_is_scored_every_minute_and_every_record_is_accounted_for(
    engine: Engine,
) -> None:
    messages = list(simulate_ward(3, 3, 7, monitor_hz=1 / 60, los_scale=0.1))
    before = accounting()
    outputs = by_topic(run_records(engine, records_of(messages)))
    after = accounting()
    assert after["processed"] - before["processed"] == len(messages)
    assert after["deadlettered"] == before["deadlettered"]

    # Every bed-minute of every stay, from its admission to its end, has exactly one score.
    expected: set[tuple[str, str, datetime]] = set()
    open_stays: dict[str, tuple[str, datetime]] = {}
    last_time = max(m.time for m in messages)
    for message in messages:
        if message.__class__.__name__ == "Admit":
            open_stays[message.bed] = (message.stay_id, message.time)
        elif message.__class__.__name__ in ("Discharge", "Death"):
            stay, admitted = open_stays.pop(message.bed)
            expected |= minutes(message.bed, stay, admitted, message.time)
    for bed, (stay, admitted) in open_stays.items():
        expected |= minutes(bed, stay, admitted, last_time)
    scored = Counter((s.bed, s.stay_id, s.time) for s in outputs[SCORES_TOPIC])
    assert set(scored) == expected
    assert max(scored.values()) == 1
    score = outputs[SCORES_TOPIC][-1]
    assert [r.horizon_h for r in score.risks] == [24.0, 72.0, 168.0, 720.0]
    assert 0.0 <= score.mortality <= 1.0 and 0.0 <= score.imputed_fraction <= 1.0
    assert [r.risk for r in score.risks] == sorted(r.risk for r in score.risks)


def test_beds_sharing_a_shard_are_scored_as_if_each_were_alone(engine: Engine) -> None:
    # The flow keys its state by shard of beds: two beds of one shard, their records
    # interleaved, must get exactly the outputs each gets alone.
    beds = [f"bed-{n}" for n in range(4 * SHARDS)]
    first = beds[0]
    second = next(b for b in beds[1:] if shard_of(b) == shard_of(first))
    messages = list(simulate_ward(2, 2, 11, monitor_hz=1 / 60, los_scale=0.1))
    names = sorted({m.bed for m in messages})
    renamed = [
        m.model_copy(update={"bed": {names[0]: first, names[1]: second}[m.bed]}) for m in messages
    ]

    def outputs_of(selected: list) -> dict[tuple[str, str], list[bytes]]:
        found: dict[tuple[str, str], list[bytes]] = {}  # each bed's records of each topic
        for record in run_records(engine, records_of(selected)):
            if record.topic in (SCORES_TOPIC, ALERTS_TOPIC, ANOMALIES_TOPIC):
                found.setdefault((record.key.decode(), record.topic), []).append(record.value)
        return found

    together = outputs_of(renamed)
    for bed in (first, second):
        alone = outputs_of([m for m in renamed if m.bed == bed])
        same_records({k: v for k, v in together.items() if k[0] == bed}, alone)
        assert len(alone[bed, SCORES_TOPIC]) > 10


def test_a_batch_goes_through_the_beds_as_records_one_by_one(engine: Engine) -> None:
    # A batch goes in waves (each bed's first record, then its second...), the vitals of
    # a wave through the detectors together: each bed must get what one record at a time
    # gives it, anomalies included.
    messages = list(simulate_ward(4, 2, 5, monitor_hz=1 / 20, los_scale=0.1))
    injector = FaultInjector(FaultRates(artefact=0.05, duplicate=0.03, reorder=0.03), seed=5)
    records = [
        Incoming(r.topic, r.value, r.key)
        for n, message in enumerate(messages)
        for r in injector.inject(n, 0.0, message)
    ]

    def per_bed(batch_size: int) -> dict[tuple[str, str], list[bytes]]:
        found: dict[tuple[str, str], list[bytes]] = {}  # each bed's records of each topic
        for record in run_records(engine, records, batch_size=batch_size):
            if record.topic != DEADLETTER_TOPIC:
                found.setdefault((record.key.decode(), record.topic), []).append(record.value)
        return found

    batched, alone = per_bed(1000), per_bed(1)
    same_records(batched, alone)
    anomalies = [
        v for (_, topic), values in alone.items() if topic == ANOMALIES_TOPIC for v in values
    ]
    scored_beds = {bed for bed, topic in alone if topic == SCORES_TOPIC}
    assert len(anomalies) > 10 and len(scored_beds) == 4


def test_a_recovery_store_of_an_earlier_engine_is_refused_clearly(engine: Engine) -> None:
    import pickle

    from bedside.engine.bed import Shard
    from bedside.engine.flow import AlertLogic, ShardLogic
    from bedside.engine.settings import EngineError

    with pytest.raises(EngineError, match="new --recovery folder"):
        ShardLogic(engine, pickle.dumps({"bed-1": None}))
    earlier = Shard()  # alerts were kept in the beds' states, before layout 2
    del earlier.layout
    with pytest.raises(EngineError, match="new --recovery folder"):
        ShardLogic(engine, pickle.dumps(earlier))
    with pytest.raises(EngineError, match="new --recovery folder"):
        AlertLogic(engine, pickle.dumps(Shard()))
    alerts = AlertLogic(engine, None)
    assert AlertLogic(engine, alerts.snapshot()).states == {}
    fresh = ShardLogic(engine, None)
    assert ShardLogic(engine, fresh.snapshot()).shard.beds == fresh.shard.beds
    assert ShardLogic(engine, None, snapshots=False).snapshot() == b""


def minutes(bed: str, stay: str, admitted: datetime, until: datetime) -> set:
    out, moment = set(), admitted + timedelta(minutes=1)
    while moment <= until:
        out.add((bed, stay, moment))
        moment += timedelta(minutes=1)
    return out


def stay_messages(events: pl.DataFrame, stay: dict, bed: str = "b1") -> list:
    """A stay's canonical events as the monitor would send them: an admission, then one
    vitals message per time (a concept repeated at one time starts another message)."""
    stay_id = str(stay["stay_id"])
    statics = {k: stay[k] for k in ("age", "sex", "height_cm", "weight_kg", "icu_type")}
    messages: list = [
        Admit(
            bed=bed,
            stay_id=stay_id,
            time=stay["admit_time"],
            **{k: v for k, v in statics.items() if v is not None},
        )
    ]
    current: dict[str, float] = {}
    current_time = None
    rows = events.filter(pl.col("stay_id") == stay["stay_id"]).sort("time", maintain_order=True)
    for time, code, value in rows.select("time", "code", "numeric_value").iter_rows():
        if current and (time != current_time or code in current):
            messages.append(
                Vitals(
                    bed=bed,
                    stay_id=stay_id,
                    time=current_time,
                    source="chart",
                    seq=len(messages),
                    values=current,
                )
            )
            current = {}
        current_time, current[code] = time, value
    if current:
        messages.append(
            Vitals(
                bed=bed,
                stay_id=stay_id,
                time=current_time,
                source="chart",
                seq=len(messages),
                values=current,
            )
        )
    return messages


def test_a_window_scored_live_matches_bedside_predict_offline(model_dir: Path) -> None:
    events, stays, _ = simulate_cohort(4, 48, seed=11)
    stays = stays.sort("stay_id")
    model = SurvivalModel.load(model_dir)
    engine = Engine(
        EngineSettings(model_dir=model_dir, detect=False, future_limit_s=None), model=model
    )
    offline = model.predict_windows(stay_windows(events, stays, model.grid).values, stays)
    for row, stay in enumerate(stays.iter_rows(named=True)):
        messages = stay_messages(events, stay)
        at_48h = stay["admit_time"] + timedelta(hours=48)
        # Something after 48 h moves the bed's clock past that minute (and is not in it).
        messages.append(
            Vitals(
                bed="b1",
                stay_id=str(stay["stay_id"]),
                source="chart",
                time=at_48h + timedelta(minutes=2),
                seq=10**6,
                values={"heart_rate": 80.0},
            )
        )
        scores = by_topic(run_records(engine, records_of(messages)))[SCORES_TOPIC]
        live = [s for s in scores if s.time == at_48h]
        assert len(live) == 1, stay["stay_id"]
        assert live[0].mortality == pytest.approx(float(offline.mortality[row]), abs=1e-5)
        for risk in live[0].risks:
            assert risk.risk == pytest.approx(float(offline.risks[risk.horizon_h][row]), abs=1e-5)


def test_a_replay_with_faults_is_fully_accounted_for_and_bad_input_is_dead_lettered(
    engine: Engine,
) -> None:
    rates = FaultRates(
        drop=0.02,
        artefact=0.05,
        schema_violation=0.03,
        corrupt=0.03,
        duplicate=0.05,
        delay=0.03,
        reorder=0.03,
        gap=0.005,
    )
    manifest = io.StringIO()
    injector = FaultInjector(rates, seed=5, manifest=manifest)
    messages = list(simulate_ward(3, 2, 9, monitor_hz=1 / 30, los_scale=0.1))
    records = []
    for n, message in enumerate(messages):
        records += [Incoming(r.topic, r.value, r.key) for r in injector.inject(n, 0.0, message)]
    records += [Incoming(r.topic, r.value, r.key) for r in injector.finish()]
    hostile = [
        Incoming(VITALS_TOPIC, b"\x00" * 2_000_000),  # oversized
        Incoming(VITALS_TOPIC, b'{"bed": "bed-01", "values": {"heart_rate": NaN}}'),
        Incoming("icu.unknown.v1", b"{}"),
        Incoming(
            VITALS_TOPIC,
            encode(
                Vitals(
                    bed="bed-01",
                    time=START + timedelta(days=36500),
                    source="m",
                    seq=1,
                    values={"heart_rate": 1.0},
                )
            ),
        ),
    ]
    strict = Engine(
        EngineSettings(
            model_dir=engine.settings.model_dir,
            # The simulated ward lives in 2030; a clock in 2130 is wrong.
            future_limit_s=timedelta(days=365 * 20).total_seconds(),
            beds=frozenset({"bed-01", "bed-02", "bed-03"}),
        ),
        model=engine.model,
    )
    hostile.append(
        Incoming(
            VITALS_TOPIC,
            encode(Vitals(bed="bed-99", time=START, source="m", seq=1, values={"spo2": 97.0})),
        )
    )
    before = accounting()
    outputs = by_topic(run_records(strict, records + hostile))
    after = accounting()
    outcomes = {k: after[k] - before[k] for k in ("processed", "deadlettered", "duplicate")}
    assert sum(outcomes.values()) == len(records) + len(hostile)
    # Every duplicated message that is otherwise intact is dropped as a duplicate.
    faults: dict[int, set[str]] = {}
    for line in manifest.getvalue().splitlines():
        entry = json.loads(line)
        faults.setdefault(entry["n"], set()).add(entry["fault"])
    broken = {"corrupt", "schema_violation"}
    intact_duplicates = sum(1 for f in faults.values() if "duplicate" in f and not f & broken)
    assert outcomes["duplicate"] == intact_duplicates > 0
    letters = outputs[DEADLETTER_TOPIC]
    assert len(letters) == outcomes["deadlettered"]
    assert outcomes["deadlettered"] >= injector.counts["corrupt"] + injector.counts[
        "schema_violation"
    ] + len(hostile)
    reasons = " | ".join(letter.error for letter in letters)
    for expected in (
        "exceeds 1048576",
        "invalid message",
        "not an engine topic",
        "in the future",
        "unknown bed 'bed-99'",
    ):
        assert expected in reasons
    assert outputs[SCORES_TOPIC] and outputs[ANOMALIES_TOPIC]


def test_an_acknowledged_alert_is_not_escalated_and_keeps_its_id(engine: Engine) -> None:
    # A bed whose vitals look like a dying patient's: the risk goes and stays high.
    messages: list = [
        Admit(bed="b7", stay_id="s7", time=START, age=90.0, sex="M", icu_type="medical")
    ]
    for minute in range(240):
        messages.append(
            Vitals(
                bed="b7",
                stay_id="s7",
                time=START + timedelta(minutes=minute),
                source="m",
                seq=minute,
                values={
                    "heart_rate": 140.0,
                    "noninvasive_mean_bp": 45.0,
                    "spo2": 82.0,
                    "respiratory_rate": 36.0,
                    "temperature": 39.5,
                    "gcs": 4.0,
                    "lactate": 9.0,
                    "urine_output": 0.0,
                },
            )
        )
    policy = {"on_risk": 0.05, "escalate_after_s": 600, "persistence": (2, 3)}
    high = Engine(
        EngineSettings(
            model_dir=engine.settings.model_dir, future_limit_s=None, detect=False, alerts=policy
        ),
        model=engine.model,
    )
    first = by_topic(run_records(high, records_of(messages[:30])))[ALERTS_TOPIC]
    raised = [a for a in first if a.state == "raised" and a.priority != "info"]
    assert len(raised) == 1
    # Not acknowledged within 10 minutes: escalated to high priority, same id.
    escalated = [a for a in first if a.state == "escalated"]
    assert [(a.alert_id, a.priority) for a in escalated] == [(raised[0].alert_id, "high")]
    assert escalated[0].time - raised[0].time == timedelta(minutes=10)
    ack = AlertAck(
        alert_id=raised[0].alert_id, bed="b7", time=START + timedelta(minutes=5), by="nurse-4"
    )
    records = [*records_of(messages[:6]), Incoming(ALERT_ACKS_TOPIC, encode(ack), b"b7")]
    records += records_of(messages[6:])
    alerts = by_topic(run_records(high, records))[ALERTS_TOPIC]
    states = [(a.alert_id, a.state) for a in alerts if a.priority != "info"]
    assert (raised[0].alert_id, "raised") in states
    assert (raised[0].alert_id, "acknowledged") in states
    assert "escalated" not in [state for _, state in states], states
    # The same input gives the same alert ids (consumers de-duplicate on them).
    again = by_topic(run_records(high, records))[ALERTS_TOPIC]
    assert [(a.alert_id, a.state) for a in again] == [(a.alert_id, a.state) for a in alerts]


def test_a_bed_with_only_an_ecg_is_scored_from_the_heart_rate_it_derives(engine: Engine) -> None:
    fs, rate_bpm = 125.0, 72.0
    t = np.arange(0, 180, 1 / fs)
    rng = np.random.default_rng(1)
    ecg = 0.03 * rng.standard_normal(len(t))
    # Beat-to-beat variability, as in any real ECG (a rate that never moves is a stuck one).
    beats = 0.2 + np.cumsum(60 / rate_bpm + 0.03 * rng.standard_normal(250))
    for beat in beats[beats < 180]:
        ecg += np.exp(-(((t - beat) / 0.012) ** 2))
    chunks = [
        WaveformChunk(
            bed="w1",
            signal="ecg_ii",
            fs=fs,
            start=START + timedelta(seconds=k),
            seq=k,
            units="mV",
            samples=[round(float(v), 4) for v in ecg[int(k * fs) : int((k + 1) * fs)]],
        )
        for k in range(180)
    ]
    outputs = by_topic(run_records(engine, records_of(chunks)))
    scores = outputs[SCORES_TOPIC]
    assert [s.time for s in scores] == [START + timedelta(minutes=m) for m in (1, 2, 3)][
        : len(scores)
    ]
    assert len(scores) >= 2
    assert scores[-1].staleness_s < 30
    derived = metrics.count("bedside_engine_derived_values", {"signal": "ecg_ii", "outcome": "ok"})
    assert derived >= 15


def test_an_accepted_record_crosses_processes_and_snapshots_intact() -> None:
    # Between the processes of a cluster and in recovery snapshots an accepted record is
    # pickled as its payload and decoded again: it must come back equal.
    import pickle

    from bedside.engine.intake import accept

    message = Vitals(
        bed="b7", stay_id="s7", time=START, source="monitor", seq=3, values={"heart_rate": 81.5}
    )
    accepted = accept(Incoming(VITALS_TOPIC, encode(message), b"b7", 2, 40, (1, 1_900_000_000_000)))
    back = pickle.loads(pickle.dumps(accepted))
    assert back == accepted and back.message == message
    assert len(pickle.dumps(accepted)) < 2 * len(accepted.payload) + 200


def test_the_engine_bench_breaks_a_record_cost_down(model_dir: Path) -> None:
    from bedside.engine.bench import breakdown

    parts = breakdown(model_dir, beds=4, seconds=70, seed=1)
    assert parts["records"] == 70 + 69 + 68 + 67  # bed b admitted at second b
    assert parts["detectors_us"] > 0 and parts["decode_us"] > 0 and parts["bed_step_us"] > 0
    assert parts["scoring_us"] > 0  # the first minutes, due at 65 s and after
    assert parts["in_process_us"] > parts["decode_us"]


@pytest.mark.parametrize("workers", [2, 4])
def test_the_shards_fall_evenly_on_the_workers(workers: int) -> None:
    # Bytewax routes a key to a worker by its hash; every worker must hold as many shards
    # (so as many beds), or the busiest one sets the pace of all.
    import threading

    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, cluster_main

    from bedside.engine.flow import SHARD_NAMES

    flow = Dataflow("routes")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(list(SHARD_NAMES))), str)
    owners = op.stateful_map("owner", keyed, lambda state, _: (state, threading.get_ident()))
    found: list[tuple[str, int]] = []
    op.output("out", owners, TestingSink(found))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)  # type: ignore[no-untyped-call]
    assert len(SHARD_NAMES) == len(set(SHARD_NAMES)) == SHARDS == 64
    assert sorted(Counter(owner for _, owner in found).values()) == [64 // workers] * workers
