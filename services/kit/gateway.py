"""The Envoy edge configuration, rendered from the service catalog (gateway/services.yaml).

Envoy transcodes REST/JSON to gRPC from the ``google.api.http`` annotations in the committed
descriptor set, passes native gRPC and gRPC-web through, and routes each gRPC service's path
prefix to its upstream cluster. Unknown paths answer 404 rather than reaching an upstream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CATALOG_PATH = REPO_ROOT / "gateway" / "services.yaml"
DESCRIPTOR_PATH = REPO_ROOT / "gen" / "descriptors" / "supportmesh.binpb"
# Deadline given at the edge to calls whose client sent none (REST callers never do).
DEFAULT_DEADLINE = "30S"
MAX_REQUEST_BYTES = 4 * 1024 * 1024
ERROR_DOMAIN = "supportmesh.io"


@dataclass(frozen=True)
class CatalogEntry:
    """One service of the platform."""

    name: str
    module: str
    grpc_services: tuple[str, ...]
    dev_port: int


def load_catalog(path: Path = CATALOG_PATH) -> list[CatalogEntry]:
    """Read the service catalog."""
    raw = yaml.safe_load(path.read_text())
    return [
        CatalogEntry(
            name=item["name"],
            module=item["module"],
            grpc_services=tuple(item["grpc_services"]),
            dev_port=int(item["dev_port"]),
        )
        for item in raw["services"]
    ]


def _cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "circuit_breakers": {
            "thresholds": [{"max_connections": 1024, "max_pending_requests": 1024,
                            "max_requests": 4096, "max_retries": 3}]
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }  # fmt: skip


def _routes(entries: Sequence[CatalogEntry]) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = []
    for entry in entries:
        for grpc_service in entry.grpc_services:
            routes.append(
                {
                    "match": {"prefix": f"/{grpc_service}/"},
                    "route": {"cluster": entry.name, "timeout": "30s"},
                    "request_headers_to_add": [
                        {
                            "header": {"key": "grpc-timeout", "value": DEFAULT_DEADLINE},
                            "append_action": "ADD_IF_ABSENT",
                        }
                    ],
                }
            )
    routes.append(
        {
            "match": {"prefix": "/"},
            "direct_response": {
                "status": 404,
                "body": {"inline_string": "no route for this path"},
            },
        }
    )
    return routes


# Envoy's own replies (unknown path, bad JSON, body too large, upstream down or slow) get the
# same JSON shape as transcoded gRPC errors: google.rpc.Status with an ErrorInfo reason.
_LOCAL_REPLIES = (
    (400, 3, "VALIDATION_FAILED"),
    (404, 5, "RESOURCE_NOT_FOUND"),
    (413, 8, "PAYLOAD_TOO_LARGE"),
    (503, 14, "DEPENDENCY_UNAVAILABLE"),
    (504, 4, "TIMEOUT"),
)


def _local_reply_config() -> dict[str, Any]:
    mappers = []
    for http_status, grpc_code, reason in _LOCAL_REPLIES:
        mappers.append(
            {
                "filter": {
                    "status_code_filter": {
                        "comparison": {
                            "op": "EQ",
                            "value": {"default_value": http_status, "runtime_key": "_unused"},
                        }
                    }
                },
                "body_format_override": {
                    "json_format": {
                        "code": grpc_code,
                        "message": "%LOCAL_REPLY_BODY%",
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                "reason": reason,
                                "domain": ERROR_DOMAIN,
                                "metadata": {"path": "%REQ(:PATH)%"},
                            }
                        ],
                    }
                },
            }
        )
    return {"mappers": mappers}


def _body_limit_filter() -> dict[str, Any]:
    # The transcoder streams bodies, so its own size limit does not fire, and it drops
    # content-length before routes are matched: refuse declared oversize bodies first.
    # Chunked bodies without a length still meet the services' gRPC message limit.
    code = f"""
function envoy_on_request(handle)
  local length = tonumber(handle:headers():get("content-length") or "0")
  if length and length > {MAX_REQUEST_BYTES} then
    handle:respond({{[":status"] = "413"}}, "request body exceeds {MAX_REQUEST_BYTES} bytes")
  end
end
"""
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": code},
        },
    }


def render(
    entries: Sequence[CatalogEntry],
    upstream_ports: Mapping[str, int],
    *,
    listen_port: int,
    admin_port: int,
    descriptor: Path = DESCRIPTOR_PATH,
    cors_origins: Sequence[str] = (),
) -> dict[str, Any]:
    """Build the Envoy bootstrap for the given services and ports."""
    services = [name for entry in entries for name in entry.grpc_services]
    transcoder = {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            "proto_descriptor": str(descriptor),
            "services": services,
            "convert_grpc_status": True,
            "case_insensitive_enum_parsing": True,
            "print_options": {"always_print_primitive_fields": True,
                              "stream_sse_style_delimited": True,
                              "always_print_enums_as_ints": False,
                              "preserve_proto_field_names": False},
            "request_validation_options": {"reject_unknown_method": True,
                                           "reject_unknown_query_parameters": True},
        },
    }  # fmt: skip
    cors_policy = {
        "allow_origin_string_match": [{"exact": origin} for origin in cors_origins],
        "allow_methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        "allow_headers": "authorization, content-type, x-api-key, x-request-id, x-grpc-web, "
        "grpc-timeout, x-user-agent",
        "expose_headers": "grpc-status, grpc-message, x-request-id, retry-after",
        "max_age": "600",
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        "generate_request_id": True,
        "preserve_external_request_id": True,
        "request_timeout": "60s",
        "stream_idle_timeout": "300s",
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        "local_reply_config": _local_reply_config(),
        "route_config": {
            "name": "edge",
            "virtual_hosts": [{"name": "supportmesh", "domains": ["*"],
                               "typed_per_filter_config": {"envoy.filters.http.cors": {
                                   "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
                                   **cors_policy}},
                               "routes": _routes(entries)}],
        },
        "http_filters": [
            _body_limit_filter(),
            {"name": "envoy.filters.http.cors", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
            {"name": "envoy.filters.http.grpc_web", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"}},
            transcoder,
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }  # fmt: skip
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "edge",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": manager}]}],
            }],
            "clusters": [_cluster(entry.name, upstream_ports[entry.name]) for entry in entries],
        },
    }  # fmt: skip


def write(config: Mapping[str, Any], path: Path) -> Path:
    """Write a rendered config as YAML and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path
