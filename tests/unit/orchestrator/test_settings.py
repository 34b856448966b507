"""Model tiers and their keys as the orchestrator reads them from the environment; usage rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.orchestrator.app import OrchestratorSettings
from services.orchestrator.metering import RunUsage, event_id, usage_of
from supportmesh.events.v1 import events_pb2


def test_a_tier_without_its_own_key_gets_the_shared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    models = {
        "LLM": {"base_url": "https://llm.example/v1", "model": "big", "input_per_1k_usd": 0.003},
        "SLM_A": {"base_url": "https://slm.example/v1", "model": "small", "api_key": "own"},
    }
    monkeypatch.setenv("ORCHESTRATOR_MODELS", json.dumps(models))
    monkeypatch.setenv("ORCHESTRATOR_MODEL_API_KEY", "shared")
    tiers = OrchestratorSettings().tier_models()
    assert {tier: model.api_key for tier, model in tiers.items()} == {
        "LLM": "shared",
        "SLM_A": "own",
    }
    assert tiers["LLM"].input_per_1k_usd == 0.003
    assert tiers["LLM"].base_url == "https://llm.example/v1"


def test_no_tiers_configured_means_the_embedded_responder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_MODELS", "{}")
    assert OrchestratorSettings().tier_models() == {}


def _row(
    tenant: str, run: str, meter: str, quantity: float, at: datetime
) -> tuple[str, bytes, datetime]:
    event = events_pb2.UsageMeteredEvent(
        tenant_id=tenant, meter=meter, quantity=quantity, source_id=run
    )
    return event_id(run, meter), event.SerializeToString(), at


def test_usage_rows_become_one_usage_per_run() -> None:
    at = datetime(2026, 3, 4, tzinfo=UTC)
    stranger = events_pb2.UsageMeteredEvent(
        tenant_id="t", meter="tokens", quantity=9, source_id="x"
    )
    rows = [
        _row("t", "r1", "tokens", 120.0, at),
        _row("t", "r2", "cost_usd", 0.5, at),
        _row("t", "r1", "cost_usd", 0.25, at),
        ("other-id", stranger.SerializeToString(), at),  # not written by a run's commit
    ]
    assert sorted(usage_of(rows), key=lambda run: run.run_id) == [
        RunUsage("t", "r1", 120, 0.25, at),
        RunUsage("t", "r2", 0, 0.5, at),
    ]
