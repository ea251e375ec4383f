"""Anomaly detectors: online ones for a bed (River detectors), a batch API for tables.

Online, each detector *is* a River anomaly detector over one bed's current values
``{concept: value}`` (``learn_one`` / ``score_one``; a score of 1 or more is flagged)
that also says which values it flags and why (``explain_one`` -> :class:`Finding`):

==================  ======================================================  ===============
detector            flags                                                   kinds
==================  ======================================================  ===============
``plausibility``    values outside the concept dictionary's range, in a     implausible,
                    wrong unit, or breaking diastolic <= mean <= systolic   unit_error
``flatline``        a signal stuck at one reading; a sensor reading 0       flatline,
                                                                            sensor_off
``robust_spike``    a reading far from the median of the previous ones      spike, step
                    (Hampel filter)
``consistency``     vitals that stop agreeing (ECG vs oximeter rate; a      multivariate
                    pressure's systolic, mean and diastolic; arterial vs
                    cuff), tracked robustly, not learning what it flags
``multivariate``    an unusual combination of vitals (Half-Space Trees      multivariate
                    that do not learn what they flag)
==================  ======================================================  ===============

:data:`DETECTORS` registers them; :class:`BedDetectors` runs them all for one bed.
Offline, :func:`flag_events` flags values of a canonical events table, vectorised with
the same rules (:mod:`~bedside.training.detectors.rules`), and an Isolation Forest
(:mod:`~bedside.training.detectors.isolation_forest`) adds batch multivariate cleaning.
"""

from bedside.training.detectors.base import THRESHOLD, BedDetector, DetectorError, Finding
from bedside.training.detectors.batch import BATCH_DETECTORS, flag_events
from bedside.training.detectors.bed import DETECTORS, BedDetectors, samples
from bedside.training.detectors.consistency import Consistency
from bedside.training.detectors.flatline import Flatline
from bedside.training.detectors.half_space_trees import CompactHalfSpaceTrees
from bedside.training.detectors.multivariate import Multivariate
from bedside.training.detectors.plausibility import Plausibility
from bedside.training.detectors.robust_spike import RobustSpike

__all__ = [
    "BATCH_DETECTORS",
    "DETECTORS",
    "THRESHOLD",
    "BedDetector",
    "BedDetectors",
    "CompactHalfSpaceTrees",
    "Consistency",
    "DetectorError",
    "Finding",
    "Flatline",
    "Multivariate",
    "Plausibility",
    "RobustSpike",
    "flag_events",
    "samples",
]
