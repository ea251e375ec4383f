"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bedside.replay.tansu import BrokerError, TansuBroker


@pytest.fixture
def kafka_broker() -> Iterator[str]:
    """A fresh in-memory Kafka-protocol broker (Tansu) for one test: its bootstrap servers.

    It starts in well under a second, so every test gets its own topics, empty.
    """
    try:
        broker = TansuBroker.start()
    except BrokerError as error:
        pytest.skip(f"no test broker: {error}")
    with broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def engine_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TSFEL + logistic regression survival model trained on 200 simulated stays (seconds)."""
    from bedside.cli import main

    root = tmp_path_factory.mktemp("engine-model")
    assert (
        main(["data", "simulate", "--stays", "200", "--seed", "3", "--out", str(root / "d")]) == 0
    )
    args = ["train", "survival", "--data", str(root / "d"), "--arch", "tsfel-lr"]
    assert main([*args, "--out", str(root / "m")]) == 0
    return root / "m"
