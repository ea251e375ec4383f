"""What an engine process is told: one frozen settings object, built at the entry point.

Command-line values override ``BEDSIDE_ENGINE_*`` environment variables (the alert
policy's as ``BEDSIDE_ENGINE_ALERTS__ON_RISK`` and so on); nothing below the entry point
reads the environment.

Time is event time: a bed's clock is the latest timestamp among its accepted messages.
A stay is scored every ``score_every_s`` from its admission (or its first value when no
admission came); the score at ``T`` is computed once the bed's clock reaches
``T + lateness_s``, from the values timed before ``T``, so the score 48 h after
admission is exactly what ``bedside predict`` gives offline for the first 48 h. A value
that arrives after its minute was scored is *late*: it is counted and
still enters the window of the following scores. One older than the bed's clock by
more than ``max_late_s`` (default: the model's window) is dead-lettered, as is one timed
more than
``future_limit_s`` after the engine's wall clock (a device with a wrong clock;
``None`` turns this off, for accelerated replays of archived data).

Admissions, discharges and deaths come on another topic than the values, and after a
backlog one topic may be read far ahead of the other. A patient event is therefore
held until the bed's values reach its time and then applied in time order with them.
A bed that falls silent, as it does after a discharge, is told apart from a lagging
topic by the other beds: once their values are ``patient_hold_s`` past the event's
time (or, if all input stops, after ``patient_hold_wall_s`` of wall clock) it is
applied. An event read after its stay's values is applied when read.

>>> settings = EngineSettings(lateness_s=10)
>>> settings.alerts.persistence, settings.score_every_s
((3, 5), 60.0)
>>> EngineSettings(alerts={"persistence": (6, 5)})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for EngineSettings
...
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bedside.errors import BedsideError

ENV_PREFIX = "BEDSIDE_ENGINE_"


class EngineError(BedsideError, RuntimeError):
    """The engine cannot start as configured."""


class AlertPolicy(BaseModel):
    """When a rolling score becomes an alert, and what happens to it afterwards.

    * **On/off with hysteresis**: an evaluation counts as high when the in-hospital
      mortality risk is at least ``on_risk`` (default: the model's threshold); an open
      alert resolves when the risk falls below ``on_risk * off_ratio``.
    * **Persistence**: an alert is raised when ``k`` of the last ``n`` reliable
      evaluations were high.
    * **Silencing**: after an alert resolves, none is raised for that bed for
      ``silence_s``.
    * **Escalation**: a raised alert not acknowledged within ``escalate_after_s`` is
      escalated to high priority.
    * **Priority** (IEC 60601-1-8): ``high`` when the risk is at least ``high_risk``
      (default: halfway between ``on_risk`` and 1), otherwise ``medium``.
    * **Reliability**: no alert is raised from a window whose elapsed cells are more
      than ``max_imputed_fraction`` imputed or whose newest value is older than
      ``max_staleness_s``; an ``info`` technical notice is raised instead, once that
      lasts ``k`` evaluations in a row (``k`` of ``persistence``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    on_risk: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    off_ratio: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8
    high_risk: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    persistence: tuple[int, int] = (3, 5)
    silence_s: Annotated[float, Field(ge=0.0)] = 1800.0
    escalate_after_s: Annotated[float, Field(gt=0.0)] = 300.0
    max_imputed_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.9
    max_staleness_s: Annotated[float, Field(gt=0.0)] = 900.0

    @model_validator(mode="after")
    def _persistence(self) -> AlertPolicy:
        k, n = self.persistence
        if not 1 <= k <= n <= 60:
            raise ValueError(f"persistence needs 1 <= k <= n <= 60, got {k} of {n}")
        return self


#: Records read per poll of a partition (``bedside engine --batch-size``). A batch's
#: records go to the beds shard by shard, and each shard's part through the detectors
#: in one compiled pass, at a fixed cost per part: 4,000 records (about 60 a shard) make
#: that cost small per record, where 1,000 made it a quarter of the beds' step
#: (`bedside bench engine`). A poll returns what is there: live, batches stay small.
BATCH_SIZE: Final = 4000


class EngineSettings(BaseSettings):
    """Everything that shapes the engine's behaviour (see the module docstring)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    #: Survival model folder (``bedside train survival``).
    model_dir: Path | None = None
    #: Detector folder (``bedside train detectors``); default the model folder's, if any.
    detectors_dir: Path | None = None
    #: Run the online detectors (flagged values are left out of the windows).
    detect: bool = True
    score_every_s: Annotated[float, Field(gt=0.0)] = 60.0
    lateness_s: Annotated[float, Field(ge=0.0)] = 5.0
    #: Values older than the bed's clock by more than this are dead-lettered; default
    #: the model's window (older values cannot enter any window).
    max_late_s: Annotated[float, Field(gt=0.0)] | None = None
    future_limit_s: Annotated[float, Field(gt=0.0)] | None = 300.0
    #: Most missed minutes a bed catches up at once after a silence (older ones skipped
    #: and counted); default one window.
    max_catch_up: Annotated[int, Field(ge=1)] | None = None
    #: Only these beds are monitored (others dead-lettered); None = any valid bed id.
    beds: frozenset[str] | None = None
    #: Sequence numbers remembered per bed and stream to drop duplicates.
    dedupe_window: Annotated[int, Field(ge=16)] = 256
    #: An admission, discharge or death waits for the bed's values to reach its time;
    #: a silent bed's waits until the other beds' values are this many seconds past it
    #: (0: patient events are applied as soon as read).
    patient_hold_s: Annotated[float, Field(ge=0.0)] = 60.0
    #: ... or, when the whole input is quiet, this many seconds of wall clock.
    patient_hold_wall_s: Annotated[float, Field(gt=0.0)] = 600.0
    #: Seconds of waveform analysed for each derived numeric (and how often).
    waveform_window_s: Annotated[float, Field(ge=2.0, le=30.0)] = 10.0
    alerts: AlertPolicy = AlertPolicy()
