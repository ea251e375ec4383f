"""docker-compose.yml cannot run here (no Docker engine): check it against the code instead."""

from __future__ import annotations

from pathlib import Path

import yaml

from bedside.schemas.messages import TOPICS

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
