"""Shared fixtures: environment hygiene and a throwaway certificate authority."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import trustme


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
def cert_authority() -> trustme.CA:
    return trustme.CA()
