"""tools/protoc-gen-openapi, run as a real plugin by grpcio-tools' protoc on a small proto."""

from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
PLUGIN = REPO / "tools" / "protoc-gen-openapi"
WKT_PROTOS = Path(str(importlib.resources.files("grpc_tools") / "_proto"))
GOOGLEAPIS = Path(
    str(importlib.resources.files("google.api").joinpath("annotations.proto"))
).parents[2]
OUTPUT = "supportmesh.openapi.json"
REF = "#/components/schemas/"

PROTO = """
syntax = "proto3";

package demo.v1;

import "google/api/annotations.proto";
import "google/api/field_behavior.proto";
import "google/protobuf/timestamp.proto";

// RunService manages runs.
service RunService {
  // GetRun returns one run.
  //
  // Runs are kept for 30 days.
  rpc GetRun(GetRunRequest) returns (Run) {
    option (google.api.http) = {get: "/v1/{name=tenants/*/runs/*}"};
  }
  // CreateRun starts a run.
  rpc CreateRun(CreateRunRequest) returns (Run) {
    option (google.api.http) = {
      post: "/v1/{parent=tenants/*}/runs"
      body: "*"
      additional_bindings {post: "/v1/runs" body: "run"}
    };
  }
  // WatchRun streams the changes of a run.
  rpc WatchRun(WatchRunRequest) returns (stream RunEvent) {
    option (google.api.http) = {get: "/v1/{run.name=tenants/*/runs/*}:watch"};
  }
  // Internal has no HTTP rule, so it is not in the document.
  rpc Internal(GetRunRequest) returns (Run);
}

// RunState is where a run is in its life.
enum RunState {
  // Not set.
  RUN_STATE_UNSPECIFIED = 0;
  // Still going.
  RUN_STATE_RUNNING = 1;
  // Finished.
  RUN_STATE_DONE = 2;
}

// Run is one workflow execution.
message Run {
  // Resource name `tenants/{tenant}/runs/{run}`.
  string name = 1;
  // Where the run is.
  RunState state = 2;
  // Tokens used so far.
  int64 token_count = 3;
  // Free-form labels.
  map<string, string> labels = 4;
  // When the run started.
  google.protobuf.Timestamp create_time = 5 [(google.api.field_behavior) = OUTPUT_ONLY];
  // How the run ended.
  oneof outcome {
    // The final answer.
    string answer = 6;
    // Why it failed.
    string failure_reason = 7;
  }
  // Raw payload.
  bytes payload = 8;
}

// GetRunRequest names a run.
message GetRunRequest {
  // The run's resource name.
  string name = 1 [(google.api.field_behavior) = REQUIRED];
  // Whether to include the steps.
  bool include_steps = 2;
  // Step kinds to include.
  repeated string step_kinds = 3;
  // Paging of the steps.
  Paging paging = 4;
}

// Paging selects a page.
message Paging {
  // Maximum items per page.
  int32 page_size = 1;
  // Token from the previous page.
  string page_token = 2;
}

// CreateRunRequest starts a run under a tenant.
message CreateRunRequest {
  // The tenant, `tenants/{tenant}`.
  string parent = 1 [(google.api.field_behavior) = REQUIRED];
  // The run to start.
  Run run = 2 [(google.api.field_behavior) = REQUIRED];
  // Idempotency key.
  string request_id = 3;
}

// WatchRunRequest names the run to watch.
message WatchRunRequest {
  // The run; only its name is read.
  Run run = 1;
}

// RunEvent is one change of a run.
message RunEvent {
  // The run after the change.
  Run run = 1;
  // Position in the stream.
  uint64 sequence = 2;
}
"""


def run_plugin(tmp: Path, proto: str = PROTO, opts: str = "") -> subprocess.CompletedProcess[str]:
    src, out = tmp / "src", tmp / "out"
    (src / "demo" / "v1").mkdir(parents=True, exist_ok=True)
    out.mkdir(exist_ok=True)
    (src / "demo" / "v1" / "run.proto").write_text(proto)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{src}",
        f"-I{WKT_PROTOS}",
        f"-I{GOOGLEAPIS}",
        f"--plugin=protoc-gen-openapi={PLUGIN}",
        f"--openapi_out={out}",
        *([f"--openapi_opt={opts}"] if opts else []),
        "demo/v1/run.proto",
    ]
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


