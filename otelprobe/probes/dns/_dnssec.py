"""Local DNSSEC validation of one answer: its RRSIG against the signer's DNSKEY set.

The dns probe (probes/dns/probe.py) fetches the signer zone's DNSKEY RRset and calls `validate_answer`.
This is one-zone validation, not a chain walk to the root: the DNSKEY set must be self-signed and
match a configured trust anchor (DS or DNSKEY text); without anchors it proves only that the
answer is consistently signed, which `anchored=False` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dns.dnssec
import dns.exception
import dns.message
import dns.name
import dns.node
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.rrset

from otelprobe.errors import DNSError


@dataclass(frozen=True, slots=True)
class Validation:
    """A successful validation: who signed, and whether the key matched a trust anchor."""

    signer: dns.name.Name
    anchored: bool


def signer_of(
    response: dns.message.Message, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.name.Name:
    """The signer name of the answer's RRSIG; DNSError when the answer is unsigned."""
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.RRSIG and rrset.covers == rdtype:
            return rrset[0].signer  # type: ignore[no-any-return]
    raise DNSError(
        "dnssec_unsigned", f"no RRSIG covers the {dns.rdatatype.to_text(rdtype)} answer of {qname}"
    )


def validate_answer(
    response: dns.message.Message,
    rdtype: dns.rdatatype.RdataType,
    dnskey_response: dns.message.Message,
    trust_anchors: Sequence[str],
) -> Validation:
    """Validate every answer RRset of type `rdtype` (and CNAMEs) with the signer's DNSKEYs.

    Raises DNSError: dnssec_unsigned, dnssec_no_dnskey, dnssec_bogus, dnssec_untrusted_key.
    """
    qname = response.question[0].name
    signer = signer_of(response, qname, rdtype)
    dnskeys = _find(dnskey_response.answer, signer, dns.rdatatype.DNSKEY)
    if dnskeys is None:
        raise DNSError("dnssec_no_dnskey", f"{signer} has no DNSKEY records")
    keys: dict[dns.name.Name, dns.node.Node | dns.rdataset.Rdataset] = {signer: dnskeys}
    key_sig = _find(dnskey_response.answer, signer, dns.rdatatype.RRSIG, covers=dns.rdatatype.DNSKEY)
    try:
        if key_sig is None:
            raise DNSError("dnssec_bogus", f"the DNSKEY set of {signer} is unsigned")
        dns.dnssec.validate(dnskeys, key_sig, keys)
        for rrset in response.answer:
            if rrset.rdtype in (rdtype, dns.rdatatype.CNAME):
                sig = _find(response.answer, rrset.name, dns.rdatatype.RRSIG, covers=rrset.rdtype)
                if sig is None:
                    raise DNSError("dnssec_bogus", f"{rrset.name} {rrset.rdtype.name} is unsigned")
                dns.dnssec.validate(rrset, sig, keys)
    except dns.exception.ValidationFailure as exc:
        raise DNSError("dnssec_bogus", f"DNSSEC validation of {qname} failed: {exc}") from exc
    anchored = _matches_anchor(signer, dnskeys, trust_anchors)
    if trust_anchors and not anchored:
        raise DNSError("dnssec_untrusted_key", f"no DNSKEY of {signer} matches a configured trust anchor")
    return Validation(signer, anchored)


def _find(
    section: list[dns.rrset.RRset], name: dns.name.Name, rdtype: int, covers: int = dns.rdatatype.NONE
) -> dns.rrset.RRset | None:
    for rrset in section:
        if rrset.name == name and rrset.rdtype == rdtype and rrset.covers == covers:
            return rrset
    return None


def _matches_anchor(signer: dns.name.Name, dnskeys: dns.rrset.RRset, anchors: Sequence[str]) -> bool:
    for text in anchors:
        anchor = _parse_anchor(text)
        for key in dnskeys:
            if isinstance(anchor, dns.rdtypes.ANY.DNSKEY.DNSKEY) and anchor == key:
                return True
            if isinstance(anchor, dns.rdtypes.ANY.DS.DS):
                candidate = dns.dnssec.make_ds(signer, key, anchor.digest_type)
                if candidate == anchor:
                    return True
    return False


def _parse_anchor(text: str) -> dns.rdata.Rdata:
    """'DS <rdata>' or 'DNSKEY <rdata>' (a bare rdata of 4 fields is taken as DS)."""
    kind, _, rest = text.strip().partition(" ")
    if kind.upper() in ("DS", "DNSKEY"):
        return dns.rdata.from_text(dns.rdataclass.IN, kind.upper(), rest)
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DS, text)
