"""Lexical term vectors (BM25) for hybrid search, the way Qdrant does hybrid retrieval.

A passage's vector holds its stemmed, stop-word-free terms weighted by BM25's saturated term
frequency and length normalisation; the index multiplies in each term's inverse document
frequency (a sparse vector with the IDF modifier), so exact words (product names, error
codes, parameter names) count even where the embedding model blurs them. A query's vector
is its set of terms. Terms are hashed to indices by qdrant-edge's BM25 encoder, which runs
in-process and needs no model files, so the same vectors go to a Qdrant server too.

``average_terms`` is BM25's expected passage length in *terms* (stop words removed): about
60 for the default 150-token chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import qdrant_edge as qe

AVERAGE_TERMS = 60


@dataclass(frozen=True)
class Terms:
    """A sparse vector: term indices and their weights."""

    indices: tuple[int, ...]
    values: tuple[float, ...]


class Lexical:
    """BM25 term vectors of passages and queries (English stemming and stop words)."""

    def __init__(self, average_terms: int = AVERAGE_TERMS) -> None:
        """Normalise passage lengths against ``average_terms``."""
        self._bm25 = qe.Bm25(qe.Bm25Config(language="english", avg_len=float(average_terms)))

    def passage(self, text: str) -> Terms:
        """The terms of an indexed passage, BM25-weighted."""
        vector = self._bm25.embed_document(text)
        return Terms(tuple(vector.indices), tuple(vector.values))

    def query(self, text: str) -> Terms:
        """The terms of a query, each weighing 1."""
        vector = self._bm25.embed_query(text)
        return Terms(tuple(vector.indices), tuple(vector.values))
