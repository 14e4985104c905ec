"""Helpers of the learning tests: a lab recording replayed over real OTLP/HTTP into a sidecar, and
its lab truth (labels.jsonl) to play the operator who confirms causes."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "data" / "lab"


def recording_lines(name: str) -> list[tuple[int, bytes]]:
    """(first span start ns, OTLP JSON request) per line of a lab recording, oldest first (as a
    Collector would forward them; in file order each vantage's batches run ahead of the others')."""
    found = []
    with gzip.open(LAB / name / "traces.jsonl.gz", "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            request = json.loads(line)
            start = min(
                int(span["startTimeUnixNano"])
                for resource in request["resourceSpans"]
                for scope in resource["scopeSpans"]
                for span in scope["spans"]
            )
            found.append((start, line.strip()))
    return sorted(found, key=lambda item: item[0])


async def replay(otlp_http: str, lines: list[tuple[int, bytes]], timeout_s: float = 120.0) -> int:
    """POST each request as OTLP/HTTP JSON; a 503 (queue full) is retried after a short pause."""
    deadline = time.monotonic() + timeout_s
    sent = 0
    async with aiohttp.ClientSession() as http:
        for _, body in lines:
            while True:
                async with http.post(
                    f"{otlp_http}/v1/traces", data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    if response.status == 200:
                        break
                    assert response.status == 503, await response.text()
                assert time.monotonic() < deadline, "the sidecar kept answering 503"
                await asyncio.sleep(0.05)
            sent += 1
    return sent


@dataclass(frozen=True)
class Fault:
    incident: int
    cause: str
    scope: str
    start_ns: int
    end_ns: int
    affected: frozenset[tuple[str, str]]


def faults(name: str) -> list[Fault]:
    found = []
    for line in (LAB / name / "labels.jsonl").read_text().splitlines():
        label: dict[str, Any] = json.loads(line)
        found.append(
            Fault(
                int(label["incident"]),
                str(label["cause"]),
                str(label["scope"]),
                int(label["start_unix_nano"]),
                int(label["end_unix_nano"]),
                frozenset((str(t), str(v)) for t, v in label["affected"]),
            )
        )
    return found


def ns(stamp: str | None) -> int | None:
    from datetime import datetime

    if stamp is None:
        return None
    return round(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1e9)


def members_under(incident: dict[str, Any], fault: Fault) -> list[dict[str, str]]:
    """The incident's member series that the fault affected while both were on."""
    found = []
    for member in incident["series"]:
        start, end = ns(member["start"]), ns(member["end"])
        assert start is not None
        overlaps = start < fault.end_ns and (end is None or end > fault.start_ns)
        if overlaps and (member["target"], member["vantage"]) in fault.affected:
            found.append({"target": member["target"], "vantage": member["vantage"]})
    return found
