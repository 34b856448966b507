"""The whole platform on one machine: real servers, migrations, every service, the Envoy edge.

The ``supportmesh dev`` command and the pytest harness both use :class:`Platform`. Servers
whose URL is already configured (``DATABASE_URL``, ``REDIS_URL``, ``NATS_URL``) are used as
they are; the others are started from their pip wheels under the state directory.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from services.kit import apikeys, db, gateway
from services.kit.settings import InfraSettings
from services.kit.stack import (
    EnvoyServer,
    ManagedProcess,
    NatsServer,
    PostgresServer,
    ValkeyServer,
    free_port,
    port_open,
    run_command,
)

_log = logging.getLogger("supportmesh.devstack")

DATABASE = "supportmesh"
APP_ROLE = "supportmesh_app"
DEV_PORTS = {"postgres": 5433, "valkey": 6380, "nats": 4223, "nats_monitor": 8223,
             "envoy": 8080, "envoy_admin": 9901}  # fmt: skip


def with_database(url: str, database: str, user: str | None = None) -> str:
    """Return ``url`` pointing at ``database`` (and as ``user`` when given)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}@{netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, parts.fragment))


# Third parties the platform talks to, replaced by sandboxes in dev and tests: name, module,
# extra arguments ({port} names a second free port) and the variable that carries the URL.
THIRD_PARTIES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("payment", "services.sandbox.payment", (), "ORCHESTRATOR_PAYMENT_URL=http://{address}"),
    ("crm", "services.sandbox.crm", (), "ORCHESTRATOR_CRM_URL=http://{address}"),
    ("mail", "services.sandbox.mail", ("--http-port", "{port}"),
     "ORCHESTRATOR_MAIL_URL=smtp://{address}"),
)  # fmt: skip


