"""Fault injection for testing consumers, with a manifest of exactly what was done.

Each fault hits a message with its own probability (``--drop 0.01`` = 1 % of
messages), drawn from a generator seeded by ``--seed``, so a replay with the same
seed and input injects the same faults into the same messages:

================  ===================================================================
fault             what happens to the message
================  ===================================================================
gap               the bed goes silent: this and every vitals/waveform message of the
                  bed in the next 10-120 s of recorded time are withheld
drop              not published
artefact          published with wrong content: a vital multiplied by 1.5-3 or set
                  to 0; a waveform spike, flat line or lead-off (None) stretch
schema_violation  published as JSON that breaks the topic's schema (missing or
                  unknown field, wrong type, naive time, value out of range)
corrupt           published with 1-4 bytes replaced by bytes that are never valid
                  UTF-8, so it cannot be decoded
duplicate         published twice in a row
delay             published 1-30 s of recorded time late (later than its neighbours)
reorder           held back until 1-5 later messages of its bed on its topic are out
================  ===================================================================

Gaps and artefacts hit vitals and waveform messages only; the others hit admissions
and discharges too. The manifest is JSON lines, one per fault and message::

    {"fault": "drop", "n": 118, "topic": "icu.vitals.v1", "bed": "bed-01",
     "stay_id": "p000020-2183-04-28-17-47", "signal": null, "seq": 57,
     "time": "2183-04-28T18:45:59.486000+00:00", "detail": {}}

``n`` counts the ward's messages from 0 before any fault; ``(topic, bed, signal,
seq)`` names the message as consumers see it (``seq`` is null on icu.patient.v1).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import IO, Any, Final

import numpy as np

from bedside.replay.ward import ReplayError, WardMessage, time_of, topic_of
from bedside.schemas.messages import Admit, Vitals, WaveformChunk, encode

FAULTS: Final = (
    "gap",
    "drop",
    "artefact",
    "schema_violation",
    "corrupt",
    "duplicate",
    "delay",
    "reorder",
)
GAP_S: Final = (10.0, 120.0)
DELAY_S: Final = (1.0, 30.0)
REORDER_BEHIND: Final = (1, 5)
CORRUPT_BYTES: Final = (1, 4)
#: Bytes that never occur in UTF-8, so a corrupted payload never decodes by chance.
_NEVER_UTF8: Final = (0xF8, 0x100)


@dataclass(frozen=True)
class FaultRates:
    """Probability per message of each fault, 0 to 1."""

    gap: float = 0.0
    drop: float = 0.0
    artefact: float = 0.0
    schema_violation: float = 0.0
    corrupt: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0

    def __post_init__(self) -> None:
        for field in fields(self):
            rate = getattr(self, field.name)
            if not 0.0 <= rate <= 1.0:
                raise ReplayError(f"--{field.name.replace('_', '-')} must be 0 to 1, got {rate}")

    def any(self) -> bool:
        return any(getattr(self, name) > 0 for name in FAULTS)

    def array(self) -> np.ndarray:
        return np.array([getattr(self, name) for name in FAULTS])


@dataclass
class Outgoing:
    """One record for the broker: when it is due (s of recorded time), where, what."""

    elapsed_s: float
    topic: str
    key: bytes
    value: bytes


class FaultInjector:
    """Turns each ward message into the records actually published, faults included.

    Call :meth:`inject` for every message in order and :meth:`finish` at the end (it
    releases what ``reorder`` still holds). ``counts`` tallies the faults injected.
    """

    def __init__(self, rates: FaultRates, seed: int, manifest: IO[str] | None = None) -> None:
        self.rates = rates
        self._thresholds = rates.array()
        self._active = rates.any()
        self._rng = np.random.default_rng([seed, 0xFA17])
        self._manifest = manifest
        self.counts: Counter[str] = Counter()
        self._gaps: dict[str, tuple[Any, int]] = {}
        self._gap_ids = 0
        self._held: dict[tuple[str, bytes], list[list[Any]]] = {}

    def inject(self, n: int, elapsed_s: float, message: WardMessage) -> list[Outgoing]:
        topic = topic_of(message)
        key = message.bed.encode()
        if not self._active:
            return [Outgoing(elapsed_s, topic, key, encode(message))]
        hit = self._rng.random(len(FAULTS)) < self._thresholds
        fault = dict(zip(FAULTS, hit.tolist(), strict=True))
        content = isinstance(message, Vitals | WaveformChunk)
        if content and self._in_gap(n, topic, message, start=fault["gap"]):
            return []
        if fault["drop"]:
            self._log("drop", n, topic, message)
            return []
        if content and fault["artefact"]:
            message = self._artefact(n, topic, message)
        value = encode(message)
        if fault["schema_violation"]:
            value = self._violate(n, topic, message, value)
        elif fault["corrupt"]:
            value = self._corrupt(n, topic, message, value)
        copies = 2 if fault["duplicate"] else 1
        if copies == 2:
            self._log("duplicate", n, topic, message, copies=2)
        released = self._release(topic, key, elapsed_s)
        if fault["delay"]:
            delay_s = float(self._rng.uniform(*DELAY_S))
            self._log("delay", n, topic, message, seconds=delay_s)
            elapsed_s += delay_s
        out = [Outgoing(elapsed_s, topic, key, value) for _ in range(copies)]
        if fault["reorder"] and not fault["delay"]:
            behind = int(self._rng.integers(REORDER_BEHIND[0], REORDER_BEHIND[1] + 1))
            self._log("reorder", n, topic, message, behind=behind)
            self._held.setdefault((topic, key), []).append([behind, out])
            return released
        # Held-back messages whose turn came go out right after this one.
        return out + released if not fault["delay"] else released + out

    def finish(self) -> list[Outgoing]:
        """Everything still held back (its later messages never came)."""
        rest = [item for held in self._held.values() for _, items in held for item in items]
        self._held.clear()
        return rest

    # --- the faults ---------------------------------------------------------------

    def _in_gap(self, n: int, topic: str, message: WardMessage, *, start: bool) -> bool:
        moment = time_of(message)
        current = self._gaps.get(message.bed)
        if current is not None and moment < current[0]:
            self._log("gap", n, topic, message, gap=current[1], until=current[0].isoformat())
            return True
        if not start:
            return False
        gap_id, self._gap_ids = self._gap_ids, self._gap_ids + 1
        until = moment + timedelta(seconds=float(self._rng.uniform(*GAP_S)))
        self._gaps[message.bed] = (until, gap_id)
        self._log("gap", n, topic, message, gap=gap_id, until=until.isoformat())
        return True

    def _artefact(self, n: int, topic: str, message: WardMessage) -> WardMessage:
        rng = self._rng
        if isinstance(message, Vitals):
            concept = sorted(message.values)[int(rng.integers(len(message.values)))]
            original = message.values[concept]
            if rng.random() < 0.5:
                kind, value = "spike", original * float(rng.uniform(1.5, 3.0))
            else:
                kind, value = "zero", 0.0
            self._log(
                "artefact",
                n,
                topic,
                message,
                kind=kind,
                concept=concept,
                original=original,
                value=value,
            )
            return message.model_copy(update={"values": {**message.values, concept: value}})
        assert isinstance(message, WaveformChunk)
        samples = list(message.samples)
        size = len(samples)
        kind = ("spike", "flatline", "lead_off")[int(rng.integers(3))]
        first = int(rng.integers(size))
        valid = [s for s in samples if s is not None]
        if kind == "spike":
            last = min(size, first + int(rng.integers(1, 4)))
            low, high = (min(valid), max(valid)) if valid else (0.0, 1.0)
            replaced: list[float | None] = [high + 4 * max(high - low, 1.0)] * (last - first)
        else:
            last = min(size, first + max(1, int(rng.integers(size // 4, size + 1))))
            level = next((s for s in samples[first:] if s is not None), None)
            replaced = [level if kind == "flatline" else None] * (last - first)
        self._log(
            "artefact",
            n,
            topic,
            message,
            kind=kind,
            start_index=first,
            end_index=last,
            original=samples[first:last],
            value=replaced,
        )
        samples[first:last] = replaced
        return message.model_copy(update={"samples": samples})

    def _violate(self, n: int, topic: str, message: WardMessage, value: bytes) -> bytes:
        body = json.loads(value)
        time_field = "start" if isinstance(message, WaveformChunk) else "time"
        kinds = ["missing_field", "unknown_field", "wrong_type", "naive_time"]
        if isinstance(message, Vitals | WaveformChunk | Admit):
            kinds.append("out_of_range")
        kind = kinds[int(self._rng.integers(len(kinds)))]
        if kind == "missing_field":
            field, _ = "bed", body.pop("bed")
        elif kind == "unknown_field":
            field, body["injected_by_replay"] = "injected_by_replay", True
        elif kind == "wrong_type":
            field, body[time_field] = time_field, "not a time"
        elif kind == "naive_time":
            field, body[time_field] = time_field, time_of(message).replace(tzinfo=None).isoformat()
        elif isinstance(message, Admit):
            field, body["age"] = "age", 500.0
        else:
            field, body["seq"] = "seq", -1
        self._log("schema_violation", n, topic, message, kind=kind, field=field)
        return json.dumps(body, separators=(",", ":")).encode()

    def _corrupt(self, n: int, topic: str, message: WardMessage, value: bytes) -> bytes:
        count = int(self._rng.integers(CORRUPT_BYTES[0], CORRUPT_BYTES[1] + 1))
        positions = sorted(self._rng.choice(len(value), size=min(count, len(value)), replace=False))
        replacement = self._rng.integers(*_NEVER_UTF8, size=len(positions)).tolist()
        corrupted = bytearray(value)
        original = bytes(corrupted[p] for p in positions)
        for position, byte in zip(positions, replacement, strict=True):
            corrupted[position] = byte
        self._log(
            "corrupt",
            n,
            topic,
            message,
            positions=[int(p) for p in positions],
            original=original.hex(),
            replacement=bytes(replacement).hex(),
        )
        return bytes(corrupted)

    def _release(self, topic: str, key: bytes, elapsed_s: float) -> list[Outgoing]:
        """Messages held back for reordering whose turn came with this one."""
        held = self._held.get((topic, key))
        if not held:
            return []
        ready: list[Outgoing] = []
        for entry in held:
            entry[0] -= 1
        for entry in [e for e in held if e[0] <= 0]:
            held.remove(entry)
            ready.extend(Outgoing(elapsed_s, i.topic, i.key, i.value) for i in entry[1])
        return ready

    def _log(self, fault: str, n: int, topic: str, message: WardMessage, **detail: Any) -> None:
        self.counts[fault] += 1
        if self._manifest is None:
            return
        line = {
            "fault": fault,
            "n": n,
            "topic": topic,
            "bed": message.bed,
            "stay_id": message.stay_id,
            "signal": message.signal if isinstance(message, WaveformChunk) else None,
            "seq": message.seq if isinstance(message, Vitals | WaveformChunk) else None,
            "time": time_of(message).isoformat(),
            "detail": detail,
        }
        self._manifest.write(json.dumps(line, separators=(",", ":")) + "\n")


def read_manifest(lines: IO[str]) -> Iterator[dict[str, Any]]:
    """The entries of a manifest file, in the order they were injected."""
    for line in lines:
        if line.strip():
            yield json.loads(line)
