"""Every tool has a ToolSpec the control plane accepts, with consistent compensations."""

from __future__ import annotations

from google.protobuf import json_format

from services.control import specs as control_specs
from services.orchestrator.tools import TOOL_NAMES, all_specs
from services.orchestrator.tools.schema import problems
from services.orchestrator.tools.spec import schema_of
from supportmesh.spec.v1 import tool_pb2


def test_exactly_the_named_tools_have_specs() -> None:
    assert [spec.name for spec in all_specs()] == sorted(TOOL_NAMES)


def test_every_spec_passes_the_control_planes_validation() -> None:
    for spec in all_specs():
        control_specs.validate_tool(spec)


def test_side_effects_require_keys_and_compensations_exist() -> None:
    by_name = {spec.name: spec for spec in all_specs()}
    for spec in by_name.values():
        side_effecting = spec.side_effect != tool_pb2.SIDE_EFFECT_READ_ONLY
        assert spec.idempotency.required == side_effecting, spec.name
        if spec.side_effect == tool_pb2.SIDE_EFFECT_COMPENSATABLE:
            assert spec.compensation_tool in by_name, spec.name
        if spec.compensation_tool:
            undo = by_name[spec.compensation_tool]
            assert undo.idempotency.required
            assert not undo.compensation_tool  # compensations are not themselves compensated
        assert spec.timeout.ToTimedelta().total_seconds() <= 30
        assert spec.retry_policy.max_attempts == 3  # the seed's maximum


def test_specs_round_trip_through_json() -> None:
    for spec in all_specs():
        again = json_format.Parse(json_format.MessageToJson(spec), tool_pb2.ToolSpec())
        assert again == spec


def test_schemas_are_valid_schema_documents() -> None:
    for spec in all_specs():
        for schema in (schema_of(spec.input_schema), schema_of(spec.output_schema)):
            assert schema["type"] == "object"
            assert set(schema["required"]) <= set(schema["properties"])


def test_the_schema_checker_reports_what_is_wrong() -> None:
    schema = schema_of(next(s for s in all_specs() if s.name == "orders.create").input_schema)
    good = {"customer_id": "c1", "currency": "usd", "items": [{"sku": "a", "quantity": 1,
            "unit_price_cents": 5}]}  # fmt: skip
    assert list(problems(good, schema)) == []
    bad = {"currency": "dollars", "items": [{"sku": "a", "quantity": 0}], "extra": True}
    found = dict(problems(bad, schema))
    assert set(found) == {
        "customer_id", "currency", "items[0].quantity", "items[0].unit_price_cents", "extra"
    }  # fmt: skip
