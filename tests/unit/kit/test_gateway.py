"""The rendered Envoy config: ext_authz placement, public and internal routes, trusted
header stripping, CORS, and a baseline without ext_authz."""

from __future__ import annotations

from typing import Any

import pytest

from services.kit import context, gateway


def manager(config: dict[str, Any]) -> dict[str, Any]:
    chain = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    typed: dict[str, Any] = chain["typed_config"]
    return typed


@pytest.fixture
def config() -> dict[str, Any]:
    catalog = gateway.load_catalog()
    ports = {entry.name: 50000 + i for i, entry in enumerate(catalog)}
    ports.update({gateway.http_upstream(e.name): 51000 + i for i, e in enumerate(catalog)})
    return gateway.render(catalog, ports, listen_port=8080, admin_port=9901)


def test_ext_authz_runs_after_the_transcoder_and_cors(config: dict[str, Any]) -> None:
    names = [f["name"] for f in manager(config)["http_filters"]]
    assert names == [
        "envoy.filters.http.lua",
        "envoy.filters.http.cors",
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.router",
    ]
    authz = manager(config)["http_filters"][4]["typed_config"]
    assert authz["failure_mode_allow"] is False
    assert authz["transport_api_version"] == "V3"
    service = authz["http_service"]
    cluster = gateway.http_upstream(gateway.AUTHZ_SERVICE)
    assert service["server_uri"]["cluster"] == cluster
    assert cluster in {c["name"] for c in config["static_resources"]["clusters"]}
    assert service["server_uri"]["timeout"]
    assert service["path_prefix"] == gateway.AUTHZ_PATH_PREFIX
    assert not authz["include_peer_certificate"]
    assert "with_request_body" not in authz
    # Only the credentials go out; only trusted headers come in, only the status goes back.
    sent = [pattern["exact"] for pattern in authz["allowed_headers"]["patterns"]]
    assert sent == list(gateway.AUTHZ_HEADERS)
    answer = service["authorization_response"]
    upstream = [pattern["exact"] for pattern in answer["allowed_upstream_headers"]["patterns"]]
    assert upstream == list(context.TRUSTED_KEYS)
    client = [pattern["exact"] for pattern in answer["allowed_client_headers"]["patterns"]]
    assert client == list(gateway.AUTHZ_CLIENT_HEADERS)


def test_public_and_unrouted_paths_skip_ext_authz(config: dict[str, Any]) -> None:
    routes = manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    exempt = {
        route["match"].get("path", route["match"].get("prefix"))
        for route in routes
        if route.get("typed_per_filter_config", {})
        .get("envoy.filters.http.ext_authz", {})
        .get("disabled")
    }
    # WebSocket upgrades skip ext_authz: the bridge admits them with the same gate.
    websocket = {path for entry in gateway.load_catalog() for path in entry.websocket_paths}
    assert websocket == {"/ws/chat"}
    assert exempt == {*gateway.PUBLIC_METHODS, *gateway.INTERNAL_METHODS, *websocket, "/"}
    for route in routes:
        if route["match"].get("path") in gateway.INTERNAL_METHODS:
            assert route["direct_response"]["status"] == 404


def test_rest_paths_have_a_route_entry_for_cors(config: dict[str, Any]) -> None:
    # Envoy's CORS filter skips direct-response routes; REST paths must not land on one.
    routes = manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    rest = [r for r in routes if r["match"].get("prefix") == gateway.REST_PREFIX]
    assert rest == [{"match": {"prefix": "/v1/"}, "route": {"cluster": gateway.UNROUTED}}]
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert clusters[gateway.UNROUTED]["load_assignment"]["endpoints"] == []


def test_trusted_headers_are_stripped_before_any_filter(config: dict[str, Any]) -> None:
    mutation = manager(config)["early_header_mutation_extensions"][0]["typed_config"]
    assert [m["remove"] for m in mutation["mutations"]] == list(context.TRUSTED_KEYS)


def test_cors_lets_browsers_send_credentials_and_read_errors(config: dict[str, Any]) -> None:
    vhost = manager(config)["route_config"]["virtual_hosts"][0]
    policy = vhost["typed_per_filter_config"]["envoy.filters.http.cors"]
    for header in ("authorization", "x-api-key", "content-type"):
        assert header in policy["allow_headers"]
    for header in ("retry-after", "grpc-status", "grpc-status-details-bin"):
        assert header in policy["expose_headers"]


def test_baseline_without_ext_authz() -> None:
    catalog = [entry for entry in gateway.load_catalog() if entry.name != "edge"]
    ports = {entry.name: 50000 + i for i, entry in enumerate(catalog)}
    config = gateway.render(catalog, ports, listen_port=8080, admin_port=9901, authz=False)
    names = [f["name"] for f in manager(config)["http_filters"]]
    assert "envoy.filters.http.ext_authz" not in names
    with pytest.raises(ValueError, match="edge"):
        gateway.render(catalog, ports, listen_port=8080, admin_port=9901)
