"""Many recordings, one live ward: time alignment, re-stamping, loops and sequence numbers.

A :class:`Feed` is what one source offers: one bed's WFDB records, the stays of a
canonical events folder, a simulated ward. Each yields ``(due_us, draft)`` pairs in
its own recorded time, ``due_us`` being when a monitor would publish the message (a
waveform chunk once its last sample is in, a value when it is measured). A
:class:`Draft` is a message still without its final time, stay id and ``seq``: the
ward builds (and validates) each message once, already placed.

A :class:`Ward` plays the feeds together:

* **aligned**: every feed starts at the ward's start, whatever date it was recorded on;
* **re-stamped** (default) so that the ward's start is the moment the replay starts, or
  keeping the recorded times (``restamp=False``: the earliest feed keeps its own times,
  the others are shifted to start with it);
* from ``start_offset_s`` into the recordings (beds still get their ``Admit`` first),
  for ``duration_s`` of recorded time, and looped: each pass continues the timeline
  where the previous one ended, its stays renamed ``<stay>#2``, ``<stay>#3``, ...;
* numbered: ``seq`` counts each bed's messages per topic (and per waveform signal)
  from 0, so consumers can see what was lost.

It yields ``(elapsed_s, message)``: seconds of recorded time since the replay's start.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple, TypeAlias

from bedside.errors import BedsideError
from bedside.schemas.messages import (
    PATIENT_TOPIC,
    VITALS_TOPIC,
    WAVEFORM_TOPIC,
    Admit,
    Death,
    Discharge,
    Vitals,
    WaveformChunk,
)

WardMessage: TypeAlias = Admit | Discharge | Death | Vitals | WaveformChunk


class Draft(NamedTuple):
    """A message before the ward places it: its type, time (µs) and other fields.

    ``fields`` holds everything but the time (``time``, or ``start`` of a chunk) and
    ``seq``, which the ward sets.
    """

    kind: type[WardMessage]
    time_us: int
    fields: dict[str, Any]

    @classmethod
    def of(cls, message: WardMessage) -> Draft:
        """The draft of a message built elsewhere (the simulator's)."""
        fields = dict(message)
        fields.pop("seq", None)
        del fields["start" if isinstance(message, WaveformChunk) else "time"]
        return cls(type(message), to_us(time_of(message)), fields)


Timed: TypeAlias = tuple[int, Draft]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)


class ReplayError(BedsideError, RuntimeError):
    """The replay cannot go on: nothing to replay, a broker that is gone, bad options."""


class ReplayWarning(UserWarning):
    """Something of the input is left out: a missing segment, an unmapped signal."""


def to_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    return (moment - EPOCH) // _US


def at_us(us: int) -> datetime:
    """The aware datetime ``us`` microseconds after the Unix epoch."""
    return EPOCH + timedelta(microseconds=us)


def topic_of(message: WardMessage) -> str:
    if isinstance(message, Vitals):
        return VITALS_TOPIC
    if isinstance(message, WaveformChunk):
        return WAVEFORM_TOPIC
    return PATIENT_TOPIC


def time_of(message: WardMessage) -> datetime:
    """When the message's content happened: a chunk's first sample, a value's measurement."""
    return message.start if isinstance(message, WaveformChunk) else message.time


@dataclass(frozen=True)
class Feed:
    """A source of messages in recorded time, from ``start_us`` to ``end_us`` (its last
    discharge).

    ``read(since_us)`` yields ``(due_us, draft)`` in ``due_us`` order; it may skip what
    is due before ``since_us`` (a WFDB record seeks) or yield it anyway (the ward drops
    it, keeping the admissions still open at ``since_us``).
    """

    start_us: int
    end_us: int
    read: Callable[[int], Iterator[Timed]]


@dataclass(frozen=True)
class Timeline:
    """How recorded time becomes replay time (see the module docstring)."""

    restamp: bool = True
    start_offset_s: float = 0.0
    duration_s: float | None = None
    loop: bool = False


