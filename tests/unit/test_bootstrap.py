"""meshloop.xds.bootstrap: pure bootstrap construction and the ``bootstrap`` command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

# registers every type the bootstraps pack into Any, so ParseDict can check them
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.metrics.v3 import metrics_service_pb2  # noqa: F401
from envoy.config.trace.v3 import opentelemetry_pb2  # noqa: F401
from envoy.extensions.access_loggers.grpc.v3 import als_pb2  # noqa: F401
from envoy.extensions.access_loggers.open_telemetry.v3 import logs_service_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.stat_sinks.open_telemetry.v3 import open_telemetry_pb2  # noqa: F401
from envoy.extensions.tracers.opentelemetry.resource_detectors.v3 import (  # noqa: F401
    static_config_resource_detector_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

from meshloop.errors import ConfigError
from meshloop.xds.bootstrap import (
    BootstrapOptions,
    add_bootstrap_command,
    build_bootstrap,
    node_id,
)
from meshloop.xds.telemetry import (
    access_log_entry,
    duration,
    http_grpc_access_log,
    otel_access_log,
    tcp_grpc_access_log,
)

STATIC = {"ads": False, "listen_port": 10000, "upstream_port": 8000}


def build(**kwargs: Any) -> dict[str, Any]:
    return build_bootstrap(BootstrapOptions(admin_port=9901, **kwargs))


def clusters(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "sidecar~127.0.0.1~app.default~default.svc.cluster.local"),
        (
            {"workload": "reviews", "namespace": "shop", "ip": "10.1.2.3", "pod": "reviews-v2-7d9f"},
            "sidecar~10.1.2.3~reviews-v2-7d9f.shop~shop.svc.cluster.local",
        ),
        (
            {"role": "gateway", "workload": "ingress"},
            "router~127.0.0.1~ingress.default~default.svc.cluster.local",
        ),
        ({"node_id": "explicit"}, "explicit"),
    ],
)
def test_node_id_follows_istio(kwargs: dict[str, Any], expected: str) -> None:
    options = BootstrapOptions(admin_port=1, **kwargs)
    assert node_id(options) == expected
    assert build_bootstrap(options)["node"]["id"] == expected


def test_node_cluster_and_metadata_name_the_workload() -> None:
    node = build(workload="reviews", namespace="shop", version="v2", mesh_id="m1", cluster_id="c1")["node"]
    assert node["cluster"] == "reviews.shop"
    meta = node["metadata"]
    assert (meta["NAMESPACE"], meta["WORKLOAD_NAME"], meta["MESH_ID"], meta["CLUSTER_ID"]) == (
        "shop",
        "reviews",
        "m1",
        "c1",
    )
    assert meta["LABELS"]["app"] == "reviews"
    assert meta["LABELS"]["version"] == "v2"
    assert build(node_cluster="custom")["node"]["cluster"] == "custom"


@pytest.mark.parametrize("api", ["GRPC", "DELTA_GRPC"])
def test_ads_on(api: str) -> None:
    bootstrap = build(ads_api=api, xds_port=15999, collector_port=4999)
    ads = bootstrap["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == api
    assert ads["transport_api_version"] == "V3"
    assert ads["set_node_on_first_message_only"] is True
    assert ads["grpc_services"] == [{"envoy_grpc": {"cluster_name": "meshloop_xds"}}]
    for key in ("lds_config", "cds_config"):
        assert bootstrap["dynamic_resources"][key] == {"ads": {}, "resource_api_version": "V3"}
    found = clusters(bootstrap)
    assert set(found) == {"meshloop_collector", "meshloop_xds"}
    for name, port in (("meshloop_xds", 15999), ("meshloop_collector", 4999)):
        cluster = found[name]
        assert cluster["type"] == "STATIC"
        options = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        assert options["explicit_http_config"] == {"http2_protocol_options": {}}
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["address"]["socket_address"]["port_value"] == port
    assert "listeners" not in bootstrap["static_resources"]


def test_dns_name_gives_strict_dns_preferring_ipv4() -> None:
    cluster = clusters(build(meshloop_host="meshloop.mesh-system.svc"))["meshloop_xds"]
    assert (cluster["type"], cluster["dns_lookup_family"]) == ("STRICT_DNS", "V4_PREFERRED")


def test_ads_off_gives_a_static_listener_with_the_grpc_access_logger() -> None:
    bootstrap = build(**STATIC, access_log_flush_interval=0.25, access_log_buffer_bytes=0)
    assert "dynamic_resources" not in bootstrap
    assert set(clusters(bootstrap)) == {"meshloop_collector", "example_upstream"}
    assert "typed_extension_protocol_options" not in clusters(bootstrap)["example_upstream"]
    [listener] = bootstrap["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["port_value"] == 10000
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [access_log] = manager["access_log"]
    assert access_log["name"] == "envoy.access_loggers.http_grpc"
    common = access_log["typed_config"]["common_config"]
    assert (common["buffer_flush_interval"], common["buffer_size_bytes"]) == ("0.25s", 0)
    assert "tracing" not in manager


def test_ads_off_needs_the_ports_and_tracing_needs_ads_off() -> None:
    with pytest.raises(ConfigError, match="listen_port"):
        build(ads=False)
    with pytest.raises(ConfigError, match="tracing"):
        build(tracing=True)
    manager = build(**STATIC, tracing=True)["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"
    ][0]
    assert manager["typed_config"]["tracing"]["provider"]["name"] == "envoy.tracers.opentelemetry"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"admin_port": 70000}, "admin_port"), ({"stats_flush_interval": 0}, "stats_flush_interval")],
)
def test_bad_options_are_config_errors(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        BootstrapOptions(**{"admin_port": 1, **kwargs})
    assert info.value.key == key


def test_metrics_service_sink() -> None:
    bootstrap = build(stats_flush_interval=2.5)
    assert bootstrap["stats_flush_interval"] == "2.5s"
    [sink] = bootstrap["stats_sinks"]
    assert sink["name"] == "envoy.stat_sinks.metrics_service"
    config = sink["typed_config"]
    assert config["grpc_service"] == {"envoy_grpc": {"cluster_name": "meshloop_collector"}}
    assert (config["transport_api_version"], config["emit_tags_as_labels"]) == ("V3", True)
    assert config["report_counters_as_deltas"] is True


def test_open_telemetry_sink_identifies_the_node() -> None:
    options = BootstrapOptions(admin_port=1, stats_sink="open_telemetry", workload="reviews", version="v3")
    [sink] = build_bootstrap(options)["stats_sinks"]
    assert sink["name"] == "envoy.stat_sinks.open_telemetry"
    [detector] = sink["typed_config"]["resource_detectors"]
    attributes = detector["typed_config"]["attributes"]
    assert attributes["service.name"] == "reviews"
    assert attributes["service.version"] == "v3"
    assert attributes["service.instance.id"] == node_id(options)
    metadata = sink["typed_config"]["grpc_service"]["initial_metadata"]
    assert metadata == [{"key": "x-meshloop-node-id", "value": node_id(options)}]
    assert "stats_sinks" not in build(stats_sink="none")


def test_access_log_builders() -> None:
    http = http_grpc_access_log(log_name="x", flush_interval=2, buffer_size_bytes=1024)
    assert http["@type"].endswith("grpc.v3.HttpGrpcAccessLogConfig")
    assert http["common_config"] == {
        "log_name": "x",
        "grpc_service": {"envoy_grpc": {"cluster_name": "meshloop_collector"}},
        "transport_api_version": "V3",
        "buffer_flush_interval": "2s",
        "buffer_size_bytes": 1024,
    }
    assert {"traceparent", "b3", "x-b3-traceid", "x-b3-spanid"} <= set(
        http["additional_request_headers_to_log"]
    )
    tcp = tcp_grpc_access_log(collector_cluster="other")
    assert tcp["common_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == "other"
    assert access_log_entry(tcp)["name"] == "envoy.access_loggers.tcp_grpc"
    otel = otel_access_log(resource_attributes={"service.name": "a"})
    assert access_log_entry(otel)["name"] == "envoy.access_loggers.open_telemetry"
    assert otel["resource_attributes"]["values"] == [{"key": "service.name", "value": {"string_value": "a"}}]


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (0.25, "0.25s"), (1e-3, "0.001s"), (0, "0s")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


VARIANTS = [
    {},
    {"role": "gateway", "ads_api": "DELTA_GRPC", "meshloop_host": "localhost"},
    {"stats_sink": "open_telemetry"},
    {**STATIC, "access_log": "open_telemetry", "tracing": True},
    STATIC,
]


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_every_variant_parses_as_an_envoy_bootstrap_proto(kwargs: dict[str, Any]) -> None:
    message = json_format.ParseDict(build(**kwargs), bootstrap_pb2.Bootstrap())
    assert message.admin.address.socket_address.port_value == 9901


def run_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="meshloop")
    add_bootstrap_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bootstrap", *argv])
    code = args.handler(args)
    return code, capsys.readouterr().out


def test_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--admin-port", "9902", "--role", "gateway", "--workload", "gw", "--ads-api",
            "DELTA_GRPC", "--stats-sink", "open_telemetry", "--stats-flush-interval", "1",
            "--xds-port", "1234"]  # fmt: skip
    code, out = run_command(argv, capsys)
    assert code == 0
    expected = build_bootstrap(
        BootstrapOptions(
            admin_port=9902,
            role="gateway",
            workload="gw",
            ads_api="DELTA_GRPC",
            stats_sink="open_telemetry",
            stats_flush_interval=1,
            xds_port=1234,
        )  # fmt: skip
    )
    assert json.loads(out) == expected


def test_command_no_ads_writes_yaml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "envoy.yaml"
    argv = ["--admin-port", "9903", "--no-ads", "--listen-port", "10001", "--upstream-port", "8001",
            "--access-log-flush-interval", "0.5", "--output", str(target)]  # fmt: skip
    code, out = run_command(argv, capsys)
    assert (code, out) == (0, "")
    loaded = yaml.safe_load(target.read_text())
    assert "dynamic_resources" not in loaded
    assert loaded["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 10001
    options = BootstrapOptions(admin_port=9903, ads=False, listen_port=10001, upstream_port=8001,
                               access_log_flush_interval=0.5)  # fmt: skip
    assert loaded == build_bootstrap(options)


def test_command_requires_admin_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_command([], capsys)
