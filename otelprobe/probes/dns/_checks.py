"""What the dns probe reads off an answer: attributes, rcode classification and assertions.

Called by probes/dns/probe.py after the `dns.lookup` exchange; raises DNSError for a failing rcode and
AssertionFailed for a configured expectation that the answer does not meet.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from otelprobe import names
from otelprobe.errors import AssertionFailed, DNSError
from otelprobe.probes.dns._dnssec import signer_of
from otelprobe.timing import AttributeValue

if TYPE_CHECKING:
    from otelprobe.probes.dns.probe import DNSExpect

_RCODE_DETAILS: Final = {
    dns.rcode.NXDOMAIN: "nxdomain",
    dns.rcode.SERVFAIL: "servfail",
    dns.rcode.REFUSED: "refused",
    dns.rcode.FORMERR: "formerr",
    dns.rcode.NOTIMP: "notimp",
}


def answer_attributes(response: dns.message.Message) -> dict[str, AttributeValue]:
    """`dns.answers` (the answer records' data, RRSIGs left out) and their count."""
    answers = tuple(
        rdata.to_text() for rrset in response.answer if rrset.rdtype != dns.rdatatype.RRSIG for rdata in rrset
    )
    return {
        names.DNS_ANSWERS: answers,
        names.PROBE_DNS_ANSWER_COUNT: len(answers),
        names.PROBE_DNS_RCODE: dns.rcode.to_text(response.rcode()),
    }


def response_attributes(response: dns.message.Message) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        names.PROBE_DNS_RCODE: dns.rcode.to_text(response.rcode()),
        names.PROBE_DNS_AUTHORITATIVE: bool(response.flags & dns.flags.AA),
        names.PROBE_DNS_AD: bool(response.flags & dns.flags.AD),
    }
    serial = soa_serial(response)
    if serial is not None:
        attrs[names.PROBE_DNS_SOA_SERIAL] = serial
    return attrs


def soa_serial(response: dns.message.Message) -> int | None:
    """The SOA serial from the answer (an SOA query) or else the authority section (negative answers)."""
    for section in (response.answer, response.authority):
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.SOA:
                return int(rrset[0].serial)
    return None


def check_rcode(response: dns.message.Message, accepted: list[str], qname: str) -> None:
    rcode = response.rcode()
    text = dns.rcode.to_text(rcode)
    if text in accepted:
        return
    detail = _RCODE_DETAILS.get(rcode, f"rcode_{text.lower()}")
    raise DNSError(detail, f"{qname}: {text} (accepted: {', '.join(accepted)})")


def check_expectations(response: dns.message.Message, expect: DNSExpect) -> None:
    """Raise AssertionFailed for the first expectation the answer does not meet."""
    answers = [r for r in response.answer if r.rdtype != dns.rdatatype.RRSIG]
    count = sum(len(r) for r in answers)
    if count < expect.min_answers:
        raise AssertionFailed(
            "too_few_answers", f"{count} answer records, expected at least {expect.min_answers}"
        )
    if expect.authoritative is not None and bool(response.flags & dns.flags.AA) != expect.authoritative:
        raise AssertionFailed(
            "authoritative_mismatch",
            f"AA flag is {bool(response.flags & dns.flags.AA)}, expected {expect.authoritative}",
        )
    if expect.authenticated_data and not response.flags & dns.flags.AD:
        raise AssertionFailed(
            "dnssec_not_authenticated", "the resolver did not set AD (answer not DNSSEC-validated)"
        )
    for section_name, section, patterns in (
        ("answer", answers, expect.answer_regex),
        ("authority", response.authority, expect.authority_regex),
        ("additional", response.additional, expect.additional_regex),
    ):
        lines = _lines(section)
        for pattern in patterns:
            if not any(re.search(pattern, line) for line in lines):
                raise AssertionFailed(
                    f"{section_name}_regex_mismatch", f"no {section_name} record matches {pattern!r}"
                )
    lines = _lines(answers)
    for pattern in expect.answer_not_regex:
        hit = next((line for line in lines if re.search(pattern, line)), None)
        if hit is not None:
            raise AssertionFailed("answer_regex_forbidden", f"answer record {hit!r} matches {pattern!r}")


def signer_or_fail(
    response: dns.message.Message, rdtype: dns.rdatatype.RdataType, attrs: dict[str, AttributeValue]
) -> dns.name.Name:
    try:
        return signer_of(response, response.question[0].name, rdtype)
    except DNSError:
        attrs[names.PROBE_DNS_DNSSEC_VALIDATED] = False
        raise


def _lines(section: list[dns.rrset.RRset]) -> list[str]:
    return [line for rrset in section for line in rrset.to_text().splitlines()]
