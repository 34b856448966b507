"""Real servers from the pip wheels: start, client round trip, restart, and no leftovers."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import asyncpg
import httpx
import nats
import psutil
import pytest
import redis.asyncio

from services.kit.stack import (
    EnvoyServer,
    ManagedProcess,
    NatsServer,
    PostgresServer,
    ProcessExitedError,
    ReadyTimeoutError,
    ValkeyServer,
    free_port,
    http_get,
)

ENVOY_CONFIG = """\
static_resources:
  listeners:
  - name: web
    address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": %(hcm)s
          stat_prefix: web
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "%(body)s"}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""
HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
    ".HttpConnectionManager"
)
Server = PostgresServer | ValkeyServer | NatsServer | EnvoyServer


def _tree(pid: int | None) -> list[psutil.Process]:
    """Return a running server's process and all its descendants."""
    assert pid is not None
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _alive(proc: psutil.Process) -> bool:
    """Return True for a live process; a zombie waiting for init to reap it is dead."""
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _in_group(proc: psutil.Process, pgid: int) -> bool:
    """Return True when ``proc`` still belongs to process group ``pgid``."""
    try:
        return os.getpgid(proc.pid) == pgid
    except ProcessLookupError:
        return False


def _assert_gone(procs: list[psutil.Process], pgid: int) -> None:
    """Assert that none of ``procs`` and nothing else in group ``pgid`` is alive."""
    assert [p for p in procs if _alive(p)] == []
    assert [p for p in psutil.process_iter() if _in_group(p, pgid) and _alive(p)] == []


def test_free_port_is_bindable() -> None:
    """free_port returns a distinct loopback port nobody listens on."""
    port = free_port()
    assert 1024 < port < 65536
    assert http_get(f"http://127.0.0.1:{port}/", timeout=0.2) is None


@pytest.mark.asyncio
async def test_postgres_round_trip_persists_across_restart(tmp_path: Path) -> None:
    """Postgres answers queries, keeps data across a restart, initdb's once, leaves nothing."""
    pg = PostgresServer(tmp_path / "pg", free_port(), fast=True)
    with pg:
        procs = _tree(pg.pid)
        assert len(procs) > 3  # postmaster plus checkpointer, walwriter, ...
        assert os.getsid(procs[0].pid) == procs[0].pid  # own session: no terminal Ctrl-C
        conn = await asyncpg.connect(pg.url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            assert await conn.fetchval("SHOW max_connections") == "200"
            assert await conn.fetchval("SHOW fsync") == "off"
            await conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            await conn.execute("INSERT INTO notes VALUES (1, 'héllo')")
            await conn.execute("CREATE EXTENSION vector")
            distance = await conn.fetchval("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector")
            assert distance == pytest.approx(1.0)
        finally:
            await conn.close()
        assert pg.socket_dir is not None
        assert (pg.socket_dir / f".s.PGSQL.{pg.port}").exists()
        if os.geteuid() == 0:
            assert pg.pgdata.stat().st_uid == 65534
    _assert_gone(procs, procs[0].pid)
    pg.stop()  # idempotent

    with PostgresServer(tmp_path / "pg", pg.port, fast=True) as again:
        conn = await asyncpg.connect(again.url)
        try:
            assert await conn.fetchval("SELECT upper(body) FROM notes WHERE id = 1") == "HÉLLO"
        finally:
            await conn.close()
        restarted = _tree(again.pid)
    _assert_gone(restarted, restarted[0].pid)
    log = (tmp_path / "pg" / "postgres.log").read_text()
    assert log.count("bin/initdb") == 1


def test_postgres_crash_is_cleaned_up_and_recovers(tmp_path: Path) -> None:
    """After the postmaster is SIGKILLed, stop() ends its setsid() workers; restart recovers."""
    pg = PostgresServer(tmp_path / "pg", free_port(), fast=True)
    pg.start()
    tree = _tree(pg.pid)
    # Postgres puts each worker in its own session, so the group alone would miss them.
    assert all(os.getsid(p.pid) == p.pid for p in tree)
    os.kill(tree[0].pid, signal.SIGKILL)
    pg.stop()
    assert [p for p in tree if _alive(p)] == []
    with pg:
        assert pg.running
    assert "database system was interrupted" in (tmp_path / "pg" / "postgres.log").read_text()


def test_taken_ports_fail_fast_instead_of_adopting_the_other_server(tmp_path: Path) -> None:
    """A server whose port is taken by a twin exits with its log tail, not 'ready'."""
    port, monitor = free_port(), free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text("static_resources: {}\n")
    pairs: list[tuple[Server, Server]] = [
        (
            PostgresServer(tmp_path / "pg1", port, fast=True),
            PostgresServer(tmp_path / "pg2", port, fast=True),
        ),
        (ValkeyServer(tmp_path / "v1", port), ValkeyServer(tmp_path / "v2", port)),
        (NatsServer(tmp_path / "n1", port, monitor), NatsServer(tmp_path / "n2", port, monitor)),
        (
            EnvoyServer(config, port, tmp_path / "e1.log"),
            EnvoyServer(config, port, tmp_path / "e2.log", base_id=1),
        ),
    ]
    for first, twin in pairs:
        with first:
            with pytest.raises(ProcessExitedError, match=r"(?i)address already in use|bind"):
                twin.start()
            assert not twin.running


@pytest.mark.asyncio
async def test_valkey_round_trip_persists_across_restart(tmp_path: Path) -> None:
    """Valkey answers SET/GET and keeps the key across a restart via its AOF."""
    port = free_port()
    with ValkeyServer(tmp_path / "valkey", port) as server:
        client = redis.asyncio.Redis.from_url(server.url)
        assert await client.set("greeting", "hi")
        assert await client.get("greeting") == b"hi"
        await client.aclose()
        procs = _tree(server.pid)
    _assert_gone(procs, procs[0].pid)
    assert (tmp_path / "valkey" / "appendonlydir").is_dir()

    with ValkeyServer(tmp_path / "valkey", port) as server:
        client = redis.asyncio.Redis.from_url(server.url)
        assert await client.get("greeting") == b"hi"
        await client.aclose()
    server.stop()


@pytest.mark.asyncio
async def test_nats_jetstream_publish_and_fetch(tmp_path: Path) -> None:
    """JetStream stores a published message that a durable pull consumer then fetches."""
    with NatsServer(tmp_path / "nats", free_port(), free_port()) as server:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="ORDERS", subjects=["orders.>"])
            ack = await js.publish("orders.created", b"order-1")
            assert ack.stream == "ORDERS"
            sub = await js.pull_subscribe("orders.>", durable="worker")
            msgs = await sub.fetch(1, timeout=5)
            assert [m.data for m in msgs] == [b"order-1"]
            await msgs[0].ack()
        finally:
            await nc.close()
        procs = _tree(server.pid)
    _assert_gone(procs, procs[0].pid)
    assert (tmp_path / "nats" / "jetstream").is_dir()


