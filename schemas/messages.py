"""Every Kafka message of the product, one frozen pydantic model per topic.

Topic names carry the schema version (``icu.vitals.v1``). Messages forbid unknown
fields, take timezone-aware timestamps only and refuse NaN and infinities: anything
else is bad input and goes to ``icu.deadletter.v1``. What bedside devices and
clinicians send (vitals, waveforms, patient events, acknowledgements) must also be
timed between :data:`EARLIEST_TIME` and :data:`LATEST_TIME`: a clock reading year 1 or
year 9999 is broken, and times at the ends of what a datetime holds overflow the
engine's arithmetic on them.

>>> from datetime import datetime, UTC
>>> msg = Vitals(bed="icu1-03", time=datetime(2026, 1, 1, tzinfo=UTC), source="monitor",
...              seq=7, values={"heart_rate": 82.0, "spo2": 97.0})
>>> decode(VITALS_TOPIC, encode(msg)) == msg
True
>>> decode(VITALS_TOPIC, b'{"bed": "x"}')
Traceback (most recent call last):
...
bedside.schemas.messages.MessageError: icu.vitals.v1: invalid message: ...
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from bedside.errors import BedsideError
from bedside.schemas.concepts import load_concepts

VITALS_TOPIC: Final = "icu.vitals.v1"
WAVEFORM_TOPIC: Final = "icu.waveform.v1"
PATIENT_TOPIC: Final = "icu.patient.v1"
ANOMALIES_TOPIC: Final = "icu.anomalies.v1"
SCORES_TOPIC: Final = "icu.scores.v1"
ALERTS_TOPIC: Final = "icu.alerts.v1"
ALERT_ACKS_TOPIC: Final = "icu.alerts.ack.v1"
DEADLETTER_TOPIC: Final = "icu.deadletter.v1"

#: Largest payload accepted on any topic; larger ones are dead-lettered unread.
MAX_MESSAGE_BYTES: Final = 1_048_576
#: Most samples in one waveform chunk (8 s of a 500 Hz signal; replay sends ~1 s).
MAX_WAVEFORM_SAMPLES: Final = 4_000
#: Sampling rates a waveform chunk may have: a slower signal is a numeric (a rate near
#: zero would make a one-sample chunk span centuries).
MIN_WAVEFORM_HZ: Final = 1.0
MAX_WAVEFORM_HZ: Final = 10_000.0
#: Times an input message (from a device or a clinician) may carry, in UTC.
EARLIEST_TIME: Final = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_TIME: Final = datetime(3000, 1, 1, tzinfo=UTC)
_YEARS: Final = f"{EARLIEST_TIME.year}-{LATEST_TIME.year - 1}"

_CONCEPT_NAMES: Final = frozenset(load_concepts())

BedId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
]
StayId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Priority = Literal["high", "medium", "low", "info"]


def _has_utc(moment: datetime) -> datetime:
    try:
        moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 is in the year 0 in UTC
        raise ValueError("time has no UTC equivalent") from None
    return moment


def _in_time_range(moment: datetime) -> datetime:
    if not EARLIEST_TIME <= moment < LATEST_TIME:
        raise ValueError(f"time must lie in the years {_YEARS} (UTC)")
    return moment


#: A timezone-aware time that exists in UTC.
Time = Annotated[AwareDatetime, AfterValidator(_has_utc)]
#: The time of an input message: also within EARLIEST_TIME and LATEST_TIME.
InputTime = Annotated[
    Time,
    AfterValidator(_in_time_range),
    Field(description=f"Timezone-aware, in the years {_YEARS} (UTC)."),
]


class Message(BaseModel):
    """Base of every message: immutable, strict about unknown fields and non-finite floats."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Vitals(Message):
    """One bed's numeric values at one timestamp (``icu.vitals.v1``)."""

    bed: BedId
    stay_id: StayId | None = None
    time: InputTime
    source: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    seq: Annotated[int, Field(ge=0)]
    values: Annotated[
        dict[str, float],
        Field(
            min_length=1,
            max_length=128,
            json_schema_extra={"propertyNames": {"enum": sorted(load_concepts())}},
        ),
    ]

    @field_validator("values")
    @classmethod
    def _known_concepts(cls, values: dict[str, float]) -> dict[str, float]:
        if values.keys() <= _CONCEPT_NAMES:  # the hot path: one set comparison
            return values
        unknown = sorted(values.keys() - _CONCEPT_NAMES)
        raise ValueError(f"unknown concepts {unknown}")


class WaveformChunk(Message):
    """About one second of one sampled signal (``icu.waveform.v1``); None = missing sample."""

    bed: BedId
    stay_id: StayId | None = None
    signal: Annotated[str, Field(json_schema_extra={"enum": sorted(load_concepts().waveforms)})]
    fs: Annotated[float, Field(ge=MIN_WAVEFORM_HZ, le=MAX_WAVEFORM_HZ)]
    start: InputTime
    seq: Annotated[int, Field(ge=0)]
    units: Annotated[str, StringConstraints(max_length=16)]
    samples: Annotated[list[float | None], Field(min_length=1, max_length=MAX_WAVEFORM_SAMPLES)]

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, signal: str) -> str:
        if signal not in load_concepts().waveforms:
            raise ValueError(f"unknown waveform signal {signal!r}")
        return signal


