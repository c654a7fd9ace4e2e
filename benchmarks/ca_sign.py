"""Workload certificates signed per second: ``CertificateAuthority.sign_csr`` beside ceilings.

* ``sign_csr``: parse the PEM CSR, check key type, verify its ECDSA signature, check its
  SANs, build and sign the certificate (5 extensions), PEM-encode the chain.
* ceiling (the brief's): the same signature with ``cryptography`` alone — the identical
  certificate (same subject, issuer, validity, the same 5 extensions: KU, EKU, basic
  constraints, AKI, SAN) built and signed by ``CertificateBuilder.sign``, nothing around
  it: no CSR, no checks, no PEM. (Until 2026-11-25 the ceiling signed a lighter
  certificate with only the SAN; that compared unlike work.)
* second ceiling: that signature **plus** one ECDSA P-256 verify of the CSR, the check
  ``sign_csr`` may not skip (a P-256 verify costs ~3× a sign with OpenSSL), so this is
  the true upper bound for a CA that verifies CSRs. It verifies with one key object over
  and over; a CA gets a new key with every CSR, and loading it (~5 µs) plus its first
  verify (~5 µs more than later ones) cost extra, so ``sign_csr`` can exceed this one.
* through gRPC: ``CreateCertificate`` over TLS with a bearer token, one channel, 8 calls
  in flight, against the same ceiling.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from benchmarks.harness import Result, best_rate
from meshloop.identity.ca import CertificateAuthority, TrustBundle, new_root
from meshloop.identity.gen import ca_pb2, ca_pb2_grpc
from meshloop.identity.service import start_ca_server
from meshloop.identity.spiffe import SpiffeId
from meshloop.identity.tokens import BootstrapToken, TokenTable

N = 2000
GRPC_CALLS = 1000
ME = SpiffeId("cluster.local", "bench", "workload")
TOKEN = "benchmark-token-0123456789"


def _setup() -> tuple[CertificateAuthority, ec.EllipticCurvePrivateKey, bytes]:
    now = dt.datetime.now(dt.UTC)
    root, key = new_root(now)
    ca = CertificateAuthority(root, key, TrustBundle([root]))
    workload = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(ME.uri)])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(san, critical=True)
        .sign(workload, hashes.SHA256())
    )
    return ca, workload, csr.public_bytes(serialization.Encoding.PEM)


_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
)  # fmt: skip
_EXTENDED_KEY_USAGE = x509.ExtendedKeyUsage(
    [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
)


def _aki(ca: CertificateAuthority) -> x509.AuthorityKeyIdentifier:
    ski = ca.signing_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _raw_sign(ca: CertificateAuthority, public_key: ec.EllipticCurvePublicKey) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.signing_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=24))
        .add_extension(_KEY_USAGE, critical=True)
        .add_extension(_EXTENDED_KEY_USAGE, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_aki(ca), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(ME.uri)]), critical=True)
        .sign(ca.signing_key, hashes.SHA256())
    )


async def _grpc_rate(ca: CertificateAuthority, csr: str) -> float:
    tokens = TokenTable([BootstrapToken(TOKEN, ME.namespace, ME.service_account)])
    server, port = await start_ca_server(ca, tokens, "127.0.0.1", 0)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.bundle.pem().encode())
    options = [("grpc.ssl_target_name_override", "meshloop")]
    request = ca_pb2.IstioCertificateRequest(csr=csr)
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    best = 0.0
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
            stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
            await stub.CreateCertificate(request, metadata=metadata)

            async def worker(count: int) -> None:
                for _ in range(count):
                    await stub.CreateCertificate(request, metadata=metadata)

            loop = asyncio.get_running_loop()
            for _ in range(3):
                start = loop.time()
                await asyncio.gather(*(worker(GRPC_CALLS // 8) for _ in range(8)))
                best = max(best, GRPC_CALLS // 8 * 8 / (loop.time() - start))
    finally:
        await server.stop(0)
    return best


def run() -> list[Result]:
    ca, workload, csr = _setup()
    public_key = workload.public_key()
    parsed = x509.load_pem_x509_csr(csr)
    signature, tbs = parsed.signature, parsed.tbs_certrequest_bytes

    def sign_csr() -> int:
        for _ in range(N):
            ca.sign_csr(csr, ME)
        return N

    def ceiling() -> int:
        for _ in range(N):
            _raw_sign(ca, public_key)
        return N

    def ceiling_with_verify() -> int:
        for _ in range(N):
            public_key.verify(signature, tbs, ec.ECDSA(hashes.SHA256()))
            _raw_sign(ca, public_key)
        return N

    ours = best_rate(sign_csr)
    raw = best_rate(ceiling)
    raw_verify = best_rate(ceiling_with_verify)
    through_grpc = asyncio.run(_grpc_rate(ca, csr.decode()))
    return [
        Result("ca: sign_csr (verify + issue)", ours, "certs/s", "cryptography sign only", raw),
        Result("ca: sign_csr (verify + issue)", ours, "certs/s", "cryptography verify + sign", raw_verify),
        Result("ca: CreateCertificate over gRPC+TLS", through_grpc, "certs/s", "cryptography sign only", raw),
    ]


if __name__ == "__main__":
    from benchmarks.harness import print_table

    print_table(run())
