"""The lab DNS server's data and behaviour: a small authoritative zone, optional DNSSEC, faults.

`DNSFaultServer` (lab/servers/dns.py) owns the sockets; this module turns one query into one
response (or none), so every transport (UDP, TCP, DoT, DoH) answers the same way.
"""

from __future__ import annotations

import fnmatch
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import ec

Transport = Literal["udp", "tcp", "tls", "https"]
ZoneSpec = Mapping[str, Mapping[str, str | Sequence[str]]]
"""{"www": {"A": ["127.0.0.1"], "MX": "10 mail"}}; names relative to the origin, "@" is the apex."""

DelaySpec = float | Callable[[random.Random], float]

DEFAULT_ORIGIN: Final = "lab.test."
DEFAULT_TTL: Final = 60
_DEFAULT_SOA: Final = "ns1 hostmaster 2024010101 3600 600 86400 60"
_DATAGRAMS_REMEMBERED: Final = 4096
_DATAGRAMS_REMEMBERED_S: Final = 5.0
"""`drop_first` knows a query by its ID and question, as long as it was seen in the last 5 s (and
among the last 4096): retransmits come within seconds (glibc's default try is 5 s), while a new
query that reuses an ID is the more likely the longer IDs are remembered."""


@dataclass(frozen=True, slots=True)
class DNSFault:
    """What goes wrong for matching queries. Fields combine: a delay applies before any outcome.

    Attributes:
        delay: seconds added before answering, or a function of the server's seeded Random
            (e.g. `lambda r: r.expovariate(1 / 0.05)`) sampled per query.
        rcode: answer with this rcode and no records (SERVFAIL, NXDOMAIN, REFUSED, ...).
        drop: never answer (the client times out).
        truncate: over UDP answer with TC set and no records; TCP-based transports get the full answer.
        answers: rdata texts that replace the real answer's records (a wrong answer).
        bogus_signature: corrupt RRSIGs (a signed zone's DNSSEC validation fails).
        drop_first: over UDP, the first `drop_first` datagrams of each query (same ID and
            question) go unanswered, as if lost on the way; a retransmit after them is answered.
            TCP-based transports are unaffected (TCP retransmits a lost segment itself).
        rdtypes: only queries of these types are faulted (e.g. ("AAAA",)); empty = every type.
        probability: chance that the fault applies to a query.
    """

    delay: DelaySpec = 0.0
    rcode: dns.rcode.Rcode | None = None
    drop: bool = False
    truncate: bool = False
    answers: tuple[str, ...] | None = None
    bogus_signature: bool = False
    drop_first: int = 0
    rdtypes: tuple[str, ...] = ()
    probability: float = 1.0

    @classmethod
    def servfail(cls) -> DNSFault:
        return cls(rcode=dns.rcode.SERVFAIL)

    @classmethod
    def nxdomain(cls) -> DNSFault:
        return cls(rcode=dns.rcode.NXDOMAIN)

    @classmethod
    def refused(cls) -> DNSFault:
        return cls(rcode=dns.rcode.REFUSED)

    @classmethod
    def no_answer(cls) -> DNSFault:
        return cls(drop=True)

    @classmethod
    def truncated(cls) -> DNSFault:
        return cls(truncate=True)

    @classmethod
    def delayed(cls, delay: DelaySpec) -> DNSFault:
        return cls(delay=delay)

    @classmethod
    def wrong_answer(cls, *answers: str) -> DNSFault:
        return cls(answers=tuple(answers))

    @classmethod
    def first_lost(cls, count: int = 1) -> DNSFault:
        """The first `count` UDP datagrams of every query are lost; a retransmit gets through."""
        return cls(drop_first=count)

    def applies_to(self, rdtype: dns.rdatatype.RdataType | None) -> bool:
        """Whether queries of `rdtype` are faulted (`rdtypes` empty: all of them)."""
        return not self.rdtypes or rdtype is None or dns.rdatatype.to_text(rdtype) in self.rdtypes

    def sample_delay(self, rng: random.Random) -> float:
        return max(0.0, self.delay(rng) if callable(self.delay) else self.delay)


