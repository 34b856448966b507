"""Retrieval quality: recall@5 and MRR of the knowledge pipeline on a real, pinned corpus.

Corpus: the API documentation of scikit-learn 1.9.1 (pinned in pyproject.toml, installed in
.venv, so available offline) — the docstring of every estimator class and of every public
``sklearn.metrics`` function, each as one Markdown document titled with its public name
(numpydoc's underlined section titles read as Markdown headings). Nobody in this project
wrote it. Questions: bench/data/retrieval/questions.jsonl, each with the document and a quote
of the passage that answers it (see the README there for how they were written).

The pipeline is the service's own: media.read (Markdown), chunking, MiniLM embeddings, BM25
terms, qdrant-edge with the tenant filter. Three rankings side by side: dense vectors alone
(the baseline), dense and BM25 fused by reciprocal rank, and the service's search, which adds
the document ranking by lead passages (see services.knowledge.index).

Strict relevance (recall@5, MRR@10): a retrieved passage counts when it comes from the
question's document and contains the quote (or, when a chunk boundary cut the quote, either
half of a quote of six words or more), compared case-insensitively without Markdown/reST
markup. Document-level recall@5 only asks for a passage of the right document in the top 5.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import percentile, print_table
from services.knowledge import media
from services.knowledge.edge_index import EdgeIndex
from services.knowledge.embeddings import LocalEmbedder
from services.knowledge.index import LEADS, Point, Query
from services.knowledge.lexical import Lexical
from services.knowledge.worker import ChunkingConfig, entries, passage_terms

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


@dataclass
class Scores:
    """Running totals of one ranking over the question set."""

    label: str
    hits5: int = 0
    docs5: int = 0
    reciprocal: float = 0.0
    misses: list[str] = field(default_factory=list)

    def add(self, question: Question, found: list[dict[str, Any]]) -> None:
        """Score the ranked passages of one question."""
        ranks = [i for i, payload in enumerate(found) if relevant(question, payload)]
        if ranks and ranks[0] < 5:
            self.hits5 += 1
        else:
            top = [p["document_id"] for p in found[:3]]
            self.misses.append(f"  {question.id}: {question.question!r} -> {top}")
        self.docs5 += question.document in {p["document_id"] for p in found[:5]}
        self.reciprocal += 1.0 / (ranks[0] + 1) if ranks else 0.0

    def row(self, n: int, p50: float) -> list[str | int | float]:
        """The table row."""
        return [self.label, n, self.hits5 / n, self.reciprocal / n, self.docs5 / n, p50, ">= 0.9"]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-tokens", type=int, default=ChunkingConfig().max_tokens)
    parser.add_argument("--overlap", type=int, default=ChunkingConfig().overlap)
    parser.add_argument("--show-misses", action="store_true")
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto")
    args = parser.parse_args()
    questions = [Question(**json.loads(line)) for line in QUESTIONS.read_text().splitlines()]
    documents = corpus()
    missing = sorted({q.document for q in questions} - set(documents))
    if missing:
        raise SystemExit(f"questions name documents not in the corpus: {missing}")
    embedder, lexical = LocalEmbedder(precision=args.precision), Lexical()
    config = ChunkingConfig(args.chunk_tokens, args.overlap)
    texts: list[str] = []
    payloads: list[dict[str, Any]] = []
    for name, markdown in documents.items():
        blocks = media.read(media.MARKDOWN, markdown.encode())
        for number, (text, (kind, chunk_id, extra)) in enumerate(
            entries("ARTICLE", name, blocks, config)
        ):
            texts.append(text)
            payloads.append({"tenant_id": TENANT, "document_id": name, "kind": kind,
                             "chunk_id": chunk_id, "revision": 1, "position": number,
                             **extra})  # fmt: skip
    terms = passage_terms(lexical, [(t, ("chunk", "", {})) for t in texts])
    started = time.perf_counter()
    vectors = await embedder.embed(texts)
    embed_s = time.perf_counter() - started
    precision = await embedder.precision()
    rankings = [
        Scores("dense only (baseline)"),
        Scores("dense + BM25, RRF"),
        Scores("dense + BM25 + lead documents (service)"),
    ]
    latencies: list[list[float]] = [[] for _ in rankings]
    with tempfile.TemporaryDirectory() as directory:
        index = EdgeIndex(Path(directory))
        await index.open(embedder.model, embedder.dimension)
        await index.upsert([
            Point(str(uuid.uuid4()), vectors[i].tolist(), payloads[i], terms[i])
            for i in range(len(texts))
        ])  # fmt: skip
        query_vectors = await embedder.embed([q.question for q in questions])
        for question, vector in zip(questions, query_vectors, strict=True):
            asked = lexical.query(question.question)
            for number, scores in enumerate(rankings):
                query = Query(
                    TENANT, vector.tolist(), "chunk", 10, terms=asked if number else None,
                    documents=LEADS if number == 2 else 0,
                )  # fmt: skip
                began = time.perf_counter()
                found = await index.search(query)
                latencies[number].append((time.perf_counter() - began) * 1000)
                scores.add(question, [dict(hit.payload) for hit in found])
        await index.close()
    embedder.close()
    n = len(questions)
    print(
        f"\ncorpus: scikit-learn {PINNED_SKLEARN} docstrings, {len(documents)} documents, "
        f"{len(texts)} chunks (≤{config.max_tokens} tokens, overlap {config.overlap}), "
        f"embedded in {embed_s:.1f}s ({len(texts) / embed_s:.0f} chunks/s, {precision})"
    )
    print_table(
        ["ranking", "questions", "recall@5", "MRR@10", "doc recall@5", "index p50 ms", "goal"],
        [s.row(n, percentile(sorted(t), 50)) for s, t in zip(rankings, latencies, strict=True)],
    )
    base, hybrid = rankings[0], rankings[-1]
    print(f"  service / dense recall@5: {hybrid.hits5 / max(base.hits5, 1):.2f}x")
    if args.show_misses:
        print("\nmissed by the service's ranking (question -> top 3 documents):")
        for line in hybrid.misses:
            print(line)


if __name__ == "__main__":
    asyncio.run(main())
