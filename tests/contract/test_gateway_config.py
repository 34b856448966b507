"""The rendered Envoy configs are ones Envoy itself accepts (``envoy --mode validate``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from services.kit import gateway
from services.kit.stack import envoy_path


def validate(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = gateway.write(config, tmp_path / "envoy.yaml")
    return subprocess.run(
        [str(envoy_path()), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {cluster["name"]: cluster for cluster in config["static_resources"]["clusters"]}


def test_dev_config_is_valid(tmp_path: Path) -> None:
    entries = gateway.load_catalog()
    ports = {entry.name: entry.dev_port for entry in entries}
    ports.update({gateway.http_upstream(e.name): e.http_port for e in entries if e.http_port})
    config = gateway.render(entries, ports, listen_port=8080, admin_port=9901)
    result = validate(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {c["type"] for c in clusters(config).values() if c["name"] in ports} == {"STATIC"}
    # WebSocket paths reach the service's HTTP side over HTTP/1.1, upgraded, past the transcoder.
    routes = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["route_config"]["virtual_hosts"][0]["routes"]  # fmt: skip
    websocket = next(r for r in routes if r["match"] == {"path": "/ws/chat"})
    assert websocket["route"]["cluster"] == "edge-http"
    assert websocket["route"]["upgrade_configs"] == [{"upgrade_type": "websocket"}]
    assert "typed_extension_protocol_options" not in clusters(config)["edge-http"]
    assert websocket["typed_per_filter_config"]["envoy.filters.http.grpc_json_transcoder"][
        "disabled"]  # fmt: skip


def test_production_config_is_valid_and_uses_service_dns(tmp_path: Path) -> None:
    entries = gateway.load_catalog()
    config = gateway.render_production(
        entries, descriptor=gateway.DESCRIPTOR_PATH, namespace="prod"
    )
    result = validate(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener == {"address": "0.0.0.0", "port_value": 8080}
    by_name = clusters(config)
    for entry in entries:
        cluster = by_name[entry.name]
        assert cluster["type"] == "STRICT_DNS"
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["address"]["socket_address"] == {
            "address": f"{entry.name}.prod.svc.cluster.local",
            "port_value": 50051,
        }


def test_a_broken_config_is_rejected(tmp_path: Path) -> None:
    entries = gateway.load_catalog()
    config = gateway.render_production(entries, descriptor=gateway.DESCRIPTOR_PATH)
    config["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
    assert validate(config, tmp_path).returncode != 0


def test_cli_prints_the_production_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.kit.cli", "gateway", "render", "--namespace", "ns"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    printed = yaml.safe_load(result.stdout)
    cluster = clusters(printed)["router"]
    assert cluster["type"] == "STRICT_DNS"
