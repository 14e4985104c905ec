"""Hostile probe URLs of every scheme: a probe, or exit 2 and one line naming the problem (issue 11).

Generated URLs (hypothesis) break brackets, leave hosts empty, put ports out of range, push IDNA to
its edges, percent-encode and embed control bytes. Two properties:
- parsing (what `otelprobe probe` does before probing) gives a config or a one-line UsageError,
  for any text at all in any part of the URL;
- the whole command, run in-process, ends in exit 0/1/2 with one stderr line on 2, never an
  exception. Its hosts are loopback literals or names under .invalid (RFC 6761), resolved only by
  a loopback DNS server that knows none of them, so nothing outside loopback is ever contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otelprobe.cli import build_parser, main
from otelprobe.cli.probe import SCHEME_KINDS, UsageError, target_config
from otelprobe.lab.servers.dns import DNSFaultServer
from otelprobe.probes import PROBE_TYPES
from otelprobe.probes.base import ProbeContext

SCHEMES = sorted(SCHEME_KINDS)
SECRET = "s3cr3tpw"

# Characters that stress URL splitting and IDNA: delimiters, brackets, percent, dots of other
# scripts (U+3002, U+FF0E), joiners, combining marks, sharp s, full-width and non-Latin letters.
_TRICKY = "[]:@%.-_/?#\\ \t\x00\x7f\u3002\uff0e\u200d\u0301\u00df\u00fc\uff21\u4f8b\U0001f600"
BROKEN_HOSTS = [
    "",
    "[",
    "]",
    "[::1",
    "::1]",
    "[::1]]",
    "[[::1]]",
    "[zz]",
    "[127.0.0.1]",
    "[fe80::1%25lo]",
    "::1",
    "a..invalid",
    ".invalid",
    "-.invalid",
    "x" * 64 + ".invalid",
    ("a" * 63 + ".") * 4 + "invalid",
    "xn--.invalid",
    "xn--zz.invalid",
    "\u00fc.invalid",
    "\u00df.invalid",
    "a\u3002b.invalid",
    "a\u200db.invalid",
    "%41.invalid",
    "%00",
    "%zz",
    "999.1.1.1",
    "1.2.3",
    "127.1",
    "0x7f.0.0.1",
]
PORTS = st.one_of(
    st.none(),
    st.integers(-10, 70_000).map(str),
    st.sampled_from(["", "x", "0", "65535", "65536", "080", " 1", "1\x00", "\u0663", "99999999999999999999"]),
)


def any_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.one_of(st.sampled_from(_TRICKY), st.characters()), max_size=max_size)


@st.composite
def hostile_urls(draw: st.DrawFn) -> str:
    """Any text in any part of a URL of a known (or nearly known) scheme."""
    scheme = draw(st.one_of(st.sampled_from(SCHEMES), st.sampled_from(["HTTP", "ftp", "", "dns6"])))
    userinfo = draw(st.sampled_from(["", f"user:{SECRET}@", "@", ":@"]))
    host = draw(st.one_of(st.sampled_from(BROKEN_HOSTS), any_text(12)))
    port = draw(PORTS)
    path = draw(st.one_of(st.just(""), any_text(16), st.just("%00.invalid"), st.just("a..b")))
    authority = userinfo + host + (f":{port}" if port is not None else "")
    return f"{scheme}://{authority}/{path}"


def parse(url: str) -> object:
    return target_config(build_parser().parse_args(["probe", url]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_urls())
def test_any_url_parses_to_a_config_or_a_one_line_usage_error(url: str) -> None:
    try:
        config = parse(url)
    except UsageError as exc:
        message = str(exc)
        assert message, url
        assert message.isprintable(), message  # one line, control bytes shown escaped
        assert SECRET not in message
        return
    # A config it accepts can be turned into a probe (which is where split ports were read).
    PROBE_TYPES[str(getattr(config, "kind"))](config, ProbeContext(vantage="t"))  # type: ignore[call-arg]  # noqa: B009


# --- the whole command, in-process, against loopback only -----------------------------------

_LABEL = st.text(
    st.one_of(
        st.sampled_from("-_.\u3002\uff0e\u200d\u0301\u00df\u00fc\u4f8b%"),
        st.characters(categories=("Ll", "Lu", "Nd", "Mn", "Cc")),
    ),
    max_size=70,
)
# No URL delimiter (":/?#[]@\\") can appear in a label, so the host stays where it was put.
SAFE_NAMES = _LABEL.filter(lambda label: not set(label) & set(":/?#[]@\\")).map(
    lambda label: f"{label}.invalid"
)
LOOPBACK_HOSTS = st.one_of(
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(1, 254)).map(
        lambda t: "127.{}.{}.{}".format(*t)
    ),
    st.just("[::1]"),
)
SAFE_BROKEN_HOSTS = st.sampled_from(
    ["[::1", "::1]", "[127.0.0.1]", "[::1]]", "[zz]", "%31%32%37.0.0.1", "127.1", "999.0.0.1", ""]
)
SAFE_PORTS = st.one_of(
    st.none(), st.integers(1, 65_535).map(str), st.sampled_from(["", "-1", "x", "0", "65536", "1x"])
)


@st.composite
def loopback_urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(SCHEMES))
    host = draw(st.one_of(LOOPBACK_HOSTS, SAFE_NAMES, SAFE_BROKEN_HOSTS))
    if scheme == "dns" and not host:
        host = "127.0.0.1"  # no server would mean the system resolver, which is not on loopback
    port = draw(SAFE_PORTS)
    path = draw(st.one_of(st.just(""), SAFE_NAMES, st.text(max_size=8), st.just("svc?type=AAAA")))
    return f"{scheme}://{host}{f':{port}' if port is not None else ''}/{path}"


@pytest.fixture(scope="module")
def silent_dns_port() -> Iterator[int]:
    """A loopback DNS server with an empty zone, on its own loop: it knows no generated name."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = DNSFaultServer(zone={})
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    yield server.port
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(url=loopback_urls())
def test_the_command_never_raises_and_exit_2_is_one_line(url: str, silent_dns_port: int) -> None:
    argv = ["probe", url, "--json", "--timeout", "1s", "--resolver", f"127.0.0.1:{silent_dns_port}"]
    if url.startswith("icmp"):
        argv += ["--set", "count=1", "--set", "packet_timeout=0.2s"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    if code == 2:
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("otelprobe probe: "), (url, lines)
        assert out.getvalue() == ""
    else:
        assert code in (0, 1), (url, code, err.getvalue())
        for line in out.getvalue().splitlines():
            assert json.loads(line)["kind"] == SCHEME_KINDS[url.partition(":")[0]]


# --- the issue's examples, through the installed entry point ---------------------------------

HOSTILE_EXAMPLES = [
    "http://[::1",
    "dns:///",
    "https://127.0.0.1:99999/",
    "http://a..b.invalid/",
    "tcp://[::1]:x",
    "tls://:443",
    "icmp6://[zz]",
    "grpcs://127.0.0.1:-1/svc",
    "wss://exa mple.invalid/",
    "dns://127.0.0.1:53/a..b",
    "http://\x01.invalid/",
]


async def _otelprobe(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "otelprobe.cli",
        "probe",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_issue_examples_exit_2_with_one_line_naming_the_problem() -> None:
    outcomes = await asyncio.gather(*(_otelprobe(url) for url in HOSTILE_EXAMPLES))
    for url, (code, out, err) in zip(HOSTILE_EXAMPLES, outcomes, strict=True):
        assert code == 2, (url, err)
        assert "Traceback" not in err
        assert len(err.splitlines()) == 1, err
        assert out == ""
    messages = dict(zip(HOSTILE_EXAMPLES, (err for _, _, err in outcomes), strict=True))
    assert "brackets" in messages["http://[::1"]
    assert "no name to query" in messages["dns:///"]
    assert "99999" in messages["https://127.0.0.1:99999/"] or "port" in messages["https://127.0.0.1:99999/"]
    assert "'a..b.invalid'" in messages["http://a..b.invalid/"]
    assert "U+0001" in messages["http://\x01.invalid/"]


async def test_credentials_in_a_bad_url_stay_out_of_the_error_line() -> None:
    code, _, err = await _otelprobe(f"tcp://user:{SECRET}@127.0.0.1:1")
    assert code == 2
    assert SECRET not in err
    code, _, err = await _otelprobe(f"https://user:{SECRET}@[::1/x?token={SECRET}")
    assert code == 2
    assert SECRET not in err


# --- what an accepted URL with non-ASCII parts puts on the wire -------------------------------


async def test_idn_host_and_non_ascii_path_reach_the_server_encoded() -> None:
    seen: list[tuple[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.host, request.raw_path))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http_port = runner.addresses[0][1]
    try:
        async with DNSFaultServer(zone={"xn--bcher-kva": {"A": ["127.0.0.1"]}}) as dns_server:
            code, out, err = await _otelprobe(
                f"http://bücher.lab.test:{http_port}/straße?q=ü",
                "--json",
                "--resolver",
                f"127.0.0.1:{dns_server.port}",
            )
    finally:
        await runner.cleanup()
    assert code == 0, err
    assert json.loads(out)["success"] is True
    assert seen == [(f"xn--bcher-kva.lab.test:{http_port}", "/stra%C3%9Fe?q=%C3%BC")]
