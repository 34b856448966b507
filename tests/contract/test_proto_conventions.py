"""The API conventions every contract keeps: paging, idempotency keys and a comment on everything.

Paging and idempotency are checked on the committed descriptor set (what Envoy and clients
get); comments on a fresh ``buf build`` of proto/, since the committed set carries no
source info.
"""

from __future__ import annotations

import subprocess
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR_SET = REPO_ROOT / "gen" / "descriptors" / "supportmesh.binpb"
OWN_PACKAGE = "supportmesh."
FieldType = descriptor_pb2.FieldDescriptorProto

# An RPC is a read when its name starts with one of these verbs: it changes nothing, so a
# retry is harmless. Every other RPC changes state and may be retried (by the channel's retry
# policy, a client after a timeout, or a redelivered event), so its request carries a
# `string request_id` idempotency key.
READ_VERBS = ("Get", "List", "Search", "Preview", "Introspect")

# Mutations without a request_id of their own, each with the reason it needs none.
NO_REQUEST_ID = {
    # A stateless exchange: a retry mints another independent token (IssueTokenResponse says
    # so) and the first one simply expires unused; there is nothing to apply twice.
    "supportmesh.edge.v1.AuthService.IssueToken",
    # A computation: a retry returns a fresh decision_id, and the record kept for the abandoned
    # one is never quoted by a Feedback and expires; Feedback itself carries the request_id.
    "supportmesh.router.v1.RouterService.Decide",
}
# Mutations whose idempotency keys travel inside: the field holding the inner message(s)
# that each carry their own request_id, so every item is applied once however often the
# outer call is retried.
REQUEST_ID_INSIDE = {
    # Each IngestDocumentRequest in the batch has its own request_id.
    "supportmesh.knowledge.v1.KnowledgeService.BatchIngestDocuments": "requests",
    # A stream of frames: only user messages change state and each has a request_id; `open`
    # (resume from a sequence) and `ack` (up to a sequence) are idempotent by their content.
    "supportmesh.realtime.v1.RealtimeService.Chat": "user_message",
}


@dataclass(frozen=True)
class Rpc:
    """One RPC with its request and response messages."""

    name: str  # fully qualified: package.Service.Method
    method: str
    request: descriptor_pb2.DescriptorProto
    response: descriptor_pb2.DescriptorProto


def _load(path: Path) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())


