"""All online detectors of one bed, run on each of its samples."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import polars as pl

from bedside.schemas.messages import Anomaly
from bedside.training.detectors.base import BedDetector, DetectorError, Finding
from bedside.training.detectors.consistency import Consistency
from bedside.training.detectors.flatline import Flatline
from bedside.training.detectors.multivariate import Multivariate
from bedside.training.detectors.plausibility import Plausibility
from bedside.training.detectors.robust_spike import RobustSpike
from bedside.training.detectors.rules import signals

#: The file ``bedside train detectors`` writes in a model folder.
MODEL_FILE: Final = "detectors.json"

#: Every online detector by name, in the order a bed runs them.
DETECTORS: dict[str, type[BedDetector]] = {
    Plausibility.name: Plausibility,
    Flatline.name: Flatline,
    RobustSpike.name: RobustSpike,
    Consistency.name: Consistency,
    Multivariate.name: Multivariate,
}


class BedDetectors:
    """The online detectors of one bed: judge each sample, then learn from it.

    The per-value detectors run first, each on the whole sample. The multivariate ones
    then see only the values no detector before them flagged, so that an artefact is
    neither scored twice nor learned as normal. The object is small (a few KB pickled, once
    warm; the Half-Space Trees' structure is shared by all beds) and is what an engine
    keeps as the bed's state.

    >>> from datetime import datetime, UTC
    >>> bed = BedDetectors()
    >>> for minute in range(20):
    ...     _ = bed.process({"heart_rate": 80.0 + minute % 3, "arterial_mean_bp": 0.0})
    >>> for finding in bed.process(
    ...         {"heart_rate": 160.0, "temperature": 98.6, "arterial_mean_bp": 0.0}):
    ...     print(finding.detector, finding.kind, finding.concept)
    plausibility unit_error temperature
    flatline sensor_off arterial_mean_bp
    robust_spike spike heart_rate
    >>> anomaly = bed.anomalies("icu1-03", datetime(2026, 1, 1, tzinfo=UTC), {"spo2": 0.0})[0]
    >>> anomaly.kind, anomaly.detector
    ('sensor_off', 'flatline')
    """

    def __init__(self, detectors: Mapping[str, BedDetector] | None = None) -> None:
        if detectors is None:
            detectors = {name: kind() for name, kind in DETECTORS.items()}
        self.detectors = dict(detectors)

    @classmethod
    def from_model(cls, model_dir: Path | None) -> BedDetectors:
        """A new bed's detectors, as ``bedside train detectors`` left them in ``model_dir``
        (the population reference of the Half-Space Trees), or the defaults."""
        bed = cls()
        reference = population_reference(model_dir)
        if reference is not None:
            multivariate = bed.detectors[Multivariate.name]
            assert isinstance(multivariate, Multivariate)
            multivariate.load_reference(reference)
        return bed

    def process(self, x: dict[str, float]) -> list[Finding]:
        """The findings of every detector on one sample ``{concept: value}``, then learn it."""
        findings: list[Finding] = []
        flagged: set[str] = set()
        usable = signals(x)  # once for all detectors
        for detector in self.detectors.values():
            if detector.multivariate and flagged:
                found = detector.process_signals(
                    {c: v for c, v in x.items() if c not in flagged},
                    {c: v for c, v in usable.items() if c not in flagged},
                )
            else:
                found = detector.process_signals(x, usable)
            if found:
                findings.extend(found)
                flagged.update(f.concept for f in found)
        return findings

    def anomalies(
        self, bed: str, time: datetime, x: dict[str, float], stay_id: str | None = None
    ) -> list[Anomaly]:
        """:meth:`process` as ``icu.anomalies.v1`` messages."""
        return [finding.to_anomaly(bed, time, stay_id) for finding in self.process(x)]


def population_reference(model_dir: Path | None) -> list[int] | None:
    """The Half-Space Trees' population masses saved in ``model_dir``, if any."""
    if model_dir is None:
        return None
    path = model_dir / MODEL_FILE
    if not path.exists():
        return None
    saved = json.loads(path.read_text()).get("multivariate")
    if saved is None:
        return None
    if saved["params"] != Multivariate().tree_params():
        raise DetectorError(
            f"{path}: its Half-Space Trees were trained with other parameters "
            f"({saved['params']}): retrain the detectors"
        )
    return list(saved["reference_masses"])


def _sample_rows(
    events: pl.DataFrame,
) -> Iterator[tuple[int, Any, dict[str, float], dict[str, int]]]:
    """:func:`samples`, with the row number of each value in ``events``."""
    ordered = (
        events.select("stay_id", "time", "code", "numeric_value")
        .with_row_index("_row")
        .with_columns(_nth=pl.int_range(pl.len()).over("stay_id", "time", "code"))
        .sort("stay_id", "time", "_nth", "_row")
    )
    current: tuple[int, Any, int] | None = None
    sample: dict[str, float] = {}
    rows: dict[str, int] = {}
    for row, stay, time, code, value, nth in ordered.select(
        "_row", "stay_id", "time", "code", "numeric_value", "_nth"
    ).iter_rows():
        key = (stay, time, nth)
        if key != current:
            if current is not None:
                yield current[0], current[1], sample, rows
            current, sample, rows = key, {}, {}
        sample[code] = value
        rows[code] = row
    if current is not None:
        yield current[0], current[1], sample, rows


def samples(events: pl.DataFrame) -> Iterator[tuple[int, Any, dict[str, float]]]:
    """Beds' samples from canonical events: ``(stay_id, time, {concept: value})``.

    Stays by id, each in time order; the values of one stay at one time form one
    sample, and a concept repeated at the same time starts a new sample (its n-th value
    at that time goes to the n-th sample), as the batch path
    (:func:`bedside.training.detectors.flag_events`) counts them.
    """
    for stay, time, sample, _ in _sample_rows(events):
        yield stay, time, sample


def run_online_rows(
    events: pl.DataFrame,
    detectors: Sequence[str] = tuple(DETECTORS),
    model_dir: Path | None = None,
) -> Iterator[tuple[int, Finding]]:
    """Run fresh :class:`BedDetectors` (from ``model_dir`` if given) over each stay of
    ``events``: (row, finding) pairs, ``row`` being the value's row number in ``events``."""
    bed: BedDetectors | None = None
    current = None
    for stay, _, sample, rows in _sample_rows(events):
        if stay != current or bed is None:
            bed = BedDetectors.from_model(model_dir)
            bed.detectors = {name: bed.detectors[name] for name in detectors}
            current = stay
        for finding in bed.process(sample):
            yield rows[finding.concept], finding
