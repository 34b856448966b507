"""The production manifests (k8s/, istio/) against the service catalog (gateway/services.yaml).

Every catalog service must be deployable the way the platform runs it: one image, native gRPC
probes, a locked-down container, a Service on the port the Envoy edge addresses, its
dependencies at their Service names, third-party addresses and credentials from ConfigMaps
and Secrets (never literal values, never a silent loopback default), an autoscaler, mesh
mTLS, outlier detection, safe retries (none on long-lived streams) and an identity-based
allow list. A service's HTTP side (the
edge's WebSocket bridge) is exposed where the edge sends it and admits the edge alone. Adding
a service to the catalog without its manifests fails here.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.kit.gateway import (
    REPO_ROOT,
    CatalogEntry,
    http_upstream,
    load_catalog,
    render_production,
)
from services.kit.settings import ServiceSettings

Doc = dict[str, Any]

NAMESPACE = "supportmesh"
IMAGE = "supportmesh:latest"
EDGE = "edge-envoy"
CONFIGMAP = "supportmesh-config"
DB_SECRET = "supportmesh-database"
METRICS_PORT = 9090
MANIFEST_DIRS = (REPO_ROOT / "k8s", REPO_ROOT / "istio")
POD_WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job"})
# Retry only what cannot have reached a handler, or what the server declared retryable.
# Never deadline-exceeded, resource-exhausted, cancelled, 5xx or retriable-status-codes.
ALLOWED_RETRY_ON = frozenset({"unavailable", "reset", "connect-failure", "refused-stream"})
# Long-lived routes (streams, WebSockets) may have no timeout ("0s") or one of at least this.
LONG_LIVED_S = 3600.0
# Env names that carry a credential: they come from a Secret, never as a literal value.
CREDENTIAL = re.compile(r"(^|_)(API_KEY|KEY|SECRET|PASSWORD|TOKEN|DATABASE_URL)$")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})
# Secrets and ConfigMaps created out of band are described here, key by key.
K8S_README = REPO_ROOT / "k8s" / "README.md"
CATALOG = load_catalog()
CATALOG_IDS = [entry.name for entry in CATALOG]
UNARY = [entry for entry in CATALOG if not entry.streaming]
# Entries with a long-lived route: streaming gRPC services and services with an HTTP side.
LONG_LIVED = [entry for entry in CATALOG if entry.streaming or entry.http_port is not None]
WITH_HTTP = [entry for entry in CATALOG if entry.http_port is not None]


@functools.cache
def _sources() -> tuple[tuple[Path, Doc], ...]:
    found: list[tuple[Path, Doc]] = []
    for directory in MANIFEST_DIRS:
        for path in sorted([*directory.rglob("*.yaml"), *directory.rglob("*.yml")]):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc is None:
                    continue
                assert isinstance(doc, dict), f"{path}: a YAML document is not a mapping"
                found.append((path.relative_to(REPO_ROOT), doc))
    return tuple(found)


def _of_kind(kind: str) -> list[Doc]:
    return [doc for _, doc in _sources() if doc.get("kind") == kind]


def _named(kind: str, name: str) -> Doc:
    matches = [doc for doc in _of_kind(kind) if doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} named {name!r}, found {len(matches)}"
    return matches[0]


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels + matchExpressions); {} selects everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def _pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels") or {}
    return labels


def _containers(workload: Doc) -> list[Doc]:
    spec = _pod_spec(workload)
    return [*(spec.get("initContainers") or []), *spec["containers"]]


def _main_container(entry: CatalogEntry) -> Doc:
    containers: list[Doc] = [
        c for c in _pod_spec(_deployment(entry))["containers"] if c["name"] == entry.name
    ]
    assert len(containers) == 1, f"Deployment {entry.name} has no container named {entry.name}"
    return containers[0]


def _deployment(entry: CatalogEntry) -> Doc:
    return _named("Deployment", entry.name)


def _env(container: Doc) -> dict[str, Doc]:
    env: list[Doc] = container.get("env") or []
    return {item["name"]: item for item in env}


def _grpc_port(entry: CatalogEntry) -> int:
    ports = [p for p in _main_container(entry).get("ports") or [] if p.get("name") == "grpc"]
    assert len(ports) == 1, f"{entry.name}: the container declares no port named 'grpc'"
    port: int = ports[0]["containerPort"]
    return port


def _fqdn(name: str) -> str:
    return f"{name}.{NAMESPACE}.svc.cluster.local"


def _hosts(name: str) -> set[str]:
    return {name, f"{name}.{NAMESPACE}", f"{name}.{NAMESPACE}.svc", _fqdn(name)}


def _principal(workload: Doc) -> str:
    return f"cluster.local/ns/{NAMESPACE}/sa/{_pod_spec(workload)['serviceAccountName']}"


def _entry(name: str) -> CatalogEntry:
    matches = [entry for entry in CATALOG if entry.name == name]
    assert len(matches) == 1, f"no catalog service {name!r}"
    return matches[0]


def _prefix(entry: CatalogEntry) -> str:
    return f"{entry.name.upper()}_"


@functools.cache
def _settings(entry: CatalogEntry) -> type[ServiceSettings]:
    """The service's settings class: the ServiceSettings subclass of its ``app`` module."""
    module = importlib.import_module(f"{entry.module}.app")
    classes = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, ServiceSettings)
        and value.model_config.get("env_prefix") == _prefix(entry)
    ]
    assert len(classes) == 1, f"{entry.module}.app: no settings class with prefix {_prefix(entry)}"
    return classes[0]


