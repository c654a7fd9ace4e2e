"""The CSR service over real gRPC + TLS: tokens, identity checks, renewal by client cert."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import REGISTRY

from meshloop.identity.ca import CertificateAuthority, TrustBundle, key_pem, new_root
from meshloop.identity.gen import ca_pb2, ca_pb2_grpc
from meshloop.identity.service import CAServer, start_ca_server
from meshloop.identity.spiffe import SpiffeId, certificate_spiffe_id
from meshloop.identity.tokens import BootstrapToken, TokenTable

pytestmark = pytest.mark.integration

TOKEN = "t0ken-for-shop-cart-0123456789"
ME = SpiffeId("cluster.local", "shop", "cart")


def csr_for(uri: str | None) -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if uri:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode(), key


@pytest.fixture
async def served() -> AsyncIterator[tuple[CertificateAuthority, CAServer]]:
    root, key = new_root(dt.datetime.now(dt.UTC))
    ca = CertificateAuthority(root, key, TrustBundle([root]))
    tokens = TokenTable([BootstrapToken(TOKEN, ME.namespace, ME.service_account)])
    server, _ = await start_ca_server(ca, tokens, "127.0.0.1", 0)
    yield ca, server
    await server.stop(0)


async def call(
    ca: CertificateAuthority,
    server: CAServer,
    csr: str,
    token: str | None = None,
    client: tuple[str, bytes] | None = None,
) -> ca_pb2.IstioCertificateResponse:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.bundle.pem().encode(),
        certificate_chain=client[0].encode() if client else None,
        private_key=client[1] if client else None,
    )
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{server.port}", credentials, options=[("grpc.ssl_target_name_override", "meshloop")]
    ) as channel:
        stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
        request = ca_pb2.IstioCertificateRequest(csr=csr, validity_duration=3600)
        response: ca_pb2.IstioCertificateResponse = await stub.CreateCertificate(
            request, metadata=metadata, timeout=10
        )
        return response


def denied(reason: str) -> float:
    return REGISTRY.get_sample_value("meshloop_ca_csr_denied_total", {"reason": reason}) or 0.0


def issued() -> float:
    return REGISTRY.get_sample_value("meshloop_ca_certificates_issued_total") or 0.0


async def test_token_gets_a_chain_for_its_identity(served: tuple[CertificateAuthority, CAServer]) -> None:
    ca, server = served
    before = issued()
    csr, _ = csr_for(ME.uri)
    response = await call(ca, server, csr, token=TOKEN)
    leaf = x509.load_pem_x509_certificate(response.cert_chain[0].encode())
    assert certificate_spiffe_id(leaf) == ME
    assert list(response.root_cert.ca_cert) == ca.bundle.pems()
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(hours=1, minutes=1)
    assert issued() == before + 1


async def test_token_cannot_get_another_identity(served: tuple[CertificateAuthority, CAServer]) -> None:
    ca, server = served
    before = denied("identity_mismatch")
    csr, _ = csr_for("spiffe://cluster.local/ns/bank/sa/vault")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(ca, server, csr, token=TOKEN)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "spiffe://cluster.local/ns/bank/sa/vault" in (refused.value.details() or "")
    assert denied("identity_mismatch") == before + 1


@pytest.mark.parametrize("token", [None, "not-a-configured-token-xyz"])
async def test_no_or_bad_credentials_are_refused(
    served: tuple[CertificateAuthority, CAServer], token: str | None
) -> None:
    ca, server = served
    reason = "bad_token" if token else "no_credentials"
    before = denied(reason)
    csr, _ = csr_for(ME.uri)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(ca, server, csr, token=token)
    assert refused.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    assert denied(reason) == before + 1


async def test_renewal_with_client_certificate(served: tuple[CertificateAuthority, CAServer]) -> None:
    ca, server = served
    csr, key = csr_for(ME.uri)
    first = await call(ca, server, csr, token=TOKEN)
    renewal_csr, _ = csr_for(None)
    second = await call(ca, server, renewal_csr, client=("".join(first.cert_chain), key_pem(key)))
    leaf = x509.load_pem_x509_certificate(second.cert_chain[0].encode())
    assert certificate_spiffe_id(leaf) == ME
    # the certificate's identity, not a CSR's wish, decides
    other_csr, _ = csr_for("spiffe://cluster.local/ns/bank/sa/vault")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(ca, server, other_csr, client=("".join(first.cert_chain), key_pem(key)))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_client_certificate_from_another_ca_is_refused(
    served: tuple[CertificateAuthority, CAServer],
) -> None:
    ca, server = served
    stranger_root, stranger_key = new_root(dt.datetime.now(dt.UTC))
    stranger = CertificateAuthority(stranger_root, stranger_key, TrustBundle([stranger_root]))
    csr, key = csr_for(ME.uri)
    chain = stranger.sign_csr(csr, ME)
    before = issued()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(ca, server, csr, client=("".join(chain), key_pem(key)))
    assert refused.value.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert issued() == before
