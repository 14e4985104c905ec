"""Lab namespaces: isolation, running things inside, and cleanup on close, crash, SIGTERM and `lab down`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from otelprobe.lab.emulation.netns import RUN_DIR, Lab, LabUnavailable, Namespace, cleanup_all, lab_namespaces

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]


def ip_netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()
        assert lab.prefix not in ip_netns_list()
        assert not (RUN_DIR / f"{lab.lab_id}.json").exists()


def test_namespace_is_isolated_and_has_loopback(lab: Lab) -> None:
    ns = lab.namespace("a")
    assert ns.name.startswith(lab.prefix)
    assert "state UNKNOWN" in ns.ip("link", "show", "lo") or "UP" in ns.ip("link", "show", "lo")
    # A listener on the host's loopback is not reachable from inside the namespace.
    with socket.socket() as host_listener:
        host_listener.bind(("127.0.0.1", 0))
        host_listener.listen()
        port = host_listener.getsockname()[1]
        inside = ns.socket()
        with inside:
            with pytest.raises(ConnectionRefusedError):
                ns.call(inside.connect, ("127.0.0.1", port))


async def test_asyncio_server_and_client_inside(lab: Lab) -> None:
    ns = lab.namespace("srv")

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await ns.start_server(echo, "127.0.0.1", 7000)
    try:
        reader, writer = await ns.open_connection("127.0.0.1", 7000)
        writer.write(b"hello\n")
        assert await reader.readline() == b"hello\n"
        writer.close()
        await writer.wait_closed()
        # The same port on the host's loopback is someone else's (or nobody's): not our server.
        with pytest.raises(OSError):
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", 7000), 1.0)
    finally:
        server.close()
        await server.wait_closed()


def test_popen_runs_inside_and_is_killed_on_close(lab: Lab) -> None:
    ns = lab.namespace("p")
    ns.sysctl("net.ipv4.tcp_syn_linear_timeouts", 4)
    proc = ns.popen(["sleep", "60"])
    deadline = time.monotonic() + 5
    while not Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"sleep"):
        assert time.monotonic() < deadline
        time.sleep(0.01)  # `ip netns exec` enters the namespace, then execs sleep
    assert os.readlink(f"/proc/{proc.pid}/ns/net") == os.readlink(
        f"/proc/{os.getpid()}/task/{_ns_thread(ns)}/ns/net"
    )
    assert os.readlink(f"/proc/{proc.pid}/ns/net") != os.readlink("/proc/self/ns/net")
    lab.close()
    assert proc.wait(timeout=5) != 0


def _crashing_lab_script(action: str) -> str:
    return textwrap.dedent(
        f"""
        import os, signal, sys, time
        from otelprobe.lab.emulation.netns import Lab
        lab = Lab()
        sleeper = lab.namespace("x").popen(["sleep", "60"])
        print(lab.lab_id, sleeper.pid, flush=True)
        if {action!r} == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(30)
        """
    )


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _ns_thread(ns: Namespace) -> int:
    return ns.call(threading.get_native_id)


def _spawn(action: str) -> tuple[subprocess.Popen[str], str, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _crashing_lab_script(action)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    lab_id, sleeper = proc.stdout.readline().split()
    return proc, lab_id, int(sleeper)


def test_cleanup_all_removes_leftovers_of_a_crashed_run() -> None:
    proc, lab_id, sleeper = _spawn("crash")
    proc.wait(timeout=10)
    assert proc.stdout is not None
    proc.stdout.close()
    assert any(name.startswith(f"otp-{lab_id}-") for name in lab_namespaces())
    removed = cleanup_all()
    assert f"otp-{lab_id}-x" in removed
    assert f"otp-{lab_id}-" not in ip_netns_list()
    assert not (RUN_DIR / f"{lab_id}.json").exists()
    assert not _running(sleeper), "the process it started inside must be killed"


def test_sigterm_cleans_up() -> None:
    proc, lab_id, sleeper = _spawn("wait")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM
    assert proc.stdout is not None
    proc.stdout.close()
    deadline = time.monotonic() + 5
    while f"otp-{lab_id}-" in ip_netns_list() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"otp-{lab_id}-" not in ip_netns_list()
    assert not _running(sleeper)


def test_refuses_clearly_when_not_root() -> None:
    # Import as root (the venv lives under /root), then drop to nobody before using the lab.
    script = (
        "import os\nfrom otelprobe.lab.emulation.netns import Lab\n"
        "os.setgid(65534)\nos.setuid(65534)\nLab()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert LabUnavailable.__name__ in done.stderr
    assert "must run as root" in done.stderr
