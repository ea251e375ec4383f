"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator

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
