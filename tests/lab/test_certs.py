"""The lab CA's leaves: the valid one verifies, each broken one fails with its own error."""

from __future__ import annotations

import ssl
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509

from otelprobe.lab.certs import LEAF_KINDS, WRONG_HOST, LabCA, LeafKind


def handshake(ca: LabCA, kind: LeafKind, server_hostname: str = "localhost") -> ssl.SSLObject:
    """A full TLS handshake between a verifying client and the lab server, in memory."""
    client_ctx, server_ctx = ca.client_context(), ca.server_context(kind)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, obj in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client
    raise AssertionError("handshake did not finish")


def test_valid_leaf_verifies_by_name_and_ip(lab_ca: LabCA) -> None:
    assert handshake(lab_ca, "valid").version() in {"TLSv1.3", "TLSv1.2"}
    assert handshake(lab_ca, "valid", server_hostname="127.0.0.1").getpeercert()


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("expired", "certificate has expired"),
        ("not_yet_valid", "certificate is not yet valid"),
        ("wrong_host", "Hostname mismatch"),
        ("self_signed", "self-signed certificate"),
        ("short_chain", "unable to get local issuer certificate"),
    ],
)
def test_each_bad_leaf_fails_verification_with_its_reason(
    lab_ca: LabCA, kind: LeafKind, message: str
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        handshake(lab_ca, kind)
    assert message in info.value.verify_message


def test_wrong_host_leaf_is_valid_for_its_own_name(lab_ca: LabCA) -> None:
    assert handshake(lab_ca, "wrong_host", server_hostname=WRONG_HOST).getpeercert()


def test_chain_shape(lab_ca: LabCA) -> None:
    served = {kind: x509.load_pem_x509_certificates(lab_ca.leaf(kind).served_pem) for kind in LEAF_KINDS}
    assert len(served["valid"]) == 2
    assert len(served["short_chain"]) == 1
    assert len(served["self_signed"]) == 1
    leaf = served["short_chain"][0]
    intermediate = x509.load_pem_x509_certificate(lab_ca.intermediate_pem)
    assert leaf.issuer == intermediate.subject


def test_write_pem_files(lab_ca: LabCA, tmp_path: Path) -> None:
    paths = lab_ca.write_pem_files(tmp_path / "pki")
    assert paths["ca"].read_bytes() == lab_ca.root_pem
    for kind in LEAF_KINDS:
        assert paths[f"{kind}.crt"].read_bytes() == lab_ca.leaf(kind).served_pem
        assert stat.S_IMODE(paths[f"{kind}.key"].stat().st_mode) == 0o600
    # The files work as any TLS server's configuration would use them.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(paths["valid.crt"], paths["valid.key"])
    client = ssl.create_default_context(cafile=paths["ca"])
    assert client.get_ca_certs()[0]["subject"]


def test_a_whole_ca_is_fast() -> None:
    start = time.perf_counter()
    LabCA(hosts=["lab.test"])
    assert time.perf_counter() - start < 1.0
