"""Reporter identity from Envoy nodes, Istio cluster names, SPIFFE sources."""

from __future__ import annotations

import pytest

from meshloop.accesslog.identity import (
    ClusterName,
    StreamIdentity,
    destination,
    identity_from_identifier,
    parse_cluster_name,
    source,
    spiffe_source,
    stream_identity,
)

ISTIO_ID = "sidecar~10.1.2.3~reviews-v2-abc.default~default.svc.cluster.local"
LABELS = {
    "app": "reviews",
    "version": "v2",
    "service.istio.io/canonical-name": "reviews-canonical",
    "service.istio.io/canonical-revision": "v2-canonical",
}


@pytest.mark.parametrize(
    ("node_id", "cluster", "metadata", "expected"),
    [
        # Full Istio metadata wins.
        (
            ISTIO_ID,
            "reviews.default",
            {"WORKLOAD_NAME": "reviews-v2", "NAMESPACE": "bookinfo", "LABELS": LABELS},
            ("reviews-v2", "bookinfo", "v2-canonical"),
        ),
        # No WORKLOAD_NAME: canonical name, then app label.
        (ISTIO_ID, "", {"LABELS": LABELS}, ("reviews-canonical", "default", "v2-canonical")),
        (ISTIO_ID, "", {"LABELS": {"app": "reviews", "version": "v3"}}, ("reviews", "default", "v3")),
        # Only the node id: pod name and namespace from it.
        (ISTIO_ID, "", None, ("reviews-v2-abc", "default", "")),
        # Pod names may hold dots; the namespace is after the last one.
        ("sidecar~10.0.0.1~a.b.c.prod~prod.svc.cluster.local", "", None, ("a.b.c", "prod", "")),
        # Plain Envoy: cluster "<service>.<namespace>", then the node id itself.
        ("front-1", "frontend.shop", None, ("frontend", "shop", "")),
        ("front-1", "", None, ("front-1", "", "")),
        # Malformed metadata values are ignored.
        (ISTIO_ID, "", {"WORKLOAD_NAME": 7, "LABELS": "nope"}, ("reviews-v2-abc", "default", "")),
    ],
)
def test_stream_identity(node_id, cluster, metadata, expected):
    got = stream_identity(node_id, cluster, metadata, log_name="als")
    assert (got.workload, got.namespace, got.version) == expected
    assert (got.node_id, got.cluster, got.log_name) == (node_id, cluster, "als")


def test_identity_from_identifier_reads_node_metadata_struct():
    from envoy.service.accesslog.v3 import als_pb2

    ident = als_pb2.StreamAccessLogsMessage.Identifier(log_name="mesh")
    ident.node.id = ISTIO_ID
    ident.node.cluster = "reviews.default"
    ident.node.metadata.update({"WORKLOAD_NAME": "reviews-v2", "LABELS": {"version": "v2"}})
    assert identity_from_identifier(ident) == StreamIdentity(
        ISTIO_ID, "reviews.default", "reviews-v2", "default", "v2", "mesh"
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            ClusterName("outbound", 9080, "v2", "reviews.default.svc.cluster.local"),
        ),
        (
            "outbound|9080||reviews.default.svc.cluster.local",
            ClusterName("outbound", 9080, "", "reviews.default.svc.cluster.local"),
        ),
        ("inbound|9080||", ClusterName("inbound", 9080, "", "")),
        (
            "inbound|8080|http|reviews.default.svc.cluster.local",
            ClusterName("inbound", 8080, "http", "reviews.default.svc.cluster.local"),
        ),
        ("outbound|99999|v1|x", ClusterName("outbound", 0, "v1", "x")),  # not a port
        ("outbound|http|v1|x", ClusterName("outbound", 0, "v1", "x")),
        ("reviews", ClusterName("", 0, "", "reviews")),  # not an Istio name
        ("sideways|1|2|3", ClusterName("", 0, "", "sideways|1|2|3")),
        ("outbound|1|2", ClusterName("", 0, "", "outbound|1|2")),
        ("", ClusterName("", 0, "", "")),
    ],
)
def test_parse_cluster_name(name, expected):
    assert parse_cluster_name(name) == expected


@pytest.mark.parametrize(
    ("cluster", "authority", "expected"),
    [
        (
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            "x",
            ("reviews.default.svc.cluster.local", "v2", 9080),
        ),
        ("inbound|9080||", "reviews:9080", ("reviews", "", 9080)),
        ("inbound|9080||", "[::1]:9080", ("[::1]", "", 9080)),
        ("reviews", "reviews:9080", ("reviews", "", 0)),
        ("", "reviews:9080", ("", "", 0)),
    ],
)
def test_destination(cluster, authority, expected):
    assert destination(cluster, authority) == expected


def test_spiffe_source_and_source_rule():
    reporter = StreamIdentity(workload="productpage-v1", namespace="default")
    spiffe = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
    assert spiffe_source(spiffe) == ("bookinfo-reviews", "bookinfo")
    assert spiffe_source("spiffe://cluster.local/ns/a/sa/b/extra") is None
    assert spiffe_source("https://example.com") is None
    assert source(spiffe, "inbound", reporter) == ("bookinfo-reviews", "bookinfo")
    assert source("", "outbound", reporter) == ("productpage-v1", "default")
    assert source("", "inbound", reporter) == ("", "")
    assert source("", "", reporter) == ("", "")
