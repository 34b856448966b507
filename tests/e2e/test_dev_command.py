"""``supportmesh dev``: up with printed URLs, answering, Ctrl-C leaves nothing, data persists."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import psutil
import redis.asyncio as redis

from services.kit import events
from supportmesh.events.v1 import events_pb2

READY_LINE = "Ctrl-C stops everything."


def start_dev(state_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.kit.cli",
            "dev",
            "--free-ports",
            "--state-dir",
            str(state_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.endswith("_URL")},
    )
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        match = re.match(r"\s+(\S.*?)\s{2,}(\S+)$", line)
        if match:
            urls[match.group(1)] = match.group(2)
        if READY_LINE in line:
            break
        assert time.monotonic() < deadline, "dev stack did not come up"
    else:
        raise AssertionError(f"dev exited early with {proc.wait()}")
    return proc, urls


def stop_dev(proc: subprocess.Popen[str], signum: signal.Signals) -> tuple[int, set[int]]:
    family = {child.pid for child in psutil.Process(proc.pid).children(recursive=True)}
    proc.send_signal(signum)
    code = proc.wait(timeout=60)
    survivors = set()
    for pid in family:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                survivors.add(pid)
        except psutil.NoSuchProcess:
            pass
    return code, survivors


def operator(state_dir: Path, urls: dict[str, str], *args: str) -> list[str]:
    """Run an operator command of the CLI against the running stack; its output lines."""
    edge = urls["edge (REST, gRPC, gRPC-web)"]
    key_file = str(state_dir / "platform-admin.key")
    done = subprocess.run(
        [sys.executable, "-m", "services.kit.cli", *args, "--edge", edge, "--key-file", key_file],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


async def first_run(urls: dict[str, str], api_key: str) -> None:
    async with httpx.AsyncClient(base_url=urls["edge (REST, gRPC, gRPC-web)"]) as http:
        anonymous = await http.post("/v1/router/decide", json={"query": "track my parcel"})
        assert anonymous.status_code == 401
        reply = await http.post(
            "/v1/router/decide", json={"query": "track my parcel"}, headers={"x-api-key": api_key}
        )
        assert reply.status_code == 200
        assert reply.json()["tier"] in {"SLM_A", "SLM_B", "LLM"}
    admin = urls["postgres"].replace("supportmesh_app@", "postgres@")
    connection = await asyncpg.connect(admin)
    await connection.execute(
        "CREATE TABLE persisted (value text); INSERT INTO persisted VALUES ('kept')"
    )
    await connection.close()
    cache = redis.from_url(urls["valkey"])
    await cache.set("persisted", "kept")
    await cache.aclose()
    client, js = await events.connect(urls["nats"])
    await events.publish(js, events.AGENT_RUN_REQUESTED, events_pb2.RunEvent(run_id="kept"), "kept")
    await client.close()


async def second_run(urls: dict[str, str]) -> None:
    admin = urls["postgres"].replace("supportmesh_app@", "postgres@")
    connection = await asyncpg.connect(admin)
    assert await connection.fetchval("SELECT value FROM persisted") == "kept"
    await connection.close()
    cache = redis.from_url(urls["valkey"])
    assert await cache.get("persisted") == b"kept"
    await cache.aclose()
    client, js = await events.connect(urls["nats"])
    last = await js.get_last_msg("AGENT_RUNS", events.AGENT_RUN_REQUESTED)
    assert events_pb2.RunEvent.FromString(last.data or b"").run_id == "kept"
    await client.close()


def test_dev_runs_stops_cleanly_and_keeps_data(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, urls = start_dev(state)
    try:
        assert urls["edge (REST, gRPC, gRPC-web)"].startswith("http://127.0.0.1:")
        assert operator(state, urls, "tenant", "create", "acme-e2e") == [
            "tenants/acme-e2e (plans/pro)"
        ]
        key_name, secret = operator(
            state, urls, "key", "create", "acme-e2e", "--scope", "router:decide"
        )
        assert key_name.startswith("tenants/acme-e2e/apiKeys/")
        asyncio.run(first_run(urls, secret))
    finally:
        code, survivors = stop_dev(proc, signal.SIGINT)
    assert code == 0
    assert survivors == set()
    proc, urls = start_dev(state)
    try:
        asyncio.run(second_run(urls))
        # The tenant and its key survived the restart too: creating it again is idempotent.
        assert operator(state, urls, "tenant", "create", "acme-e2e") == [
            "tenants/acme-e2e (plans/pro)"
        ]
    finally:
        # SIGTERM is what a service manager or `timeout` sends.
        code, survivors = stop_dev(proc, signal.SIGTERM)
    assert (code, survivors) == (0, set())
