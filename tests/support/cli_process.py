"""The CLI run as a user runs it: `python -m otelprobe.cli ARGS` in a subprocess."""

from __future__ import annotations

import asyncio
import sys


async def run_otelprobe(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "otelprobe.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
