"""The Envoy edge configuration, rendered from the service catalog (gateway/services.yaml).

Envoy transcodes REST/JSON to gRPC from the ``google.api.http`` annotations in the committed
descriptor set, passes native gRPC and gRPC-web through, and routes each gRPC service's path
prefix to its upstream cluster. Unknown paths answer 404 rather than reaching an upstream.

Every call is authorized by the edge service's HTTP side through Envoy's ext_authz filter
(``http_service`` mode: an HTTP/1.1 request per call, much cheaper for a Python server than a
gRPC Check), which sits
after the transcoder so that REST, native gRPC and gRPC-web alike reach it with the gRPC
method path (``/pkg.Service/Method``). Client-supplied ``x-supportmesh-*`` headers are
dropped before any filter runs; only an ext_authz OK answer sets them again.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.kit import context

REPO_ROOT = Path(__file__).resolve().parents[2]
CATALOG_PATH = REPO_ROOT / "gateway" / "services.yaml"
DESCRIPTOR_PATH = REPO_ROOT / "gen" / "descriptors" / "supportmesh.binpb"
# Deadline given at the edge to calls whose client sent none (REST callers never do).
DEFAULT_DEADLINE = "30S"
# The same for services whose calls are long-lived streams (a chat session); their routes
# have no Envoy timeout, and heartbeats keep them inside the stream idle timeout.
STREAM_DEADLINE = "3600S"
MAX_REQUEST_BYTES = 4 * 1024 * 1024
ERROR_DOMAIN = "supportmesh.io"
# The catalog entry whose service answers Envoy's ext_authz Check calls.
AUTHZ_SERVICE = "edge"
# Where the edge's HTTP side answers Envoy's authorization requests; the method path follows.
AUTHZ_PATH_PREFIX = "/ext_authz"
# A Check normally answers from in-process caches and one Valkey round trip; the bound covers a
# cold cache (one PostgreSQL lookup). Past it the call is refused (fail closed) with 503.
AUTHZ_TIMEOUT = "1s"
# Methods that answer without a credential: they are how a caller gets one.
PUBLIC_METHODS = (
    "/supportmesh.edge.v1.AuthService/IssueToken",
    "/supportmesh.edge.v1.AuthService/GetJwks",
)
# Where the REST API lives (google.api.http paths), and the cluster its untranscoded paths meet.
REST_PREFIX = "/v1/"
UNROUTED = "unrouted"
# Methods served to the mesh only; the edge does not route them at all.
INTERNAL_METHODS = ("/supportmesh.edge.v1.AuthService/Introspect",)
# Request headers the edge is asked with: the credentials, the request id and the tenant the
# client names, nothing else (the method is in the path). No body or cookies leaked.
AUTHZ_HEADERS = ("authorization", "x-api-key", "x-request-id", context.CLIENT_TENANT_KEY)
# The headers of a refusal that reach the client: the gRPC status for every client kind.
AUTHZ_CLIENT_HEADERS = ("grpc-status", "grpc-message", "grpc-status-details-bin", "retry-after")


@dataclass(frozen=True)
class CatalogEntry:
    """One service of the platform."""

    name: str
    module: str
    grpc_services: tuple[str, ...]
    dev_port: int
    streaming: bool = False  # long-lived streams: no route timeout, STREAM_DEADLINE
    http_port: int | None = None  # dev port of the service's HTTP side (ext_authz, WebSocket)
    websocket_paths: tuple[str, ...] = ()  # paths Envoy upgrades and hands to the HTTP side


def http_upstream(name: str) -> str:
    """The upstream (cluster and port key) of a service's HTTP side."""
    return f"{name}-http"


def load_catalog(path: Path = CATALOG_PATH) -> list[CatalogEntry]:
    """Read the service catalog."""
    raw = yaml.safe_load(path.read_text())
    return [
        CatalogEntry(
            name=item["name"],
            module=item["module"],
            grpc_services=tuple(item["grpc_services"]),
            dev_port=int(item["dev_port"]),
            streaming=bool(item.get("streaming", False)),
            http_port=int(item["http_port"]) if "http_port" in item else None,
            websocket_paths=tuple(item.get("websocket_paths", ())),
        )
        for item in raw["services"]
    ]


