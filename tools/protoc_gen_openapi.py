"""protoc plugin: one OpenAPI 3.1 document for every RPC that has a google.api.http rule.

It describes the REST API Envoy's grpc_json_transcoder serves from the same annotations:
property names are json_name (camelCase) and values follow the proto3 JSON mapping. The output
is `supportmesh.openapi.json`. Options (`--openapi_opt=k=v,...`): `title` and `version` set
`info`; `path_style=segments` (the default) spells `{name=tenants/*/runs/*}` as
`tenants/{tenant}/runs/{run}`, `path_style=field` as `{name}` (one parameter per field).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2  # type: ignore[import-untyped,unused-ignore]
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from google.protobuf.message import Message

OUTPUT = "supportmesh.openapi.json"
REF = "#/components/schemas/"
STATUS = "google.rpc.Status"
WKT = ".google.protobuf."
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
VAR_RE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")  # {field.path=pattern} in a path template
Schema = dict[str, Any]
Operation = tuple[str, str, Schema]  # (path, HTTP verb, OpenAPI operation object)
Loc = tuple[int, ...]  # a source_code_info location path
Field = descriptor_pb2.FieldDescriptorProto
FDP = descriptor_pb2.FieldDescriptorProto

SCALARS: dict[int, Schema] = {
    FDP.Type.Value(f"TYPE_{name.upper()}"): {"type": kind} | ({"format": fmt} if fmt else {})
    for names, kind, fmt in [
        ("double", "number", "double"),
        ("float", "number", "float"),
        ("int64 sint64 sfixed64", "string", "int64"),
        ("uint64 fixed64", "string", "uint64"),
        ("int32 sint32 sfixed32", "integer", "int32"),
        ("uint32 fixed32", "integer", "uint32"),
        ("bool", "boolean", ""),
        ("string", "string", ""),
        ("bytes", "string", "byte"),
    ]
    for name in names.split()
}
WRAPPED = ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
ANY_OBJECT: Schema = {
    "type": "object",
    "properties": {"@type": {"type": "string", "description": "Type URL of the payload."}},
    "required": ["@type"],
    "additionalProperties": True,
}
WELL_KNOWN: dict[str, Schema] = {
    WKT + "Timestamp": {"type": "string", "format": "date-time"},
    WKT + "Duration": {"type": "string", "pattern": r"^-?\d+(\.\d{1,9})?s$", "examples": ["1.5s"]},
    WKT + "Struct": {"type": "object", "additionalProperties": True},
    WKT + "Value": {},
    WKT + "ListValue": {"type": "array", "items": {}},
    WKT + "FieldMask": {"type": "string", "examples": ["displayName,updateTime"]},
    WKT + "Empty": {"type": "object"},
    WKT + "Any": ANY_OBJECT,
    **{f"{WKT}{name}Value": SCALARS[FDP.Type.Value(f"TYPE_{name.upper()}")] for name in WRAPPED},
}
STATUS_SCHEMA: Schema = {
    "type": "object",
    "description": "An error, as google.rpc.Status.",
    "properties": {
        "code": {"type": "integer", "format": "int32", "description": "A google.rpc.Code."},
        "message": {"type": "string", "description": "Developer-facing error message."},
        "details": {"type": "array", "items": ANY_OBJECT, "description": "Typed details."},
    },
}


class PluginError(Exception):
    """A problem with the input protos, reported through CodeGeneratorResponse.error."""


@dataclass
class Msg:
    """A message type with its comment and its fields' comments."""

    proto: descriptor_pb2.DescriptorProto
    doc: str
    field_docs: list[str]
    own: bool  # declared in a file to generate: gets a component even when unreferenced


def _clean(comment: str) -> str:
    lines = [ln.removeprefix(" ") for ln in comment.splitlines()]
    return "\n".join(ln for ln in lines if not ln.lstrip().startswith("buf:lint:")).strip()


def _join(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p)


def _ext(opts: Message, ext: Any, repeated: bool = False) -> Any:
    """Read an extension, re-parsing the options if it arrived as unknown fields."""

    def present(o: Message) -> bool:
        return len(o.Extensions[ext]) > 0 if repeated else bool(o.HasExtension(ext))

    if not present(opts):
        fresh = type(opts)()
        fresh.ParseFromString(opts.SerializeToString())
        if not present(fresh):
            return None
        opts = fresh
    return opts.Extensions[ext]


def _behaviors(f: Field) -> list[int]:
    return list(_ext(f.options, field_behavior_pb2.field_behavior, repeated=True) or [])


def _required(f: Field) -> bool:
    return f.label == FDP.LABEL_REQUIRED or field_behavior_pb2.REQUIRED in _behaviors(f)