def _setting(entry: CatalogEntry, field: str) -> Any:
    """A setting as the Deployment configures it: its env value, else the class default."""
    override = _env(_main_container(entry)).get(f"{_prefix(entry)}{field.upper()}")
    return override["value"] if override else _settings(entry).model_fields[field].default


@functools.cache
def _reads_database(entry: CatalogEntry) -> bool:
    """Whether the service's code connects to PostgreSQL (reads ``infra.database_url``)."""
    package = REPO_ROOT.joinpath(*entry.module.split("."))
    return any("infra.database_url" in path.read_text() for path in package.rglob("*.py"))


def _container_port(container: Doc, port: int | str) -> Doc:
    """The container port a Service's ``targetPort`` (a number or a name) designates."""
    matches: list[Doc] = [
        p for p in container.get("ports") or [] if port in (p["containerPort"], p.get("name"))
    ]
    assert len(matches) == 1, f"{container['name']}: no container port {port!r}"
    return matches[0]


@functools.cache
def _production_upstreams() -> dict[str, tuple[str, int]]:
    """Envoy's production upstream clusters: name → (host, port)."""
    config = render_production(CATALOG, namespace=NAMESPACE)
    upstreams: dict[str, tuple[str, int]] = {}
    for cluster in config["static_resources"]["clusters"]:
        endpoints = cluster["load_assignment"]["endpoints"]
        if endpoints:
            address = endpoints[0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            upstreams[cluster["name"]] = (address["address"], address["port_value"])
    return upstreams


def _http_side(entry: CatalogEntry) -> tuple[Doc, Doc]:
    """The Service port the edge sends the service's HTTP side to, and its container port."""
    host, port = _production_upstreams()[http_upstream(entry.name)]
    assert host == _fqdn(entry.name), f"the edge sends {entry.name}'s HTTP side to {host}"
    matches = [p for p in _named("Service", entry.name)["spec"]["ports"] if p["port"] == port]
    assert len(matches) == 1, f"Service {entry.name} has no port {port} for its HTTP side"
    service_port = matches[0]
    target = service_port.get("targetPort", port)
    return service_port, _container_port(_main_container(entry), target)


def _seconds(duration: str) -> float:
    """An Istio duration (``30s``, ``1h``, ``1m30s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    part = r"(\d+(?:\.\d+)?)(ms|h|m|s)"
    assert re.fullmatch(f"(?:{part})+", duration), f"not a duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in re.findall(part, duration))


def _virtual_service(entry: CatalogEntry) -> Doc:
    services = [
        vs for vs in _of_kind("VirtualService") if _hosts(entry.name) & set(vs["spec"]["hosts"])
    ]
    assert len(services) == 1, f"expected one VirtualService for {entry.name}"
    return services[0]


def _route_for_port(entry: CatalogEntry, port: int) -> Doc:
    """The VirtualService route Istio takes for Service port ``port``: the first that matches."""
    routes: list[Doc] = [
        route
        for route in _virtual_service(entry)["spec"]["http"]
        if not route.get("match")
        or any(match.get("port", port) == port for match in route["match"])
    ]
    assert routes, f"{entry.name}: no route takes port {port}"
    return routes[0]


def _destination_rule(name: str) -> Doc:
    rules = [dr for dr in _of_kind("DestinationRule") if dr["spec"]["host"] in _hosts(name)]
    assert len(rules) == 1, f"expected one DestinationRule for {name}"
    return rules[0]


def _pool(rule: Doc, port: int) -> Doc:
    """The connection pool a DestinationRule gives ``port`` (a port-level one replaces it)."""
    policy = rule["spec"]["trafficPolicy"]
    for settings in policy.get("portLevelSettings") or []:
        if settings["port"]["number"] == port and "connectionPool" in settings:
            pool: Doc = settings["connectionPool"]
            return pool
    pool = policy["connectionPool"]
    return pool


def test_manifests_are_present() -> None:
    for directory in MANIFEST_DIRS:
        assert any(path.is_relative_to(directory.relative_to(REPO_ROOT)) for path, _ in _sources())


def test_every_document_is_identified_and_labelled() -> None:
    for path, doc in _sources():
        kind, metadata = doc.get("kind"), doc.get("metadata") or {}
        where = f"{path}: {kind}/{metadata.get('name')}"
        assert doc.get("apiVersion"), where
        assert kind, where
        assert metadata.get("name"), where
        if kind == "Namespace":
            assert metadata["name"] == NAMESPACE, where
            assert metadata["labels"].get("istio-injection") == "enabled", where
        else:
            assert metadata.get("namespace") == NAMESPACE, where
        labels = metadata.get("labels") or {}
        assert labels.get("app.kubernetes.io/name"), where
        assert labels.get("app.kubernetes.io/part-of") == NAMESPACE, where


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_deployment_runs_the_catalog_module(entry: CatalogEntry) -> None:
    container = _main_container(entry)
    prefix = entry.name.upper()
    env = _env(container)
    assert container["image"] == IMAGE
    assert container["command"] == ["python", "-m", entry.module]
    assert env[f"{prefix}_PORT"]["value"] == str(_grpc_port(entry))
    assert env[f"{prefix}_HOST"]["value"] == "0.0.0.0"
    assert env[f"{prefix}_METRICS_PORT"]["value"] == str(METRICS_PORT)
    assert {"configMapRef": {"name": CONFIGMAP}} in (container.get("envFrom") or [])


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_every_service_variable_names_a_setting(entry: CatalogEntry) -> None:
    # Settings ignore unknown variables, so a misspelt one would silently fall back to its
    # default (a dev address, a disabled port).
    fields = set(_settings(entry).model_fields)
    for name in _env(_main_container(entry)):
        if name.startswith(_prefix(entry)):
            assert name.removeprefix(_prefix(entry)).lower() in fields, f"no setting for {name}"


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_database_credential_only_where_it_is_used(entry: CatalogEntry) -> None:
    container = _main_container(entry)
    database = _env(container).get("DATABASE_URL")
    if _reads_database(entry):
        assert database, f"{entry.name} connects to PostgreSQL without DATABASE_URL"
        assert database["valueFrom"]["secretKeyRef"] == {"name": DB_SECRET, "key": "url"}
    else:  # least privilege: no credential a service does not use
        assert database is None, f"{entry.name} never uses DATABASE_URL"
        for source in container.get("envFrom") or []:
            assert (source.get("secretRef") or {}).get("name") != DB_SECRET


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_dependencies_are_addressed_by_service_name(entry: CatalogEntry) -> None:
    # Every `<service>_target` setting defaults to a dev address; in the cluster it must name
    # that service's Service and the gRPC port the Service exposes.
    targets = [field for field in _settings(entry).model_fields if field.endswith("_target")]
    for field in targets:
        dependency = _entry(field.removesuffix("_target"))
        variable = _env(_main_container(entry)).get(f"{_prefix(entry)}{field.upper()}")
        assert variable, f"{entry.name}: {_prefix(entry)}{field.upper()} is not set"
        assert variable["value"] == f"{_fqdn(dependency.name)}:{_grpc_port(dependency)}"


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_deployment_probes_grpc_health_on_its_port(entry: CatalogEntry) -> None:
    container = _main_container(entry)
    for probe in ("readinessProbe", "livenessProbe"):
        assert (container.get(probe) or {}).get("grpc", {}).get("port") == _grpc_port(entry), probe


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_deployment_is_locked_down(entry: CatalogEntry) -> None:
    pod_context = _pod_spec(_deployment(entry)).get("securityContext") or {}
    for container in _containers(_deployment(entry)):
        context = container.get("securityContext") or {}
        name = container["name"]
        assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, name
        assert context.get("readOnlyRootFilesystem") is True, name
        assert context.get("allowPrivilegeEscalation") is False, name
        assert "ALL" in (context.get("capabilities") or {}).get("drop", []), name
        resources = container.get("resources") or {}
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(bound) or {}), f"{name} {bound}"


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_deployment_drains_before_it_is_killed(entry: CatalogEntry) -> None:
    container = _main_container(entry)
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(_setting(entry, "shutdown_grace_s"))
    grace = _pod_spec(_deployment(entry))["terminationGracePeriodSeconds"]
    assert pre_stop > 0
    assert grace > pre_stop + drain


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_service_exposes_the_grpc_port(entry: CatalogEntry) -> None:
    ports = {port["name"]: port for port in _named("Service", entry.name)["spec"]["ports"]}
    grpc = ports["grpc"]
    assert grpc["port"] == _grpc_port(entry)
    assert grpc.get("appProtocol") == "grpc"
    assert grpc.get("targetPort") in ("grpc", _grpc_port(entry))
    assert ports["http-metrics"]["port"] == METRICS_PORT
    # The Envoy edge's production upstream for the service is this Service and port.
    assert _production_upstreams()[entry.name] == (_fqdn(entry.name), grpc["port"])


@pytest.mark.parametrize("entry", WITH_HTTP, ids=[entry.name for entry in WITH_HTTP])
def test_http_side_is_exposed_where_the_edge_sends_it(entry: CatalogEntry) -> None:
    service_port, container_port = _http_side(entry)
    # Istio must see HTTP/1.1 (it passes WebSocket upgrades through), not opaque TCP or gRPC.
    assert service_port["name"].startswith("http-"), service_port["name"]
    assert service_port.get("appProtocol") == "http"
    assert container_port["name"].startswith("http-"), container_port["name"]
    assert container_port["containerPort"] != _grpc_port(entry)
    assert int(_setting(entry, "http_port")) == container_port["containerPort"]


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_deployment_has_exactly_one_autoscaler(entry: CatalogEntry) -> None:
    def targets(doc: Doc) -> bool:
        ref = doc["spec"]["scaleTargetRef"]
        return bool(ref.get("kind", "Deployment") == "Deployment" and ref["name"] == entry.name)

    hpas = [doc for doc in _of_kind("HorizontalPodAutoscaler") if targets(doc)]
    # JetStream consumers scale on lag through KEDA, which owns their HPA instead.
    scaled = [doc for doc in _of_kind("ScaledObject") if targets(doc)]
    assert len(hpas) + len(scaled) == 1, f"{entry.name}: {len(hpas)} HPAs, {len(scaled)} KEDA"
    assert "replicas" not in _deployment(entry)["spec"], "apply would reset the autoscaler"
    for hpa in hpas:
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["minReplicas"] >= 2
        assert any(m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
        assert "cpu" in _main_container(entry)["resources"]["requests"], "CPU % needs a request"


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_disruption_budget_keeps_a_pod(entry: CatalogEntry) -> None:
    budgets = [
        pdb
        for pdb in _of_kind("PodDisruptionBudget")
        if _selects(pdb["spec"]["selector"], _pod_labels(_deployment(entry)))
    ]
    assert len(budgets) == 1
    assert budgets[0]["spec"].get("minAvailable", 0) >= 1


@pytest.mark.parametrize("name", [*CATALOG_IDS, EDGE])
def test_destination_rule_enforces_mtls_and_ejects_failing_pods(name: str) -> None:
    policy = _destination_rule(name)["spec"]["trafficPolicy"]
    assert policy["tls"]["mode"] == "ISTIO_MUTUAL"
    assert {"http2MaxRequests", "maxRequestsPerConnection"} <= set(policy["connectionPool"]["http"])
    outlier = policy["outlierDetection"]
    assert outlier["consecutive5xxErrors"] == 5  # the seed's "open after 5 failures"
    assert outlier["baseEjectionTime"] == "60s"  # the seed's "reset after 60 s"


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_connection_pool_admits_what_a_pod_serves(entry: CatalogEntry) -> None:
    # A client's proxy must not refuse calls (or streams) that a single pod would still take;
    # the pods' own limit answers RESOURCE_EXHAUSTED, which clients understand.
    pool = _pool(_destination_rule(entry.name), _grpc_port(entry))
    served = int(_setting(entry, "max_concurrent_rpcs"))
    assert pool["http"]["http2MaxRequests"] >= served


@pytest.mark.parametrize("entry", WITH_HTTP, ids=[entry.name for entry in WITH_HTTP])
def test_connection_pool_admits_the_websockets(entry: CatalogEntry) -> None:
    # Each WebSocket holds an HTTP/1.1 connection of its own and becomes one stream of a
    # streaming service: the bridge port's pool must hold as many as one such pod serves.
    streams = max(int(_setting(e, "max_concurrent_rpcs")) for e in CATALOG if e.streaming)
    pool = _pool(_destination_rule(entry.name), _http_side(entry)[0]["port"])
    assert pool["tcp"]["maxConnections"] >= streams
    assert pool["http"]["http2MaxRequests"] >= streams


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_virtual_service_routes_keep_to_their_port(entry: CatalogEntry) -> None:
    routes = _virtual_service(entry)["spec"]["http"]
    assert routes
    for route in routes:
        # A route without a port match takes every port of the host (the edge's WebSockets
        # to its gRPC port); one that matches a port must send it to that same port.
        matched = {match.get("port") for match in route.get("match") or [{}]}
        for destination in route["route"]:
            port = destination["destination"].get("port", {}).get("number")
            assert matched == {port}, f"{route.get('name')}: traffic for {matched} goes to {port}"


@pytest.mark.parametrize("entry", UNARY, ids=[entry.name for entry in UNARY])
def test_virtual_service_retries_only_retryable_conditions(entry: CatalogEntry) -> None:
    route = _route_for_port(entry, _grpc_port(entry))
    assert route.get("timeout"), "a route without a timeout waits forever"
    assert _seconds(route["timeout"]) > 0, "0s disables the timeout"
    # Without an explicit policy Istio's default retries "cancelled" as well.
    retries = route["retries"]
    conditions = {c.strip() for c in str(retries.get("retryOn", "")).split(",") if c.strip()}
    assert conditions, "retryOn must be explicit"
    assert conditions <= ALLOWED_RETRY_ON, f"not retryable: {conditions - ALLOWED_RETRY_ON}"
    assert retries["attempts"] >= 1
    assert retries.get("perTryTimeout")


@pytest.mark.parametrize("entry", LONG_LIVED, ids=[entry.name for entry in LONG_LIVED])
def test_long_lived_routes_are_neither_timed_out_nor_retried(entry: CatalogEntry) -> None:
    ports = [_grpc_port(entry)] if entry.streaming else []
    if entry.http_port is not None:
        ports.append(_http_side(entry)[0]["port"])
    for port in ports:
        route = _route_for_port(entry, port)
        # "0s" disables the timeout; anything shorter than an hour would cut chats.
        timeout = _seconds(route.get("timeout", "0s"))
        assert timeout == 0 or timeout >= LONG_LIVED_S, f"port {port}: timeout {timeout}s"
        # Left out, Istio's default policy retries; a perTryTimeout would cut every stream.
        assert route.get("retries") == {"attempts": 0}, f"port {port}: {route.get('retries')}"


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_only_the_edge_and_services_may_call_a_service(entry: CatalogEntry) -> None:
    labels = _pod_labels(_deployment(entry))
    policies = [
        ap
        for ap in _of_kind("AuthorizationPolicy")
        if _selects(ap["spec"].get("selector") or {}, labels)
    ]
    assert policies, f"no AuthorizationPolicy selects {entry.name}"
    expected = {_principal(_named("Deployment", EDGE))} | {
        _principal(_named("Deployment", other.name)) for other in CATALOG
    }
    grpc_port = str(_grpc_port(entry))
    allowed: set[str] = set()
    for policy in policies:
        assert policy["spec"].get("action", "ALLOW") == "ALLOW"
        for rule in policy["spec"].get("rules") or []:
            ports = {
                port for to in rule.get("to") or [] for port in to["operation"].get("ports") or []
            }
            if ports and grpc_port not in ports:
                continue
            sources = [peer["source"] for peer in rule.get("from") or []]
            assert sources, "a rule without `from` admits every caller"
            for source in sources:
                assert set(source) == {"principals"}, f"gRPC callers by identity only: {source}"
                allowed |= set(source["principals"])
    assert allowed == expected


@pytest.mark.parametrize("entry", WITH_HTTP, ids=[entry.name for entry in WITH_HTTP])
def test_only_the_edge_may_reach_a_services_http_side(entry: CatalogEntry) -> None:
    port = str(_http_side(entry)[1]["containerPort"])
    labels = _pod_labels(_deployment(entry))
    allowed: set[str] = set()
    for policy in _of_kind("AuthorizationPolicy"):
        if not _selects(policy["spec"].get("selector") or {}, labels):
            continue
        assert policy["spec"].get("action", "ALLOW") == "ALLOW"
        for rule in policy["spec"].get("rules") or []:
            ports = {
                port for to in rule.get("to") or [] for port in to["operation"].get("ports") or []
            }
            if ports and port not in ports:
                continue
            sources = [peer["source"] for peer in rule.get("from") or []]
            assert sources, "a rule without `from` admits every caller"
            for source in sources:
                assert set(source) == {"principals"}, f"callers by identity only: {source}"
                allowed |= set(source["principals"])
    assert allowed == {_principal(_named("Deployment", EDGE))}


def test_peer_authentication_is_strict() -> None:
    policies = _of_kind("PeerAuthentication")
    namespace_wide = [pa for pa in policies if not pa["spec"].get("selector")]
    assert len(namespace_wide) == 1
    for policy in policies:
        assert policy["spec"]["mtls"]["mode"] == "STRICT", policy["metadata"]["name"]
        if policy["spec"].get("portLevelMtls"):
            for entry in CATALOG:  # only the edge's public listener may relax
                assert not _selects(policy["spec"]["selector"], _pod_labels(_deployment(entry)))


def test_every_container_runs_the_agreed_image() -> None:
    for path, doc in _sources():
        if doc["kind"] in POD_WORKLOADS:
            for container in _containers(doc):
                assert container["image"] == IMAGE, f"{path}: {container['name']}"


def test_every_workload_runs_as_its_own_service_account() -> None:
    accounts = {sa["metadata"]["name"] for sa in _of_kind("ServiceAccount")}
    workloads = [doc for _, doc in _sources() if doc["kind"] in POD_WORKLOADS]
    names = [_pod_spec(doc).get("serviceAccountName", "default") for doc in workloads]
    for workload, name in zip(workloads, names, strict=True):
        assert name in accounts, f"{workload['metadata']['name']}: no ServiceAccount {name!r}"
    assert len(set(names)) == len(names), "workloads share a ServiceAccount"


def test_service_selectors_match_their_deployment() -> None:
    deployments = _of_kind("Deployment")
    for deployment in deployments:
        assert _selects(deployment["spec"]["selector"], _pod_labels(deployment))
    for service in _of_kind("Service"):
        selector: Mapping[str, str] = service["spec"].get("selector") or {}
        assert selector, f"Service {service['metadata']['name']} selects nothing"
        matched = [
            d["metadata"]["name"]
            for d in deployments
            if _selects({"matchLabels": selector}, _pod_labels(d))
        ]
        assert matched == [service["metadata"]["name"]], f"{service['metadata']['name']}: {matched}"


def _points_at_loopback(value: str) -> bool:
    """Whether ``value`` (a URL, or host:port) addresses this machine: a dev default."""
    host = urlsplit(value if "://" in value else f"//{value}").hostname
    return host in LOOPBACK


def _key_refs() -> Iterator[tuple[str, Doc, str, Doc]]:
    """Every env variable of every workload that reads a ConfigMap or Secret key.

    (workload name, variable, ``configMapKeyRef`` or ``secretKeyRef``, the reference)
    """
    for _, doc in _sources():
        if doc["kind"] in POD_WORKLOADS:
            for container in _containers(doc):
                for variable in container.get("env") or []:
                    for kind, ref in (variable.get("valueFrom") or {}).items():
                        if kind in ("configMapKeyRef", "secretKeyRef"):
                            yield doc["metadata"]["name"], variable, kind, ref


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_addresses_without_a_production_default_are_provided(entry: CatalogEntry) -> None:
    # A `*_url` setting whose default is a loopback address works in dev only; in the cluster
    # the Deployment must set it, and a missing ConfigMap key must stop the pod rather than
    # leave it calling 127.0.0.1.
    for field, info in _settings(entry).model_fields.items():
        default = info.default
        if not field.endswith("_url") or not isinstance(default, str):
            continue
        if not _points_at_loopback(default):
            continue
        variable = _env(_main_container(entry)).get(f"{_prefix(entry)}{field.upper()}")
        assert variable, f"{entry.name}: {_prefix(entry)}{field.upper()} is not set"
        if "value" in variable:
            assert not _points_at_loopback(variable["value"]), variable
            continue
        ref = variable["valueFrom"].get("configMapKeyRef") or variable["valueFrom"].get(
            "secretKeyRef"
        )
        assert ref, f"{variable['name']}: neither a value nor a ConfigMap or Secret key"
        assert not ref.get("optional"), f"{variable['name']} may be missing: loopback default"


def test_credentials_come_from_secrets() -> None:
    for _, doc in _sources():
        if doc["kind"] not in POD_WORKLOADS:
            continue
        for container in _containers(doc):
            for variable in container.get("env") or []:
                if not CREDENTIAL.search(variable["name"]):
                    continue
                where = f"{doc['metadata']['name']}: {variable['name']}"
                assert "value" not in variable, f"{where} is a literal value"
                assert set(variable.get("valueFrom") or {}) == {"secretKeyRef"}, where
    for config_map in _of_kind("ConfigMap"):
        for key in config_map.get("data") or {}:
            assert not CREDENTIAL.search(key.upper().replace("-", "_")), key


def test_orchestrator_gets_its_third_parties_and_models() -> None:
    env = _env(_main_container(_entry("orchestrator")))
    fields = _settings(_entry("orchestrator")).model_fields
    for field in ("payment_url", "crm_url", "mail_url", "models"):
        ref = env[f"ORCHESTRATOR_{field.upper()}"]["valueFrom"]["configMapKeyRef"]
        assert not ref.get("optional"), field
    # Every credential setting (the payment provider's and the CRM's keys, the model tiers'
    # shared key) is read from a Secret; the payment provider refuses calls without one.
    keys = [field for field in fields if field.endswith("_api_key")]
    assert {"payment_api_key", "crm_api_key", "model_api_key"} <= set(keys)
    for field in keys:
        assert set(env[f"ORCHESTRATOR_{field.upper()}"]["valueFrom"]) == {"secretKeyRef"}, field
    assert not env["ORCHESTRATOR_PAYMENT_API_KEY"]["valueFrom"]["secretKeyRef"].get("optional")


def test_out_of_band_config_is_documented() -> None:
    # What a workload reads from a Secret or an uncommitted ConfigMap must be described where
    # the operator creating it looks: k8s/README.md names each object and each key.
    readme = K8S_README.read_text()
    committed = {doc["metadata"]["name"] for doc in _of_kind("ConfigMap")}
    for workload, variable, kind, ref in _key_refs():
        if kind == "configMapKeyRef" and ref["name"] in committed:
            continue
        where = f"{workload}: {variable['name']}"
        assert f"`{ref['name']}`" in readme, f"{where}: {ref['name']} is not in k8s/README.md"
        assert f"`{ref['key']}`" in readme, f"{where}: key {ref['key']} is not in k8s/README.md"


def test_no_secret_values_are_committed() -> None:
    assert not _of_kind("Secret"), "secrets are created out of band"
    data = _named("ConfigMap", CONFIGMAP)["data"]
    assert not {"DATABASE_URL", "MIGRATION_DATABASE_URL"} & set(data)
    for key in ("NATS_URL", "REDIS_URL", "QDRANT_URL"):
        assert ".svc.cluster.local" in data[key], key
    migrate = _named("Job", "dataplane-migrate")
    env = _env(_pod_spec(migrate)["containers"][0])
    ref = env["MIGRATION_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": DB_SECRET, "key": "migration-url"}


def _ingress_allowed(
    target: Mapping[str, str],
    source: Mapping[str, str],
    source_namespace: str,
    port: tuple[int, str],
) -> bool:
    """Whether the NetworkPolicies admit ``source`` to ``target`` on ``(number, name)``."""
    namespace_labels = {"kubernetes.io/metadata.name": source_namespace}
    isolating = [
        policy
        for policy in _of_kind("NetworkPolicy")
        if _selects(policy["spec"]["podSelector"], target)
        and "Ingress" in policy["spec"].get("policyTypes", ["Ingress"])
    ]
    if not isolating:
        return True
    for policy in isolating:
        for rule in policy["spec"].get("ingress") or []:
            ports: Sequence[Doc] = rule.get("ports") or []
            if ports and not any(p.get("port") in (*port, None) for p in ports):
                continue
            peers: Sequence[Doc] = rule.get("from") or []
            if not peers:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    continue
                if "namespaceSelector" in peer:
                    namespace_ok = _selects(peer["namespaceSelector"], namespace_labels)
                else:
                    namespace_ok = source_namespace == NAMESPACE
                if namespace_ok and _selects(peer.get("podSelector") or {}, source):
                    return True
    return False


def test_namespace_denies_ingress_by_default() -> None:
    default_deny = [
        policy["metadata"]["name"]
        for policy in _of_kind("NetworkPolicy")
        if policy["spec"]["podSelector"] in ({}, {"matchLabels": {}})
        and "Ingress" in policy["spec"].get("policyTypes", [])
        and not policy["spec"].get("ingress")
    ]
    assert default_deny, "no NetworkPolicy denies ingress to every pod of the namespace"


@pytest.mark.parametrize("entry", CATALOG, ids=CATALOG_IDS)
def test_network_policies_admit_only_the_mesh_callers(entry: CatalogEntry) -> None:
    target = _pod_labels(_deployment(entry))
    port = (_grpc_port(entry), "grpc")
    edge = _pod_labels(_named("Deployment", EDGE))
    assert _ingress_allowed(target, edge, NAMESPACE, port), "edge → service"
    for other in CATALOG:
        assert _ingress_allowed(target, _pod_labels(_deployment(other)), NAMESPACE, port)
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    metrics = (METRICS_PORT, "http-metrics")
    assert _ingress_allowed(target, prometheus, "monitoring", metrics), "scrape"
    intruder = {"app.kubernetes.io/name": "intruder"}
    assert not _ingress_allowed(target, intruder, NAMESPACE, port), "default deny"
    assert not _ingress_allowed(target, edge, "elsewhere", port), "other namespaces"
    assert not _ingress_allowed(target, edge, NAMESPACE, (port[0] + 1, "")), "other ports"


@pytest.mark.parametrize("entry", WITH_HTTP, ids=[entry.name for entry in WITH_HTTP])
def test_network_policies_admit_only_the_edge_to_the_http_side(entry: CatalogEntry) -> None:
    target = _pod_labels(_deployment(entry))
    container_port = _http_side(entry)[1]
    port = (container_port["containerPort"], container_port["name"])
    edge = _pod_labels(_named("Deployment", EDGE))
    assert _ingress_allowed(target, edge, NAMESPACE, port), "edge → HTTP side"
    assert not _ingress_allowed(target, edge, "elsewhere", port), "other namespaces"
    for other in CATALOG:  # the bridge is an entry point, not a mesh API
        assert not _ingress_allowed(target, _pod_labels(_deployment(other)), NAMESPACE, port)
    intruder = {"app.kubernetes.io/name": "intruder"}
    assert not _ingress_allowed(target, intruder, NAMESPACE, port), "default deny"