def generate(tmp: Path, opts: str = "") -> str:
    result = run_plugin(tmp, opts=opts)
    assert result.returncode == 0, result.stderr
    return (tmp / "out" / OUTPUT).read_text()


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(generate(tmp_path_factory.mktemp("segments")))
    return parsed


@pytest.fixture(scope="module")
def field_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    text = generate(tmp_path_factory.mktemp("field"), opts="path_style=field,title=Demo")
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = doc["components"]["schemas"][name]
    return found


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_field_style_path_parameter_documents_the_pattern(field_doc: dict[str, Any]) -> None:
    assert field_doc["openapi"] == "3.1.0"
    assert field_doc["info"]["title"] == "Demo"
    get = field_doc["paths"]["/v1/{name}"]["get"]
    (param,) = [p for p in get["parameters"] if p["in"] == "path"]
    assert param["name"] == "name"
    assert param["required"] is True
    assert param["schema"] == {"type": "string"}
    assert "tenants/*/runs/*" in param["description"]
    watch = field_doc["paths"]["/v1/{run.name}:watch"]["get"]
    assert [p["name"] for p in watch["parameters"] if p["in"] == "path"] == ["run.name"]
    query = [p["name"] for p in watch["parameters"] if p["in"] == "query"]
    assert "run.tokenCount" in query
    assert "run.name" not in query
    assert "/v1/{parent}/runs" in field_doc["paths"]


def test_segment_style_spells_the_resource_path(doc: dict[str, Any]) -> None:
    get = doc["paths"]["/v1/tenants/{tenant}/runs/{run}"]["get"]
    path_params = [p for p in get["parameters"] if p["in"] == "path"]
    assert [p["name"] for p in path_params] == ["tenant", "run"]
    assert all(p["required"] for p in path_params)
    assert "`tenants/{tenant}/runs/{run}`" in path_params[0]["description"]
    assert "/v1/tenants/{tenant}/runs/{run}:watch" in doc["paths"]
    assert "/v1/tenants/{tenant}/runs" in doc["paths"]


def test_operation_metadata_comes_from_the_service(doc: dict[str, Any]) -> None:
    get = doc["paths"]["/v1/tenants/{tenant}/runs/{run}"]["get"]
    assert get["operationId"] == "RunService_GetRun"
    assert get["tags"] == ["RunService"]
    assert get["summary"] == "GetRun returns one run."
    assert "30 days" in get["description"]
    assert doc["tags"] == [{"name": "RunService", "description": "RunService manages runs."}]
    op_ids = {op["operationId"] for item in doc["paths"].values() for op in item.values()}
    assert op_ids == {
        "RunService_GetRun",
        "RunService_CreateRun",
        "RunService_CreateRun_2",
        "RunService_WatchRun",
    }