class Admit(Message):
    """A patient is admitted to a bed, with the static covariates models use."""

    event: Literal["admit"] = "admit"
    bed: BedId
    stay_id: StayId
    time: InputTime
    age: Annotated[float, Field(ge=0, le=130)] | None = None
    sex: Literal["F", "M"] | None = None
    weight_kg: Annotated[float, Field(gt=0, le=400)] | None = None
    height_cm: Annotated[float, Field(gt=0, le=250)] | None = None
    icu_type: (
        Literal["coronary", "cardiac_surgery", "medical", "surgical", "neuro", "other"] | None
    ) = None


class Discharge(Message):
    """A patient leaves the bed alive."""

    event: Literal["discharge"] = "discharge"
    bed: BedId
    stay_id: StayId
    time: InputTime


class Death(Message):
    """A patient dies in the bed."""

    event: Literal["death"] = "death"
    bed: BedId
    stay_id: StayId
    time: InputTime


PatientEvent = Annotated[Admit | Discharge | Death, Field(discriminator="event")]


class Anomaly(Message):
    """A value or signal stretch judged anomalous by a detector (``icu.anomalies.v1``)."""

    bed: BedId
    stay_id: StayId | None = None
    time: Time
    concept: str
    value: float | None
    detector: str
    kind: Literal[
        "implausible", "unit_error", "spike", "step", "flatline", "sensor_off", "multivariate"
    ]
    score: float
    detail: Annotated[str, StringConstraints(max_length=500)] = ""


class HorizonRisk(Message):
    horizon_h: Annotated[float, Field(gt=0)]
    risk: Probability


class SurvivalPoint(Message):
    time_h: Annotated[float, Field(ge=0)]
    survival: Probability


class Score(Message):
    """A rolling survival score for one bed (``icu.scores.v1``)."""

    bed: BedId
    stay_id: StayId | None = None
    time: Time
    model_id: str
    model_version: str
    #: Calibrated probability of in-hospital death (what the alert policy reads).
    mortality: Probability | None = None
    risks: Annotated[list[HorizonRisk], Field(min_length=1)]
    survival: list[SurvivalPoint] = []
    imputed_fraction: Probability
    staleness_s: Annotated[float, Field(ge=0)]


class Alert(Message):
    """An alert and its life cycle (``icu.alerts.v1``); ``alert_id`` is stable across states.

    Priorities follow IEC 60601-1-8 (high, medium, low) plus ``info`` for technical notices.
    """

    alert_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    bed: BedId
    stay_id: StayId | None = None
    time: Time
    priority: Priority
    state: Literal["raised", "escalated", "acknowledged", "resolved"]
    reason: Annotated[str, StringConstraints(max_length=500)]
    horizon_h: float | None = None
    risk: Probability | None = None


class AlertAck(Message):
    """A clinician acknowledges an alert (``icu.alerts.ack.v1``)."""

    alert_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    bed: BedId
    time: InputTime
    by: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    note: Annotated[str, StringConstraints(max_length=500)] = ""


class DeadLetter(Message):
    """Input that could not be used, with where it came from and why (``icu.deadletter.v1``)."""

    source_topic: str
    partition: int | None = None
    offset: int | None = None
    time: Time
    step: str
    error: str
    payload_b64: str


class MessageError(BedsideError, ValueError):
    """A payload could not be decoded as a message of its topic."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"{topic}: {reason}")
        self.topic = topic
        self.reason = reason


#: Each topic and the type its payloads decode to.
TOPICS: Final[dict[str, Any]] = {
    VITALS_TOPIC: Vitals,
    WAVEFORM_TOPIC: WaveformChunk,
    PATIENT_TOPIC: PatientEvent,
    ANOMALIES_TOPIC: Anomaly,
    SCORES_TOPIC: Score,
    ALERTS_TOPIC: Alert,
    ALERT_ACKS_TOPIC: AlertAck,
    DEADLETTER_TOPIC: DeadLetter,
}
_ADAPTERS: Final[dict[str, TypeAdapter[Any]]] = {
    topic: TypeAdapter(kind) for topic, kind in TOPICS.items()
}


def decode(topic: str, payload: bytes | str) -> Any:
    """Validate a JSON payload as the message type of ``topic``; raise MessageError."""
    adapter = _ADAPTERS.get(topic)
    if adapter is None:
        raise MessageError(topic, "unknown topic")
    # A str is measured as the UTF-8 bytes it stands for (up to four per character).
    size = len(payload)
    if isinstance(payload, str) and size * 4 > MAX_MESSAGE_BYTES:
        size = len(payload.encode("utf-8", "surrogatepass"))
    if size > MAX_MESSAGE_BYTES:
        raise MessageError(topic, f"payload of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return adapter.validate_json(payload)
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in error.errors()[:5]
        )
        raise MessageError(topic, f"invalid message: {details}") from None


def encode(message: BaseModel) -> bytes:
    """Serialise a message to compact JSON bytes."""
    return message.model_dump_json().encode()


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every topic's messages, for consumers outside Python."""
    schemas = {}
    for topic, adapter in _ADAPTERS.items():
        schema = adapter.json_schema()
        schema["$id"] = f"https://bedside.invalid/schemas/{topic}.json"
        schema.setdefault("title", topic)
        schema["description"] = (
            f"Messages on the Kafka topic {topic}. " + schema.get("description", "").strip()
        )
        schemas[topic] = schema
    return schemas