def test_envoy_direct_response_and_two_instances(tmp_path: Path) -> None:
    """Two Envoys run side by side; each is LIVE and serves its static direct_response."""
    servers: list[tuple[EnvoyServer, int]] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            config = tmp_path / f"envoy-{name}.yaml"
            config.write_text(ENVOY_CONFIG % {"port": port, "body": f"hello {name}", "hcm": HCM})
            envoy = EnvoyServer(config, free_port(), tmp_path / f"envoy-{name}.log")
            envoy.start()
            servers.append((envoy, port))
        procs = []
        for envoy, port in servers:
            assert http_get(f"{envoy.admin_url}/ready") == (200, b"LIVE\n")
            with httpx.Client(trust_env=False) as client:
                reply = client.get(f"http://127.0.0.1:{port}/anything")
            assert (reply.status_code, reply.text) == (200, f"hello {envoy.log_path.stem[-1]}")
            procs.append(_tree(envoy.pid))
    finally:
        for envoy, _ in servers:
            envoy.stop()
    for tree in procs:
        _assert_gone(tree, tree[0].pid)


def test_envoy_bad_config_reports_log_tail(tmp_path: Path) -> None:
    """An Envoy that rejects its config fails start() with the log tail, leaving nothing."""
    config = tmp_path / "bad.yaml"
    config.write_text("static_resources: {listeners: [{name: x, no_such_field: 1}]}\n")
    envoy = EnvoyServer(config, free_port(), tmp_path / "bad.log")
    with pytest.raises(ProcessExitedError, match="no_such_field"):
        envoy.start()
    assert not envoy.running
    envoy.stop()


def test_managed_process_escalates_to_sigkill_for_the_whole_group(tmp_path: Path) -> None:
    """A group that ignores SIGTERM is SIGKILLed after the timeout, grandchildren included."""
    # The marker is assembled at run time: the log's header line repeats the command itself.
    script = "trap '' TERM; sleep 60 & sleep 60 & printf '%s-%s\\n' forked both; wait"
    proc = ManagedProcess(["sh", "-c", script], log_path=tmp_path / "sh.log")
    with proc:
        proc.wait_ready(lambda: "forked-both" in (tmp_path / "sh.log").read_text(), timeout=5)
        tree = _tree(proc.pid)
        assert len(tree) == 3
        assert os.getsid(tree[0].pid) == tree[0].pid != os.getsid(0)
        assert proc.stop(timeout=0.3) == -signal.SIGKILL
    _assert_gone(tree, tree[0].pid)
    assert proc.stop() == -signal.SIGKILL  # idempotent


def test_managed_process_kills_setsid_descendants_after_leader_crash(tmp_path: Path) -> None:
    """A descendant in its own session outlives a crashed leader only until stop()."""
    log = tmp_path / "sh.log"
    proc = ManagedProcess(
        # The marker is printed by the descendant itself, after setsid(2) has run.
        ["sh", "-c", "setsid sh -c \"printf '%s-%s\\n' up now; exec sleep 60\" & wait"],
        log_path=log,
    )
    proc.start()
    proc.wait_ready(lambda: "up-now" in log.read_text(), timeout=5)
    tree = _tree(proc.pid)
    assert len(tree) == 2
    assert os.getsid(tree[1].pid) == tree[1].pid
    os.kill(tree[0].pid, signal.SIGKILL)
    proc.stop()
    assert [p for p in tree if _alive(p)] == []


def test_managed_process_early_exit_and_timeout(tmp_path: Path) -> None:
    """wait_ready reports an early exit with the log tail, and a timeout as such."""
    log = tmp_path / "early.log"
    early = ManagedProcess(
        [sys.executable, "-c", "import sys; sys.exit('boom-marker')"], log_path=log
    )
    early.start()
    with pytest.raises(ProcessExitedError, match=r"code 1 (.|\n)*boom-marker"):
        early.wait_ready(lambda: False, timeout=10)
    early.stop()

    slow = ManagedProcess(["sleep", "30"], log_path=tmp_path / "slow.log")
    with slow, pytest.raises(ReadyTimeoutError, match=r"not ready after 0\.2s"):
        slow.wait_ready(lambda: False, timeout=0.2)
    assert not slow.running
