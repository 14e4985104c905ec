"""Shared fixtures: environment hygiene, a throwaway certificate authority and the lab CA."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from otelprobe.lab.certs import LabCA
from tests.support.shipped_tables import build_shipped_tables, table_cache_dir


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what importing and collecting built, as the runtime does after start-up.

    Full GC passes then scan only what tests allocate: over every imported module they took
    60-100 ms, and one landing inside a timing test delays its in-process server's answer.
    """
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def clean_environ() -> Iterator[None]:
    """Tests never see the host's proxy or CA settings, and leave the environment as they found it."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.lower() in {
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "no_proxy",
            "ssl_cert_file",
            "ssl_cert_dir",
        }:
            del os.environ[key]
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def xdg_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An XDG_CACHE_HOME for the whole session: the window-table cache of the notebooks and of the
    tests that read the shipped campaigns (built once, read by the others; ~/.cache untouched)."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(scope="session")
def shipped_table_cache(xdg_cache_home: Path) -> Path:
    """The session's window-table cache with every shipped campaign's table already in it
    (tests/support/shipped_tables.py: built once, two processes at once)."""
    cache = table_cache_dir(xdg_cache_home)
    build_shipped_tables(cache)
    return cache


@pytest.fixture(scope="session")
def cert_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def lab_ca() -> LabCA:
    """The lab CA (lab/certs.py): root, intermediate and one leaf per LeafKind; one per module."""
    return LabCA()


@pytest.fixture
def lab_ca_file(lab_ca: LabCA, tmp_path: Path) -> str:
    """The lab CA's root certificate as a PEM file, for a client's `ca_file`."""
    path = tmp_path / "ca.pem"
    path.write_bytes(lab_ca.root_pem)
    return str(path)