def _json_name(f: Field) -> str:
    return f.json_name or re.sub(r"_([a-z])", lambda m: m.group(1).upper(), f.name)


def _is_message(f: Field) -> bool:
    return f.type in (FDP.TYPE_MESSAGE, FDP.TYPE_GROUP)


def _scalar_like(f: Field) -> bool:
    """Tell whether `f` has a JSON scalar form (so can be a query parameter)."""
    kind = WELL_KNOWN.get(f.type_name, {}).get("type")
    return not _is_message(f) or kind in ("string", "number", "integer", "boolean")


def _singular(word: str) -> str:
    for plural, one in (("ies", "y"), ("sses", "ss"), ("ches", "ch"), ("shes", "sh"), ("xes", "x")):
        if word.endswith(plural):
            return word.removesuffix(plural) + one
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word + "Id"


class Generator:
    """Builds the OpenAPI document for one CodeGeneratorRequest."""

    def __init__(self, request: plugin_pb2.CodeGeneratorRequest) -> None:
        self.request = request
        self.opts = dict(kv.split("=", 1) for kv in request.parameter.split(",") if "=" in kv)
        if self.opts.get("path_style", "segments") not in ("segments", "field"):
            raise PluginError("path_style must be `segments` or `field`")
        self.messages: dict[str, Msg] = {}
        self.enums: dict[str, Schema] = {}
        self.docs: dict[str, dict[Loc, str]] = {}
        self.pending: list[str] = []  # message types referenced but not yet in components
        for fd in request.proto_file:
            docs = self.docs[fd.name] = {
                tuple(loc.path): _clean(loc.leading_comments or loc.trailing_comments)
                for loc in fd.source_code_info.location
                if loc.leading_comments or loc.trailing_comments
            }
            own = fd.name in request.file_to_generate and not fd.name.startswith("google/")
            prefix = f".{fd.package}" if fd.package else ""
            self._index(fd.message_type, fd.enum_type, prefix, (), docs, own)

    def _index(
        self, msgs: Any, enums: Any, prefix: str, loc: Loc, docs: dict[Loc, str], own: bool
    ) -> None:
        enum_loc, msg_loc = ((*loc, 4), (*loc, 3)) if loc else ((5,), (4,))
        for i, e in enumerate(enums):
            values = []
            for j, v in enumerate(e.value):
                vdoc = " ".join(docs.get((*enum_loc, i, 2, j), "").split())
                values.append(f"- `{v.name}`" + (f": {vdoc}" if vdoc else ""))
            self.enums[f"{prefix}.{e.name}"] = {
                "type": "string",
                "enum": [v.name for v in e.value],
                "description": _join(docs.get((*enum_loc, i), ""), "\n".join(values)),
            }
        for i, m in enumerate(msgs):
            name, mloc = f"{prefix}.{m.name}", (*msg_loc, i)
            field_docs = [docs.get((*mloc, 2, j), "") for j in range(len(m.field))]
            self.messages[name] = Msg(m, docs.get(mloc, ""), field_docs, own)
            self._index(m.nested_type, m.enum_type, name, mloc, docs, own)

    def type_schema(self, type_name: str) -> Schema:
        """Return the schema of a message type: inline for well-known types, else a $ref."""
        if type_name in WELL_KNOWN:
            return copy.deepcopy(WELL_KNOWN[type_name])
        if type_name[1:] != STATUS:
            if type_name not in self.messages:
                raise PluginError(f"unknown message type {type_name}")
            self.pending.append(type_name)
        return {"$ref": REF + type_name[1:]}

    def value_schema(self, f: Field) -> Schema:
        """Return the schema of one value of `f` (one element, for a repeated field)."""
        if _is_message(f):
            return self.type_schema(f.type_name)
        if f.type == FDP.TYPE_ENUM:
            null = f.type_name == WKT + "NullValue"
            return {"type": "null"} if null else copy.deepcopy(self.enums[f.type_name])
        return dict(SCALARS[f.type])

    def field_schema(self, f: Field, doc: str = "") -> Schema:
        """Return the schema of field `f` (map, array or single value), described by `doc`."""
        entry = self.messages.get(f.type_name) if _is_message(f) else None
        schema: Schema
        if entry is not None and entry.proto.options.map_entry:
            schema = {
                "type": "object",
                "additionalProperties": self.value_schema(entry.proto.field[1]),
            }
        elif f.label == FDP.LABEL_REPEATED:
            schema = {"type": "array", "items": self.value_schema(f)}
        else:
            schema = self.value_schema(f)
            doc = _join(doc, schema.pop("description", "") if f.type == FDP.TYPE_ENUM else "")
        schema |= {"description": doc} if doc else {}
        schema |= {"deprecated": True} if f.options.deprecated else {}
        schema |= {"readOnly": True} if field_behavior_pb2.OUTPUT_ONLY in _behaviors(f) else {}
        schema |= {"writeOnly": True} if field_behavior_pb2.INPUT_ONLY in _behaviors(f) else {}
        return schema

    def message_schema(self, name: str, exclude: frozenset[str] = frozenset()) -> Schema:
        """Return the object schema of message `name`, leaving out the fields in `exclude`."""
        msg = self.messages[name]
        props: Schema = {}
        required: list[str] = []
        for f, doc in zip(msg.proto.field, msg.field_docs, strict=True):
            if f.name in exclude:
                continue
            if f.HasField("oneof_index") and not f.proto3_optional:
                peers = [
                    _json_name(g)
                    for g in msg.proto.field
                    if g.HasField("oneof_index") and g.oneof_index == f.oneof_index
                ]
                oneof = msg.proto.oneof_decl[f.oneof_index].name
                doc = _join(doc, f"Member of oneof `{oneof}`: at most one of {peers} is set.")
            props[_json_name(f)] = self.field_schema(f, doc)
            required += [_json_name(f)] if _required(f) else []
        schema: Schema = {"type": "object", "properties": props}
        schema |= {"required": required} if required else {}
        return schema | ({"description": msg.doc} if msg.doc else {})

    def resolve(self, msg_name: str, fpath: str) -> tuple[Field, str]:
        """Return the field (and its comment) a dotted path such as `run.name` names."""
        hit: tuple[Field, str] | None = None
        for part in fpath.split("."):
            msg = self.messages.get(hit[0].type_name if hit else msg_name)
            fields = zip(msg.proto.field, msg.field_docs, strict=True) if msg else iter(())
            hit = next(((f, d) for f, d in fields if part in (f.name, f.json_name)), None)
            if hit is None:
                raise PluginError(f"{msg_name[1:]} has no field path {fpath!r}")
        assert hit is not None
        return hit

    def path_params(self, input_type: str, template: str) -> tuple[str, list[Schema], set[str]]:
        """Return the OpenAPI path, its parameters and the field paths the template binds."""
        params: list[Schema] = []
        bound: set[str] = set()
        whole_field = self.opts.get("path_style") == "field"

        def expand(var: re.Match[str]) -> str:
            fpath, pattern = var.group(1), var.group(2) or "*"
            f, fdoc = self.resolve(input_type, fpath)
            bound.add(fpath)
            segs = [pattern] if whole_field else pattern.split("/")
            names: dict[str, str] = {}  # parameter name -> the wildcard it stands for
            for k, seg in enumerate(segs):
                if whole_field or seg in ("*", "**"):
                    wild = k == 0 or segs[k - 1] in ("*", "**")
                    base = name = fpath if wild else _singular(segs[k - 1])
                    taken, n = [p["name"] for p in params] + list(names), 2
                    while name in taken:
                        name, n = f"{base}{n}", n + 1
                    names[name] = seg
                    segs[k] = "{" + name + "}"
            spelled = "/".join(segs)
            for name, seg in names.items():
                schema = self.value_schema(f) if spelled == "{" + name + "}" else {"type": "string"}
                note = f"A segment of `{fpath}`, which is `{spelled}`." + (
                    " It may contain `/`." if seg == "**" else ""
                )
                if whole_field or spelled == "{" + name + "}":
                    note = f"Matches the pattern `{pattern}`." if pattern != "*" else ""
                desc = _join(fdoc, schema.pop("description", ""), note)
                params.append(
                    {"name": name, "in": "path", "required": True, "schema": schema}
                    | ({"description": desc} if desc else {})
                )
            return spelled

        return VAR_RE.sub(expand, template), params, bound

    def query_params(self, input_type: str, skip: set[str]) -> list[Schema]:
        """Return query parameters: scalar fields, and those of singular message fields."""
        msg, params = self.messages[input_type], []
        for f, doc in zip(msg.proto.field, msg.field_docs, strict=True):
            if f.name in skip:
                continue
            if _scalar_like(f):
                candidates = [(_json_name(f), f, doc, _required(f))]
            elif f.label != FDP.LABEL_REPEATED and f.type_name in self.messages:
                sub = self.messages[f.type_name]  # maps, Struct, Any...: not flattened
                candidates = [
                    (f"{_json_name(f)}.{_json_name(g)}", g, gdoc, False)
                    for g, gdoc in zip(sub.proto.field, sub.field_docs, strict=True)
                    if _scalar_like(g) and f"{f.name}.{g.name}" not in skip
                ]
            else:
                continue
            for name, g, gdoc, req in candidates:
                schema = self.field_schema(g, gdoc)
                desc = schema.pop("description", "")
                params.append(
                    {"name": name, "in": "query", "schema": schema}
                    | ({"description": desc} if desc else {})
                    | ({"required": True} if req else {})
                )
        return params

    def operation(self, svc: str, method: Any, doc: str, rule: Any, op_id: str) -> Operation:
        """Return (path, verb, operation object) for one HttpRule of `method`."""
        kind = rule.WhichOneof("pattern") or ""
        verb = rule.custom.kind.lower() if kind == "custom" else kind
        template = rule.custom.path if kind == "custom" else getattr(rule, kind, "")
        if verb not in HTTP_METHODS or not template:
            raise PluginError(f"{op_id}: unsupported HTTP rule {verb!r} {template!r}")
        path, params, bound = self.path_params(method.input_type, template)
        top_bound = frozenset(b for b in bound if "." not in b)
        summary = re.split(r"(?<=\.)\s", " ".join(doc.split("\n\n")[0].split()), maxsplit=1)[0]
        op: Schema = {"operationId": op_id, "tags": [svc]}
        op |= {"summary": summary} if summary else {}
        op |= {"description": doc} if doc != summary else {}
        op |= {"deprecated": True} if method.options.deprecated else {}
        body: Schema | None = None
        if rule.body == "*" and top_bound:
            body = self.message_schema(method.input_type, top_bound)
        elif rule.body == "*":
            body = self.type_schema(method.input_type)
        elif rule.body:
            f, fdoc = self.resolve(method.input_type, rule.body)
            body = self.field_schema(f, fdoc)
            bound.add(f.name)
        if rule.body != "*" and method.input_type in self.messages:
            params += self.query_params(method.input_type, bound)
        op |= {"parameters": params} if params else {}
        if body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body}},
            }
        out, name = self.type_schema(method.output_type), method.output_type[1:]
        if rule.response_body:
            f, _ = self.resolve(method.output_type, rule.response_body)
            out, name = self.field_schema(f), f"`{rule.response_body}` of {name}"
        media = "text/event-stream" if method.server_streaming else "application/json"
        lead = "Server-sent events, each carrying one" if method.server_streaming else "One"
        op["responses"] = {
            "200": {"description": f"{lead} {name}.", "content": {media: {"schema": out}}},
            "default": {
                "description": "An error.",
                "content": {"application/json": {"schema": {"$ref": REF + STATUS}}},
            },
        }
        return path, verb, op

    def generate(self) -> str:
        """Return the OpenAPI document as deterministic JSON text."""
        paths: dict[str, Schema] = {}
        shapes: dict[str, str] = {}  # path with `{}` for each parameter -> path
        tags: dict[str, Schema] = {}
        for fd in self.request.proto_file:
            if fd.name not in self.request.file_to_generate:
                continue
            docs = self.docs[fd.name]
            for si, svc in enumerate(fd.service):
                for mi, method in enumerate(svc.method):
                    rule = _ext(method.options, annotations_pb2.http)
                    if rule is None:
                        continue
                    tag_doc = {"description": docs[(6, si)]} if (6, si) in docs else {}
                    tags[svc.name] = {"name": svc.name} | tag_doc
                    for n, binding in enumerate([rule, *rule.additional_bindings]):
                        op_id = f"{svc.name}_{method.name}" + (f"_{n + 1}" if n else "")
                        mdoc = docs.get((6, si, 2, mi), "")
                        path, verb, op = self.operation(svc.name, method, mdoc, binding, op_id)
                        twin = shapes.setdefault(VAR_RE.sub("{}", path), path)
                        other = paths.setdefault(path, {}).get(verb, {}).get("operationId")
                        if twin != path or other:
                            clash = other or f"the path {twin}"
                            raise PluginError(
                                f"{op_id} ({verb.upper()} {path}) clashes with {clash}"
                            )
                        paths[path][verb] = op
        self.pending += [
            n for n, m in self.messages.items() if m.own and not m.proto.options.map_entry
        ]
        schemas: dict[str, Schema] = {STATUS: STATUS_SCHEMA}
        while self.pending:
            name = self.pending.pop()
            if name[1:] not in schemas:
                schemas[name[1:]] = self.message_schema(name)
        document = {
            "openapi": "3.1.0",
            "info": {
                "title": self.opts.get("title", "supportmesh"),
                "version": self.opts.get("version", "v1"),
            },
            "tags": [tags[k] for k in sorted(tags)],
            "paths": paths,
            "components": {"schemas": schemas},
        }
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    """Run as a protoc plugin: CodeGeneratorRequest on stdin, CodeGeneratorResponse on stdout."""
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    try:
        response.file.add(name=OUTPUT, content=Generator(request).generate())
    except PluginError as exc:
        response.error = f"protoc-gen-openapi: {exc}"
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
