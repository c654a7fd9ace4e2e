"""The node agent (istio-agent's certificate half): key, CSR, renewal, SDS to one Envoy.

* The EC P-256 key is generated here and never leaves the process; only a CSR is sent.
* The first ``CreateCertificate`` authenticates with the bootstrap token; renewals with
  the current certificate (mTLS), falling back to the token if that fails.
* The certificate and the trust bundle are served to Envoy over SDS on a Unix socket
  (:mod:`meshloop.identity.sds`), and renewed at half the lifetime (±10 % jitter):
  the new secret is pushed on the open streams, Envoy swaps it without a restart.

CLI: ``meshloop agent`` (:func:`add_agent_command`) or ``python -m meshloop.identity.agent``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import random
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.service.secret.v3 import sds_pb2_grpc
from prometheus_client import Counter

from meshloop.identity.ca import key_pem
from meshloop.identity.gen import ca_pb2, ca_pb2_grpc
from meshloop.identity.sds import SdsServicer, SecretStore, WorkloadSecret
from meshloop.identity.service import SERVER_DNS
from meshloop.identity.spiffe import DEFAULT_TRUST_DOMAIN, SpiffeId

__all__ = ["AgentConfig", "NodeAgent", "add_agent_command", "handler", "renewal_delay"]

log = logging.getLogger(__name__)

RENEWALS = Counter(
    "meshloop_agent_certificate_requests_total",
    "CreateCertificate calls by the node agent, by credential (token, certificate) and result.",
    ["credential", "result"],
)
RETRY_DELAY = 1.0


@dataclass(frozen=True)
class AgentConfig:
    """What one agent needs; ``cert_ttl`` in seconds (``None``: the CA's default)."""

    ca_address: str
    ca_root_pem: bytes
    token: str | None
    namespace: str
    service_account: str
    sds_socket: Path
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    cert_ttl: float | None = None
    jitter: float = 0.1

    @property
    def identity(self) -> SpiffeId:
        return SpiffeId(self.trust_domain, self.namespace, self.service_account)


def renewal_delay(not_before: dt.datetime, not_after: dt.datetime, now: dt.datetime, rng: float) -> float:
    """Seconds from ``now`` until renewal: half the lifetime, jittered by ``rng`` ∈ [-1, 1] × 10 %.

    The lifetime is measured from the issue time (notBefore plus the CA's backdating is
    unknown here, so from ``now`` when notBefore lies in the past by more than that).
    """
    start = max(not_before, min(now, not_after))
    lifetime = (not_after - start).total_seconds()
    target = lifetime * 0.5 * (1 + 0.1 * max(-1.0, min(1.0, rng)))
    return max(0.0, (start - now).total_seconds() + target)


def _csr(key: ec.EllipticCurvePrivateKey, identity: SpiffeId) -> str:
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(san, critical=True)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


class NodeAgent:
    """Fetches and renews the workload certificate; serves it over SDS."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.store = SecretStore()
        self._generation = 0
        self._issued_at = dt.datetime.now(dt.UTC)

    async def request_certificate(self) -> WorkloadSecret:
        """New key, CSR, ``CreateCertificate``: with the current cert if any, else the token."""
        key = ec.generate_private_key(ec.SECP256R1())
        request = ca_pb2.IstioCertificateRequest(
            csr=_csr(key, self.config.identity), validity_duration=int(self.config.cert_ttl or 0)
        )
        if self.config.cert_ttl and self.config.cert_ttl < 1:
            request.validity_duration = 1
        current = self.store.current
        if current is not None:
            try:
                response = await self._call(request, current, None)
                RENEWALS.labels("certificate", "ok").inc()
                return self._secret(response, key)
            except grpc.aio.AioRpcError as exc:
                RENEWALS.labels("certificate", exc.code().name.lower()).inc()
                log.warning("renewal with the certificate failed (%s); trying the token", exc.details())
                if not self.config.token:
                    raise
        try:
            response = await self._call(request, None, self.config.token)
        except grpc.aio.AioRpcError as exc:
            RENEWALS.labels("token", exc.code().name.lower()).inc()
            raise
        RENEWALS.labels("token", "ok").inc()
        return self._secret(response, key)

    async def _call(
        self, request: ca_pb2.IstioCertificateRequest, client: WorkloadSecret | None, token: str | None
    ) -> ca_pb2.IstioCertificateResponse:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.config.ca_root_pem,
            private_key=client.key_pem if client else None,
            certificate_chain=client.chain_pem.encode() if client else None,
        )
        options = [("grpc.ssl_target_name_override", SERVER_DNS)]
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        async with grpc.aio.secure_channel(self.config.ca_address, credentials, options=options) as channel:
            stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
            response: ca_pb2.IstioCertificateResponse = await stub.CreateCertificate(
                request, metadata=metadata, timeout=10
            )
            return response

    def _secret(
        self, response: ca_pb2.IstioCertificateResponse, key: ec.EllipticCurvePrivateKey
    ) -> WorkloadSecret:
        leaf = x509.load_pem_x509_certificate(response.cert_chain[0].encode())
        self._generation += 1
        self._issued_at = dt.datetime.now(dt.UTC)
        return WorkloadSecret(
            version=f"{self._generation}-{leaf.serial_number:x}",
            chain_pem="".join(response.cert_chain),
            key_pem=key_pem(key),
            roots_pem="".join(response.root_cert.ca_cert),
            serial=leaf.serial_number,
        )

    async def start_sds(self) -> grpc.aio.Server:
        """Serve SDS on the Unix socket (a stale socket file is replaced; mode 0600)."""
        path = self.config.sds_socket
        path.unlink(missing_ok=True)
        server = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(SdsServicer(self.store), server)
        server.add_insecure_port(f"unix:{path}")
        await server.start()
        os.chmod(path, 0o600)
        return server

    async def run(self, stop: asyncio.Event) -> None:
        """Serve SDS, fetch the first certificate, renew until ``stop`` is set."""
        server = await self.start_sds()
        try:
            while not stop.is_set():
                try:
                    secret = await self.request_certificate()
                except grpc.aio.AioRpcError as exc:
                    log.error("certificate request failed: %s %s", exc.code().name, exc.details())
                    delay = RETRY_DELAY
                else:
                    self.store.update(secret)
                    leaf = x509.load_pem_x509_certificate(secret.chain_pem.encode())
                    now = dt.datetime.now(dt.UTC)
                    delay = renewal_delay(
                        self._issued_at, leaf.not_valid_after_utc, now, random.uniform(-1, 1)
                    )
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
        finally:
            await server.stop(0.5)
            self.config.sds_socket.unlink(missing_ok=True)


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def add_agent_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Register ``agent`` on an argparse ``add_subparsers()`` object; sets ``handler``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "agent", help="node agent: workload certificate from the CA, served to Envoy over SDS"
    )
    parser.add_argument("--ca-address", required=True, help="CA gRPC address host:port (TLS)")
    parser.add_argument("--ca-root", required=True, type=Path, help="PEM root that signed the CA's TLS cert")
    parser.add_argument("--token-file", type=Path, help="file holding the bootstrap token")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--service-account", default="default")
    parser.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN)
    parser.add_argument("--sds-socket", required=True, type=Path, help="Unix socket Envoy reads SDS from")
    parser.add_argument("--cert-ttl", type=_duration, default=None, help="e.g. 24h, 3600 (seconds)")
    parser.set_defaults(handler=handler)
    return parser


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    token = args.token_file.read_text().strip() if args.token_file else None
    return AgentConfig(
        ca_address=args.ca_address,
        ca_root_pem=args.ca_root.read_bytes(),
        token=token or None,
        namespace=args.namespace,
        service_account=args.service_account,
        sds_socket=args.sds_socket,
        trust_domain=args.trust_domain,
        cert_ttl=args.cert_ttl,
    )


def handler(args: argparse.Namespace) -> int:
    """Run the agent until SIGINT/SIGTERM; exit code 0."""
    config = config_from_args(args)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await NodeAgent(config).run(stop)

    asyncio.run(main())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meshloop")
    add_agent_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
