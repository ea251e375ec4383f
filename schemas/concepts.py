"""The clinical concept dictionary: canonical variables, units, ranges and source codes.

The data lives in ``concepts.toml`` next to this module; this is its typed loader.

>>> concepts = load_concepts()
>>> concepts["heart_rate"].unit
'bpm'
>>> concepts.from_source("physionet2012", "HR")
(Concept(name='heart_rate', ...), Conversion(scale=1.0, offset=0.0))
>>> concepts.from_source("mimic_iv", 223761)[1].apply(98.6)  # °F -> °C
37.0
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bedside.errors import BedsideError

SourceSystem = Literal["physionet2012", "mimic_iv", "wfdb", "loinc", "omop"]
SOURCE_SYSTEMS: tuple[SourceSystem, ...] = ("physionet2012", "mimic_iv", "wfdb", "loinc", "omop")
ConceptKind = Literal["vital", "score", "ventilation", "fluid", "anthropometric", "lab"]


class ConceptError(BedsideError, ValueError):
    """The concept dictionary file is inconsistent, or a name is not in it."""


class UnknownConceptError(ConceptError, KeyError):
    """A concept name that is not in the dictionary."""

    def __str__(self) -> str:
        return str(self.args[0])


class Conversion(BaseModel):
    """Linear conversion of a source value into the canonical unit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scale: float = 1.0
    offset: float = 0.0

    def apply(self, value: float) -> float:
        return round(self.scale * value + self.offset, 10)


IDENTITY = Conversion()


class Concept(BaseModel):
    """One canonical clinical variable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    label: str
    unit: str
    kind: ConceptKind
    plausible: tuple[float, float]
    physionet2012: tuple[str, ...] = ()
    mimic_iv: tuple[int, ...] = ()
    wfdb: tuple[str, ...] = ()
    loinc: tuple[str, ...] = ()
    omop: tuple[int, ...] = ()
    convert: dict[str, Conversion] = Field(default_factory=dict)
    #: OMOP unit_concept_id -> conversion, for values recorded in another unit.
    omop_units: dict[int, Conversion] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Concept:
        low, high = self.plausible
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"plausible range of {self.name} must be finite and low < high")
        for key in self.convert:
            system, _, code = key.partition(":")
            if system not in SOURCE_SYSTEMS or str(code) not in map(str, getattr(self, system)):
                raise ValueError(
                    f"{self.name}: conversion for {key!r} names no code of this concept"
                )
        return self

    def is_plausible(self, value: float) -> bool:
        """True when the value is finite and inside the plausible physiological range."""
        return math.isfinite(value) and self.plausible[0] <= value <= self.plausible[1]

    def conversion(self, system: SourceSystem, code: str | int) -> Conversion:
        return self.convert.get(f"{system}:{code}", IDENTITY)


class Waveform(BaseModel):
    """One sampled signal kind (an ECG lead, a pressure curve, a pleth curve)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    label: str
    unit: str
    kind: Literal["ecg", "pressure", "pleth", "respiration"]
    wfdb: tuple[str, ...] = ()
    derives: tuple[str, ...] = ()


class ConceptDictionary(Mapping[str, Concept]):
    """All concepts and waveforms, with reverse look-ups from each source system."""

    def __init__(self, concepts: dict[str, Concept], waveforms: dict[str, Waveform]) -> None:
        self._concepts = concepts
        self.waveforms = waveforms
        self._by_source: dict[str, dict[str, Concept]] = {system: {} for system in SOURCE_SYSTEMS}
        for concept in concepts.values():
            for system in SOURCE_SYSTEMS:
                for code in getattr(concept, system):
                    key = str(code)
                    other = self._by_source[system].get(key)
                    if other is not None:
                        raise ConceptError(
                            f"{system} code {key!r} maps to both {other.name} and {concept.name}"
                        )
                    self._by_source[system][key] = concept
        self._waveform_by_wfdb: dict[str, Waveform] = {}
        for waveform in waveforms.values():
            for derived in waveform.derives:
                if derived not in concepts:
                    raise ConceptError(f"waveform {waveform.name} derives unknown {derived!r}")
            for signal in waveform.wfdb:
                if signal in self._waveform_by_wfdb:
                    raise ConceptError(f"WFDB waveform signal {signal!r} is listed twice")
                self._waveform_by_wfdb[signal] = waveform

    def __getitem__(self, name: str) -> Concept:
        try:
            return self._concepts[name]
        except KeyError:
            raise UnknownConceptError(f"unknown concept {name!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._concepts)

    def __len__(self) -> int:
        return len(self._concepts)

    def from_source(
        self, system: SourceSystem, code: str | int
    ) -> tuple[Concept, Conversion] | None:
        """The concept a source code maps to and the conversion to apply, or None."""
        concept = self._by_source[system].get(str(code))
        if concept is None:
            return None
        return concept, concept.conversion(system, code)

    def omop_unit_conversions(self) -> dict[tuple[str, int], Conversion]:
        """(concept, OMOP unit_concept_id) -> conversion into the canonical unit."""
        return {
            (concept.name, unit): conversion
            for concept in self._concepts.values()
            for unit, conversion in concept.omop_units.items()
        }

    def source_table(self, system: SourceSystem) -> dict[str, tuple[str, Conversion]]:
        """Every code of one source system -> (concept name, conversion), for joins."""
        return {
            code: (concept.name, concept.conversion(system, code))
            for code, concept in self._by_source[system].items()
        }

    def waveform_for_wfdb(self, signal: str) -> Waveform | None:
        return self._waveform_by_wfdb.get(signal)


def _parse(data: dict[str, object]) -> ConceptDictionary:
    raw_concepts = data.get("concepts", {})
    raw_waveforms = data.get("waveforms", {})
    if not isinstance(raw_concepts, dict) or not isinstance(raw_waveforms, dict):
        raise ConceptError("the dictionary needs [concepts.*] and [waveforms.*] tables")
    try:
        concepts = {name: Concept(name=name, **body) for name, body in raw_concepts.items()}
        waveforms = {name: Waveform(name=name, **body) for name, body in raw_waveforms.items()}
    except (TypeError, ValueError) as error:
        raise ConceptError(f"invalid concept dictionary: {error}") from error
    return ConceptDictionary(concepts, waveforms)


@cache
def load_concepts(path: Path | None = None) -> ConceptDictionary:
    """Load the concept dictionary (the packaged one unless a path is given)."""
    if path is None:
        text = resources.files("bedside.schemas").joinpath("concepts.toml").read_text("utf-8")
        source = "concepts.toml"
    else:
        text = path.read_text("utf-8")
        source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConceptError(f"{source}: {error}") from error
    return _parse(data)
