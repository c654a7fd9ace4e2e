"""Who reported an entry, and where its request went: pure parsers of Istio names.

- The reporter: an Envoy ``Node`` (``id``, ``cluster``, ``metadata``) →
  :class:`StreamIdentity`. Istio's sidecar node id is ``type~ip~pod.namespace~domain``
  (e.g. ``sidecar~10.1.2.3~reviews-v2-abc.default~default.svc.cluster.local``) and its
  node metadata carries ``WORKLOAD_NAME``, ``NAMESPACE`` and ``LABELS``
  (https://istio.io/latest/docs/ops/deployment/application-requirements/ ,
  ``pkg/model/proxy.go`` in istio/istio).
- The destination: Istio's cluster names ``direction|port|subset|host``
  (``outbound|9080|v2|reviews.default.svc.cluster.local``, ``inbound|9080||``) →
  :class:`ClusterName` (``pilot/pkg/model/service.go`` ``BuildSubsetKey``).
- The source: a SPIFFE id ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``.

The regular expressions are shared with the columnar decoder so both read names alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Anchored with ^...$: Rust's regex (polars) has no \Z and its $ never matches before a
# trailing newline; Python's does, so Python callers use fullmatch on the same text.
PORT_PATTERN = r"^[0-9]{1,5}$"
SPIFFE_PATTERN = r"^spiffe://[^/]+/ns/([^/]+)/sa/([^/]+)$"
AUTHORITY_PORT_PATTERN = r":[0-9]*$"
ISTIO_DIRECTIONS = ("inbound", "outbound")
LABEL_CANONICAL_NAME = "service.istio.io/canonical-name"
LABEL_CANONICAL_REVISION = "service.istio.io/canonical-revision"


@dataclass(frozen=True)
class StreamIdentity:
    """The reporter of one access-log stream and the stream's ``log_name``.

    Envoy sends ``identifier`` (node + log_name) only on a stream's first message,
    so the collector keeps one of these per stream and hands it to the decoder.
    """

    node_id: str = ""
    cluster: str = ""
    workload: str = ""
    namespace: str = ""
    version: str = ""
    log_name: str = ""


@dataclass(frozen=True)
class ClusterName:
    """An upstream cluster name split Istio-style; non-Istio names keep ``host`` = name."""

    direction: str  # 'inbound' | 'outbound' | '' (not an Istio name)
    port: int  # 0 when absent or not a port number
    subset: str
    host: str


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _pod_and_namespace(node_id: str) -> tuple[str, str]:
    """``type~ip~pod.namespace~domain`` → (pod, namespace); ('', '') if not that shape.

    Pod names may contain dots, namespaces may not: split at the last dot.
    """
    parts = node_id.split("~")
    if len(parts) != 4 or not parts[2]:
        return "", ""
    pod, _, namespace = parts[2].rpartition(".")
    return (pod, namespace) if pod else (namespace, "")


def stream_identity(
    node_id: str, cluster: str = "", metadata: Mapping[str, Any] | None = None, log_name: str = ""
) -> StreamIdentity:
    """The reporter of a stream from its Envoy node, with Istio's conventions first.

    workload: metadata ``WORKLOAD_NAME`` → label ``service.istio.io/canonical-name`` →
    label ``app`` → the pod name from an Istio node id → ``cluster`` up to its first
    dot (Istio sets it to ``<service>.<namespace>``) → the node id.
    namespace: metadata ``NAMESPACE`` → the node id's → ``cluster`` after its first dot.
    version: label ``service.istio.io/canonical-revision`` → label ``version`` → ''.
    """
    meta = metadata or {}
    labels = _strings(meta.get("LABELS"))
    pod, pod_namespace = _pod_and_namespace(node_id)
    cluster_name, _, cluster_namespace = cluster.partition(".")
    workload = (
        _str(meta.get("WORKLOAD_NAME")) or labels.get(LABEL_CANONICAL_NAME) or labels.get("app")
        or pod or cluster_name or node_id
    )
    namespace = _str(meta.get("NAMESPACE")) or pod_namespace or cluster_namespace
    version = labels.get(LABEL_CANONICAL_REVISION) or labels.get("version") or ""
    return StreamIdentity(node_id, cluster, workload, namespace, version, log_name)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def identity_from_identifier(identifier: Any) -> StreamIdentity:
    """:func:`stream_identity` of a ``StreamAccessLogsMessage.Identifier`` protobuf."""
    from google.protobuf.json_format import MessageToDict

    node = identifier.node
    metadata = MessageToDict(node.metadata) if node.HasField("metadata") else {}
    return stream_identity(node.id, node.cluster, metadata, identifier.log_name)


def parse_cluster_name(name: str) -> ClusterName:
    """Split ``direction|port|subset|host`` (Istio); any other name is all ``host``."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] not in ISTIO_DIRECTIONS:
        return ClusterName("", 0, "", name)
    direction, port_text, subset, host = parts
    port = int(port_text) if re.fullmatch(PORT_PATTERN[1:-1], port_text) else 0
    return ClusterName(direction, port if port <= 0xFFFF else 0, subset, host)


def destination(upstream_cluster: str, authority: str) -> tuple[str, str, int]:
    """(DestinationService, DestinationSubset, DestinationPort) of an entry.

    From the upstream cluster name; an Istio inbound cluster has no host in current
    Istio (``inbound|9080||``), so the service is then the request's authority without
    its port — the name the caller used for the reporter's own service.
    """
    parsed = parse_cluster_name(upstream_cluster)
    service = parsed.host
    if not service and parsed.direction == "inbound":
        service = re.sub(AUTHORITY_PORT_PATTERN[:-1] + r"\Z", "", authority)
    return service, parsed.subset, parsed.port


def spiffe_source(uri: str) -> tuple[str, str] | None:
    """(workload, namespace) named by a SPIFFE id ``spiffe://td/ns/NS/sa/SA``, else None.

    The workload is the service account: an access-log entry carries the peer's
    certificate, not Istio's peer metadata, and the account is what the certificate names.
    """
    match = re.fullmatch(SPIFFE_PATTERN[1:-1], uri)
    return (match.group(2), match.group(1)) if match else None


def source(spiffe_id: str, direction: str, reporter: StreamIdentity) -> tuple[str, str]:
    """(SourceWorkload, SourceNamespace) of an entry.

    The downstream peer's SPIFFE id when it has one (mTLS: the caller's sidecar);
    otherwise, for ``outbound`` traffic, the reporter itself (a sidecar's outbound
    listener serves its own application, a gateway sends as itself); otherwise unknown ('').
    """
    parsed = spiffe_source(spiffe_id)
    if parsed is not None:
        return parsed
    if direction == "outbound":
        return reporter.workload, reporter.namespace
    return "", ""
