"""Real servers from pip wheels (Postgres, Valkey, NATS, Envoy) as loopback child processes.

Used by the dev command and the pytest harness alike: each server class takes its directory
and ports, ``start()`` blocks until a real client round trip works, and ``stop()`` (or leaving
the ``with`` block) ends the server and its whole process group.
"""

from services.kit.stack.envoy import EnvoyServer, envoy_path
from services.kit.stack.nats import NatsServer, nats_server_path
from services.kit.stack.ports import free_port, http_get, port_open
from services.kit.stack.postgres import PostgresServer, pg_bin_dir
from services.kit.stack.process import (
    ManagedProcess,
    ProcessExitedError,
    ReadyTimeoutError,
    StackError,
    log_tail,
    run_command,
)
from services.kit.stack.valkey import ValkeyServer, valkey_server_path

__all__ = [
    "EnvoyServer",
    "ManagedProcess",
    "NatsServer",
    "PostgresServer",
    "ProcessExitedError",
    "ReadyTimeoutError",
    "StackError",
    "ValkeyServer",
    "envoy_path",
    "free_port",
    "http_get",
    "log_tail",
    "nats_server_path",
    "pg_bin_dir",
    "port_open",
    "run_command",
    "valkey_server_path",
]
