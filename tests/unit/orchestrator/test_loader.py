"""Loading workflow files: the published schema, and errors that point at the offending line."""

from __future__ import annotations

import json
import textwrap

import grpc
import pytest
from jsonschema import Draft202012Validator

from services.kit.errors import FailedPrecondition, reason_name
from services.orchestrator.workflow import (
    SCHEMA_PATH,
    TOOL_NAMES,
    WORKFLOWS_DIR,
    Workflow,
    WorkflowError,
    load_workflow,
)
from services.orchestrator.workflow.model import GateStep, LlmStep, ScoreThreshold, ToolStep
from tests.unit.orchestrator.doubles import TOOL_SPECS

HEADER = "name: demo\nversion: 1.0.0\n"


def load(body: str) -> Workflow:
    return load_workflow(HEADER + textwrap.dedent(body), known_tools=TOOL_SPECS, source="demo.yaml")


def issues(body: str) -> list[tuple[int, str]]:
    """(line, message) of every issue; lines count the two header lines."""
    with pytest.raises(WorkflowError) as caught:
        load(body)
    return [(issue.line, issue.message) for issue in caught.value.issues]


def test_the_schema_is_valid_draft_2020_12() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    budgets = schema["$defs"]["budgets"]["properties"]
    assert (budgets["wall_ms"]["default"], budgets["tokens"]["default"]) == (5000, 10000)
    assert budgets["cost_usd"]["default"] == 0.1


def test_the_five_workflows_load(workflows: dict[str, Workflow]) -> None:
    assert sorted(workflows) == ["faq", "lead", "order", "payment", "tracking"]
    assert {path.stem for path in WORKFLOWS_DIR.glob("*.yaml")} == set(workflows)
    used = {s.tool for w in workflows.values() for s in w.steps if isinstance(s, ToolStep)}
    used |= {c.tool for w in workflows.values() for c in w.compensations.values()}
    assert used <= set(TOOL_NAMES)
    order = workflows["order"]
    assert {step: c.tool for step, c in order.compensations.items()} == {
        "create_order": "orders.cancel",
        "charge": "payment.refund",
        "confirm": "mail.send_cancellation",
    }
    assert order.budgets.wall_ms == 5000
    assert order.retry.max_attempts == 3


def test_defaults_fill_what_the_file_leaves_out() -> None:
    workflow = load("""
        steps:
          - id: answer
            type: llm
            config: {tier: LLM}
          - id: check
            type: gate
            target: answer
            validators: [{type: score_threshold}, {type: critic_call}]
    """)
    assert workflow.budgets.tokens == 10_000
    assert workflow.budgets.cost_usd == 0.10
    answer, gate = workflow.steps
    assert isinstance(answer, LlmStep)
    assert answer.wall_ms == 5000
    assert answer.max_tokens == 500
    assert isinstance(gate, GateStep)
    assert gate.on_failure.action == "fallback"
    threshold = gate.validators[0]
    assert isinstance(threshold, ScoreThreshold)
    assert threshold.min == 0.8


def test_a_bad_step_type_names_its_line() -> None:
    found = issues("""
        steps:
          - id: lookup
            type: tol
            tool: orders.get
    """)
    assert found == [
        (6, "'tol' is not one of 'router', 'tool', 'llm', 'condition', 'escalation', 'gate'")
    ]


def test_an_unknown_field_names_its_line() -> None:
    found = issues("""
        steps:
          - id: lookup
            type: tool
            tool: orders.get
            retries: 3
    """)
    assert found == [(8, "unknown field 'retries'")]


def test_a_field_of_another_step_type_is_unknown() -> None:
    found = issues("""
        steps:
          - id: answer
            type: llm
            tool: orders.get
            config: {tier: LLM}
    """)
    assert found == [(7, "unknown field 'tool'")]


def test_a_missing_required_field_names_the_step() -> None:
    assert issues("""
        steps:
          - id: lookup
            type: tool
    """) == [(5, "'tool' is a required property")]


def test_a_duplicate_step_id_names_both_lines() -> None:
    found = issues("""
        steps:
          - id: lookup
            type: tool
            tool: orders.get
            input: {order_id: "${input.order_id}"}
          - id: lookup
            type: tool
            tool: orders.get
    """)
    assert found == [(9, "duplicate step id 'lookup' (first defined on line 5)")]


def test_an_unknown_tool_is_tool_unknown() -> None:
    with pytest.raises(WorkflowError) as caught:
        load("""
            steps:
              - id: refund
                type: tool
                tool: payment.refnd
        """)
    error = caught.value
    assert [(i.line, i.column, i.code) for i in error.issues] == [(7, 11, "tool_unknown")]
    assert "step 'refund' calls unknown tool 'payment.refnd'" in str(error)
    assert isinstance(error, FailedPrecondition)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_name(error.reason) == "TOOL_UNKNOWN"
    assert error.metadata["line"] == "7"
    assert error.metadata["path"] == "/steps/0/tool"


