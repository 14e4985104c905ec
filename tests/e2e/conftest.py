"""The end-to-end suite (`make e2e`): a real Collector and a real Jaeger v2, built pinned from the Go
module proxy by scripts/otel-build.sh, and real otelprobe processes.

It is collected only when OTELPROBE_E2E=1 (as `make e2e` sets), so `make test` neither runs nor
counts it. Without Go (and without cached binaries) every test skips, saying so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.e2e_stack import Binaries, GoMissing, locate_binaries

if os.environ.get("OTELPROBE_E2E") != "1":
    collect_ignore_glob = ["test_*.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def binaries() -> Binaries:
    try:
        return locate_binaries()
    except GoMissing as missing:
        pytest.skip(f"no Go toolchain to build the Collector and Jaeger ({missing})")
