"""Numerics derived from waveform chunks, so that a bed with only waveforms is scored.

Each waveform signal of a bed keeps its last ``window_s`` seconds. Once that much new
signal has arrived, the window is checked and, if good enough, turned into the numerics
the concept dictionary says it derives (``derives`` in ``concepts.toml``):

* ECG: heart rate from QRS complexes found by ``wfdb.processing.xqrs_detect``
  (60 / mean RR of the plausible intervals, ``wfdb.processing.calc_mean_hr``);
* PLETH: pulse rate from the pulse peaks (``scipy.signal.find_peaks``, at most 4 Hz);
* ABP / PAP: systolic and diastolic as the median peak and trough, mean as the average;
  CVP: the average;
* RESP: respiratory rate from breath peaks (at most 1.5 Hz).

Signal quality comes first: a window more than 30 % missing, or flat (no variation:
the sensor is off or disconnected), or where too few beats are found, yields nothing
and the reason is counted. The derived values then go through the bed's detectors like
any monitor value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bedside.schemas.concepts import load_concepts

#: Most missing share of a window that still gives a derived value.
MAX_MISSING = 0.3


@dataclass
class SignalBuffer:
    """The recent samples of one waveform signal (float32, NaN = missing sample)."""

    fs: float
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    #: Samples received since the last derivation.
    fresh: int = 0
    #: Time (seconds since the epoch) just after the last sample.
    end_s: float = 0.0


def _rate_from_peaks(signal: np.ndarray, fs: float, max_hz: float, prominence: float) -> float:
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(signal, distance=max(1, int(fs / max_hz)), prominence=prominence)
    if len(peaks) < 3:
        raise ValueError("too few peaks")
    return float(60.0 * fs / np.mean(np.diff(peaks)))


def _heart_rate(signal: np.ndarray, fs: float) -> dict[str, float]:
    import wfdb.processing

    qrs = wfdb.processing.xqrs_detect(signal.astype(np.float64), fs, verbose=False)
    if len(qrs) < 3:
        raise ValueError("too few QRS complexes")
    rate = wfdb.processing.calc_mean_hr(np.diff(qrs), fs=fs, min_rr=0.2 * fs, max_rr=3.0 * fs)
    if not np.isfinite(rate):
        raise ValueError("no plausible RR interval")
    return {"heart_rate": float(rate)}


def _pulse_rate(signal: np.ndarray, fs: float) -> dict[str, float]:
    spread = float(np.percentile(signal, 95) - np.percentile(signal, 5))
    return {"pulse_rate": _rate_from_peaks(signal, fs, 4.0, 0.3 * spread)}


def _respiratory_rate(signal: np.ndarray, fs: float) -> dict[str, float]:
    spread = float(np.percentile(signal, 95) - np.percentile(signal, 5))
    return {"respiratory_rate": _rate_from_peaks(signal, fs, 1.5, 0.3 * spread)}


def _pressures(names: list[str]) -> Callable[[np.ndarray, float], dict[str, float]]:
    def derive(signal: np.ndarray, fs: float) -> dict[str, float]:
        from scipy.signal import find_peaks

        mean = float(np.mean(signal))
        if len(names) == 1:
            return {names[0]: mean}
        spread = float(np.percentile(signal, 95) - np.percentile(signal, 5))
        distance = max(1, int(fs / 4.0))
        peaks, _ = find_peaks(signal, distance=distance, prominence=0.3 * spread)
        troughs, _ = find_peaks(-signal, distance=distance, prominence=0.3 * spread)
        if len(peaks) < 3 or len(troughs) < 3:
            raise ValueError("too few beats")
        systolic, diastolic, mean_name = names
        return {
            systolic: float(np.median(signal[peaks])),
            diastolic: float(np.median(signal[troughs])),
            mean_name: mean,
        }

    return derive


Deriver = Callable[[np.ndarray, float], dict[str, float]]


def _derivers() -> dict[str, Deriver]:
    by_kind: dict[str, Deriver] = {
        "ecg": _heart_rate,
        "pleth": _pulse_rate,
        "respiration": _respiratory_rate,
    }
    derivers: dict[str, Deriver] = {}
    for name, waveform in load_concepts().waveforms.items():
        if waveform.kind in by_kind:
            derivers[name] = by_kind[waveform.kind]
        elif waveform.kind == "pressure":
            derivers[name] = _pressures(list(waveform.derives))
    return derivers


DERIVERS = _derivers()


def add_chunk(
    buffer: SignalBuffer, samples: list[float | None], start_s: float, window_s: float
) -> None:
    """Append a chunk, keeping the last ``window_s`` seconds."""
    chunk = np.array([np.nan if v is None else v for v in samples], dtype=np.float32)
    keep = max(1, round(window_s * buffer.fs))
    buffer.samples = np.concatenate([buffer.samples, chunk])[-keep:]
    buffer.fresh += len(chunk)
    buffer.end_s = max(buffer.end_s, start_s + len(chunk) / buffer.fs)


def derive(signal: str, buffer: SignalBuffer, window_s: float) -> tuple[dict[str, float], str]:
    """Derived numerics of a full, fresh window, with ``"ok"`` or why there are none.

    Returns ``({}, "waiting")`` until ``window_s`` seconds of new signal are in.
    """
    if buffer.fresh < window_s * buffer.fs or len(buffer.samples) < window_s * buffer.fs:
        return {}, "waiting"
    buffer.fresh = 0
    deriver = DERIVERS.get(signal)
    if deriver is None:
        return {}, "no_derivation"
    samples = buffer.samples
    missing = float(np.isnan(samples).mean())
    if missing > MAX_MISSING:
        return {}, "missing"
    values = samples[~np.isnan(samples)]
    if float(np.std(values)) < 1e-6 * max(1.0, float(np.abs(values).mean())):
        return {}, "flat"
    try:
        return deriver(values, buffer.fs), "ok"
    except ValueError:
        return {}, "no_beats"