def _cluster(name: str, host: str, port: int, *, http2: bool = True) -> dict[str, Any]:
    try:
        ipaddress.ip_address(host)
        kind = "STATIC"
    except ValueError:
        # A DNS name (a Kubernetes Service): re-resolved as endpoints change.
        kind = "STRICT_DNS"
    protocol = {
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    }
    return {
        "name": name,
        "type": kind,
        # A new connection per WebSocket: a burst of upgrades waits longer for accept().
        "connect_timeout": "1s" if http2 else "5s",
        "lb_policy": "ROUND_ROBIN",
        **(protocol if http2 else {}),
        # gRPC multiplexes calls over few connections; each WebSocket holds one of its own.
        "circuit_breakers": {
            "thresholds": [{"max_connections": 1024 if http2 else 100_000,
                            "max_pending_requests": 1024,
                            "max_requests": 4096 if http2 else 100_000, "max_retries": 3}]
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": host, "port_value": port}}}}]}],
        },
    }  # fmt: skip


def _deadline_header(value: str = DEFAULT_DEADLINE) -> dict[str, Any]:
    return {
        "header": {"key": "grpc-timeout", "value": value},
        "append_action": "ADD_IF_ABSENT",
    }


def _no_authz() -> dict[str, Any]:
    return {
        "envoy.filters.http.ext_authz": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "disabled": True,
        }
    }


def _not_found(match: dict[str, str]) -> dict[str, Any]:
    # Reaches no service, so there is nothing to authorize: 404 for everyone, no Check call.
    return {
        "match": match,
        "direct_response": {"status": 404, "body": {"inline_string": "no route for this path"}},
        "typed_per_filter_config": _no_authz(),
    }


def _websocket_routes(entries: Sequence[CatalogEntry]) -> list[dict[str, Any]]:
    # Upgraded and handed to the service's HTTP side, which authenticates the upgrade request
    # itself with the same gate as ext_authz (browsers cannot set headers on a WebSocket, so
    # it also reads a token from the query string) and then bridges frames to gRPC.
    return [
        {
            "match": {"path": path},
            "route": {"cluster": http_upstream(entry.name), "timeout": "0s",
                      "upgrade_configs": [{"upgrade_type": "websocket"}]},
            "typed_per_filter_config": {
                **_no_authz(),
                # The transcoder would refuse the upgrade as an unknown method (404).
                "envoy.filters.http.grpc_json_transcoder": {
                    "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                    "disabled": True,
                },
            },
        }
        for entry in entries
        for path in entry.websocket_paths
    ]  # fmt: skip


def _routes(entries: Sequence[CatalogEntry], *, authz: bool) -> list[dict[str, Any]]:
    routes = [_not_found({"path": path}) for path in INTERNAL_METHODS]
    routes.extend(_websocket_routes(entries))
    clusters = {name: entry.name for entry in entries for name in entry.grpc_services}
    for path in PUBLIC_METHODS:
        cluster = clusters.get(path.split("/")[1])
        if cluster is None or not authz:
            continue
        routes.append(
            {
                "match": {"path": path},
                "route": {"cluster": cluster, "timeout": "30s"},
                "request_headers_to_add": [_deadline_header()],
                "typed_per_filter_config": _no_authz(),
            }
        )
    for entry in entries:
        for grpc_service in entry.grpc_services:
            routes.append(
                {
                    "match": {"prefix": f"/{grpc_service}/"},
                    "route": {"cluster": entry.name, "timeout": "0s" if entry.streaming else "30s"},
                    "request_headers_to_add": [
                        _deadline_header(STREAM_DEADLINE if entry.streaming else DEFAULT_DEADLINE)
                    ],
                }
            )
    # The CORS filter runs before the transcoder and ignores direct-response routes (Envoy
    # 1.40), so REST paths need a real route entry for preflights and CORS headers. Known
    # REST calls are rewritten to their gRPC route before routing; whatever else is left
    # meets a cluster without endpoints (503), after ext_authz refused it as no known method.
    routes.append({"match": {"prefix": REST_PREFIX}, "route": {"cluster": UNROUTED}})
    routes.append(_not_found({"prefix": "/"}))
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


def _authz_filter(cluster: str) -> dict[str, Any]:
    # After the transcoder, so REST calls reach the edge with the gRPC method path as gRPC
    # calls do. Fail closed: an unreachable or slow edge service answers 503, never lets calls
    # by. Only the trusted headers of a 200 reach the upstream, and only the gRPC status
    # headers of a refusal reach the client.
    def exact(names: Sequence[str]) -> dict[str, Any]:
        return {"patterns": [{"exact": name} for name in names]}

    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "http_service": {
                "server_uri": {"uri": f"http://{cluster}", "cluster": cluster,
                               "timeout": AUTHZ_TIMEOUT},
                "path_prefix": AUTHZ_PATH_PREFIX,
                "authorization_response": {
                    "allowed_upstream_headers": exact(context.TRUSTED_KEYS),
                    "allowed_client_headers": exact(AUTHZ_CLIENT_HEADERS),
                },
            },
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "status_on_error": {"code": 503},
            "include_peer_certificate": False,
            "allowed_headers": exact(AUTHZ_HEADERS),
        },
    }  # fmt: skip


