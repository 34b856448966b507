"""``python -m services.knowledge ingest DIR --tenant T``: a folder into a tenant's knowledge.

Each supported file (.txt, .md, .html, .pdf) is sent through the Envoy edge with
IngestDocument over native gRPC, with the operator's key or a tenant API key holding
``knowledge:write``. The file's path relative to DIR is its external id, so running the
command again re-ingests only changed files; request ids derive from path and content, so a
retried call never ingests twice. ``--wait`` follows the documents until they are indexed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tqdm import tqdm  # type: ignore[import-untyped]

from services.kit import errors
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb
from supportmesh.knowledge.v1 import knowledge_service_pb2_grpc as pb_grpc

MEDIA_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}
TIMEOUT_S = 30.0
DEFAULT_KEY_FILE = Path(".supportmesh/platform-admin.key")


@dataclass
class Summary:
    """What happened to a folder's files."""

    statuses: Counter[str] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The summary as printable lines."""
        found = [f"{sum(self.statuses.values())} documents accepted"]
        found += [
            f"  {status.lower():<11} {count}" for status, count in sorted(self.statuses.items())
        ]
        if self.skipped:
            found.append(f"{len(self.skipped)} files skipped (unsupported type)")
        if self.failed:
            found.append(f"{len(self.failed)} files refused:")
            found += [f"  {path}: {reason}" for path, reason in sorted(self.failed.items())]
        return found


def files_of(folder: Path) -> tuple[list[Path], list[Path]]:
    """(supported files, skipped files) under ``folder``, sorted."""
    every = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    supported = [p for p in every if p.suffix.lower() in MEDIA_TYPES]
    return supported, [p for p in every if p.suffix.lower() not in MEDIA_TYPES]


def request_for(tenant: str, folder: Path, path: Path, kind: str) -> pb.IngestDocumentRequest:
    """The IngestDocument request of one file."""
    data = path.read_bytes()
    relative = path.relative_to(folder).as_posix()
    digest = hashlib.sha256(data).hexdigest()
    return pb.IngestDocumentRequest(
        parent=f"tenants/{tenant}",
        content=data,
        media_type=MEDIA_TYPES[path.suffix.lower()],
        source_uri=relative,
        external_id=relative,
        kind=pb.DOCUMENT_KIND_FAQ if kind == "faq" else pb.DOCUMENT_KIND_ARTICLE,
        request_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{relative}/{digest}")),
    )


async def ingest_folder(
    target: str, key: str, tenant: str, folder: Path, *, kind: str = "article",
    concurrency: int = 4, progress: bool = True,
) -> Summary:  # fmt: skip
    """Send every supported file of ``folder``; a summary of the outcome."""
    supported, skipped = files_of(folder)
    summary = Summary(skipped=[p.relative_to(folder).as_posix() for p in skipped])
    metadata = (("x-api-key", key),)
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(supported), unit="file", desc="ingest", disable=not progress)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.KnowledgeServiceStub(channel)

        async def send(path: Path) -> None:
            relative = path.relative_to(folder).as_posix()
            async with gate:
                try:
                    reply = await stub.IngestDocument(
                        request_for(tenant, folder, path, kind),
                        metadata=metadata,
                        timeout=TIMEOUT_S,
                    )
                except grpc.RpcError as exc:
                    remote = errors.parse_rpc_error(exc)
                    summary.failed[relative] = (
                        f"{remote.reason or remote.code.name}: {remote.message}"
                    )
                else:
                    summary.names[relative] = reply.document.name
                    summary.statuses[pb.DocumentStatus.Name(reply.document.status)[16:]] += 1
                bar.update(1)

        await asyncio.gather(*(send(path) for path in supported))
    bar.close()
    return summary


async def wait_indexed(
    target: str, key: str, summary: Summary, timeout_s: float, progress: bool = True
) -> Counter[str]:
    """Poll the accepted documents until none is QUEUED or PROCESSING (or time runs out)."""
    metadata = (("x-api-key", key),)
    final: dict[str, str] = {}
    bar = tqdm(total=len(summary.names), unit="doc", desc="index", disable=not progress)
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.KnowledgeServiceStub(channel)
        while len(final) < len(summary.names) and time.monotonic() < deadline:
            for relative, name in summary.names.items():
                if relative in final:
                    continue
                reply = await stub.GetDocument(
                    pb.GetDocumentRequest(name=name), metadata=metadata, timeout=TIMEOUT_S
                )
                status = pb.DocumentStatus.Name(reply.document.status)[16:]
                if status in ("INDEXED", "FAILED"):
                    final[relative] = status
                    bar.update(1)
                    if status == "FAILED":
                        summary.failed[relative] = reply.document.failure_reason
            await asyncio.sleep(0.5)
    bar.close()
    return Counter(final.values())


def main(argv: list[str]) -> int:
    """Parse the command line, ingest, print the summary."""
    parser = argparse.ArgumentParser(prog="python -m services.knowledge ingest")
    parser.add_argument("folder", type=Path, help="folder of .txt, .md, .html and .pdf files")
    parser.add_argument("--tenant", required=True, help="tenant id")
    parser.add_argument("--edge", default="127.0.0.1:8080", help="the Envoy edge (host:port)")
    parser.add_argument("--key", default="", help="API key (default: the operator key file)")
    parser.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE, help="key file")
    parser.add_argument("--kind", choices=["article", "faq"], default="article")
    parser.add_argument("--wait", action="store_true", help="wait until indexed")
    parser.add_argument("--wait-timeout", type=float, default=600.0, help="seconds to wait")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    key = args.key or args.key_file.read_text().strip()
    target = args.edge.removeprefix("http://")
    summary = asyncio.run(ingest_folder(target, key, args.tenant, args.folder, kind=args.kind))
    if args.wait and summary.names:
        final = asyncio.run(wait_indexed(target, key, summary, args.wait_timeout))
        summary.statuses = final
    for line in summary.lines():
        print(line)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
