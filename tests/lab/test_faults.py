"""The fault table: every kind validates from scenario dicts and maps to a DESIGN §5 cause."""

from __future__ import annotations

import asyncio
import random
import statistics
import typing

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import pytest
from pydantic import ValidationError

from otelprobe.lab import faults
from otelprobe.lab.faults import (
    FAULT_TYPES,
    LINK_CLEAR,
    ROOT_CAUSES,
    Fault,
    dns_server_fault,
    faults_causing,
    link_settings,
    parse_fault,
)

DESIGN_CAUSES = {
    "dns_latency",
    "dns_failure",
    "network_latency",
    "packet_loss",
    "bandwidth_limit",
    "tls_slow",
    "certificate_invalid",
    "backend_slow",
    "http_error",
    "target_unreachable",
    "content_mismatch",
}

EXAMPLES: dict[str, dict[str, object]] = {
    "dns_delay": {"delay": "150ms", "jitter": "10ms"},
    "dns_servfail": {"probability": 0.5},
    "dns_nxdomain": {},
    "dns_timeout": {},
    "dns_truncate": {},
    "dns_wrong_answer": {"answers": ["127.0.0.9"]},
    "network_latency": {"delay": "40ms", "direction": "downstream"},
    "packet_loss": {"rate": 0.05},
    "bandwidth_limit": {"rate": "256KiB"},
    "tls_delay": {"delay": "300ms"},
    "bad_certificate": {"problem": "short_chain"},
    "ttfb_delay": {"delay": 0.2},
    "trickle_body": {"rate": "8KiB", "chunk": "512"},
    "http_5xx": {"rate": 0.1, "status": 502},
    "reset_mid_body": {"after": "1KiB"},
    "wrong_content": {"body": "nope"},
    "redirect_chain": {"hops": 5},
    "hang": {},
    "refused": {},
    "blackhole": {},
}


def test_table_union_and_examples_agree() -> None:
    union_members = typing.get_args(typing.get_args(Fault)[0])
    assert {cls.model_fields["kind"].default for cls in union_members} == set(FAULT_TYPES)
    assert set(union_members) == set(FAULT_TYPES.values())
    assert set(EXAMPLES) == set(FAULT_TYPES)
    for kind, cls in FAULT_TYPES.items():
        assert cls.model_fields["kind"].default == kind


def test_every_fault_maps_to_a_design_cause_and_every_cause_has_a_fault() -> None:
    assert set(ROOT_CAUSES) == DESIGN_CAUSES and len(ROOT_CAUSES) == len(DESIGN_CAUSES)
    assert {cls.root_cause for cls in FAULT_TYPES.values()} == DESIGN_CAUSES
    for cause in ROOT_CAUSES:
        assert faults_causing(cause)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_each_kind_validates_from_a_scenario_dict(kind: str) -> None:
    fault = parse_fault({"kind": kind, **EXAMPLES[kind]})
    assert type(fault) is FAULT_TYPES[kind]
    assert fault.kind == kind
    with pytest.raises(ValidationError):
        fault.kind = "other"  # type: ignore[misc,assignment]  # values are frozen


def test_durations_sizes_and_defaults() -> None:
    delay = parse_fault({"kind": "ttfb_delay", "delay": "250ms"})
    assert isinstance(delay, faults.TTFBDelay)
    assert delay.delay_s == pytest.approx(0.25) and delay.probability == 1.0
    limit = parse_fault({"kind": "bandwidth_limit", "rate": "64KiB"})
    assert isinstance(limit, faults.BandwidthLimit)
    assert limit.rate_bytes_per_s == 65536 and limit.direction == "downstream"
    assert faults.TTFBDelay(delay_s=0.1) == parse_fault({"kind": "ttfb_delay", "delay": "100ms"})