@dataclass(frozen=True, slots=True)
class ReceivedQuery:
    """One query as the server saw it (for tests: EDNS options, DO bit, transport)."""

    transport: Transport
    name: str
    rdtype: str
    message: dns.message.Message


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back: `message` after `delay` seconds, or nothing when `message` is None."""

    message: dns.message.Message | None
    delay: float
    max_size: int


class Zone:
    """An authoritative zone whose records and faults can change while the server runs."""

    def __init__(
        self,
        records: ZoneSpec | None = None,
        *,
        origin: str = DEFAULT_ORIGIN,
        sign: bool = False,
        authenticated_data: bool = False,
        seed: int | None = None,
    ) -> None:
        self.origin = dns.name.from_text(origin)
        self._rrsets: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
        self._sigs: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
        self._faults: dict[str, DNSFault] = {}
        self._datagrams_seen: dict[tuple[int, str, int], tuple[int, float]] = {}
        """(ID, name, type) -> (datagrams seen, when the last one came), for `drop_first`."""
        self._rng = random.Random(seed)
        self.authenticated_data = authenticated_data
        self._key: ec.EllipticCurvePrivateKey | None = None
        self.dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY | None = None
        if sign:
            self._key = ec.generate_private_key(ec.SECP256R1())
            self.dnskey = dns.dnssec.make_dnskey(self._key.public_key(), "ECDSAP256SHA256", flags=257)
        self.set_records("@", "SOA", [_DEFAULT_SOA])
        self.set_records("@", "NS", ["ns1"])
        self.set_records("ns1", "A", ["127.0.0.1"])
        if self.dnskey is not None:
            self._put(dns.rrset.from_rdata(self.origin, DEFAULT_TTL, self.dnskey))
        for name, types in (records or {}).items():
            for rdtype, values in types.items():
                self.set_records(name, rdtype, [values] if isinstance(values, str) else list(values))

    @property
    def ds(self) -> dns.rdata.Rdata | None:
        """The DS record of the signing key, for a client's trust anchor."""
        return dns.dnssec.make_ds(self.origin, self.dnskey, "SHA256") if self.dnskey else None

    def name(self, name: str) -> dns.name.Name:
        return self.origin if name == "@" else dns.name.from_text(name, self.origin)

    def set_records(self, name: str, rdtype: str, values: Sequence[str], ttl: int = DEFAULT_TTL) -> None:
        """Replace the records of one (name, type); an empty list removes them."""
        owner = self.name(name)
        key = (owner, dns.rdatatype.from_text(rdtype))
        if not values:
            self._rrsets.pop(key, None)
            self._sigs.pop(key, None)
            return
        self._put(
            dns.rrset.from_text_list(
                owner, ttl, "IN", rdtype, list(values), origin=self.origin, relativize=False
            )
        )

    def _put(self, rrset: dns.rrset.RRset) -> None:
        key = (rrset.name, rrset.rdtype)
        self._rrsets[key] = rrset
        if self._key is not None and self.dnskey is not None:
            rrsig = dns.dnssec.sign(rrset, self._key, self.origin, self.dnskey, lifetime=86400)
            self._sigs[key] = dns.rrset.from_rdata(rrset.name, rrset.ttl, rrsig)

    def set_fault(self, pattern: str, fault: DNSFault | None) -> None:
        """Fault queries whose name matches `pattern` (exact, relative, or a glob like "*.slow")."""
        key = pattern if any(c in pattern for c in "*?[") else self.name(pattern).to_text().lower()
        if fault is None:
            self._faults.pop(key, None)
        else:
            self._faults[key] = fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def fault_for(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType | None = None
    ) -> DNSFault | None:
        """The fault for a query: the exact name's entry, else the first matching pattern. An
        entry that misses by its probability falls through to the next one (so "*" can hold a
        baseline that a name's occasional fault leaves in place)."""
        text = qname.to_text().lower()
        relative = qname.relativize(self.origin).to_text().lower()
        entries = [self._faults[text]] if text in self._faults else []
        entries += [
            f
            for p, f in self._faults.items()
            if p != text and (fnmatch.fnmatchcase(text, p) or fnmatch.fnmatchcase(relative, p))
        ]
        for fault in entries:
            if not fault.applies_to(rdtype):
                continue
            if fault.probability >= 1.0 or self._rng.random() < fault.probability:
                return fault
        return None

    def reply(self, query: dns.message.Message, transport: Transport) -> Reply:
        """The response to `query` over `transport`, with the delay and faults applied."""
        response = dns.message.make_response(query, our_payload=1232)
        max_size = (query.payload if query.edns >= 0 else 512) if transport == "udp" else 65535
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return Reply(response, 0.0, max_size)
        question = query.question[0]
        fault = self.fault_for(question.name, question.rdtype)
        delay = fault.sample_delay(self._rng) if fault else 0.0
        if fault is not None and fault.drop:
            return Reply(None, delay, max_size)
        if (
            fault is not None
            and fault.drop_first
            and transport == "udp"
            and self._lost(query, fault.drop_first)
        ):
            return Reply(None, delay, max_size)
        if fault is not None and fault.rcode is not None:
            response.set_rcode(fault.rcode)
            return Reply(response, delay, max_size)
        if fault is not None and fault.truncate and transport == "udp":
            response.flags |= dns.flags.TC
            return Reply(response, delay, max_size)
        if not question.name.is_subdomain(self.origin):
            response.set_rcode(dns.rcode.REFUSED)
            return Reply(response, delay, max_size)
        response.flags |= dns.flags.AA
        dnssec_ok = query.edns >= 0 and bool(query.ednsflags & dns.flags.DO)
        if dnssec_ok:
            response.ednsflags |= dns.flags.DO
        self._answer(response, question.name, question.rdtype, fault, dnssec_ok)
        if self.authenticated_data and self._key is not None and not (fault and fault.bogus_signature):
            if dnssec_ok or query.flags & dns.flags.AD:
                response.flags |= dns.flags.AD
        return Reply(response, delay, max_size)

    def _lost(self, query: dns.message.Message, drop_first: int) -> bool:
        """Count this datagram of its query (ID and question); True while it is among the first lost."""
        question = query.question[0]
        key = (query.id, question.name.to_text().lower(), question.rdtype)
        now = time.monotonic()
        seen = self._datagrams_seen
        # Re-inserted on every datagram, so the least recently seen queries come first.
        count = seen.pop(key, (0, now))[0] + 1
        seen[key] = (count, now)
        while seen and (
            len(seen) > _DATAGRAMS_REMEMBERED or next(iter(seen.values()))[1] < now - _DATAGRAMS_REMEMBERED_S
        ):
            del seen[next(iter(seen))]
        return count <= drop_first

    def _answer(
        self,
        response: dns.message.Message,
        qname: dns.name.Name,
        rdtype: int,
        fault: DNSFault | None,
        dnssec: bool,
    ) -> None:
        bogus = bool(fault and fault.bogus_signature)
        name = qname
        for _ in range(8):  # follow CNAMEs inside the zone, bounded against loops
            rrset = self._rrsets.get((name, rdtype))
            cname = self._rrsets.get((name, dns.rdatatype.CNAME))
            if rrset is None and cname is not None and rdtype != dns.rdatatype.CNAME:
                self._add(response.answer, cname, dnssec, bogus)
                name = cname[0].target
                continue
            if rrset is not None:
                if fault is not None and fault.answers is not None:
                    rrset = dns.rrset.from_text_list(
                        rrset.name,
                        rrset.ttl,
                        "IN",
                        rrset.rdtype,
                        list(fault.answers),
                        origin=self.origin,
                        relativize=False,
                    )
                self._add(response.answer, rrset, dnssec, bogus)
                if rdtype == dns.rdatatype.NS:
                    for ns in rrset:
                        glue = self._rrsets.get((ns.target, dns.rdatatype.A))
                        if glue is not None:
                            self._add(response.additional, glue, dnssec, bogus)
                return
            break
        soa = self._rrsets[(self.origin, dns.rdatatype.SOA)]
        self._add(response.authority, soa, dnssec, bogus)
        if not any(owner == name for owner, _ in self._rrsets) and name.is_subdomain(self.origin):
            response.set_rcode(dns.rcode.NXDOMAIN)

    def _add(self, section: list[dns.rrset.RRset], rrset: dns.rrset.RRset, dnssec: bool, bogus: bool) -> None:
        section.append(rrset)
        sig = self._sigs.get((rrset.name, rrset.rdtype)) if dnssec else None
        if sig is not None:
            section.append(_corrupt(sig) if bogus else sig)


def _corrupt(sig: dns.rrset.RRset) -> dns.rrset.RRset:
    rrsig = sig[0]
    flipped = bytes([rrsig.signature[0] ^ 0xFF]) + rrsig.signature[1:]
    return dns.rrset.from_rdata(sig.name, sig.ttl, rrsig.replace(signature=flipped))
