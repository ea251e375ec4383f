"""The online detectors of a whole ward: every bed's state in arrays, one compiled loop.

:class:`~bedside.training.detectors.bed.BedDetectors` judges one sample of one bed in
Python (some 40 µs for 8 vitals). :class:`WardDetectors` gives the same findings for
many beds at once: each bed is a *slot*, an index into arrays that hold the state of its
five detectors, and a batch of samples (rows of a table, one column per concept) goes
through one ``numba``-compiled loop. Python only turns what the loop flags into
:class:`~bedside.training.detectors.base.Finding` objects, with the detectors' own
functions, so that the details read the same.

The loop repeats the detectors' arithmetic operation by operation (medians of sorted
windows, MADs, Half-Space Trees masses), so that scores come out bit for bit the same.
Every number it uses (ranges, windows, thresholds, the trees' splits) is passed to it in
one record (:func:`_rules`), built from the rules and the detectors' defaults; none is
compiled into it, so that numba's on-disk cache never holds a stale rule. Each bed's
state is one record of a numpy array of beds (:func:`_bed_fields`): one argument for
the loop, whatever the number of fields, which keeps a call cheap (~1 µs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, Final, NamedTuple

import numba
import numpy as np

from bedside.schemas.concepts import load_concepts
from bedside.training.detectors.base import DetectorError, Finding
from bedside.training.detectors.consistency import Consistency, relation_finding
from bedside.training.detectors.flatline import Flatline, flatline_finding
from bedside.training.detectors.half_space_trees import _Forest
from bedside.training.detectors.multivariate import Multivariate, multivariate_finding
from bedside.training.detectors.plausibility import Plausibility
from bedside.training.detectors.robust_spike import RobustSpike, spike_finding
from bedside.training.detectors.rules import (
    MAD_TO_SD,
    PRESSURE_TRIPLETS,
    SENSOR_OFF_BELOW,
    AnomalyKind,
    Relation,
    _difference,
    _mean_residual,
    _value_rules,
    check_value,
    pressure_order_of_signals,
    sensor_off,
    signals,
)

# The detectors by their code in the loop, in the order a bed runs them (bed.DETECTORS).
_PLAUSIBILITY, _FLATLINE, _ROBUST_SPIKE, _CONSISTENCY, _MULTIVARIATE = range(5)

#: The kinds of findings, by their code in the loop.
KINDS: Final[tuple[AnomalyKind, ...]] = (
    "implausible",
    "unit_error",
    "spike",
    "step",
    "flatline",
    "sensor_off",
    "multivariate",
)
_IMPLAUSIBLE, _UNIT_ERROR, _SPIKE, _STEP, _FLATLINE_RUN, _SENSOR_OFF, _COMBINATION = range(7)

# A finding leaves the loop as one row of integers and one of floats:
#   ints:   row, detector, column, kind, then AUX integers that depend on the detector:
#           plausibility  0 (a value alone) or 1 (a pressure order)
#           flatline      run length
#           robust_spike  signed run, readings in the window
#           consistency   relation, residuals in the window, blamed vital (its position)
#           multivariate  the node where each tree's scoring stopped, then the features
#                         present in the sample (a bit each)
#   floats: score (multivariate: the trees' raw score), median, residual.
_ROW, _DETECTOR, _COLUMN, _KIND, _AUX = range(5)
_SCORE, _MEDIAN, _RESIDUAL = range(3)
#: AUX integers per finding: enough for the trees' stops and the features present.
_N_AUX: Final = Multivariate().n_trees + 1


def _record(fields: dict[str, Any]) -> np.ndarray:
    """One numpy record (an array of one) holding ``fields``: numbers and arrays."""
    values = {name: np.asarray(value) for name, value in fields.items()}
    # numba reads no arrays of booleans in records: bytes then
    values = {
        n: v.astype(np.uint8) if v.dtype == np.bool_ and v.ndim else v for n, v in values.items()
    }
    dtype = np.dtype([(name, v.dtype, v.shape) for name, v in values.items()], align=True)
    record = np.zeros(1, dtype)
    for name, value in values.items():
        record[0][name] = value
    return record


class _Rules(NamedTuple):
    """The rules and the default detectors' parameters: as one record for the loop
    (``record``, arrays over the columns), and what Python needs to read its output."""

    record: np.ndarray
    names: tuple[str, ...]  # the columns' concepts, sorted
    forest: _Forest
    relations: tuple[Relation, ...]
    repeats: dict[str, int]  # Flatline's
    step_run: int
    n_trees: int
    threshold: float  # Multivariate's
    max_findings: int  # findings one sample can give at most


@cache
def _rules() -> _Rules:
    """The rules, built once per process."""
    names = tuple(sorted(load_concepts()))
    column = {name: index for index, name in enumerate(names)}
    value_rules = _value_rules()
    n_units = max(len(value_rules[name][3]) for name in names)
    unit_low = np.full((len(names), max(n_units, 1)), np.nan)  # NaN: no such rule
    unit_high = unit_low.copy()
    for index, name in enumerate(names):
        for rule, (low, high) in enumerate(value_rules[name][3]):
            unit_low[index, rule], unit_high[index, rule] = low, high

    def index_of(concepts: list[str]) -> np.ndarray:
        """column -> position in ``concepts``, -1 for the others."""
        index = np.full(len(names), -1, np.int64)
        for position, concept in enumerate(concepts):
            index[column[concept]] = position
        return index

    flatline, spike = Flatline(), RobustSpike()
    consistency, multivariate = Consistency(), Multivariate()
    flat_concepts = [c for c in flatline._repeats if c in column]
    spike_concepts = [c for c in spike._floors if c in column]
    relations = tuple(consistency._relations)
    relation_columns = np.full((len(relations), 3), -1, np.int64)  # -1 past its vitals
    blame_scale = np.ones((len(relations), 3))
    for r, relation in enumerate(relations):
        if relation.residual not in (_difference, _mean_residual):
            raise DetectorError(f"relation {relation.name}: no compiled residual")
        for v, concept in enumerate(relation.concepts):
            relation_columns[r, v] = column[concept]
            blame_scale[r, v] = spike._floors.get(concept, 1.0)
    trees = multivariate._trees
    forest = trees.forest()
    features = list(forest.names)
    never = np.iinfo(np.int64).max  # patience None: flagged values are never learned
    rules = _record(
        {
            # signals() and check_value(): plausible range, sensor-off zeros, unit errors
            "low": [value_rules[name][0] for name in names],
            "high": [value_rules[name][1] for name in names],
            "reads_zero_when_off": [value_rules[name][2] for name in names],
            "unit_low": unit_low,
            "unit_high": unit_high,
            "sensor_off_below": float(SENSOR_OFF_BELOW),
            "pressure_triplets": [[column[c] for c in triplet] for triplet in PRESSURE_TRIPLETS],
            # Flatline
            "flat_index": index_of(flat_concepts),
            "flat_repeats": [flatline._repeats[c] for c in flat_concepts],
            # RobustSpike
            "spike_index": index_of(spike_concepts),
            "spike_floor": [float(spike._floors[c]) for c in spike_concepts],
            "spike_k": float(spike.k),
            "spike_min_periods": spike.min_periods,
            "step_run": spike.step_run,
            "mad_to_sd": float(MAD_TO_SD),
            # Consistency
            "relation_columns": relation_columns,
            "relation_is_mean": [r.residual is _mean_residual for r in relations],
            "relation_floor": [float(r.floor) for r in relations],
            "relation_blame_scale": blame_scale,
            "relation_k": float(consistency.k),
            "relation_min_periods": consistency.min_periods,
            "relation_patience": never if consistency.patience is None else consistency.patience,
            # Multivariate: carried vitals, scaled, through the shared Half-Space Trees
            "feature_index": index_of(features),
            "feature_column": [column[f] for f in features],
            "feature_low": [float(multivariate._scale[f][0]) for f in features],
            "feature_width": [float(multivariate._scale[f][1]) for f in features],
            "tree_feature": np.array(forest.feature_index, np.int64),
            "tree_threshold": np.array(forest.thresholds, np.float64),
            "n_trees": trees.n_trees,
            "height": trees.height,
            "nodes_per_tree": forest.nodes_per_tree,
            "tree_window": trees.window_size,
            "size_limit": float(trees.size_limit),
            "mass_denominator": float(
                trees.n_trees * trees.window_size * (2 ** (trees.height + 1) - 1)
            ),
            "hst_threshold": float(multivariate.threshold),
            "carry": multivariate.carry,
            "protect": bool(multivariate.protect_anomaly_detector),
            "hst_patience": never if multivariate.patience is None else multivariate.patience,
            # findings one sample can give at most: the loop stops before a row that may
            # not fit in what is left of its output
            "max_findings": 2 * len(names) + len(spike_concepts) + len(relations) + 1,
        }
    )
    return _Rules(
        record=rules,
        names=names,
        forest=forest,
        relations=relations,
        repeats={c: flatline._repeats[c] for c in flat_concepts},
        step_run=spike.step_run,
        n_trees=trees.n_trees,
        threshold=float(multivariate.threshold),
        max_findings=int(rules[0]["max_findings"]),
    )


@cache
def _bed_fields() -> dict[str, tuple[Any, tuple[int, ...], Any]]:
    """The state of one bed's detectors: each field's dtype, shape and value in a fresh bed."""
    rules = _rules().record[0]
    n_flat, n_spike = len(rules["flat_repeats"]), len(rules["spike_floor"])
    n_relations, n_features = len(rules["relation_floor"]), len(rules["feature_low"])
    n_nodes = len(rules["tree_feature"])
    spike_window, relation_window = RobustSpike().window_size, Consistency().window_size
    return {
        "live": (np.bool_, (), False),  # handed out by new_bed, not released
        # Flatline: the last usable reading and the run it ends (0: none yet)
        "flat_last": (np.float64, (n_flat,), 0.0),
        "flat_run": (np.int64, (n_flat,), 0),
        # RobustSpike: each window in arrival order (a ring) and sorted; the signed run
        "spike_recent": (np.float64, (n_spike, spike_window), 0.0),
        "spike_ordered": (np.float64, (n_spike, spike_window), 0.0),
        "spike_head": (np.int64, (n_spike,), 0),  # the oldest reading, once the ring is full
        "spike_count": (np.int64, (n_spike,), 0),
        "spike_run": (np.int64, (n_spike,), 0),
        # Consistency: the residuals' windows, flagged runs, last unflagged inputs
        "relation_recent": (np.float64, (n_relations, relation_window), 0.0),
        "relation_ordered": (np.float64, (n_relations, relation_window), 0.0),
        "relation_head": (np.int64, (n_relations,), 0),
        "relation_count": (np.int64, (n_relations,), 0),
        "relation_flagged_run": (np.int64, (n_relations,), 0),
        "relation_last": (np.float64, (n_relations, 3), 0.0),
        "relation_has_last": (np.uint8, (n_relations,), 0),  # numba: no bool arrays here
        # Multivariate: the trees' masses (16 bits, as CompactHalfSpaceTrees pickles them),
        # window, flagged run, carried vitals and their ages (-1: nothing carried)
        "l_mass": (np.uint16, (n_nodes,), 0),
        "r_mass": (np.uint16, (n_nodes,), 0),
        "tree_counter": (np.int64, (), 0),
        "first_window": (np.bool_, (), True),
        "hst_flagged_run": (np.int64, (), 0),
        "carried": (np.float64, (n_features,), 0.0),
        "carried_age": (np.int64, (n_features,), -1),
    }


#: The sorted copies of the windows: not pickled, rebuilt from the rings.
_ORDERED: Final = {"spike_ordered": "spike", "relation_ordered": "relation"}


class WardDetectors:
    """The online detectors of many beds (BedDetectors' findings, bed by bed), state in arrays.

    Each bed gets a *slot* (:meth:`new_bed`) whose detectors start as a fresh
    :class:`~bedside.training.detectors.bed.BedDetectors` (with the population reference
    of the Half-Space Trees, if given): a record of a numpy array of beds. :meth:`process`
    takes a batch of samples, one row each: the bed's slot, and the value of every
    concept of :attr:`columns` (NaN: not in the sample). Rows are processed in order, so
    a bed may have several in one batch. Each row gets the findings
    ``BedDetectors.process`` gives for that sample: same detector, concept, value, kind,
    score and detail, in the detectors' order; within one detector in the order
    ``BedDetectors`` gives for a sample whose concepts are in column (alphabetical)
    order, which may differ for samples built in another order.

    A NaN is an absent value here, where ``BedDetectors`` would flag a NaN as implausible;
    concepts outside the concept dictionary are ignored by both. A pickle holds the beds'
    state arrays only (~11 KB a bed), like a pickled ``BedDetectors``.

    Parameters
    ----------
    reference
        Population masses of the Half-Space Trees (``bed.population_reference``), for
        every new bed; None: each bed's trees learn their first window before judging.

    Examples
    --------
    >>> import numpy as np
    >>> ward = WardDetectors()
    >>> bed, other = ward.new_bed(), ward.new_bed()
    >>> for minute in range(20):
    ...     _ = ward.process_one(bed, {"heart_rate": 80.0 + minute % 3, "arterial_mean_bp": 0.0})
    >>> for finding in ward.process_one(
    ...         bed, {"heart_rate": 160.0, "temperature": 98.6, "arterial_mean_bp": 0.0}):
    ...     print(finding.detector, finding.kind, finding.concept)
    plausibility unit_error temperature
    flatline sensor_off arterial_mean_bp
    robust_spike spike heart_rate

    A batch is a table: one row per sample, one column per concept.

    >>> values = np.full((2, len(ward.columns)), np.nan)
    >>> values[:, ward.columns["spo2"]] = [97.0, 0.0]
    >>> found = ward.process(np.array([other, other]), values)
    >>> found[0], [(f.detector, f.kind) for f in found[1]]
    ([], [('flatline', 'sensor_off')])
    """

    def __init__(self, reference: list[int] | None = None) -> None:
        names = _rules().names
        self.columns: dict[str, int] = {name: index for index, name in enumerate(names)}
        fields = _bed_fields()
        self._bed_dtype = np.dtype(
            [(name, dtype, shape) for name, (dtype, shape, _) in fields.items()], align=True
        )
        self._fresh = np.zeros(1, self._bed_dtype)
        for name, (_, _, fresh) in fields.items():
            self._fresh[name] = fresh
        if reference is not None:
            masses = np.asarray(reference, np.int64)
            if masses.shape != self._fresh["r_mass"][0].shape:
                raise DetectorError(
                    f"expected {self._fresh['r_mass'][0].size} reference masses, got {masses.size}"
                )
            if masses.min() < 0 or masses.max() > np.iinfo(np.uint16).max:
                raise DetectorError("reference masses must be between 0 and 65,535")
            self._fresh["r_mass"] = masses
            self._fresh["first_window"] = False
            reference = masses.tolist()
        self.reference = reference
        self._beds = np.zeros(0, self._bed_dtype)
        self._free: list[int] = []  # released slots, reused first
        self._slots = 0  # slots ever handed out: [0, _slots)
        #: The columns of the concepts of a sample, by its concepts in order (see rows).
        self._layouts: dict[tuple[str, ...], tuple[int, ...]] = {}

    def new_bed(self) -> int:
        """A slot with fresh detectors, as ``BedDetectors.from_model`` gives a new bed."""
        if self._free:
            slot = self._free.pop()
        else:
            slot = self._slots
            self._slots += 1
            if slot >= len(self._beds):  # doubling: amortised O(1) per bed
                grown = np.zeros(max(8, 2 * len(self._beds)), self._bed_dtype)
                grown[: len(self._beds)] = self._beds
                self._beds = grown
        self._beds[slot] = self._fresh[0]
        self._beds[slot]["live"] = True
        return slot

    def release(self, slot: int) -> None:
        """Forget a bed: its slot goes to a later :meth:`new_bed`, with fresh detectors."""
        if not 0 <= slot < self._slots or not self._beds[slot]["live"]:
            raise DetectorError(f"slot {slot} holds no bed")
        self._beds[slot]["live"] = False
        self._free.append(slot)

    def process(self, slots: np.ndarray, values: np.ndarray) -> list[list[Finding]]:
        """Judge, then learn, a batch of samples in row order.

        Parameters
        ----------
        slots
            The bed of each row (int64, one per row); a bed may come back in later rows,
            its next samples.
        values
            The samples, float64 of shape ``(rows, len(columns))``; NaN: not in the sample.

        Returns
        -------
        list[list[Finding]]
            For each row, what ``BedDetectors.process`` returns for that sample.
        """
        rules = _rules()
        slots = np.ascontiguousarray(slots, np.int64)
        values = np.ascontiguousarray(values, np.float64)
        if values.shape != (len(slots), len(self.columns)):
            raise DetectorError(
                f"expected values of shape ({len(slots)}, {len(self.columns)}), got {values.shape}"
            )
        found: list[list[Finding]] = [[] for _ in range(len(slots))]
        # Room for the findings of a typical batch; the loop stops before a row that might
        # not fit, and goes on from there.
        out_int = np.empty((len(slots) // 4 + rules.max_findings, _AUX + _N_AUX), np.int64)
        out_float = np.empty((len(out_int), 3), np.float64)
        start = 0
        while start < len(slots):
            stop, count = _process_rows(
                rules.record, self._beds, slots, values, start, out_int, out_float
            )
            if stop < 0:
                raise DetectorError(f"row {-stop - 1}: slot {slots[-stop - 1]} holds no bed")
            if count:
                self._findings(values, out_int[:count].tolist(), out_float[:count].tolist(), found)
            start = stop
        return found

    def process_one(self, slot: int, x: dict[str, float]) -> list[Finding]:
        """:meth:`process` of one sample ``{concept: value}`` of the bed in ``slot``."""
        return self.process(np.array([slot], np.int64), self.rows([x]))[0]

    def rows(self, samples: Iterable[Mapping[str, float]]) -> np.ndarray:
        """The ``values`` of :meth:`process` for samples ``{concept: value}``: one row
        each, NaN where a column's concept is absent; concepts without detectors are
        left out.

        >>> ward = WardDetectors()
        >>> rows = ward.rows([{"spo2": 97.0, "no_such_concept": 1.0}, {}])
        >>> float(rows[0, ward.columns["spo2"]]), int((~np.isnan(rows)).sum())
        (97.0, 1)
        """
        layouts = self._layouts
        values: list[float] = []
        columns: list[int] = []
        counts: list[int] = []
        first: tuple[int, ...] | None = None
        alike = True  # every sample has the concepts of the first, in its order
        for sample in samples:
            keys = tuple(sample)
            layout = layouts.get(keys)
            if layout is None:  # a sample's concepts, in its order: seen once per source
                if len(layouts) >= _MAX_LAYOUTS:
                    layouts.clear()
                layout = layouts[keys] = tuple(self.columns.get(key, -1) for key in keys)
            if first is None:
                first = layout
            elif layout is not first:
                alike = False
            columns.extend(layout)
            values.extend(sample.values())
            counts.append(len(layout))
        matrix = np.full((len(counts), len(self.columns)), np.nan)
        if alike and first and min(first) >= 0:  # the usual wave: one source's samples
            matrix[:, first] = np.array(values).reshape(len(counts), len(first))
        elif values:
            cells = np.array(columns, np.int64)
            rows = np.repeat(np.arange(len(counts)), counts)
            known = cells >= 0
            if known.all():
                matrix[rows, cells] = values
            else:
                matrix[rows[known], cells[known]] = np.array(values, np.float64)[known]
        return matrix

    def _findings(
        self,
        values: np.ndarray,
        ints: list[list[int]],
        floats: list[list[float]],
        found: list[list[Finding]],
    ) -> None:
        """The Findings of what the loop flagged, appended to their rows' lists."""
        rules = _rules()
        names, forest, n_trees = rules.names, rules.forest, rules.n_trees
        pressures: dict[int, dict[str, str]] = {}  # row -> pressure_order_of_signals
        for finding_ints, (score, median, residual) in zip(ints, floats, strict=True):
            row, detector, column, kind, aux = (*finding_ints[:_AUX], finding_ints[_AUX:])
            finding: Finding
            if detector == _MULTIVARIATE:  # no column: the finding picks its vital
                stops, present_bits = aux[:n_trees], aux[n_trees]
                present = {
                    name: float(values[row, self.columns[name]])
                    for feature, name in enumerate(forest.names)
                    if present_bits >> feature & 1
                }
                isolating = forest.stop_features(stops)
                found[row].append(multivariate_finding(present, isolating, score, rules.threshold))
                continue
            concept = names[column]
            value = float(values[row, column])
            if detector == _PLAUSIBILITY and aux[0] == 0:
                check = check_value(concept, value)
                assert check is not None, (concept, value)
                finding = Finding(Plausibility.name, concept, value, *check)
            elif detector == _PLAUSIBILITY:
                if row not in pressures:
                    pressures[row] = pressure_order_of_signals(
                        signals(self._sample(values[row], PRESSURE_CONCEPTS))
                    )
                detail = pressures[row][concept]
                finding = Finding(Plausibility.name, concept, value, "implausible", 1.0, detail)
            elif detector == _FLATLINE and kind == _SENSOR_OFF:
                off = sensor_off(concept, value)
                assert off is not None, (concept, value)
                finding = Finding(Flatline.name, concept, value, *off)
            elif detector == _FLATLINE:
                finding = flatline_finding(concept, value, aux[0], rules.repeats[concept])
            elif detector == _ROBUST_SPIKE:
                finding = spike_finding(
                    concept, value, score, median, aux[0], aux[1], rules.step_run
                )
            else:
                relation = rules.relations[aux[0]]
                inputs = tuple(float(values[row, self.columns[c]]) for c in relation.concepts)
                finding = relation_finding(
                    relation, aux[2], inputs, score, residual, median, aux[1]
                )
            assert finding.kind == KINDS[kind], (finding, KINDS[kind])  # loop and rules agree
            found[row].append(finding)

    def _sample(self, row: np.ndarray, concepts: tuple[str, ...]) -> dict[str, float]:
        """The values of ``concepts`` in a row, as a sample."""
        sample = {}
        for concept in concepts:
            value = float(row[self.columns[concept]])
            if value == value:  # not NaN
                sample[concept] = value
        return sample

    # A pickle holds the beds' state, field by field, and their windows in arrival order
    # only; the rules and the trees' splits are rebuilt (the same in any process).
    def __getstate__(self) -> dict[str, Any]:
        beds = {
            name: self._beds[name][: self._slots].copy()
            for name in self._bed_dtype.names or ()
            if name not in _ORDERED
        }
        return {"reference": self.reference, "free": self._free, "slots": self._slots, "beds": beds}

    def __setstate__(self, state: dict[str, Any]) -> None:
        WardDetectors.__init__(self, state["reference"])
        self._free = list(state["free"])
        self._slots = state["slots"]
        self._beds = np.zeros(self._slots, self._bed_dtype)
        for name, saved in state["beds"].items():
            self._beds[name] = saved
        for ordered, window in _ORDERED.items():
            recent = self._beds[f"{window}_recent"]
            head, count = self._beds[f"{window}_head"], self._beds[f"{window}_count"]
            target = self._beds[ordered]
            for index in np.ndindex(count.shape):
                n = count[index]
                arrival = np.roll(recent[index], -head[index])[:n]
                # stable, as SortedWindow rebuilds its sorted copy from a pickle
                target[index][:n] = np.sort(arrival, kind="stable")


#: Sample layouts remembered by :meth:`WardDetectors.rows` (a source's concepts come in
#: the same order, record after record; a stream of ever-new orders only costs time).
_MAX_LAYOUTS: Final = 1024

#: The concepts of the pressure triplets (their order is checked together).
PRESSURE_CONCEPTS: Final = tuple(c for triplet in PRESSURE_TRIPLETS for c in triplet)


# --- the compiled loop -----------------------------------------------------------------


@numba.njit(cache=True, inline="always")
def _median_of_sorted(values: np.ndarray, n: int) -> float:
    """``robust_spike.median_of_sorted`` of ``values[:n]``."""
    middle = n // 2
    if n % 2:
        return values[middle]
    return (values[middle - 1] + values[middle]) / 2


@numba.njit(cache=True, inline="always")
def _hampel(
    ordered: np.ndarray,
    n: int,
    value: float,
    k: float,
    floor: float,
    mad_to_sd: float,
    scratch: np.ndarray,
) -> tuple[float, float]:
    """``robust_spike.hampel(ordered[:n], value, k, floor, exact=False)``."""
    median = _median_of_sorted(ordered, n)
    distance = abs(value - median)
    if distance < k * floor:
        return 0.0, median
    # |v - median| of sorted values, sorted: insertion sort (windows are short and this
    # runs only for values far from the median)
    for i in range(n):
        deviation = abs(ordered[i] - median)
        j = i
        while j > 0 and scratch[j - 1] > deviation:
            scratch[j] = scratch[j - 1]
            j -= 1
        scratch[j] = deviation
    mad = _median_of_sorted(scratch, n)
    scale = mad_to_sd * mad
    if floor > scale:  # Python's max(scale, floor) keeps the first of equals
        scale = floor
    return distance / (k * scale), median


@numba.njit(cache=True, inline="always")
def _append(recent: np.ndarray, ordered: np.ndarray, count: int, head: int, value: float):
    """``SortedWindow.append``: the ring of the last readings and its sorted copy, kept as
    ``bisect`` keeps it (the oldest out at ``bisect_left``, the new one in at
    ``bisect_right`` of the rest), moving only the values between the two places.
    Returns the new (count, head)."""
    size = len(recent)
    if count < size:  # filling up: the ring starts at 0
        recent[count] = value
        i = count
        while i > 0 and ordered[i - 1] > value:
            ordered[i] = ordered[i - 1]
            i -= 1
        ordered[i] = value
        return count + 1, head
    oldest = recent[head]
    recent[head] = value
    head = head + 1 if head + 1 < size else 0
    low, high = 0, size  # bisect_left(ordered, oldest)
    while low < high:
        middle = (low + high) >> 1
        if ordered[middle] < oldest:
            low = middle + 1
        else:
            high = middle
    i = low
    if i > 0 and ordered[i - 1] > value:  # the new value goes below the hole
        while i > 0 and ordered[i - 1] > value:
            ordered[i] = ordered[i - 1]
            i -= 1
    else:
        while i + 1 < size and ordered[i + 1] <= value:
            ordered[i] = ordered[i + 1]
            i += 1
    ordered[i] = value
    return count, head


@numba.njit(cache=True, inline="always")
def _emit(out_int, out_float, m, row, detector, column, kind, score):
    """Start the m-th finding; the caller fills its AUX and floats."""
    out_int[m, _ROW] = row
    out_int[m, _DETECTOR] = detector
    out_int[m, _COLUMN] = column
    out_int[m, _KIND] = kind
    out_float[m, _SCORE] = score
    return m + 1


@numba.njit(cache=True, inline="always")
def _plausibility(rules, x, usable, flagged, row, out_int, out_float, m):
    """Plausibility (and which values are usable: ``rules.signals``)."""
    for c in range(len(x)):
        value = x[c]
        usable[c] = False
        flagged[c] = False
        if value != value:  # NaN: not in the sample
            continue
        in_range = rules.low[c] <= value <= rules.high[c]
        unit_error = False
        for r in range(rules.unit_low.shape[1]):
            if rules.unit_low[c, r] <= value <= rules.unit_high[c, r]:
                unit_error = True
        off = (
            rules.reads_zero_when_off[c] != 0
            and -rules.sensor_off_below < value < rules.sensor_off_below
        )
        usable[c] = in_range and not unit_error and not off
        # rules.check_value; Python asks it for the score and the detail
        if unit_error:
            m = _emit(out_int, out_float, m, row, _PLAUSIBILITY, c, _UNIT_ERROR, 1.0)
            out_int[m - 1, _AUX] = 0
        elif not in_range:
            m = _emit(out_int, out_float, m, row, _PLAUSIBILITY, c, _IMPLAUSIBLE, np.nan)
            out_int[m - 1, _AUX] = 0
    # rules.pressure_order_of_signals; its findings after those of single values
    for t in range(rules.pressure_triplets.shape[0]):
        systolic, mean, diastolic = rules.pressure_triplets[t]
        has_sys, has_mean, has_dia = usable[systolic], usable[mean], usable[diastolic]
        sys_value, mean_value, dia_value = x[systolic], x[mean], x[diastolic]
        broken_sys = broken_mean = broken_dia = False
        if has_sys and has_dia and dia_value > sys_value:
            if not has_mean or sys_value < mean_value < dia_value:
                broken_sys = broken_dia = True
            elif mean_value >= dia_value:
                broken_sys = True
            else:
                broken_dia = True
        elif has_mean and (
            (has_sys and mean_value > sys_value) or (has_dia and mean_value < dia_value)
        ):
            broken_mean = True
        for column, broken in (
            (systolic, broken_sys),
            (diastolic, broken_dia),
            (mean, broken_mean),
        ):
            if broken:
                m = _emit(out_int, out_float, m, row, _PLAUSIBILITY, column, _IMPLAUSIBLE, 1.0)
                out_int[m - 1, _AUX] = 1
                flagged[column] = True
    return m


@numba.njit(cache=True, inline="always")
def _flatline(rules, bed, x, usable, flagged, row, out_int, out_float, m):
    """Flatline: runs of identical usable readings, and sensor-off zeros."""
    for c in range(len(x)):
        value = x[c]
        if value != value:
            continue
        if usable[c]:
            f = rules.flat_index[c]
            if f < 0:
                continue
            run = bed.flat_run[f]
            run = run + 1 if run > 0 and bed.flat_last[f] == value else 1
            bed.flat_last[f] = value
            bed.flat_run[f] = run
            if run >= rules.flat_repeats[f]:
                m = _emit(out_int, out_float, m, row, _FLATLINE, c, _FLATLINE_RUN, 0.0)
                out_int[m - 1, _AUX] = run
                flagged[c] = True
        elif (
            rules.reads_zero_when_off[c] != 0
            and -rules.sensor_off_below < value < rules.sensor_off_below
        ):
            m = _emit(out_int, out_float, m, row, _FLATLINE, c, _SENSOR_OFF, 1.0)
    return m


@numba.njit(cache=True, inline="always")
def _robust_spike(rules, bed, x, usable, flagged, row, out_int, out_float, m, scratch):
    """RobustSpike: each usable reading against the window of its previous ones."""
    for c in range(len(x)):
        k = rules.spike_index[c]
        if not usable[c] or k < 0:
            continue
        value = x[c]
        count = bed.spike_count[k]
        score, median, run = 0.0, value, 0
        if count >= rules.spike_min_periods:
            score, median = _hampel(
                bed.spike_ordered[k],
                count,
                value,
                rules.spike_k,
                rules.spike_floor[k],
                rules.mad_to_sd,
                scratch,
            )
            if score >= 1.0:
                side = 1 if value > median else -1
                before = bed.spike_run[k]
                run = before + side if before * side > 0 else side
                kind = _STEP if abs(run) >= rules.step_run else _SPIKE
                m = _emit(out_int, out_float, m, row, _ROBUST_SPIKE, c, kind, score)
                out_int[m - 1, _AUX] = run
                out_int[m - 1, _AUX + 1] = count
                out_float[m - 1, _MEDIAN] = median
                flagged[c] = True
        bed.spike_count[k], bed.spike_head[k] = _append(
            bed.spike_recent[k], bed.spike_ordered[k], count, bed.spike_head[k], value
        )
        bed.spike_run[k] = run
    return m


@numba.njit(cache=True, inline="always")
def _consistency(rules, bed, x, usable, flagged, row, out_int, out_float, m, scratch, values):
    """Consistency: each relation whose vitals are all usable and unflagged (``values``:
    room for their values); one finding per blamed vital, then learning."""
    start = m
    for r in range(len(rules.relation_floor)):
        size = 0
        complete = True
        for v in range(3):
            c = rules.relation_columns[r, v]
            if c < 0:
                break
            if not usable[c] or flagged[c]:
                complete = False
                break
            values[v] = x[c]
            size += 1
        if not complete:
            continue
        if rules.relation_is_mean[r] != 0:  # rules._mean_residual(systolic, mean, diastolic)
            residual = values[1] - (values[2] + (values[0] - values[2]) / 3)
        else:
            residual = values[0] - values[1]
        count = bed.relation_count[r]
        score, median = 0.0, residual
        if count >= rules.relation_min_periods:
            score, median = _hampel(
                bed.relation_ordered[r],
                count,
                residual,
                rules.relation_k,
                rules.relation_floor[r],
                rules.mad_to_sd,
                scratch,
            )
        if score >= 1.0:
            # consistency.blame: the vital that moved most since the last unflagged sample
            blamed, most = 0, -1.0
            for v in range(size):
                before = bed.relation_last[r, v] if bed.relation_has_last[r] != 0 else values[v]
                moved = abs(values[v] - before) / rules.relation_blame_scale[r, v]
                if moved > most:
                    blamed, most = v, moved
            column = rules.relation_columns[r, blamed]
            # one finding per blamed vital: the highest score, the first relation on ties
            at = m
            for i in range(start, m):
                if out_int[i, _COLUMN] == column:
                    at = i
            if at == m or score > out_float[at, _SCORE]:
                _emit(out_int, out_float, at, row, _CONSISTENCY, column, _COMBINATION, score)
                out_int[at, _AUX] = r
                out_int[at, _AUX + 1] = count
                out_int[at, _AUX + 2] = blamed
                out_float[at, _MEDIAN] = median
                out_float[at, _RESIDUAL] = residual
                if at == m:
                    m += 1
        # Consistency._learn
        run = bed.relation_flagged_run[r] + 1 if score >= 1.0 else 0
        bed.relation_flagged_run[r] = run
        if score < 1.0 or run > rules.relation_patience:
            bed.relation_count[r], bed.relation_head[r] = _append(
                bed.relation_recent[r],
                bed.relation_ordered[r],
                count,
                bed.relation_head[r],
                residual,
            )
            for v in range(size):
                bed.relation_last[r, v] = values[v]
            bed.relation_has_last[r] = 1
    for i in range(start, m):
        flagged[out_int[i, _COLUMN]] = True
    return m


@numba.njit(cache=True, inline="always")
def _multivariate(rules, bed, x, usable, flagged, row, out_int, out_float, m, work):
    """Multivariate: the usable, unflagged vitals and the carried ones through the trees."""
    n_features = len(rules.feature_low)
    vector, present, path, stops = work
    present_bits = 0
    any_present = False
    for f in range(n_features):
        present[f] = False
        vector[f] = np.nan  # missing: the busier branch
    for c in range(len(x)):
        f = rules.feature_index[c]
        if f >= 0 and usable[c] and not flagged[c]:
            present[f] = True
            present_bits |= 1 << f
            any_present = True
            vector[f] = (x[c] - rules.feature_low[f]) / rules.feature_width[f]
    if not any_present:
        return m
    for f in range(n_features):
        if not present[f] and bed.carried_age[f] >= 0:
            vector[f] = (bed.carried[f] - rules.feature_low[f]) / rules.feature_width[f]
    # CompactHalfSpaceTrees.score_path: every tree's walk, and its score from the
    # reference masses down to where they get too small
    l_mass, r_mass = bed.l_mass, bed.r_mass
    first_window = bed.first_window
    nodes, height = rules.nodes_per_tree, rules.height
    total = 0.0
    for t in range(rules.n_trees):
        node = t * nodes
        for level in range(height):
            path[t * (height + 1) + level] = node
            # heap order within a tree: the left child of its i-th node is its 2i+1-th
            left = node + (node - t * nodes) + 1
            value = vector[rules.tree_feature[node]]
            if value != value:
                node = left + 1 if l_mass[left] < l_mass[left + 1] else left
            else:
                node = left if value < rules.tree_threshold[node] else left + 1
        path[t * (height + 1) + height] = node
        if not first_window:
            tree_total = 0
            depth_pow = 1
            for level in range(height + 1):
                node = path[t * (height + 1) + level]
                mass = r_mass[node]
                tree_total += mass * depth_pow
                if mass < rules.size_limit:
                    break
                depth_pow <<= 1
            total += tree_total
            stops[t] = node
    score = 0.0 if first_window else 1.0 - total / rules.mass_denominator
    if score >= rules.hst_threshold:
        m = _emit(out_int, out_float, m, row, _MULTIVARIATE, -1, _COMBINATION, score)
        for t in range(rules.n_trees):
            out_int[m - 1, _AUX + t] = stops[t]
        out_int[m - 1, _AUX + rules.n_trees] = present_bits
    # Multivariate._protects: flagged samples are neither learned nor carried
    if score < rules.hst_threshold:
        bed.hst_flagged_run = 0
        protected = False
    else:
        bed.hst_flagged_run += 1
        protected = rules.protect and bed.hst_flagged_run <= rules.hst_patience
    if protected:
        return m
    for i in range(len(path)):  # CompactHalfSpaceTrees.learn_path
        l_mass[path[i]] += 1
    bed.tree_counter += 1
    if bed.tree_counter == rules.tree_window:
        r_mass[:] = l_mass
        l_mass[:] = 0
        bed.first_window = False
        bed.tree_counter = 0
    for f in range(n_features):  # Multivariate._carry
        if present[f]:
            bed.carried[f] = x[rules.feature_column[f]]
            bed.carried_age[f] = 0
        elif bed.carried_age[f] >= 0:
            bed.carried_age[f] += 1
            if bed.carried_age[f] > rules.carry:
                bed.carried_age[f] = -1
    return m


@numba.njit(cache=True)
def _process_rows(rules, beds, slots, values, start, out_int, out_float):
    """Run every bed's detectors over ``values[start:]`` (a row: a sample of the bed in
    that row of ``slots``), writing what they flag to ``out_int`` and ``out_float``.

    Returns (the row to go on from, findings written): it stops before a row whose
    findings might not fit. (-1 - row, 0) if that row's slot holds no bed; then
    nothing is processed.
    """
    for row in range(start, len(slots)):
        s = slots[row]
        if s < 0 or s >= len(beds) or not beds[s].live:
            return -1 - row, 0
    rules = rules[0]
    n_columns = values.shape[1]
    usable = np.zeros(n_columns, np.bool_)
    flagged = np.zeros(n_columns, np.bool_)
    scratch = np.empty(max(beds.spike_recent.shape[-1], beds.relation_recent.shape[-1]))
    n_features = len(rules.feature_low)
    relation_values = np.empty(rules.relation_columns.shape[1])
    tree_work = (
        np.empty(n_features),
        np.zeros(n_features, np.bool_),
        np.empty(rules.n_trees * (rules.height + 1), np.int64),
        np.empty(rules.n_trees, np.int64),
    )
    m = 0
    for row in range(start, len(slots)):
        if m + rules.max_findings > len(out_int):
            return row, m
        bed = beds[slots[row]]
        x = values[row]
        # BedDetectors.process: the per-value detectors on the whole sample, then the
        # multivariate ones on the values none before them flagged
        m = _plausibility(rules, x, usable, flagged, row, out_int, out_float, m)
        m = _flatline(rules, bed, x, usable, flagged, row, out_int, out_float, m)
        m = _robust_spike(rules, bed, x, usable, flagged, row, out_int, out_float, m, scratch)
        m = _consistency(
            rules, bed, x, usable, flagged, row, out_int, out_float, m, scratch, relation_values
        )
        m = _multivariate(rules, bed, x, usable, flagged, row, out_int, out_float, m, tree_work)
    return len(slots), m
