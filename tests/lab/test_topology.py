"""The target side of a lab run on loopback: per-(target, vantage) services and resolvers, and
faults reconciled onto them without disturbing pairs that were not touched."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import dns.message
import dns.query
import dns.rcode
import pytest

from otelprobe.lab.certs import LabCA
from otelprobe.lab.emulation.topology import ServerLoop, TargetSide
from otelprobe.lab.faults import Fault, parse_fault
from otelprobe.lab.scenario import load_scenario_text

SCENARIO = """\
vantages: [{name: a}, {name: b}]
targets:
  - {name: web, kind: http}
  - {name: api, kind: http}
"""


@pytest.fixture
def side() -> Iterator[TargetSide]:
    scenario = load_scenario_text(SCENARIO)
    loop = ServerLoop(None)
    target_side = TargetSide(scenario, "127.0.0.1", LabCA(["localhost"]), loop, fixed_ports=False)
    try:
        target_side.start()
        yield target_side
    finally:
        target_side.close()
        loop.close()


def rcode(side: TargetSide, vantage: str, name: str) -> dns.rcode.Rcode:
    host, port = side.resolver_address(vantage).split(":")
    query = dns.message.make_query(f"{name}.lab.test", "A")
    return dns.query.udp(query, host, port=int(port), timeout=2.0).rcode()


def status(side: TargetSide, target: str, vantage: str) -> bytes:
    with socket.create_connection(("127.0.0.1", side.endpoint(target, vantage)), timeout=2.0) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return sock.recv(12)


def fault(**data: object) -> Fault:
    return parse_fault(data)


def test_each_pair_has_its_own_service_and_resolver(side: TargetSide) -> None:
    ports = {side.endpoint(t, v) for t in ("web", "api") for v in ("a", "b")}
    assert len(ports) == 4
    assert side.resolver_address("a") != side.resolver_address("b")
    assert status(side, "web", "a") == b"HTTP/1.1 200"


def test_faults_on_one_pair_leave_the_others_alone(side: TargetSide) -> None:
    servfail = fault(kind="dns_servfail")
    error = fault(kind="http_5xx", status=502)
    side.set_faults({("web", "a"): [servfail, error]}, {("web", "a")})
    # Another incident on the same vantage must not clear web's DNS fault.
    side.set_faults({("api", "a"): [fault(kind="http_5xx")]}, {("api", "a")})
    assert rcode(side, "a", "web") == dns.rcode.SERVFAIL
    assert rcode(side, "a", "api") == dns.rcode.NOERROR
    assert rcode(side, "b", "web") == dns.rcode.NOERROR
    assert status(side, "web", "a") == b"HTTP/1.1 502"
    assert status(side, "api", "a") == b"HTTP/1.1 503"
    assert status(side, "web", "b") == b"HTTP/1.1 200"
    side.set_faults({}, {("web", "a")})
    assert rcode(side, "a", "web") == dns.rcode.NOERROR
    assert status(side, "web", "a") == b"HTTP/1.1 200"
    assert status(side, "api", "a") == b"HTTP/1.1 503"


def test_refused_takes_the_port_and_gives_it_back(side: TargetSide) -> None:
    port = side.endpoint("web", "b")
    side.set_faults({("web", "b"): [fault(kind="refused")]}, {("web", "b")})
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2.0).close()
    side.set_faults({("web", "b"): [fault(kind="ttfb_delay", delay=0.0)]}, {("web", "b")})
    assert side.endpoint("web", "b") == port
    assert status(side, "web", "b") == b"HTTP/1.1 200"