@dataclass
class Platform:
    """Everything the platform runs, started in dependency order and stopped in reverse."""

    state_dir: Path
    fixed_ports: bool = False
    fast: bool = False
    infra: InfraSettings = field(default_factory=InfraSettings)
    catalog: list[gateway.CatalogEntry] = field(default_factory=gateway.load_catalog)
    servers: list[PostgresServer | ValkeyServer | NatsServer | EnvoyServer] = field(
        default_factory=list
    )
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    admin_database_url: str = ""
    database_url: str = ""
    redis_url: str = ""
    nats_url: str = ""
    platform_admin_key: str = ""
    third_party_env: dict[str, str] = field(default_factory=dict)

    def _port(self, name: str, dev_port: int | None = None) -> int:
        port = dev_port if self.fixed_ports and dev_port else free_port()
        if self.fixed_ports and dev_port and port_open(port):
            raise RuntimeError(f"port {port} for {name} is taken; is another stack running?")
        self.ports[name] = port
        return port

    def start_infra(self) -> None:
        """Start PostgreSQL, Valkey and NATS unless their URLs are configured."""
        data = self.state_dir / "data"
        if self.infra.database_url:
            self.admin_database_url = self.infra.migration_database_url or self.infra.database_url
            self.database_url = self.infra.database_url
        else:
            postgres = PostgresServer(
                data / "postgres", self._port("postgres", DEV_PORTS["postgres"]), fast=self.fast
            )
            self._start(postgres)
            self.admin_database_url = with_database(postgres.url, DATABASE)
            self.database_url = with_database(postgres.url, DATABASE, APP_ROLE)
            self._create_database(postgres.url)
        if self.infra.redis_url:
            self.redis_url = self.infra.redis_url
        else:
            valkey = ValkeyServer(data / "valkey", self._port("valkey", DEV_PORTS["valkey"]))
            self._start(valkey)
            self.redis_url = valkey.url
        if self.infra.nats_url:
            self.nats_url = self.infra.nats_url
        else:
            nats = NatsServer(
                data / "nats",
                self._port("nats", DEV_PORTS["nats"]),
                self._port("nats_monitor", DEV_PORTS["nats_monitor"]),
            )
            self._start(nats)
            self.nats_url = nats.url

    def _start(self, server: PostgresServer | ValkeyServer | NatsServer | EnvoyServer) -> None:
        self.servers.append(server)
        server.start()

    def _create_database(self, admin_url: str) -> None:
        asyncio.run(db.ensure_database(admin_url, DATABASE))

    def _load_platform_key(self) -> str:
        """The platform operator's API key, minted on first start and kept in the state dir."""
        path = self.state_dir / "platform-admin.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(apikeys.mint_platform().secret)
        return path.read_text().strip()

    def env(self) -> dict[str, str]:
        """The environment every platform process gets."""
        if not self.platform_admin_key:
            self.platform_admin_key = self._load_platform_key()
        parsed = apikeys.parse(self.platform_admin_key)
        assert parsed is not None, "platform-admin.key is not an API key"
        env = dict(os.environ)
        env["EDGE_PLATFORM_ADMIN_KEY_SHA256"] = apikeys.hash_secret(parsed[1]).hex()
        env.update(
            DATABASE_URL=self.database_url,
            MIGRATION_DATABASE_URL=self.admin_database_url,
            REDIS_URL=self.redis_url,
            NATS_URL=self.nats_url,
            KNOWLEDGE_INDEX_PATH=str(self.state_dir / "data" / "knowledge"),
            PYTHONUNBUFFERED="1",
        )
        if self.infra.qdrant_url:
            env["QDRANT_URL"] = self.infra.qdrant_url
        env.update(self.third_party_env)
        return env

    def migrate(self) -> None:
        """Apply database migrations and declare JetStream streams."""
        run_command(
            [sys.executable, "-m", "services.dataplane", "migrate"],
            log_path=self.state_dir / "logs" / "migrate.log",
            env=self.env(),
        )

    def start_third_parties(self) -> dict[str, str]:
        """Start the third-party sandboxes; returns the variables that point services at them."""
        found: dict[str, str] = {}
        for name, module, extra, variable in THIRD_PARTIES:
            port = self._port(name)
            second = str(self._port(f"{name}_http"))
            arguments = [arg.replace("{port}", second) for arg in extra]
            process = ManagedProcess(
                [sys.executable, "-m", module, "--port", str(port), *arguments],
                log_path=self.state_dir / "logs" / f"sandbox-{name}.log",
                name=f"sandbox-{name}",
                env=self.env(),
            )
            self.processes[f"sandbox-{name}"] = process
            process.start()
            process.wait_ready(functools.partial(port_open, port), timeout=30)
            key, _, value = variable.partition("=")
            found[key] = value.replace("{address}", f"127.0.0.1:{port}")
        self.third_party_env.update(found)
        return found

    def start_services(self) -> None:
        """Start every catalogued service (and the DLQ forwarder) and wait until they listen."""
        self.start_third_parties()
        env = self.env()
        logs_dir = self.state_dir / "logs"
        forwarder = ManagedProcess(
            [sys.executable, "-m", "services.dataplane", "dlq"],
            log_path=logs_dir / "dlq-forwarder.log",
            name="dlq-forwarder",
            env=env,
        )
        self.processes["dlq-forwarder"] = forwarder
        forwarder.start()
        started: list[tuple[ManagedProcess, int]] = []
        ports = {entry.name: self._port(entry.name, entry.dev_port) for entry in self.catalog}
        for entry in self.catalog:
            port = ports[entry.name]
            prefix = entry.name.upper()
            service_env = {**env, f"{prefix}_PORT": str(port), f"{prefix}_HOST": "127.0.0.1"}
            if entry.http_port is not None:
                http_port = self._port(gateway.http_upstream(entry.name), entry.http_port)
                service_env[f"{prefix}_HTTP_PORT"] = str(http_port)
            # Where the other services are, e.g. ROUTER_CONTROL_TARGET=127.0.0.1:50052.
            for other, other_port in ports.items():
                if other != entry.name:
                    service_env[f"{prefix}_{other.upper()}_TARGET"] = f"127.0.0.1:{other_port}"
            process = ManagedProcess(
                [sys.executable, "-m", entry.module],
                log_path=logs_dir / f"{entry.name}.log",
                name=entry.name,
                env=service_env,
            )
            self.processes[entry.name] = process
            process.start()
            started.append((process, port))
        for process, port in started:
            process.wait_ready(functools.partial(port_open, port), timeout=60)
        forwarder.wait_ready(lambda: "READY" in forwarder.log_path.read_text(), timeout=30)

    def start_edge(self) -> None:
        """Render the Envoy config for the running services and start Envoy."""
        # Keyed "envoy", not "edge": "edge" is the edge service's own port (ext_authz upstream).
        listen = self._port("envoy", DEV_PORTS["envoy"])
        admin = self._port("envoy_admin", DEV_PORTS["envoy_admin"])
        config = gateway.render(
            self.catalog, self.upstream_ports(), listen_port=listen, admin_port=admin
        )
        path = gateway.write(config, self.state_dir / "envoy" / "envoy.yaml")
        self._start(EnvoyServer(path, admin, self.state_dir / "logs" / "envoy.log"))

    def upstream_ports(self) -> dict[str, int]:
        """The running services' ports by Envoy upstream: gRPC ones and HTTP sides."""
        found = {entry.name: self.ports[entry.name] for entry in self.catalog}
        for entry in self.catalog:
            if entry.http_port is not None:
                name = gateway.http_upstream(entry.name)
                found[name] = self.ports[name]
        return found

    def start(self) -> None:
        """Start everything; on any failure stop what was started and re-raise."""
        try:
            self.start_infra()
            self.migrate()
            self.start_services()
            self.start_edge()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop services first (they drain), then the servers in reverse start order."""
        for process in reversed(list(self.processes.values())):
            process.stop()
        self.processes.clear()
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()

    @property
    def edge_url(self) -> str:
        """Base URL of the Envoy edge (REST, gRPC and gRPC-web)."""
        return f"http://127.0.0.1:{self.ports['envoy']}"

    @property
    def websocket_url(self) -> str:
        """The WebSocket chat endpoint through the Envoy edge."""
        return f"ws://127.0.0.1:{self.ports['envoy']}/ws/chat"

    def urls(self) -> dict[str, str]:
        """What a developer needs to reach, by name."""
        found = {
            "edge (REST, gRPC, gRPC-web)": self.edge_url,
            "chat (WebSocket)": self.websocket_url,
            "edge admin": f"http://127.0.0.1:{self.ports['envoy_admin']}",
            "openapi": str(gateway.REPO_ROOT / "gen" / "openapi" / "supportmesh.openapi.json"),
            "postgres": self.database_url,
            "valkey": self.redis_url,
            "nats": self.nats_url,
        }
        for entry in self.catalog:
            found[f"{entry.name} (gRPC)"] = f"127.0.0.1:{self.ports[entry.name]}"
        found["platform admin key"] = str(self.state_dir / "platform-admin.key")
        found["logs"] = str(self.state_dir / "logs")
        return found
