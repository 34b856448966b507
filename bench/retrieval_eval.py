"""Retrieval quality: recall@5 and MRR of the knowledge pipeline on a real, pinned corpus.

Corpus: the API documentation of scikit-learn 1.9.1 (pinned in pyproject.toml, installed in
.venv, so available offline) — the docstring of every estimator class and of every public
``sklearn.metrics`` function, each as one Markdown document titled with its public name
(numpydoc's underlined section titles read as Markdown headings). Nobody in this project
wrote it. Questions: bench/data/retrieval/questions.jsonl, each with the document and a quote
of the passage that answers it (see the README there for how they were written).

The pipeline is the service's own: media.read (Markdown), chunking, MiniLM embeddings,
qdrant-edge with the tenant filter. A retrieved passage is relevant when it comes from the
question's document and contains the quote (or, when a chunk boundary cut the quote, either
half of it), compared case-insensitively without Markdown/reST markup.

Figures, not a verdict (goal recall@5 ≥ 0.9). ``.venv/bin/python bench/retrieval_eval.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import percentile, print_table
from services.knowledge import media
from services.knowledge.edge_index import EdgeIndex
from services.knowledge.embeddings import LocalEmbedder
from services.knowledge.index import Point, Query
from services.knowledge.worker import ChunkingConfig, entries

QUESTIONS = Path(__file__).resolve().parent / "data" / "retrieval" / "questions.jsonl"
PINNED_SKLEARN = "1.9.1"
TENANT = "eval"


@dataclass(frozen=True)
class Question:
    """A question and where its answer is."""

    id: int
    question: str
    document: str
    quote: str


def public_name(obj: Any) -> str:
    """The shortest public import path of a scikit-learn class or function."""
    name = str(obj.__name__)
    parts = [p for p in str(obj.__module__).split(".") if not p.startswith("_")]
    for end in range(2, len(parts) + 1):
        if getattr(importlib.import_module(".".join(parts[:end])), name, None) is obj:
            return f"{'.'.join(parts[:end])}.{name}"
    return f"{'.'.join(parts)}.{name}"


def corpus() -> dict[str, str]:
    """Public name → Markdown document, for every estimator and sklearn.metrics function."""
    import sklearn
    from sklearn.utils.discovery import all_estimators, all_functions

    if sklearn.__version__ != PINNED_SKLEARN:
        print(f"warning: scikit-learn {sklearn.__version__}, the questions quote {PINNED_SKLEARN}")
    objects = [cls for _, cls in all_estimators()]
    objects += [f for _, f in all_functions() if f.__module__.startswith("sklearn.metrics")]
    documents: dict[str, str] = {}
    for obj in objects:
        doc = inspect.getdoc(obj)
        if doc:
            name = public_name(obj)
            documents[name] = f"# {name}\n\n{doc}"
    return documents


def normalized(text: str) -> str:
    """Lower case, markup characters dropped, whitespace collapsed."""
    return " ".join(re.sub(r"[`*_\\]", "", text).lower().split())


def relevant(question: Question, payload: dict[str, Any]) -> bool:
    """Whether a retrieved passage answers the question (see the module docstring)."""
    if payload.get("document_id") != question.document:
        return False
    text, quote = normalized(str(payload.get("text", ""))), normalized(question.quote)
    words = quote.split()
    halves = (" ".join(words[: len(words) // 2 + 1]), " ".join(words[len(words) // 2 :]))
    return quote in text or (len(words) >= 6 and any(half in text for half in halves))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-tokens", type=int, default=ChunkingConfig().max_tokens)
    parser.add_argument("--overlap", type=int, default=ChunkingConfig().overlap)
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args()
    questions = [Question(**json.loads(line)) for line in QUESTIONS.read_text().splitlines()]
    documents = corpus()
    missing = sorted({q.document for q in questions} - set(documents))
    if missing:
        raise SystemExit(f"questions name documents not in the corpus: {missing}")
    embedder = LocalEmbedder()
    config = ChunkingConfig(args.chunk_tokens, args.overlap)
    texts: list[str] = []
    payloads: list[dict[str, Any]] = []
    for name, markdown in documents.items():
        blocks = media.read(media.MARKDOWN, markdown.encode())
        for text, (kind, chunk_id, extra) in entries("ARTICLE", name, blocks, config):
            texts.append(text)
            payloads.append({"tenant_id": TENANT, "document_id": name, "kind": kind,
                             "chunk_id": chunk_id, "revision": 1, **extra})  # fmt: skip
    started = time.perf_counter()
    vectors = await embedder.embed(texts)
    embed_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as directory:
        index = EdgeIndex(Path(directory))
        await index.open(embedder.model, embedder.dimension)
        await index.upsert([
            Point(str(uuid.uuid4()), vectors[i].tolist(), payloads[i]) for i in range(len(texts))
        ])  # fmt: skip
        query_vectors = await embedder.embed([q.question for q in questions])
        hits5 = docs5 = 0
        reciprocal = 0.0
        latencies: list[float] = []
        misses: list[str] = []
        for question, vector in zip(questions, query_vectors, strict=True):
            began = time.perf_counter()
            found = await index.search(Query(TENANT, vector.tolist(), "chunk", 10))
            latencies.append((time.perf_counter() - began) * 1000)
            ranks = [i for i, hit in enumerate(found) if relevant(question, dict(hit.payload))]
            if ranks and ranks[0] < 5:
                hits5 += 1
            elif args.show_misses:
                top = [h.payload["document_id"] for h in found[:3]]
                misses.append(f"  {question.id}: {question.question!r} -> {top}")
            docs5 += question.document in {h.payload["document_id"] for h in found[:5]}
            reciprocal += 1.0 / (ranks[0] + 1) if ranks else 0.0
        await index.close()
    n = len(questions)
    print(f"\ncorpus: scikit-learn {PINNED_SKLEARN} docstrings, {len(documents)} documents, "
          f"{len(texts)} chunks (≤{config.max_tokens} tokens, overlap {config.overlap}), "
          f"embedded in {embed_s:.1f}s ({len(texts) / embed_s:.0f} chunks/s)")  # fmt: skip
    ordered = sorted(latencies)
    print_table(
        ["questions", "recall@5", "MRR@10", "doc recall@5", "search p50 ms", "goal recall@5"],
        [[n, hits5 / n, reciprocal / n, docs5 / n, percentile(ordered, 50), ">= 0.9"]],
    )
    for line in misses:
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