def test_get_turns_remaining_fields_into_query_parameters(doc: dict[str, Any]) -> None:
    params = doc["paths"]["/v1/tenants/{tenant}/runs/{run}"]["get"]["parameters"]
    query = {p["name"]: p for p in params if p["in"] == "query"}
    assert list(query) == ["includeSteps", "stepKinds", "paging.pageSize", "paging.pageToken"]
    assert query["includeSteps"]["schema"] == {"type": "boolean"}
    assert query["stepKinds"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert query["paging.pageSize"]["schema"] == {"type": "integer", "format": "int32"}


def test_message_schema_follows_the_proto3_json_mapping(doc: dict[str, Any]) -> None:
    run = schema(doc, "demo.v1.Run")
    props = run["properties"]
    assert run["description"] == "Run is one workflow execution."
    assert set(props) == {
        "name",
        "state",
        "tokenCount",
        "labels",
        "createTime",
        "answer",
        "failureReason",
        "payload",
    }
    assert props["tokenCount"] == {
        "type": "string",
        "format": "int64",
        "description": "Tokens used so far.",
    }
    assert props["state"]["enum"] == [
        "RUN_STATE_UNSPECIFIED",
        "RUN_STATE_RUNNING",
        "RUN_STATE_DONE",
    ]
    assert "`RUN_STATE_DONE`: Finished." in props["state"]["description"]
    assert props["labels"]["additionalProperties"] == {"type": "string"}
    assert props["createTime"]["format"] == "date-time"
    assert props["createTime"]["readOnly"] is True
    assert props["payload"]["format"] == "byte"
    assert "oneof `outcome`" in props["answer"]["description"]
    assert schema(doc, "demo.v1.RunEvent")["properties"]["sequence"]["type"] == "string"


def test_body_star_is_the_request_minus_path_fields(doc: dict[str, Any]) -> None:
    create = doc["paths"]["/v1/tenants/{tenant}/runs"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"run", "requestId"}
    assert body["required"] == ["run"]
    assert body["properties"]["run"]["$ref"] == REF + "demo.v1.Run"
    assert [p["in"] for p in create["parameters"]] == ["path"]
    assert schema(doc, "demo.v1.CreateRunRequest")["required"] == ["parent", "run"]


def test_additional_binding_with_a_body_field(doc: dict[str, Any]) -> None:
    create = doc["paths"]["/v1/runs"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"] == REF + "demo.v1.Run"
    query = {p["name"]: p for p in create["parameters"]}
    assert list(query) == ["parent", "requestId"]
    assert query["parent"]["required"] is True


def test_server_streaming_is_server_sent_events(doc: dict[str, Any]) -> None:
    ok = doc["paths"]["/v1/tenants/{tenant}/runs/{run}:watch"]["get"]["responses"]["200"]
    assert list(ok["content"]) == ["text/event-stream"]
    assert ok["content"]["text/event-stream"]["schema"] == {"$ref": REF + "demo.v1.RunEvent"}
    assert "Server-sent events" in ok["description"]


def test_every_operation_has_a_status_error_and_refs_resolve(doc: dict[str, Any]) -> None:
    for item in doc["paths"].values():
        for op in item.values():
            error = op["responses"]["default"]["content"]["application/json"]["schema"]
            assert error == {"$ref": REF + "google.rpc.Status"}
    status = schema(doc, "google.rpc.Status")
    assert set(status["properties"]) == {"code", "message", "details"}
    assert "@type" in status["properties"]["details"]["items"]["properties"]
    found = set(refs(doc))
    assert REF + "demo.v1.Paging" in found
    for ref in found:
        assert ref.startswith(REF)
        assert ref.removeprefix(REF) in doc["components"]["schemas"], ref


def test_output_is_deterministic_and_sorted(tmp_path: Path) -> None:
    first = generate(tmp_path / "a")
    second = generate(tmp_path / "b")
    assert first == second
    assert first.endswith("}\n")
    assert (
        first == json.dumps(json.loads(first), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )


def test_paths_that_collapse_onto_each_other_are_an_error(tmp_path: Path) -> None:
    proto = PROTO.replace(
        'get: "/v1/{run.name=tenants/*/runs/*}:watch"', 'get: "/v1/{run.name=x/*}"'
    )
    result = run_plugin(tmp_path, proto, opts="path_style=field")
    assert result.returncode != 0
    assert "clashes" in result.stderr


def test_the_repository_protos_generate(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(REPO / "proto")) for p in (REPO / "proto").rglob("*.proto"))
    if not protos:
        pytest.skip("no protos in proto/")
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{REPO / 'proto'}",
        f"-I{REPO / 'third_party'}",
        f"-I{WKT_PROTOS}",
        f"--plugin=protoc-gen-openapi={PLUGIN}",
        f"--openapi_out={tmp_path}",
        *protos,
    ]
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    generated = json.loads((tmp_path / OUTPUT).read_text())
    for ref in set(refs(generated)):
        assert ref.removeprefix(REF) in generated["components"]["schemas"], ref