def _strip_trusted_headers() -> list[dict[str, Any]]:
    # Runs before every filter (and before route matching), so nothing downstream can mistake
    # a client's x-supportmesh-* header for one the edge vouched for.
    return [
        {
            "name": "strip-trusted-headers",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                "mutations": [{"remove": key} for key in context.TRUSTED_KEYS],
            },
        }
    ]


def render(
    entries: Sequence[CatalogEntry],
    upstream_ports: Mapping[str, int],
    *,
    listen_port: int,
    admin_port: int,
    descriptor: Path = DESCRIPTOR_PATH,
    cors_origins: Sequence[str] = (),
    authz: bool = True,
    upstream_hosts: Mapping[str, str] | None = None,
    listen_address: str = "127.0.0.1",
) -> dict[str, Any]:
    """Build the Envoy bootstrap for the given services and ports.

    Upstreams are on 127.0.0.1 unless ``upstream_hosts`` names them (DNS names become
    STRICT_DNS clusters). ``authz=False`` leaves out ext_authz (benchmark baselines only:
    nothing is authenticated).
    """
    hosts = upstream_hosts or {}
    services = [name for entry in entries for name in entry.grpc_services]
    if authz and http_upstream(AUTHZ_SERVICE) not in upstream_ports:
        raise ValueError(f"ext_authz needs the {AUTHZ_SERVICE!r} service's HTTP port")
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
        f"grpc-timeout, x-user-agent, {context.CLIENT_TENANT_KEY}",
        "expose_headers": "grpc-status, grpc-message, grpc-status-details-bin, x-request-id, "
        "retry-after",
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
        "early_header_mutation_extensions": _strip_trusted_headers(),
        "local_reply_config": _local_reply_config(),
        "route_config": {
            "name": "edge",
            "virtual_hosts": [{"name": "supportmesh", "domains": ["*"],
                               "typed_per_filter_config": {"envoy.filters.http.cors": {
                                   "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
                                   **cors_policy}},
                               "routes": _routes(entries, authz=authz)}],
        },
        "http_filters": [
            _body_limit_filter(),
            {"name": "envoy.filters.http.cors", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
            {"name": "envoy.filters.http.grpc_web", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"}},
            transcoder,
            *([_authz_filter(http_upstream(AUTHZ_SERVICE))] if authz else []),
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }  # fmt: skip
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "edge",
                "address": {"socket_address": {"address": listen_address, "port_value": listen_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": manager}]}],
            }],
            "clusters": [*(_cluster(entry.name, hosts.get(entry.name, "127.0.0.1"),
                                    upstream_ports[entry.name]) for entry in entries),
                         *(_cluster(http_upstream(entry.name), hosts.get(entry.name, "127.0.0.1"),
                                    upstream_ports[http_upstream(entry.name)], http2=False)
                           for entry in entries if entry.http_port is not None),
                         {"name": UNROUTED, "type": "STATIC", "connect_timeout": "1s",
                          "load_assignment": {"cluster_name": UNROUTED, "endpoints": []}}],
        },
    }  # fmt: skip


def render_production(
    entries: Sequence[CatalogEntry],
    *,
    namespace: str = "supportmesh",
    service_port: int = 50051,
    http_port: int = 8081,
    listen_port: int = 8080,
    admin_port: int = 9901,
    descriptor: Path = Path("/etc/envoy/descriptors/supportmesh.binpb"),
    cors_origins: Sequence[str] = (),
) -> dict[str, Any]:
    """The edge config for Kubernetes (k8s/edge.yaml's ConfigMap): Services by DNS name."""
    ports = {entry.name: service_port for entry in entries}
    ports.update({http_upstream(entry.name): http_port for entry in entries if entry.http_port})
    return render(
        entries,
        ports,
        listen_port=listen_port,
        admin_port=admin_port,
        descriptor=descriptor,
        cors_origins=cors_origins,
        upstream_hosts={
            entry.name: f"{entry.name}.{namespace}.svc.cluster.local" for entry in entries
        },
        listen_address="0.0.0.0",
    )


def write(config: Mapping[str, Any], path: Path) -> Path:
    """Write a rendered config as YAML and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path
