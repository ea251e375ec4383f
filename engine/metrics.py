"""The engine's counters, as Prometheus metrics and as a log line without patient data.

The metrics live in ``prometheus_client``'s default registry, which Bytewax already
serves on its dataflow API (``BYTEWAX_DATAFLOW_API_ENABLED=true``, port 3030,
``/metrics``) next to its own (consumer lag per partition among them); ``bedside
engine --metrics-port`` serves the same registry on its own port. Every input record
ends in exactly one of ``processed``, ``deadlettered`` or ``duplicate``: the accounting
a replay with injected faults is checked against.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from prometheus_client import REGISTRY, Counter, Histogram

LOG = logging.getLogger("bedside.engine")

MESSAGES: Final = Counter(
    "bedside_engine_messages",
    "Input records by topic and outcome (processed, deadlettered, duplicate).",
    ["topic", "outcome"],
)
LATE: Final = Counter(
    "bedside_engine_late_values", "Values that arrived after their minute was scored."
)
ANOMALIES: Final = Counter(
    "bedside_engine_anomalies", "Values flagged by the online detectors.", ["detector"]
)
SCORES: Final = Counter("bedside_engine_scores", "Rolling scores published.")
SKIPPED: Final = Counter(
    "bedside_engine_skipped_minutes", "Minutes not scored after a silence longer than a window."
)
ALERTS: Final = Counter("bedside_engine_alerts", "Alert records published.", ["state", "priority"])
DERIVED: Final = Counter(
    "bedside_engine_derived_values", "Numerics derived from waveforms.", ["signal", "outcome"]
)
SCORE_ERRORS: Final = Counter(
    "bedside_engine_score_errors", "Scores that could not be computed (the minute stays due)."
)
LATENCY: Final = Histogram(
    "bedside_engine_score_latency_seconds",
    "From the production of the record that completed a minute to its score.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
)


def count(name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of one of the engine's counters (for tests, benches and logs)."""
    value = REGISTRY.get_sample_value(f"{name}_total", labels or {})
    return 0.0 if value is None else value


def totals() -> dict[str, float]:
    """The accounting in one dictionary: records in by outcome, then what came out."""
    outcomes: dict[str, float] = {"processed": 0.0, "deadlettered": 0.0, "duplicate": 0.0}
    for metric in MESSAGES.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                outcomes[sample.labels["outcome"]] += sample.value
    return {
        **outcomes,
        "late": count("bedside_engine_late_values"),
        "anomalies": sum(
            s.value for m in ANOMALIES.collect() for s in m.samples if s.name.endswith("_total")
        ),
        "scores": count("bedside_engine_scores"),
        "skipped_minutes": count("bedside_engine_skipped_minutes"),
        "alerts": sum(
            s.value for m in ALERTS.collect() for s in m.samples if s.name.endswith("_total")
        ),
    }


def log_totals() -> None:
    """One log line of counts (never a bed, stay or value)."""
    LOG.info(" ".join(f"{name}={value:.0f}" for name, value in totals().items()))


def outcome(topic: str, result: str, records: int = 1) -> None:
    """Count input records' outcome (the label children are cached: this is per record)."""
    child = _OUTCOMES.get((topic, result))
    if child is None:
        child = _OUTCOMES[(topic, result)] = MESSAGES.labels(topic, result)
    if records:
        child.inc(records)


_OUTCOMES: dict[tuple[str, str], Any] = {}