def _messages(files: descriptor_pb2.FileDescriptorSet) -> dict[str, descriptor_pb2.DescriptorProto]:
    """Every message, nested ones included, by its fully qualified name with a leading dot."""
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def visit(prefix: str, messages: Iterator[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            name = f"{prefix}.{message.name}"
            found[name] = message
            visit(name, iter(message.nested_type))

    for file in files.file:
        visit(f".{file.package}", iter(file.message_type))
    return found


def _rpcs() -> list[Rpc]:
    files = _load(DESCRIPTOR_SET)
    messages = _messages(files)
    return [
        Rpc(
            f"{file.package}.{service.name}.{method.name}",
            method.name,
            messages[method.input_type],
            messages[method.output_type],
        )
        for file in files.file
        if file.package.startswith(OWN_PACKAGE)
        for service in file.service
        for method in service.method
    ]


RPCS = _rpcs()


def _field(
    message: descriptor_pb2.DescriptorProto, name: str
) -> descriptor_pb2.FieldDescriptorProto | None:
    return next((field for field in message.field if field.name == name), None)


def _has(message: descriptor_pb2.DescriptorProto, name: str, kind: int) -> bool:
    """Whether ``message`` has a singular field ``name`` of type ``kind``."""
    field = _field(message, name)
    return field is not None and field.type == kind and field.label != FieldType.LABEL_REPEATED


def test_every_list_rpc_pages() -> None:
    lists = [rpc for rpc in RPCS if rpc.method.startswith("List")]
    assert lists, "no List RPC found: is the descriptor set empty?"
    missing = [
        f"{rpc.name}: {problem}"
        for rpc in lists
        for problem, ok in (
            ("request lacks int32 page_size", _has(rpc.request, "page_size", FieldType.TYPE_INT32)),
            (
                "request lacks string page_token",
                _has(rpc.request, "page_token", FieldType.TYPE_STRING),
            ),
            (
                "response lacks string next_page_token",
                _has(rpc.response, "next_page_token", FieldType.TYPE_STRING),
            ),
        )
        if not ok
    ]
    assert missing == []


def test_every_mutation_carries_a_request_id() -> None:
    messages = _messages(_load(DESCRIPTOR_SET))
    mutations = [rpc for rpc in RPCS if not rpc.method.startswith(READ_VERBS)]
    assert mutations, "no mutation found: is the descriptor set empty?"
    missing = []
    for rpc in mutations:
        if rpc.name in NO_REQUEST_ID:
            continue
        if rpc.name in REQUEST_ID_INSIDE:
            holder = _field(rpc.request, REQUEST_ID_INSIDE[rpc.name])
            assert holder is not None, f"{rpc.name} has no field {REQUEST_ID_INSIDE[rpc.name]}"
            inner = messages[holder.type_name]
            if not _has(inner, "request_id", FieldType.TYPE_STRING):
                missing.append(f"{rpc.name}: {inner.name} lacks string request_id")
        elif not _has(rpc.request, "request_id", FieldType.TYPE_STRING):
            missing.append(f"{rpc.name}: {rpc.request.name} lacks string request_id")
    assert missing == []


def test_exemptions_name_real_mutations_without_their_own_request_id() -> None:
    # A stale exemption would silently excuse a future RPC of the same name.
    by_name = {rpc.name: rpc for rpc in RPCS}
    for name in NO_REQUEST_ID | set(REQUEST_ID_INSIDE):
        assert name in by_name, f"{name} is exempted but does not exist"
        rpc = by_name[name]
        assert not rpc.method.startswith(READ_VERBS), f"{name} is a read; drop its exemption"
        assert _field(rpc.request, "request_id") is None, f"{name} has a request_id now"


@pytest.fixture(scope="module")
def with_source_info(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    """proto/ built by buf with source info (comments and their locations)."""
    out = tmp_path_factory.mktemp("descriptors") / "with-source-info.binpb"
    buf = Path(sysconfig.get_path("scripts")) / "buf"
    subprocess.run(
        [str(buf), "build", "--as-file-descriptor-set", "-o", str(out)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return _load(out)


def _elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[tuple[int, ...], str]]:
    """Source-info path and name of every service, rpc, message, field, oneof, enum and value.

    Paths use the field numbers of descriptor.proto: FileDescriptorProto message_type 4,
    enum_type 5, service 6; DescriptorProto field 2, nested_type 3, enum_type 4, oneof_decl 8;
    EnumDescriptorProto value 2; ServiceDescriptorProto method 2.
    """

    def enum(
        path: tuple[int, ...], node: descriptor_pb2.EnumDescriptorProto, name: str
    ) -> Iterator[tuple[tuple[int, ...], str]]:
        yield path, name
        for i, value in enumerate(node.value):
            yield (*path, 2, i), f"{name}.{value.name}"

    def message(
        path: tuple[int, ...], node: descriptor_pb2.DescriptorProto, name: str
    ) -> Iterator[tuple[tuple[int, ...], str]]:
        if node.options.map_entry:
            return  # map<k, v> fields' synthetic entry messages have no source of their own
        yield path, name
        for i, field in enumerate(node.field):
            yield (*path, 2, i), f"{name}.{field.name}"
        for i, oneof in enumerate(node.oneof_decl):
            members = [f for f in node.field if f.HasField("oneof_index") and f.oneof_index == i]
            if not all(f.proto3_optional for f in members):  # not the synthetic `optional` one
                yield (*path, 8, i), f"{name}.{oneof.name}"
        for i, nested in enumerate(node.nested_type):
            yield from message((*path, 3, i), nested, f"{name}.{nested.name}")
        for i, nested_enum in enumerate(node.enum_type):
            yield from enum((*path, 4, i), nested_enum, f"{name}.{nested_enum.name}")

    for i, node in enumerate(file.message_type):
        yield from message((4, i), node, node.name)
    for i, enum_node in enumerate(file.enum_type):
        yield from enum((5, i), enum_node, enum_node.name)
    for i, service in enumerate(file.service):
        yield (6, i), service.name
        for j, method in enumerate(service.method):
            yield (6, i, 2, j), f"{service.name}.{method.name}"


def _says_something(comment: str) -> bool:
    """Whether a leading comment has text besides buf lint directives."""
    lines = [line.strip() for line in comment.splitlines()]
    return any(line and not line.startswith("buf:lint:ignore") for line in lines)


def test_every_element_has_a_leading_comment(
    with_source_info: descriptor_pb2.FileDescriptorSet,
) -> None:
    own = [f for f in with_source_info.file if f.package.startswith(OWN_PACKAGE)]
    assert own, "buf built none of proto/"
    silent = []
    for file in own:
        comments = {
            tuple(location.path): location.leading_comments
            for location in file.source_code_info.location
        }
        silent += [
            f"{file.name}: {name}"
            for path, name in _elements(file)
            if not _says_something(comments.get(path, ""))
        ]
    assert silent == []
