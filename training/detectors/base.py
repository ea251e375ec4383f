"""What every online detector of a bed has in common.

Each detector *is* a River anomaly detector (``learn_one`` / ``score_one``, higher = more
anomalous) over one bed's current values ``{concept: value}``. On top of River's
protocol it says which values it flags and why: :meth:`BedDetector.explain_one` returns
:class:`Finding` objects, ready to become :class:`~bedside.schemas.messages.Anomaly`
messages. Scores are scaled so that **1.0 is the flagging threshold** for every detector:
a value scoring 1 or more is flagged.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from river import base

from bedside.errors import BedsideError
from bedside.schemas.messages import Anomaly
from bedside.training.detectors.rules import AnomalyKind, signals

#: Scores at or above this are flagged, whatever the detector.
THRESHOLD = 1.0


class DetectorError(BedsideError, ValueError):
    """An unknown detector, or a detector model that cannot be used."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One flagged value: which detector, which concept, what kind, how sure."""

    detector: str
    concept: str
    value: float | None
    kind: AnomalyKind
    score: float
    detail: str = ""

    def to_anomaly(self, bed: str, time: datetime, stay_id: str | None = None) -> Anomaly:
        return Anomaly(
            bed=bed,
            stay_id=stay_id,
            time=time,
            concept=self.concept,
            value=self.value,
            detector=self.detector,
            kind=self.kind,
            score=round(min(self.score, 1e6), 4),
            detail=self.detail[:500],
        )


class BedDetector(base.AnomalyDetector):
    """An online detector over one bed's samples; scores of 1 or more are flagged."""

    #: Registry name, also the ``detector`` of its anomalies.
    name: ClassVar[str]
    #: Judges values together: a bed shows it only the values no other detector flagged.
    multivariate: ClassVar[bool] = False

    @abc.abstractmethod
    def score_signals(self, x: dict[str, Any]) -> dict[str, float]:
        """The score of each value of ``x`` this detector judges (pure: no learning)."""

    @abc.abstractmethod
    def explain_one(self, x: dict[str, Any]) -> list[Finding]:
        """The values of ``x`` this detector flags, with their kind and a short detail."""

    # River types samples as dict[Hashable, Any]; a bed's are {concept: value}.
    @abc.abstractmethod
    def learn_one(self, x: dict[str, Any]) -> None:  # type: ignore[override]
        """Update the detector with one sample."""

    def score_one(self, x: dict[str, Any]) -> float:  # type: ignore[override]
        """The highest score of the sample's values (1 or more: something is flagged)."""
        return max(self.score_signals(x).values(), default=0.0)

    def process_one(self, x: dict[str, Any]) -> list[Finding]:
        """Judge a sample, then learn from it: what a bed does with each new sample."""
        return self.process_signals(x, signals(x))

    def process_signals(self, x: dict[str, Any], usable: dict[str, float]) -> list[Finding]:
        """:meth:`process_one`, given the sample's usable values ``usable = rules.signals(x)``:
        a bed finds them once for all its detectors. Detectors override it with one pass
        over the sample."""
        findings = self.explain_one(x)
        self.learn_one(x)
        return findings
