"""Training writes an artifact the router can serve and registers it through the control plane."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from services.router import model, train
from tests.integration.router.conftest import Harness

DATA = Path(__file__).resolve().parents[3] / "data" / "router" / "dev.jsonl"


async def test_train_registers_a_canary_version(
    router: Harness,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcomes = tmp_path / "outcomes.jsonl"
    rows = [
        {"query": "where is my parcel 1Z12345678", "tier": "SLM_A", "success": i % 3 != 0,
         "cost": 0.0001, "latency_ms": 160, "tenant_id": "acme"}
        for i in range(30)
    ]  # fmt: skip
    outcomes.write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.setenv("ROUTER_CONTROL_TARGET", f"127.0.0.1:{router.platform.ports['control']}")
    version = f"it-train-{tmp_path.name[-8:].replace('_', '-')}"
    out = tmp_path / "artifact"
    argv = ["--data", str(DATA), "--outcomes", str(outcomes), "--out", str(out),
            "--version", version, "--register", "--canary-tenant", "acme"]  # fmt: skip
    # The CLI runs its own event loop: give it a thread.
    assert await asyncio.to_thread(train.main, argv) == 0
    printed = capsys.readouterr().out
    assert f'"registered": "policyVersions/{version}"' in printed
    loaded = model.load(out.as_uri())
    assert loaded.version == version
    assert loaded.metadata["metrics"]["quality_retained_vs_llm"] > 0.9
    admin = await asyncpg.connect(router.admin_url)
    try:
        row = await admin.fetchrow(
            "SELECT status, artifact_uri, canary_percent, canary_tenants, metrics "
            "FROM app.policy_versions WHERE version = $1",
            version,
        )
        assert row is not None
        assert row["status"] == "CANARY"
        assert row["artifact_uri"] == out.resolve().as_uri()
        assert row["canary_percent"] == 5
        assert row["canary_tenants"] == ["acme"]
        assert "misroute_rate" in json.loads(row["metrics"])
    finally:
        await admin.execute("DELETE FROM app.policy_versions WHERE version = $1", version)
        await admin.close()