def test_a_bad_condition_names_its_line_and_why() -> None:
    found = issues("""
        steps:
          - id: lookup
            type: tool
            tool: orders.get
            condition: input.order_id.__len__() > 0
    """)
    assert found == [
        (8, "bad expression 'input.order_id.__len__() > 0': function calls are not allowed")
    ]


def test_every_issue_is_reported_and_the_reason_is_workflow_invalid() -> None:
    with pytest.raises(WorkflowError) as caught:
        load("""
            steps:
              - id: lookup
                type: tool
                tool: orders.nope
                condition: "lookup.status =="
              - id: lookup
                type: llm
                config: {tier: LLM}
        """)
    error = caught.value
    assert [issue.line for issue in error.issues] == [7, 8, 9]
    assert reason_name(error.reason) == "WORKFLOW_INVALID"
    assert str(error).splitlines()[0].startswith("demo.yaml:7:11: /steps/0/tool: ")
    info = error.to_status()
    assert info.code == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("steps: [\n", (4, "YAML syntax error")),
        ("steps: []\nsteps: []\n", (4, "duplicate key 'steps' (first defined on line 3)")),
        ("version: 1.0\nsteps: [{id: a, type: llm}]\n", (1, "file is larger")),
    ],
)
def test_yaml_problems_are_located(body: str, expected: tuple[int, str]) -> None:
    if expected[1] == "file is larger":
        body = "description: '" + "x" * 300_000 + "'\n"
        expected = (1, "file is larger than 256 KiB")
    found = issues(body)
    assert found[0][0] == expected[0]
    assert found[0][1].startswith(expected[1])


def test_a_version_must_be_semver() -> None:
    with pytest.raises(WorkflowError) as caught:
        load_workflow("name: x\nversion: '1.0'\nsteps: [{id: a, type: llm}]\n", known_tools={})
    assert caught.value.issues[0].line == 2
    assert "does not match" in caught.value.issues[0].message


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        (
            """
            steps:
              - id: a
                type: llm
                config: {tier: LLM}
                next: a
            """,
            8,
            "next step 'a' must be a later step (jumps only go forward)",
        ),
        (
            """
            steps:
              - id: a
                type: llm
                config: {tier: LLM}
                next: end
              - id: b
                type: llm
                config: {tier: LLM}
            """,
            9,
            "step 'b' is unreachable: no step leads to it",
        ),
        (
            """
            steps:
              - id: a
                type: llm
                config: {tier: LLM, prompt: "${b.text}"}
              - id: b
                type: llm
                config: {tier: LLM}
            """,
            7,
            "'b' is a step that has not run yet at 'a'",
        ),
        (
            """
            steps:
              - id: a
                type: llm
                condition: custmer.vip == true
                config: {tier: LLM}
            """,
            7,
            "unknown name 'custmer' in 'custmer.vip == true'",
        ),
        (
            """
            steps:
              - id: a
                type: llm
            """,
            6,
            "llm step 'a' needs a router step before it or a fixed config.tier",
        ),
        (
            """
            steps:
              - id: lookup
                type: tool
                tool: orders.get
            compensation:
              - step: lookup
                action: orders.cancel
            """,
            9,
            "step 'lookup' calls read-only tool 'orders.get'; there is nothing to compensate",
        ),
        (
            """
            steps:
              - id: charge
                type: tool
                tool: payment.charge
            compensation:
              - step: charge
                action: orders.cancel
            """,
            10,
            "the registry says 'payment.charge' is undone by 'payment.refund', not 'orders.cancel'",
        ),
        (
            """
            steps:
              - id: a
                type: llm
                config: {tier: LLM}
              - id: mail
                type: tool
                tool: mail.send
              - id: check
                type: gate
                target: a
                validators: [{type: factuality}]
            """,
            13,
            "repairing 'a' would repeat the side effect of 'mail'; move the gate before it",
        ),
        (
            """
            steps:
              - id: check
                type: gate
                target: input
                validators: [{type: json_schema, schema: {type: objekt}}]
            """,
            8,
            "not a valid JSON Schema",
        ),
        (
            """
            steps:
              - id: a
                type: llm
                config: {tier: LLM}
            error_handling:
              - type: fallback
                action: escalate
                step: a
            """,
            11,
            "a fallback with action 'escalate' needs 'step' naming an escalation step",
        ),
    ],
)
def test_semantic_checks(body: str, line: int, message: str) -> None:
    found = issues(body)
    assert found[0][0] == line
    assert found[0][1].startswith(message)
