"""Istio's CSR service, ``istio.v1.auth.IstioCertificateService/CreateCertificate``, over TLS.

istiod serves it on 15012 (``--xds-secure-port``); istio-agent calls it for the workload
certificate. https://github.com/istio/api/blob/master/security/v1alpha1/ca.proto

Authentication, in this order:

1. a **client certificate** chained to the trust bundle (renewal): the caller is the
   SPIFFE id in its URI SAN;
2. a **bootstrap token**, ``authorization: Bearer <token>`` in the call metadata
   (:class:`~meshloop.identity.tokens.TokenTable`).

The CA then signs the CSR for exactly that identity; a CSR naming another SPIFFE id is
``PERMISSION_DENIED``. Every refusal is counted in ``meshloop_ca_csr_denied_total{reason}``,
every issue in ``meshloop_ca_certificates_issued_total``.

Why a TLS front: grpcio's Python server either requires client certificates or never asks
for them (``GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY`` is not exposed), but this
port must accept both token-only callers and callers with a certificate. So TLS is
terminated by :mod:`ssl` (``CERT_OPTIONAL``: a certificate, if sent, must chain to the
bundle, else the handshake fails; ALPN ``h2``) and each connection is relayed to a
plaintext gRPC server on loopback. The relay remembers which loopback source port carries
which verified peer; the servicer looks the peer up by ``context.peer()``. A process that
connects to the loopback port directly is simply "no certificate".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import Counter

from meshloop.identity.ca import CertificateAuthority, ServerNames, key_pem
from meshloop.identity.errors import CSRRefused
from meshloop.identity.gen import ca_pb2, ca_pb2_grpc
from meshloop.identity.spiffe import SpiffeId, certificate_spiffe_id
from meshloop.identity.tokens import TokenTable

__all__ = ["CERTIFICATES_ISSUED", "CSR_DENIED", "CAServer", "CertificateServicer", "start_ca_server"]

CERTIFICATES_ISSUED = Counter(
    "meshloop_ca_certificates_issued_total", "Workload certificates issued by the CSR service."
)
CSR_DENIED = Counter(
    "meshloop_ca_csr_denied_total",
    "CSRs refused, by reason (no_credentials, bad_token, identity_mismatch, bad_csr, bad_signature, "
    "bad_key, ttl_too_long).",
    ["reason"],
)

SERVER_NAMESPACE = "meshloop-system"
SERVER_ACCOUNT = "meshloop"
SERVER_DNS = "meshloop"

_STATUS = {
    "identity_mismatch": grpc.StatusCode.PERMISSION_DENIED,
    "no_credentials": grpc.StatusCode.UNAUTHENTICATED,
    "bad_token": grpc.StatusCode.UNAUTHENTICATED,
}


class PeerTable:
    """Verified TLS peers by the loopback source port of their relay connection."""

    def __init__(self) -> None:
        self._by_port: dict[int, SpiffeId | None] = {}

    def put(self, port: int, identity: SpiffeId | None) -> None:
        self._by_port[port] = identity

    def drop(self, port: int) -> None:
        self._by_port.pop(port, None)

    def identity(self, peer: str) -> SpiffeId | None:
        """The identity behind ``context.peer()`` (``ipv4:127.0.0.1:PORT``), if one was verified."""
        _, _, port = peer.rpartition(":")
        return self._by_port.get(int(port)) if port.isdigit() else None


class CertificateServicer(ca_pb2_grpc.IstioCertificateServiceServicer):
    """``CreateCertificate``: authenticate, sign for exactly the authenticated identity."""

    def __init__(self, ca: CertificateAuthority, tokens: TokenTable, peers: PeerTable) -> None:
        self.ca = ca
        self.tokens = tokens
        self.peers = peers

    def authenticate(self, peer: str, metadata: dict[str, str]) -> SpiffeId:
        """Client certificate first, then the bearer token; :class:`CSRRefused` if neither."""
        identity = self.peers.identity(peer)
        if identity is not None:
            return identity
        header = metadata.get("authorization", "")
        if not header:
            raise CSRRefused(
                "no_credentials", "no client certificate and no 'authorization: Bearer <token>' metadata"
            )
        scheme, _, token = header.partition(" ")
        entry = self.tokens.lookup(token.strip()) if scheme.lower() == "bearer" else None
        if entry is None:
            raise CSRRefused("bad_token", "the bearer token is not a configured bootstrap token")
        return self.ca.identity(entry.namespace, entry.service_account)

    async def CreateCertificate(
        self, request: ca_pb2.IstioCertificateRequest, context: grpc.aio.ServicerContext
    ) -> ca_pb2.IstioCertificateResponse:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        try:
            identity = self.authenticate(context.peer(), metadata)
            ttl = dt.timedelta(seconds=request.validity_duration) if request.validity_duration else None
            chain = self.ca.sign_csr(request.csr, identity, ttl)
        except CSRRefused as exc:
            CSR_DENIED.labels(exc.reason).inc()
            await context.abort(_STATUS.get(exc.reason, grpc.StatusCode.INVALID_ARGUMENT), str(exc))
            raise  # abort raises; for the type checker
        CERTIFICATES_ISSUED.inc()
        return ca_pb2.IstioCertificateResponse(
            cert_chain=chain, root_cert=ca_pb2.Roots(ca_cert=self.ca.bundle.pems())
        )


def _server_context(ca: CertificateAuthority) -> tuple[ssl.SSLContext, str]:
    """TLS for the front: a CA-issued server certificate; client certificates optional."""
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = ca.issue(
        key.public_key(),
        ca.identity(SERVER_NAMESPACE, SERVER_ACCOUNT),
        dt.datetime.now(dt.UTC),
        ca.max_ttl,
        ServerNames(dns=(SERVER_DNS,), ips=("127.0.0.1",)),
    )
    chain = "".join(ca.chain_pems(leaf))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=ca.bundle.pem())
    with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain reads files only
        cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_file.write_text(chain)
        key_file.touch(mode=0o600)
        key_file.write_bytes(key_pem(key))
        context.load_cert_chain(cert_file, key_file)
    return context, chain


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@dataclass
class CAServer:
    """The running CSR service: the TLS front on ``port`` and the loopback gRPC server."""

    front: asyncio.Server
    grpc_server: grpc.aio.Server
    port: int
    server_chain_pem: str

    async def stop(self, grace: float | None = 1.0) -> None:
        self.front.close()
        await self.grpc_server.stop(grace)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.front.wait_closed(), timeout=grace or 1.0)


async def start_ca_server(
    ca: CertificateAuthority, tokens: TokenTable, host: str = "127.0.0.1", port: int = 15012
) -> tuple[CAServer, int]:
    """Serve ``IstioCertificateService`` over TLS on ``host:port`` (0: any free port)."""
    peers = PeerTable()
    inner = grpc.aio.server()
    ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(CertificateServicer(ca, tokens, peers), inner)
    inner_port = inner.add_insecure_port("127.0.0.1:0")
    await inner.start()
    context, chain = _server_context(ca)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        identity = certificate_spiffe_id(x509.load_der_x509_certificate(der)) if der else None
        if identity is not None and identity.trust_domain != ca.trust_domain:
            identity = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", inner_port)
        except OSError:
            writer.close()
            return
        local_port = up_writer.get_extra_info("sockname")[1]
        peers.put(local_port, identity)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            peers.drop(local_port)

    front = await asyncio.start_server(relay, host, port, ssl=context)
    bound = front.sockets[0].getsockname()[1]
    return CAServer(front, inner, bound, chain), bound