class Ward:
    """Feeds played together, time-aligned; iterate :meth:`messages`."""

    def __init__(self, feeds: Sequence[Feed], timeline: Timeline) -> None:
        if not feeds:
            raise ReplayError("nothing to replay: no feed was given")
        self.feeds = list(feeds)
        self.timeline = timeline
        self.anchor_us = min(feed.start_us for feed in self.feeds)
        self._offset_us = round(timeline.start_offset_s * 1e6)
        self._align = [self.anchor_us - feed.start_us for feed in self.feeds]
        self.origin_us = self.anchor_us + self._offset_us
        end_us = max(
            feed.end_us + align for feed, align in zip(self.feeds, self._align, strict=True)
        )
        #: Recorded time one pass covers, from the start offset to the last feed's end.
        self.span_us = end_us - self.origin_us
        if self.span_us <= 0:
            raise ReplayError(
                f"nothing to replay: the start offset ({timeline.start_offset_s:g} s) is past "
                f"the end of the recordings ({(end_us - self.anchor_us) / 1e6:g} s)"
            )

    def messages(self, now: datetime | None = None) -> Iterator[tuple[float, WardMessage]]:
        """Every message to publish, with its final time, stay id and ``seq``.

        ``now`` is the wall-clock moment the ward's start maps to when re-stamping.
        """
        timeline = self.timeline
        restamp_us = 0
        if timeline.restamp:
            restamp_us = to_us(now or datetime.now(UTC)) - self.origin_us
        limit_us = None if timeline.duration_s is None else round(timeline.duration_s * 1e6)
        counters: dict[tuple[str, str, str | None], int] = {}
        passes = itertools.count() if timeline.loop else range(1)
        for number in passes:
            pass_shift_us = number * self.span_us
            empty = True
            for elapsed_us, feed_index, draft in self._pass(pass_shift_us):
                if limit_us is not None and elapsed_us >= limit_us:
                    return
                empty = False
                shift_us = self._align[feed_index] + pass_shift_us + restamp_us
                yield elapsed_us / 1e6, _placed(draft, shift_us, number, counters)
            if empty:
                if number == 0:
                    raise ReplayError("nothing to replay after the start offset")
                return

    def _pass(self, pass_shift_us: int) -> Iterator[tuple[int, int, Draft]]:
        """One pass over every feed, merged: (µs since the replay start, feed, draft)."""
        streams = []
        for index, feed in enumerate(self.feeds):
            start_us = feed.start_us + self._offset_us
            offset_us = self._align[index] + pass_shift_us - self.origin_us
            streams.append(_elapsed(feed.read(start_us), start_us, index, offset_us))
        # Ties go to the feed given first, so the order is the same on every run.
        return heapq.merge(*streams, key=_first)


def _elapsed(
    stream: Iterable[Timed], start_us: int, index: int, offset_us: int
) -> Iterator[tuple[int, int, Draft]]:
    for due, draft in _from(stream, start_us):
        yield due + offset_us, index, draft


def _first(item: tuple[int, int, Draft]) -> int:
    return item[0]


def _from(stream: Iterable[Timed], start_us: int) -> Iterator[Timed]:
    """What is due at or after ``start_us``, the beds still admitted then announced first."""
    open_admits: dict[str, Draft] = {}
    items = iter(stream)
    for due, draft in items:
        if due >= start_us:
            for admit in open_admits.values():
                yield start_us, admit
            yield due, draft
            yield from items
            return
        if draft.kind is Admit:
            open_admits[draft.fields["bed"]] = draft
        elif draft.kind is Discharge or draft.kind is Death:
            open_admits.pop(draft.fields["bed"], None)
    for admit in open_admits.values():
        yield start_us, admit


def _placed(
    draft: Draft,
    shift_us: int,
    number: int,
    counters: dict[tuple[str, str, str | None], int],
) -> WardMessage:
    """The message of a draft moved by ``shift_us``, stay renamed for pass ``number``,
    numbered, and validated."""
    fields = dict(draft.fields)
    if number and fields.get("stay_id") is not None:
        fields["stay_id"] = f"{fields['stay_id']}#{number + 1}"
    moment = at_us(draft.time_us + shift_us)
    if draft.kind is WaveformChunk:
        key = (WAVEFORM_TOPIC, fields["bed"], fields["signal"])
        fields["start"] = moment
    else:
        key = (VITALS_TOPIC, fields["bed"], None)
        fields["time"] = moment
    if draft.kind is Vitals or draft.kind is WaveformChunk:
        seq = counters.get(key, 0)
        counters[key] = seq + 1
        fields["seq"] = seq
    return draft.kind(**fields)
