"""The lab DNS fault server: every fault does what it says, checked with plain dnspython queries."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.node
import dns.rcode
import dns.rdataset
import dns.rdatatype
import dns.rrset
import pytest
import trustme

from otelprobe.lab.servers.dns import DNSFault, DNSFaultServer
from otelprobe.lab.servers.dns_zone import ZoneSpec

ZONE: ZoneSpec = {
    "www": {"A": ["127.0.0.1"], "AAAA": ["::1"], "TXT": "hello world"},
    "alias": {"CNAME": "www"},
    "mail": {"MX": ["10 www"]},
}


@pytest.fixture
async def server() -> AsyncIterator[DNSFaultServer]:
    async with DNSFaultServer(zone=ZONE) as s:
        yield s


async def udp(
    server: DNSFaultServer, name: str, rdtype: str = "A", timeout: float = 2.0
) -> dns.message.Message:
    return await dns.asyncquery.udp(dns.message.make_query(name, rdtype), "127.0.0.1", timeout, server.port)


async def test_answers_records_and_follows_cname(server: DNSFaultServer) -> None:
    response = await udp(server, "alias.lab.test.")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert response.answer[1][0].to_text() == "127.0.0.1"
    mx = await udp(server, "mail.lab.test.", "MX")
    assert mx.answer[0][0].to_text() == "10 www.lab.test."


async def test_unknown_name_is_nxdomain_with_soa(server: DNSFaultServer) -> None:
    response = await udp(server, "missing.lab.test.")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.authority[0].rdtype == dns.rdatatype.SOA
    nodata = await udp(server, "www.lab.test.", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer


@pytest.mark.parametrize(
    ("fault", "rcode"),
    [
        (DNSFault.servfail(), dns.rcode.SERVFAIL),
        (DNSFault.nxdomain(), dns.rcode.NXDOMAIN),
        (DNSFault.refused(), dns.rcode.REFUSED),
    ],
)
async def test_rcode_faults(server: DNSFaultServer, fault: DNSFault, rcode: dns.rcode.Rcode) -> None:
    server.set_fault("www", fault)
    assert (await udp(server, "www.lab.test.")).rcode() == rcode
    server.set_fault("www", None)
    assert (await udp(server, "www.lab.test.")).rcode() == dns.rcode.NOERROR


async def test_delay_fault_and_glob_pattern(server: DNSFaultServer) -> None:
    server.set_fault("*", DNSFault.delayed(0.2))
    start = time.perf_counter()
    await udp(server, "www.lab.test.")
    assert 0.19 <= time.perf_counter() - start < 1.5
    server.clear_faults()
    server.set_fault("*.slow", DNSFault.delayed(lambda rng: rng.uniform(0.1, 0.15)))
    server.set_records("a.slow", "A", ["127.0.0.2"])
    start = time.perf_counter()
    response = await udp(server, "a.slow.lab.test.")
    assert time.perf_counter() - start >= 0.09
    assert response.answer[0][0].to_text() == "127.0.0.2"


async def test_no_answer_times_out_over_udp_and_tcp(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.no_answer())
    with pytest.raises(dns.exception.Timeout):
        await udp(server, "www.lab.test.", timeout=0.2)
    with pytest.raises(dns.exception.Timeout):
        await dns.asyncquery.tcp(dns.message.make_query("www.lab.test.", "A"), "127.0.0.1", 0.2, server.port)


async def test_first_lost_drops_the_first_datagram_of_each_query_over_udp(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.first_lost())
    query = dns.message.make_query("www.lab.test.", "A")
    with pytest.raises(dns.exception.Timeout):
        await dns.asyncquery.udp(query, "127.0.0.1", 0.2, server.port)
    # The same message again (same ID and question), as a retransmitting resolver sends it.
    again = await dns.asyncquery.udp(query, "127.0.0.1", 2.0, server.port)
    assert again.id == query.id and again.answer[0][0].to_text() == "127.0.0.1"
    # Another query (a new ID) loses its first datagram too; TCP is never dropped.
    with pytest.raises(dns.exception.Timeout):
        await udp(server, "www.lab.test.", "AAAA", timeout=0.2)
    tcp = await dns.asyncquery.tcp(
        dns.message.make_query("www.lab.test.", "A"), "127.0.0.1", 2.0, server.port
    )
    assert tcp.answer[0][0].to_text() == "127.0.0.1"


async def test_a_fault_can_target_one_query_type(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault(drop=True, rdtypes=("AAAA",)))
    assert (await udp(server, "www.lab.test.", "A")).answer[0][0].to_text() == "127.0.0.1"
    with pytest.raises(dns.exception.Timeout):
        await udp(server, "www.lab.test.", "AAAA", timeout=0.2)
    # A pattern's fault for another type leaves the baseline of a broader pattern in place.
    server.set_fault("*", DNSFault.servfail())
    assert (await udp(server, "www.lab.test.", "A")).rcode() == dns.rcode.SERVFAIL


async def test_truncation_sets_tc_over_udp_and_answers_over_tcp(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.truncated())
    response = await udp(server, "www.lab.test.")
    assert response.flags & dns.flags.TC and not response.answer
    full, used_tcp = await dns.asyncquery.udp_with_fallback(
        dns.message.make_query("www.lab.test.", "A"), "127.0.0.1", 2.0, server.port
    )
    assert used_tcp and full.answer[0][0].to_text() == "127.0.0.1"
    assert [q.transport for q in server.queries][-2:] == ["udp", "tcp"]


async def test_oversized_answer_is_truncated_for_a_512_byte_client(server: DNSFaultServer) -> None:
    server.set_records("big", "TXT", [f'"{"x" * 200}{i}"' for i in range(5)])
    response = await udp(server, "big.lab.test.", "TXT")
    assert response.flags & dns.flags.TC


async def test_wrong_answer(server: DNSFaultServer) -> None:
    server.set_fault("www", DNSFault.wrong_answer("192.0.2.66"))
    assert (await udp(server, "www.lab.test.")).answer[0][0].to_text() == "192.0.2.66"


async def test_dot_and_doh(cert_authority: trustme.CA) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert_authority.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    cert_authority.configure_trust(client_ctx)
    async with DNSFaultServer(zone=ZONE, tls_context=server_ctx) as server:
        query = dns.message.make_query("www.lab.test.", "AAAA")
        dot = await dns.asyncquery.tls(query, "127.0.0.1", 2.0, server.tls_port, ssl_context=client_ctx)
        assert dot.answer[0][0].to_text() == "::1"
        doh = await dns.asyncquery.https(query, server.doh_url, 2.0, verify=client_ctx)
        assert doh.answer[0][0].to_text() == "::1"
        assert [q.transport for q in server.queries] == ["tls", "https"]


async def test_signed_zone_validates_and_bogus_signature_does_not() -> None:
    async with DNSFaultServer(zone=ZONE, sign=True, authenticated_data=True) as server:
        query = dns.message.make_query("www.lab.test.", "A", want_dnssec=True)
        response = await dns.asyncquery.udp(query, "127.0.0.1", 2.0, server.port)
        assert response.flags & dns.flags.AD
        answer, rrsig = response.answer
        keys_msg = await dns.asyncquery.udp(
            dns.message.make_query("lab.test.", "DNSKEY", want_dnssec=True), "127.0.0.1", 2.0, server.port
        )
        keys: dict[dns.name.Name, dns.node.Node | dns.rdataset.Rdataset] = {
            dns.name.from_text("lab.test."): keys_msg.answer[0]
        }
        dns.dnssec.validate(answer, rrsig, keys)
        server.set_fault("www", DNSFault(bogus_signature=True))
        bogus = await dns.asyncquery.udp(query, "127.0.0.1", 2.0, server.port)
        assert not bogus.flags & dns.flags.AD
        with pytest.raises(dns.exception.ValidationFailure):
            dns.dnssec.validate(bogus.answer[0], bogus.answer[1], keys)
        assert server.ds is not None and server.dnskey is not None
