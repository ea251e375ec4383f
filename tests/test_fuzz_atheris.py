"""Coverage-guided fuzzing with atheris (libFuzzer for Python), where it is installed.

Two targets, each fed raw bytes by libFuzzer:

* ``messages``: the bytes as a payload on every topic (``decode``) and through the
  engine's intake (``accept``, then ``dead_letter`` of what it rejects);
* ``wfdb``: the bytes as a WFDB header (the pure-Python parser of ``wfdb`` is where
  coverage guidance pays), opened and read as the replay does.

Anything but the documented errors is a crash: libFuzzer stops and writes the input to
``crash-*``. The test runs each target for a few thousand inputs in a subprocess
(atheris owns the process and exits when done), starting from valid inputs
(:func:`seeds`); for a long run, in a folder of its own (crashes are written there)::

    .venv/bin/python tests/test_fuzz_atheris.py messages -max_total_time=600 CORPUS/
    .venv/bin/python tests/test_fuzz_atheris.py wfdb -max_total_time=600 CORPUS/

atheris is not a dependency (its wheels cover Linux x86-64 only): ``pip install
atheris``. The test is skipped without it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Inputs per target in the test (a few seconds each: WFDB headers run ~300 a second).
RUNS = {"messages": 3000, "wfdb": 1000}


def messages_target(data: bytes) -> None:
    from bedside.engine.intake import Incoming, Rejected, accept, dead_letter
    from bedside.schemas.messages import DEADLETTER_TOPIC, TOPICS, MessageError, decode

    for topic in TOPICS:
        with contextlib.suppress(MessageError):
            decode(topic, data)
    result = accept(Incoming("icu.vitals.v1", data, None, 0, 0, None))
    if isinstance(result, Rejected):
        decode(DEADLETTER_TOPIC, dead_letter(result).value)


def wfdb_target(data: bytes) -> None:
    import itertools

    from bedside.replay.ward import ReplayError, ReplayWarning, Timeline, Ward
    from bedside.replay.wfdb_source import wfdb_beds

    with tempfile.TemporaryDirectory() as folder:
        record = Path(folder) / "rec"
        record.with_suffix(".hea").write_bytes(data)
        record.with_suffix(".dat").write_bytes(bytes(range(256)) * 8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ReplayWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            with contextlib.suppress(ReplayError):
                feeds = [bed.feed() for bed in wfdb_beds([record])]
                list(itertools.islice(Ward(feeds, Timeline(restamp=False)).messages(), 50))


TARGETS = {"messages": messages_target, "wfdb": wfdb_target}


def seeds(target: str) -> list[bytes]:
    """Valid inputs to start from: libFuzzer mutates them (random bytes rarely parse)."""
    if target == "messages":
        from tests.test_fuzz_messages import VALID, to_json

        return [to_json(message) for messages in VALID.values() for message in messages]
    return [
        b"rec 2 125 500 08:00:00 01/02/2150\n"
        b"rec.dat 16 200.0(0)/mV 16 0 0 92 0 II\nrec.dat 16 10.0(0)/mmHg 16 0 900 7381 0 ABP\n",
        b"rec 2 1 20 08:00:00 01/02/2150\n"
        b"rec.dat 16 10.0(0)/bpm 16 0 700 14400 0 HR\nrec.dat 16 10.0(0)/% 16 0 950 19190 0 SpO2\n",
        b"rec/3 2 125 1000 08:00:00.000 01/02/2150\nrec_layout 0\nrec 500\n~ 250\n",
        b"rec 1 0.0166666666667 10\nrec.dat 212 1(0)/bpm 12 0 0 0 0 HR\n# <age>: 71 <sex>: F\n",
    ]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_atheris_finds_no_crash(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for number, seed in enumerate(seeds(target)):
        (corpus / f"seed-{number}").write_bytes(seed)
    result = subprocess.run(
        [sys.executable, __file__, target, f"-runs={RUNS[target]}", "-seed=1", str(corpus)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    crashes = list(tmp_path.glob("crash-*"))
    assert result.returncode == 0 and not crashes, result.stderr[-3000:]


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["bedside", "wfdb"]):
        import bedside.engine.intake
        import bedside.replay.wfdb_source
        import bedside.schemas.messages  # noqa: F401
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
