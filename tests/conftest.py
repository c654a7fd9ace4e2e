"""Shared fixtures.

chdb can open ONE data path per process, so the whole test session shares one
embedded ClickHouse directory (``chdb_path``); tests isolate themselves by database
(``embedded_store`` gives each test a fresh one and drops it afterwards).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshloop.store.embedded import EmbeddedStore


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one embedded ClickHouse directory of this test process."""
    return tmp_path_factory.mktemp("chdb")


def unique_database(name: str) -> str:
    """A database name unique to this test (letters, digits, underscores)."""
    return "t_" + re.sub(r"\W", "_", name)[:40] + "_" + uuid.uuid4().hex[:8]


@pytest.fixture
def embedded_store(chdb_path: Path, request: pytest.FixtureRequest) -> Iterator[EmbeddedStore]:
    """An EmbeddedStore on the shared path with a fresh database, dropped afterwards."""
    store = EmbeddedStore(chdb_path, database=unique_database(request.node.name))
    yield store
    store.command(f"DROP DATABASE IF EXISTS {store.database} SYNC")
    store.close()
