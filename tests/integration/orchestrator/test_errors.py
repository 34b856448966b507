"""Clear errors: undeployed workflow versions, invalid workflow YAML, unknown tools."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from services.kit.devstack import Platform
from services.kit.settings import InfraSettings
from services.kit.telemetry import Telemetry
from services.orchestrator.app import OrchestratorSettings, build
from services.orchestrator.workflow import WORKFLOWS_DIR, WorkflowError
from supportmesh.common.v1 import errors_pb2
from tests.integration.orchestrator.conftest import Client
from tests.integration.orchestrator.test_chat import ORDER


async def test_a_tenant_override_to_an_undeployed_version_is_refused(
    client: Client, admin_db: asyncpg.Connection
) -> None:
    await admin_db.execute(
        "INSERT INTO app.workflow_overrides (tenant_id, workflow, version) "
        "VALUES ($1, 'order', '9.9.9')",
        client.tenant,
    )
    body = {"message": "I want a mug", "tenant_id": client.tenant, "user_id": "u1",
            "context": ORDER}  # fmt: skip
    response = await client.http.post("/v1/chat/message", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["details"][0]["reason"] == "WORKFLOW_INVALID"


async def _start_with(directory: Path, infra_settings: InfraSettings) -> WorkflowError:
    settings = OrchestratorSettings(workflows_dir=directory, infra=infra_settings)
    app = build(settings, Telemetry("orchestrator-test"))
    try:
        with pytest.raises(WorkflowError) as caught:
            await app.start()
    finally:
        await app.stop()
    return caught.value


@pytest.mark.parametrize(
    ("edit", "needle", "reason"),
    [
        (
            lambda text: text.replace("tool: orders.create", "tool: fax.send"),
            "fax.send",
            errors_pb2.ERROR_REASON_TOOL_UNKNOWN,
        ),
        (
            lambda text: text.replace("steps:", "stepz:", 1),
            "steps",
            errors_pb2.ERROR_REASON_WORKFLOW_INVALID,
        ),
    ],
    ids=["unknown-tool", "invalid-yaml-schema"],
)
async def test_an_invalid_workflow_stops_the_service_with_workflow_invalid(
    tmp_path: Path,
    infra_settings: InfraSettings,
    platform: Platform,
    edit: object,
    needle: str,
    reason: int,
) -> None:
    assert callable(edit)
    (tmp_path / "order.yaml").write_text(edit((WORKFLOWS_DIR / "order.yaml").read_text()))
    error = await _start_with(tmp_path, infra_settings)
    assert error.reason == reason
    assert needle in str(error)
