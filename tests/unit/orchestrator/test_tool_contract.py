"""The workflows against the tools package's real registry: names, side effects, input schemas."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from google.protobuf import json_format
from jsonschema import Draft202012Validator
from langgraph.checkpoint.memory import InMemorySaver

from services.orchestrator.tools import TOOL_NAMES as REGISTERED
from services.orchestrator.tools import all_specs
from services.orchestrator.workflow import (
    TOOL_NAMES,
    CallContext,
    ToolCallError,
    Workflow,
    WorkflowEngine,
    load_workflows,
)
from tests.unit.orchestrator.doubles import Doubles, FakeTools, no_sleep
from tests.unit.orchestrator.samples import (
    ASK,
    LEAD,
    LEAD_REPLY,
    ORDER,
    ORDER_ANSWER,
    PAY,
    PAY_ANSWER,
    SHIPPED,
)

SPECS = {spec.name: spec for spec in all_specs()}


class CheckedTools(FakeTools):
    """Tools that refuse arguments their registered input schema refuses."""

    async def call(
        self, call: CallContext, tool: str, arguments: Mapping[str, Any], idempotency_key: str
    ) -> Mapping[str, Any]:
        schema = json_format.MessageToDict(SPECS[tool].input_schema)
        checker = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = [error.message for error in checker.iter_errors(dict(arguments))]
        assert not errors, f"{tool}: {errors}"
        return await super().call(call, tool, arguments, idempotency_key)


@pytest.fixture(scope="module")
def registered() -> dict[str, Workflow]:
    return load_workflows(known_tools=SPECS)


def test_the_names_match_the_tools_package() -> None:
    assert set(TOOL_NAMES) == set(REGISTERED) == set(SPECS)


@pytest.mark.parametrize(
    ("name", "given", "fail"),
    [
        ("order", ORDER, None),
        ("order", ORDER, "mail.send"),  # every compensation's input is checked too
        ("payment", PAY, None),
        ("payment", PAY, "mail.send"),
        ("tracking", ASK, None),
        ("lead", LEAD, None),
        ("lead", LEAD, "crm.update_lead_status"),
    ],
)
async def test_every_tool_call_satisfies_its_registered_schema(
    registered: dict[str, Workflow], name: str, given: dict[str, Any], fail: str | None
) -> None:
    doubles = Doubles(tools=CheckedTools())
    qualification = '{"qualified": true, "segment": "smb", "confidence": 0.9}'
    reply = {"order": ORDER_ANSWER, "payment": PAY_ANSWER, "tracking": SHIPPED, "lead": LEAD_REPLY}[
        name
    ]
    doubles.models.replies = {"SLM_A": lambda r: qualification if r.json_output else reply}
    if fail:
        doubles.tools.fail(fail, ToolCallError("refused"))
    engine = WorkflowEngine(doubles.ports, InMemorySaver(), sleep=no_sleep)
    run = await engine.start(registered[name], tenant_id="acme", run_id="k1", input=given)
    expected = "SUCCEEDED" if fail is None or name == "lead" else "COMPENSATED"
    assert run.status == expected, run.message
