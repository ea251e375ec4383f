"""docker-compose.yml cannot run here (no Docker engine): check it against the code instead."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from bedside.cli import build_parser
from bedside.engine.settings import EngineSettings
from bedside.schemas.messages import TOPICS
from bedside.settings import KafkaSettings
from bedside.ward.audit import AuditSettings

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


def load() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(COMPOSE.read_text())


def test_kafka_runs_in_kraft_mode_with_a_health_check() -> None:
    kafka = load()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert "healthcheck" in kafka and any("kafka-data" in v for v in kafka["volumes"])


def test_the_topic_job_creates_exactly_the_schema_topics() -> None:
    job = load()["services"]["kafka-topics"]
    assert job["depends_on"]["kafka"]["condition"] == "service_healthy"
    created = job["environment"]["BEDSIDE_TOPICS"].split()
    assert sorted(created) == sorted(TOPICS)


def _bedside_commands(service: dict) -> list[list[str]]:  # type: ignore[type-arg]
    """The bedside command lines a service runs (directly or in its bash script)."""
    command = service["command"]
    if command[0] == "bedside":
        return [[str(part) for part in command]]
    script = command[-1]
    return [
        shlex.split(line.strip())
        for line in script.splitlines()
        if line.strip().startswith("bedside ")
    ]


def test_every_bedside_service_runs_a_command_the_cli_accepts() -> None:
    services = load()["services"]
    ours = {name: s for name, s in services.items() if s.get("image") == "bedside:latest"}
    assert {"engine", "replay", "model-init", "ward"} <= set(ours)
    parser = build_parser()
    for name, service in ours.items():
        commands = _bedside_commands(service)
        assert commands, name
        for command in commands:
            args = parser.parse_args(command[1:])  # exits (fails the test) on a bad option
            assert args.handler, name


def test_services_are_configured_with_real_settings() -> None:
    known = {f"BEDSIDE_KAFKA_{f.upper()}" for f in KafkaSettings.model_fields}
    known |= {f"BEDSIDE_ENGINE_{f.upper()}" for f in EngineSettings.model_fields}
    known |= {f"BEDSIDE_AUDIT_{f.upper()}" for f in AuditSettings.model_fields}
    services = load()["services"]
    for name, service in services.items():
        for variable in service.get("environment", {}):
            if variable.startswith("BEDSIDE_") and variable not in (
                "BEDSIDE_PARTITIONS",
                "BEDSIDE_TOPICS",
            ):
                assert variable in known, (name, variable)
    engine = services["engine"]
    assert any(v.endswith(":/var/lib/bedside/recovery") for v in engine["volumes"])
    assert engine["depends_on"]["kafka-topics"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in engine
    # The engine's model is the one model-init writes, in the shared volume.
    assert "/models/current" in engine["command"]
    assert "--out /models/current" in services["model-init"]["command"][-1]


def test_the_image_holds_every_package_of_the_project() -> None:
    import tomllib

    root = COMPOSE.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())
    folders = {path.split("/")[0] for path in project["tool"]["setuptools"]["package-dir"].values()}
    dockerfile = (root / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert folders - {"."} <= copied
    assert "torch" not in dockerfile or "whl/cpu" in dockerfile  # never the CUDA wheels


def test_the_ward_page_records_alerts_in_the_audit_database() -> None:
    services = load()["services"]
    ward, database = services["ward"], services["audit-db"]
    assert ward["environment"]["BEDSIDE_AUDIT_DB"].startswith("postgresql+psycopg://")
    assert ward["depends_on"]["audit-db"]["condition"] == "service_healthy"
    assert "healthcheck" in database and "healthcheck" in ward
    assert any(v.endswith(":/var/lib/postgresql/data") for v in database["volumes"])
    # Published on the host's loopback only: the page has no login of its own.
    assert all(port.startswith("127.0.0.1:") for port in ward["ports"])
