"""Network namespaces for the fault lab: create, address, enter, run things inside, and always clean up.

Every namespace a `Lab` creates is named `otp-<labid>-<role>` and recorded, with the processes it
starts, in a registry file under /run/otelprobe-lab/, so `cleanup_all()` (`lab down`) can remove
leftovers of a crashed run. The link emulator (`lab/emulation/link.py`) joins these namespaces; nothing here
ever touches the host's own namespace routes or firewall.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final, TypeVar

log = logging.getLogger(__name__)

LAB_PREFIX: Final = "otp-"
RUN_DIR: Final = Path("/run/otelprobe-lab")
NETNS_DIR: Final = Path("/run/netns")
_CLONE_NEWNET: Final = 0x40000000
_IP_TIMEOUT_S: Final = 10.0

T = TypeVar("T")


class LabUnavailable(RuntimeError):
    """The lab cannot run here (not root, no `ip`, no /dev/net/tun); the message says what to do."""


def require_lab_support(*, tun: bool = True) -> None:
    """Raise LabUnavailable unless namespaces (and TUN devices) can be created by this process."""
    if os.geteuid() != 0:
        raise LabUnavailable(
            "the fault lab creates network namespaces and TUN devices and must run as root "
            "(try: sudo otelprobe lab ...)"
        )
    if shutil.which("ip") is None:
        raise LabUnavailable("the fault lab needs iproute2's `ip` command on PATH (apt-get install iproute2)")
    if not Path("/proc/self/ns/net").exists():
        raise LabUnavailable("this kernel has no network namespaces (/proc/self/ns/net is missing)")
    if tun and not Path("/dev/net/tun").exists():
        raise LabUnavailable("the link emulator needs /dev/net/tun (modprobe tun, or --device /dev/net/tun)")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=_IP_TIMEOUT_S)


_libc = ctypes.CDLL(None, use_errno=True)


def _enter_netns(path: str) -> None:
    """Move the *calling thread* into the namespace at `path` (Python 3.11 has no os.setns)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Namespace:
    """One named network namespace plus a dedicated thread that lives inside it.

    Sockets and TUN devices belong to the namespace of the thread that creates them and stay
    there, so everything namespace-bound is created on that thread; the I/O itself can then run
    anywhere (the returned sockets are ordinary file descriptors).
    """

    def __init__(self, name: str, lab: Lab | None = None) -> None:
        self.name = name
        self.path = NETNS_DIR / name
        self._lab = lab
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"netns-{name}",
            initializer=_enter_netns,
            initargs=(str(self.path),),
        )

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the namespace thread and return its result."""
        return self._executor.submit(fn, *args, **kwargs).result()

    async def acall(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like `call`, without blocking the event loop."""
        return await asyncio.wrap_future(self._executor.submit(fn, *args, **kwargs))

    def socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
    ) -> socket.socket:
        """A new socket that belongs to this namespace (close it yourself)."""
        return self.call(socket.socket, family, type, proto)

    def open(self, path: str, flags: int) -> int:
        """os.open() from inside the namespace (e.g. /dev/net/tun, /proc/sys/net/...)."""
        return self.call(os.open, path, flags)

    async def start_server(
        self,
        client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
        host: str,
        port: int = 0,
        *,
        backlog: int = 128,
    ) -> asyncio.Server:
        """An asyncio stream server listening inside this namespace (served by the caller's loop)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def listen() -> socket.socket:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(backlog)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            return sock

        sock = await self.acall(listen)
        return await asyncio.start_server(client_connected_cb, sock=sock)

    async def open_connection(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """An asyncio stream connection made from inside this namespace."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = await self.acall(socket.socket, family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    def ip(self, *args: str, check: bool = True) -> str:
        """Run `ip -n <ns> ARGS...` and return its stdout; raises RuntimeError with ip's stderr."""
        done = _ip("-n", self.name, *args, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"ip -n {self.name} {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def sysctl(self, key: str, value: str | int) -> None:
        """Set a per-namespace sysctl such as `net.ipv4.tcp_syn_linear_timeouts`."""
        path = "/proc/sys/" + key.replace(".", "/")

        def write() -> None:
            Path(path).write_text(f"{value}\n")

        self.call(write)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a process inside the namespace; the lab kills it on cleanup."""
        if self._lab is not None:
            # Marks the lab's processes for people looking at `ps e`.
            env = dict(kwargs.pop("env", None) or os.environ)
            kwargs["env"] = {**env, "OTELPROBE_LAB_ID": self._lab.lab_id}
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kwargs)
        if self._lab is not None:
            self._lab.register_pid(proc.pid)
        return proc

    def close(self) -> None:
        """Stop the namespace thread (the namespace itself is deleted by its Lab)."""
        self._executor.shutdown(wait=True, cancel_futures=True)


class Lab:
    """A set of namespaces and processes under one id, removed together by `close()`.

    Use as a context manager. Cleanup also runs at interpreter exit and on SIGTERM/SIGHUP, and
    `cleanup_all()` removes what a killed run left behind.
    """

    def __init__(self, lab_id: str | None = None) -> None:
        require_lab_support(tun=False)
        self.lab_id = lab_id or secrets.token_hex(3)
        self.prefix = f"{LAB_PREFIX}{self.lab_id}-"
        self.run_dir = RUN_DIR / self.lab_id
        self.registry = RUN_DIR / f"{self.lab_id}.json"
        self.namespaces: dict[str, Namespace] = {}
        self._pids: list[tuple[int, int | None]] = []
        self._notes: dict[str, Any] = {}
        self._closers: list[Callable[[], None]] = []
        self._closed = False
        self._lock = threading.Lock()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._save()
        _track(self)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def namespace(self, role: str) -> Namespace:
        """Create namespace `otp-<labid>-<role>` with `lo` up, and return it."""
        name = self.prefix + role
        with self._lock:
            if role in self.namespaces:
                raise ValueError(f"namespace role {role!r} already exists in lab {self.lab_id}")
            # Record first: if `ip netns add` half-succeeds we still know to delete it.
            self.namespaces[role] = ns = Namespace(name, self)
            self._save()
        _ip("netns", "add", name)
        ns.ip("link", "set", "lo", "up")
        log.debug("created namespace %s", name)
        return ns

    def register_pid(self, pid: int) -> None:
        """Record a process to be killed on cleanup (also by `cleanup_all` after a crash)."""
        with self._lock:
            self._pids.append((pid, _start_time(pid)))
            self._save()

    def note(self, key: str, value: Any) -> None:
        """Record something JSON-serialisable in the registry (e.g. a link's control socket)."""
        with self._lock:
            self._notes[key] = value
            self._save()

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run `fn` at cleanup, before processes are killed and namespaces deleted (LIFO)."""
        self._closers.append(fn)

    def close(self) -> None:
        """Remove everything this lab created; safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        while self._closers:
            fn = self._closers.pop()
            try:
                fn()
            except Exception:
                log.exception("lab %s: cleanup step failed", self.lab_id)
        for ns in self.namespaces.values():
            ns.close()
        _remove(self.lab_id, self._pids, [ns.name for ns in self.namespaces.values()])
        _untrack(self)

    def _save(self) -> None:
        data = {
            "lab_id": self.lab_id,
            "owner_pid": os.getpid(),
            "created": time.time(),
            "namespaces": [ns.name for ns in self.namespaces.values()],
            "pids": self._pids,
            "notes": self._notes,
        }
        tmp = self.registry.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.registry)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """Boot-relative start time: with the pid it names one process, even across exec()."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def _pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie counts as gone (its owner reaps it, we do not)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _kill(pid: int, start_time: int | None) -> None:
    """Kill `pid` if it still is the process we started (pids get reused after a crash)."""
    if start_time is None or _start_time(pid) != start_time:
        return
    for sig, wait_s in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 1.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.005)
        if not _pid_alive(pid):
            return


def _remove(lab_id: str, pids: Sequence[tuple[int, int | None]], namespaces: Sequence[str]) -> None:
    for pid, start_time in pids:
        _kill(pid, start_time)
    for name in namespaces:
        done = _ip("netns", "del", name, check=False)
        if done.returncode != 0 and (NETNS_DIR / name).exists():
            log.warning("could not delete namespace %s: %s", name, done.stderr.strip())
    shutil.rmtree(RUN_DIR / lab_id, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (RUN_DIR / f"{lab_id}.json").unlink()


def lab_namespaces() -> list[str]:
    """Names of all existing namespaces that carry the lab prefix (any lab, live or not)."""
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(LAB_PREFIX)]


def cleanup_all(*, include_live: bool = False) -> list[str]:
    """Remove lab leftovers (`lab down`): processes, namespaces, registry files.

    Args:
        include_live: also tear down labs whose owning process is still running.

    Returns:
        The namespace names that were deleted.
    """
    require_lab_support(tun=False)
    removed: list[str] = []
    live_ids: set[str] = set()
    for reg in sorted(RUN_DIR.glob("*.json")) if RUN_DIR.exists() else []:
        try:
            data = json.loads(reg.read_text())
            lab_id = str(data["lab_id"])
        except (OSError, ValueError, KeyError):
            reg.unlink(missing_ok=True)
            continue
        owner = int(data.get("owner_pid", 0))
        if owner != os.getpid() and _pid_alive(owner) and not include_live:
            live_ids.add(lab_id)
            continue
        names = [str(n) for n in data.get("namespaces", [])]
        pids = [(int(pid), None if start is None else int(start)) for pid, start in data.get("pids", [])]
        _remove(lab_id, pids, names)
        removed.extend(n for n in names if n not in removed)
    # Namespaces with our prefix but no registry (e.g. a crash between add and save).
    for name in lab_namespaces():
        lab_id = name[len(LAB_PREFIX) :].split("-", 1)[0]
        if lab_id not in live_ids:
            _remove(lab_id, [], [name])
            if name not in removed:
                removed.append(name)
    return removed


# Live labs of this process, torn down at exit and on termination signals.
_live: list[Lab] = []
_handlers_installed = False


def _track(lab: Lab) -> None:
    global _handlers_installed
    _live.append(lab)
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_close_live)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        # Only take over signals nobody else handles; SIGINT already unwinds via KeyboardInterrupt.
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_signal)


def _untrack(lab: Lab) -> None:
    with contextlib.suppress(ValueError):
        _live.remove(lab)


def _close_live() -> None:
    for lab in list(_live):
        lab.close()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _close_live()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