@pytest.mark.parametrize(
    "entry",
    [
        {"kind": "no_such_fault"},
        {"kind": "ttfb_delay"},  # delay is required
        {"kind": "ttfb_delay", "delay": "fast"},
        {"kind": "ttfb_delay", "delay": "1s", "probability": 1.5},
        {"kind": "packet_loss", "rate": 0},
        {"kind": "http_5xx", "status": 404},
        {"kind": "bad_certificate", "problem": "revoked"},
        {"kind": "network_latency", "delay": "1ms", "direction": "sideways"},
        {"kind": "hang", "surprise": True},
    ],
)
def test_invalid_entries_are_rejected(entry: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse_fault(entry)


def test_servers_named_for_each_fault() -> None:
    by_server = {cls.server for cls in FAULT_TYPES.values()}
    assert by_server == {"dns", "link", "tls", "http", "ports"}
    assert {k for k, c in FAULT_TYPES.items() if c.server == "link"} == {
        "network_latency",
        "packet_loss",
        "bandwidth_limit",
    }


def test_link_settings_match_the_emulator_parameters() -> None:
    from otelprobe.lab.emulation.link import LinkParams

    latency = link_settings(faults.NetworkLatency(delay_s=0.04, jitter_s=0.002, direction="downstream"))
    loss = link_settings(faults.PacketLoss(rate=0.07, direction="both"))
    limit = link_settings(faults.BandwidthLimit(rate_bytes_per_s=125_000, direction="upstream"))
    assert latency == ("down", {"delay_s": 0.04, "jitter_s": 0.002})
    assert loss == ("both", {"loss": 0.07, "loss_burst": 1.0})
    assert limit == ("up", {"rate_bps": 1_000_000.0})
    for _, changes in (latency, loss, limit, *((None, c) for c in LINK_CLEAR.values())):
        LinkParams.from_dict(dict(changes))  # every key is a real emulator setting with a valid value


async def dns_query(port: int, rdtype: str = "A", timeout_s: float = 2.0) -> dns.message.Message:
    query = dns.message.make_query("www.lab.test.", rdtype)
    return await dns.asyncquery.udp(query, "127.0.0.1", timeout_s, port, ignore_trailing=True)


async def test_dns_faults_drive_the_lab_dns_server() -> None:
    from otelprobe.lab.servers.dns import DNSFaultServer

    async with DNSFaultServer(zone={"www": {"A": "127.0.0.1"}}) as server:
        server.set_fault("*", dns_server_fault(faults.DNSServfail()))
        assert (await dns_query(server.port)).rcode() == dns.rcode.SERVFAIL
        server.set_fault("*", dns_server_fault(faults.DNSNxdomain()))
        assert (await dns_query(server.port)).rcode() == dns.rcode.NXDOMAIN
        server.set_fault("*", dns_server_fault(faults.DNSWrongAnswer(answers=("127.0.0.9",))))
        assert (await dns_query(server.port)).answer[0][0].to_text() == "127.0.0.9"
        server.set_fault("*", dns_server_fault(faults.DNSTruncate()))
        assert (await dns_query(server.port)).flags & dns.flags.TC
        server.set_fault("*", dns_server_fault(faults.DNSTimeout()))
        with pytest.raises(dns.exception.Timeout):
            await dns_query(server.port, timeout_s=0.2)
        server.set_fault("*", dns_server_fault(faults.DNSDelay(delay_s=0.1, jitter_s=0.02)))
        loop = asyncio.get_running_loop()
        start = loop.time()
        answer = await dns_query(server.port)
        assert 0.08 <= loop.time() - start < 0.12 + 0.03
        assert answer.answer[0][0].to_text() == "127.0.0.1"


@pytest.mark.parametrize("distribution", ["uniform", "normal", "exponential"])
def test_delay_distributions(distribution: str) -> None:
    fault = parse_fault(
        {"kind": "ttfb_delay", "delay": "100ms", "jitter": "20ms", "distribution": distribution}
    )
    assert isinstance(fault, faults.TTFBDelay)
    rng = random.Random(1)
    samples = [fault.sample_delay(rng) for _ in range(2000)]
    assert all(s >= 0 for s in samples)
    if distribution == "uniform":
        assert 0.08 <= min(samples) and max(samples) <= 0.12
        assert statistics.mean(samples) == pytest.approx(0.1, abs=0.002)
    elif distribution == "normal":
        assert statistics.stdev(samples) == pytest.approx(0.02, rel=0.1)
        assert statistics.mean(samples) == pytest.approx(0.1, abs=0.002)
    else:
        assert min(samples) >= 0.1
        assert statistics.mean(samples) == pytest.approx(0.12, abs=0.003)
    assert faults.TTFBDelay(delay_s=0.05).sample_delay(rng) == 0.05
