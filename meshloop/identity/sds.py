"""SDS for one Envoy: ``envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets`` (SotW).

As istio-agent does, two resources: ``default`` (the workload ``tls_certificate``: chain +
key) and ``ROOTCA`` (a ``validation_context`` whose ``trusted_ca`` is the trust bundle).
https://www.envoyproxy.io/docs/envoy/latest/configuration/security/secret

Per stream: the names Envoy asked for; a response when the names change or the
:class:`SecretStore` gets a new version (rotation pushes on every open stream).
ACK/NACK, simply: a request with ``error_detail`` is a NACK — recorded in
:attr:`SecretStore.nacks`, counted, nothing resent; any other request with a nonce is an
ACK of ``version_info``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2
from prometheus_client import Counter

__all__ = ["ROOT_CA", "SECRET_TYPE", "WORKLOAD_CERT", "SdsServicer", "SecretStore", "WorkloadSecret"]

WORKLOAD_CERT = "default"
ROOT_CA = "ROOTCA"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

SDS_NACKS = Counter("meshloop_agent_sds_nacks_total", "SDS responses Envoy rejected (NACK).")
SDS_PUSHES = Counter("meshloop_agent_sds_pushes_total", "SDS responses sent to Envoy.")


@dataclass(frozen=True)
class WorkloadSecret:
    """The workload's key and chain and the roots to trust; ``version`` names this rotation."""

    version: str
    chain_pem: str
    key_pem: bytes
    roots_pem: str
    serial: int


@dataclass(frozen=True)
class Nack:
    version: str
    names: tuple[str, ...]
    message: str


def secret_resource(name: str, secret: WorkloadSecret) -> secret_pb2.Secret | None:
    """The ``Secret`` proto Envoy gets for ``name`` (``None`` for names we do not serve)."""
    if name == WORKLOAD_CERT:
        return secret_pb2.Secret(
            name=name,
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_bytes=secret.chain_pem.encode()),
                private_key=base_pb2.DataSource(inline_bytes=secret.key_pem),
            ),
        )
    if name == ROOT_CA:
        return secret_pb2.Secret(
            name=name,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_bytes=secret.roots_pem.encode())
            ),
        )
    return None


class SecretStore:
    """The current :class:`WorkloadSecret`; wakes every SDS stream when it changes."""

    def __init__(self) -> None:
        self.current: WorkloadSecret | None = None
        self.nacks: list[Nack] = []
        self.acked: dict[str, str] = {}  # resource name -> last ACKed version
        self._waiters: set[asyncio.Event] = set()

    def update(self, secret: WorkloadSecret) -> None:
        """Publish a new secret: every open stream sends it."""
        self.current = secret
        for event in self._waiters:
            event.set()

    @contextlib.contextmanager
    def subscribe(self, event: asyncio.Event) -> Iterator[None]:
        self._waiters.add(event)
        try:
            yield
        finally:
            self._waiters.discard(event)


class SdsServicer(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    """State-of-the-world SDS over :class:`SecretStore`."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store
        self._nonces = itertools.count(1)

    async def StreamSecrets(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        wake = asyncio.Event()
        names: list[tuple[str, ...]] = [()]
        closed = asyncio.Event()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    self._on_request(request, names, wake)
            finally:
                closed.set()
                wake.set()

        reader = asyncio.create_task(read())
        sent: tuple[str, tuple[str, ...]] | None = None
        with self.store.subscribe(wake):
            try:
                while not closed.is_set():
                    await wake.wait()
                    wake.clear()
                    secret = self.store.current
                    if secret is None or not names[0] or sent == (secret.version, names[0]):
                        continue
                    await context.write(self._response(secret, names[0]))
                    sent = (secret.version, names[0])
            finally:
                reader.cancel()

    def _on_request(
        self, request: discovery_pb2.DiscoveryRequest, names: list[tuple[str, ...]], wake: asyncio.Event
    ) -> None:
        requested = tuple(sorted(request.resource_names))
        if request.HasField("error_detail"):
            SDS_NACKS.inc()
            self.store.nacks.append(Nack(request.version_info, requested, request.error_detail.message))
        elif request.response_nonce:
            for name in requested:
                self.store.acked[name] = request.version_info
        if requested != names[0] or not request.response_nonce:
            names[0] = requested
            wake.set()

    def _response(self, secret: WorkloadSecret, names: tuple[str, ...]) -> discovery_pb2.DiscoveryResponse:
        resources = []
        for name in names:
            proto = secret_resource(name, secret)
            if proto is not None:
                packed = any_pb2.Any()
                packed.Pack(proto)
                resources.append(packed)
        SDS_PUSHES.inc()
        return discovery_pb2.DiscoveryResponse(
            version_info=secret.version,
            resources=resources,
            type_url=SECRET_TYPE,
            nonce=str(next(self._nonces)),
        )
