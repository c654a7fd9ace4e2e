"""The ACK/NACK state machine (meshloop.xds.ack) as a table, plus protocol properties checked
on every response of the real servicer driven by a scripted client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import duration_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshloop.xds.ack import AckState, Kind, RequestView, on_request, record_send, should_push
from meshloop.xds.cache import SnapshotCache
from meshloop.xds.resources import CLUSTER, ENDPOINT
from meshloop.xds.server import AdsServicer
from meshloop.xds.snapshot import Snapshot
from meshloop.xds.status import XdsEvent, XdsStatus

SENT = record_send(AckState(names=None), "v1", "1")
NACKED = on_request(SENT, RequestView(nonce="1", error="bad"), "v1").state


@pytest.mark.parametrize(
    ("name", "state", "request_", "current", "kind", "respond", "acked", "rejected"),
    [
        ("first request, snapshot ready", None, RequestView(), "v1", Kind.REQUEST, True, None, ()),
        ("first request, no snapshot yet", None, RequestView(), None, Kind.REQUEST, False, None, ()),
        (
            "reconnect holding current",
            None,
            RequestView(version_info="v1"),
            "v1",
            Kind.REQUEST,
            False,
            "v1",
            (),
        ),
        ("reconnect holding old", None, RequestView(version_info="v0"), "v1", Kind.REQUEST, True, "v0", ()),
        (
            "ACK of the latest nonce",
            SENT,
            RequestView(nonce="1", version_info="v1"),
            "v1",
            Kind.ACK,
            False,
            "v1",
            (),
        ),
        (
            "NACK of the latest nonce",
            SENT,
            RequestView(nonce="1", error="bad"),
            "v1",
            Kind.NACK,
            False,
            None,
            ("v1",),
        ),
        ("stale nonce", SENT, RequestView(nonce="0"), "v2", Kind.STALE, False, None, ()),
        (
            "unknown nonce with error",
            SENT,
            RequestView(nonce="9", error="x"),
            "v2",
            Kind.STALE,
            False,
            None,
            (),
        ),
        (
            "ACK with new names",
            SENT,
            RequestView(nonce="1", names=frozenset({"a"})),
            "v1",
            Kind.ACK,
            True,
            "v1",
            (),
        ),
        (
            "after NACK: same nonce again",
            NACKED,
            RequestView(nonce="1"),
            "v1",
            Kind.RESUBSCRIBE,
            False,
            None,
            ("v1",),
        ),
        (
            "after NACK: new names, same version",
            NACKED,
            RequestView(nonce="1", names=frozenset({"a"})),
            "v1",
            Kind.RESUBSCRIBE,
            False,
            None,
            ("v1",),
        ),
        (
            "after NACK: new names, new version",
            NACKED,
            RequestView(nonce="1", names=frozenset({"a"})),
            "v2",
            Kind.RESUBSCRIBE,
            True,
            None,
            ("v1",),
        ),
        (
            "empty nonce mid-stream keeps rejections",
            NACKED,
            RequestView(),
            "v1",
            Kind.REQUEST,
            False,
            None,
            ("v1",),
        ),
    ],  # fmt: skip
)
def test_on_request_table(
    name: str,
    state: AckState | None,
    request_: RequestView,
    current: str | None,
    kind: Kind,
    respond: bool,
    acked: str | None,
    rejected: tuple[str, ...],
) -> None:
    outcome = on_request(state, request_, current)
    assert (outcome.kind, outcome.respond) == (kind, respond), name
    assert outcome.state.acked_version == acked, name
    assert outcome.state.rejected == rejected, name


def test_nack_records_message_and_rejected_version() -> None:
    outcome = on_request(SENT, RequestView(nonce="1", error="weights sum to 0"), "v1")
    assert outcome.rejected == "v1"
    assert outcome.state.nack_message == "weights sum to 0"
    assert not should_push(outcome.state, "v1") and should_push(outcome.state, "v2")


def test_nack_of_an_older_nonce_is_attributed_to_its_version() -> None:
    state = record_send(SENT, "v2", "2")
    outcome = on_request(state, RequestView(nonce="1", error="bad"), "v2")
    assert (outcome.kind, outcome.rejected) == (Kind.NACK, "v1")
    assert not should_push(outcome.state, "v1")


def test_should_push_only_changed_versions() -> None:
    assert not should_push(SENT, "v1")
    assert should_push(SENT, "v2")
    assert not should_push(SENT, None)


# --- properties, on the real servicer -----------------------------------------------------


def _snapshot(seconds: int) -> Snapshot:
    cluster = cluster_pb2.Cluster(
        name="c", type=cluster_pb2.Cluster.STATIC, connect_timeout=duration_pb2.Duration(seconds=seconds)
    )
    return Snapshot.build({CLUSTER: [cluster]})


SNAPSHOTS = [_snapshot(s) for s in range(1, 5)]


class _Context:
    """Records what the servicer writes; the client reads ``responses``."""

    def __init__(self) -> None:
        self.responses: list[discovery_pb2.DiscoveryResponse] = []
        self.arrived = asyncio.Event()

    async def write(self, response: discovery_pb2.DiscoveryResponse) -> None:
        self.responses.append(response)
        self.arrived.set()

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"aborted {code}: {details}")


Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("snap"), st.integers(0, len(SNAPSHOTS) - 1)),
        st.tuples(st.sampled_from(["ack", "nack", "stale", "eds"]), st.just(0)),
    ),
    max_size=12,
)


async def _drive(
    script: list[Step],
) -> tuple[list[discovery_pb2.DiscoveryResponse], list[tuple[str, str, int]]]:
    """Run one SotW stream: the client follows ``script``, answering the latest response it has
    seen. Returns every response and each NACK the server recorded as (type, version, number
    of responses written by then); after a NACK the client waits until it is recorded."""
    node = base_pb2.Node(id="n1")
    cache, context = SnapshotCache(), _Context()
    cache.set_snapshot("n1", SNAPSHOTS[0])
    requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
    recorded: list[tuple[str, str, int]] = []
    nack_seen = asyncio.Event()

    def on_event(event: XdsEvent) -> None:
        if event.kind == "NACK":
            recorded.append((event.type_url, event.version, len(context.responses)))
            nack_seen.set()

    async def iterate() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (item := await requests.get()) is not None:
            yield item

    servicer = AdsServicer(cache, XdsStatus(on_event=on_event))
    task = asyncio.create_task(servicer.StreamAggregatedResources(iterate(), context))  # type: ignore[arg-type]
    await requests.put(discovery_pb2.DiscoveryRequest(node=node, type_url=CLUSTER))
    await asyncio.wait_for(context.arrived.wait(), 5)
    nacked_nonces: set[str] = set()
    for action, index in script:
        last = context.responses[-1]
        if action == "snap":
            cache.set_snapshot("n1", SNAPSHOTS[index])
        elif action == "push":  # a snapshot change the client waits to receive
            context.arrived.clear()
            cache.set_snapshot("n1", SNAPSHOTS[index])
            await asyncio.wait_for(context.arrived.wait(), 5)
        elif action == "ack":
            request = discovery_pb2.DiscoveryRequest(
                type_url=last.type_url, version_info=last.version_info, response_nonce=last.nonce
            )
            await requests.put(request)
        elif action == "nack" and last.nonce not in nacked_nonces:
            nacked_nonces.add(last.nonce)
            request = discovery_pb2.DiscoveryRequest(type_url=last.type_url, response_nonce=last.nonce)
            request.error_detail.code, request.error_detail.message = 13, "rejected"
            nack_seen.clear()
            await requests.put(request)
            await asyncio.wait_for(nack_seen.wait(), 5)
        elif action == "stale":
            await requests.put(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, response_nonce="0"))
        elif action == "eds":
            await requests.put(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["c"]))
        for _ in range(3):
            await asyncio.sleep(0)  # let the stream interleave (not synchronisation)
    await requests.put(None)
    await asyncio.wait_for(task, 5)
    return context.responses, recorded


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_protocol_invariants_on_every_response(script: list[Step]) -> None:
    responses, nacks = asyncio.run(_drive(script))
    nonces = [int(r.nonce) for r in responses]
    assert nonces == sorted(set(nonces)), "nonces must increase strictly"
    for response in responses:
        assert response.version_info and response.type_url in (CLUSTER, ENDPOINT)
        assert all(any_.type_url == response.type_url for any_ in response.resources)
    for type_url, version, written in nacks:
        later = [r.version_info for r in responses[written:] if r.type_url == type_url]
        assert version not in later, f"{version} was NACKed, then sent again"


async def test_nacked_version_not_resent_after_snapshot_flaps() -> None:
    """bad (NACK) → good → bad again: the bad version is not pushed a second time."""
    responses, nacks = await _drive(
        [("snap", 1), ("nack", 0), ("snap", 2), ("ack", 0), ("snap", 1), ("snap", 3)]
    )
    versions = [r.version_info for r in responses]
    bad, good, last = (
        SNAPSHOTS[1].version(CLUSTER),
        SNAPSHOTS[2].version(CLUSTER),
        SNAPSHOTS[3].version(CLUSTER),
    )
    assert [(t, v) for t, v, _ in nacks] == [(CLUSTER, bad)]
    assert versions.count(bad) == 1 and good in versions and versions[-1] == last
