"""Request features: what the router's classifier and bandit look at.

Text features are pure functions of the query and its context. Two features need the
tenant's history: ``novelty_score`` (1 − the highest cosine similarity between the query's
hashed bag-of-words vector and the tenant's recent queries) and ``historical_failure_rate``
(read from Valkey by the caller and passed in).

Novelty keeps its ring of recent vectors **in process** (an LRU of tenants, each a bounded
ring), not in Valkey: it is a soft signal, a replica that sees a subsample of a tenant's
traffic still measures it well, and keeping it local saves a round trip and ~1 KB of
transfer per decision on the hot path. A restart starts every tenant's ring empty.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from supportmesh.spec.v1 import tier_pb2

Vector = npt.NDArray[np.float64]

HASH_DIM = 256
DOMAINS = ("order", "payment", "tracking", "lead", "faq", "complaint")
# Priority when a query matches several domains: the most specific intent wins.
INTENT_ORDER = ("tracking", "payment", "order", "lead", "faq")

DOMAIN_PATTERNS: Mapping[str, re.Pattern[str]] = {
    "order": re.compile(r"\b(order|purchase|buy|bought|cart|checkout|cancel)\w*", re.I),
    "payment": re.compile(
        r"\b(pay|payment|refund|charge|card|invoice|billing|balance|prorat)\w*", re.I
    ),
    "tracking": re.compile(
        r"\b(track|tracking|shipped|shipping|deliver|parcel|package|courier|where is)\w*", re.I
    ),
    "lead": re.compile(
        r"\b(demo|pricing|quote|sales|enterprise|trial|contact me|plan|seats)\w*", re.I
    ),
    "faq": re.compile(r"\b(how|what|when|can i|do you|policy|hours|return)\b", re.I),
    "complaint": re.compile(
        r"\b(angry|terrible|worst|complain|unacceptable|lawyer|scam|furious|kidding|dispute)\w*",
        re.I,
    ),
}
# Cues of what makes a query hard: reasoning, policy nuance, conditions, several asks,
# emotion. They are generic support phrasing, not the data generator's templates.
CUE_PATTERNS: Mapping[str, re.Pattern[str]] = {
    "reasoning": re.compile(
        r"\b(why|explain|compare|difference|work out|figure out|calculate|estimate|recommend|"
        r"best way|better value|which is|how much .* owe|prorat\w*)\b",
        re.I,
    ),
    "policy": re.compile(
        r"\b(policy|terms|warranty|eligible|exception|final sale|non-refundable|receipt|"
        r"consumer law|rights|net-30|window|gdpr|contract)\b",
        re.I,
    ),
    "conditional": re.compile(r"\b(if|but|although|though|unless|given|even)\b", re.I),
    "multi": re.compile(r"\b(also|while i have you|separately|plus|another thing)\b", re.I),
    "emotion": re.compile(
        r"(!|\?{2,}|\b(tired of|third time|already asked|still waiting|ridiculous)\b)", re.I
    ),
    "identifier": re.compile(r"(#\d{4,}|\b1z\d{6,}\b|\b\d{6,}\b)", re.I),
}
CUES = tuple(CUE_PATTERNS)
_TOKEN = re.compile(r"[a-z0-9#$€'-]+")
_DIGITS = re.compile(r"\d+")

DENSE_NAMES = (
    "log_tokens",
    "json_schema_strictness",
    "log_schema_fields",
    *(f"domain_{name}" for name in DOMAINS),
    "domain_count",
    *(f"cue_{name}" for name in CUES),
    "questions",
    "novelty_score",
    "historical_failure_rate",
)
FEATURE_NAMES = (*DENSE_NAMES, *(f"bow_{i:03d}" for i in range(HASH_DIM)))


@dataclass(frozen=True, slots=True)
class TextFeatures:
    """What the query and its context say, before any tenant history."""

    token_count: int
    json_schema_strictness: float
    schema_fields: int
    domains: frozenset[str]
    cues: frozenset[str]
    questions: int
    intent: str
    bow: Vector


@dataclass(frozen=True, slots=True)
class Features:
    """Everything one decision looks at."""

    text: TextFeatures
    novelty_score: float
    historical_failure_rate: float
    tier_preference: int

    def summary(self) -> dict[str, object]:
        """A compact, JSON-able record of the features (kept with the decision)."""
        return {
            "token_count": self.text.token_count,
            "json_schema_strictness": round(self.text.json_schema_strictness, 3),
            "domains": sorted(self.text.domains),
            "cues": sorted(self.text.cues),
            "intent": self.text.intent,
            "novelty_score": round(self.novelty_score, 3),
            "historical_failure_rate": round(self.historical_failure_rate, 3),
            "tier_preference": tier_pb2.TierPreference.Name(self.tier_preference),  # type: ignore[arg-type]
        }


def _schema_shape(schema: object, depth: int = 1) -> tuple[int, int, bool]:
    """(property count, nesting depth, strict flag) of a JSON schema, recursively."""
    if not isinstance(schema, Mapping):
        return 0, depth - 1, False
    strict = schema.get("additionalProperties") is False or schema.get("strict") is True
    fields, deepest = 0, depth
    properties = schema.get("properties")
    children = list(properties.values()) if isinstance(properties, Mapping) else []
    fields += len(children)
    if isinstance(schema.get("items"), Mapping):
        children.append(schema["items"])
    for child in children:
        child_fields, child_depth, _ = _schema_shape(child, depth + 1)
        fields += child_fields
        deepest = max(deepest, child_depth)
    return fields, deepest, strict


def schema_strictness(context: Mapping[str, object]) -> tuple[float, int]:
    """How strict the required answer format is, in [0, 1], and its property count."""
    # 0 without a schema; 0.5 for any schema, +0.25 when it forbids extra properties, +0.25
    # scaled by size (property count plus 4 per extra nesting level, saturating at 10).
    schema = context.get("json_schema", context.get("response_schema"))
    if not isinstance(schema, Mapping):
        return (0.5, 0) if context.get("strict_json") is True else (0.0, 0)
    fields, depth, strict = _schema_shape(schema)
    size = min(1.0, (fields + 4 * max(depth - 2, 0)) / 10)
    return min(1.0, 0.5 + 0.25 * strict + 0.25 * size), fields


def hashed_bow(text: str) -> Vector:
    """L2-normalised hashed counts of word unigrams and bigrams (digits folded to 0)."""
    tokens = _TOKEN.findall(_DIGITS.sub("0", text.lower()))
    vector = np.zeros(HASH_DIM)
    grams = tokens + [f"{a} {b}" for a, b in itertools.pairwise(tokens)]
    for gram in grams:
        # crc32, not hash(): Python salts str hashes per process, and the model is trained
        # in another process than the one that serves it.
        vector[zlib.crc32(gram.encode()) % HASH_DIM] += 1.0
    norm = float(np.sqrt(vector @ vector))
    return vector / norm if norm else vector


def analyze(query: str, context: Mapping[str, object]) -> TextFeatures:
    """Text features of a query and its context."""
    strictness, fields = schema_strictness(context)
    domains = frozenset(name for name, pattern in DOMAIN_PATTERNS.items() if pattern.search(query))
    intent = next((name for name in INTENT_ORDER if name in domains), "general")
    return TextFeatures(
        # ~4 characters per token is the usual estimate for English text.
        token_count=max(1, len(query) // 4),
        json_schema_strictness=strictness,
        schema_fields=fields,
        domains=domains,
        cues=frozenset(name for name, pattern in CUE_PATTERNS.items() if pattern.search(query)),
        questions=query.count("?"),
        intent=intent,
        bow=hashed_bow(query),
    )


def model_input(features: Features) -> Vector:
    """The classifier's input row, in :data:`FEATURE_NAMES` order."""
    text = features.text
    dense = [
        math.log1p(text.token_count) / math.log(1000),
        text.json_schema_strictness,
        math.log1p(text.schema_fields) / math.log(30),
        *(1.0 if name in text.domains else 0.0 for name in DOMAINS),
        len(text.domains - {"faq", "complaint"}) / 3,
        *(1.0 if name in text.cues else 0.0 for name in CUES),
        min(text.questions, 4) / 4,
        features.novelty_score,
        features.historical_failure_rate,
    ]
    return np.concatenate((np.asarray(dense), text.bow))


def failure_rate(failures: float, trials: float) -> float:
    """Smoothed failure rate: a Beta(1, 1) prior, so an unseen intent reads 0.5."""
    return (failures + 1.0) / (trials + 2.0)


class NoveltyIndex:
    """Per-tenant rings of recent query vectors in an LRU of tenants (see module docstring)."""

    def __init__(self, ring_size: int = 64, max_tenants: int = 256) -> None:
        """Keep ``ring_size`` vectors for each of up to ``max_tenants`` tenants."""
        self._ring_size = ring_size
        self._max_tenants = max_tenants
        self._rings: OrderedDict[str, tuple[npt.NDArray[np.float32], list[int]]] = OrderedDict()

    def score_and_add(self, tenant: str, vector: Vector) -> float:
        """Novelty of ``vector`` against the tenant's ring in [0, 1]; then remember it."""
        ring = self._rings.get(tenant)
        if ring is None:
            ring = (np.zeros((self._ring_size, HASH_DIM), dtype=np.float32), [0])
            self._rings[tenant] = ring
            if len(self._rings) > self._max_tenants:
                self._rings.popitem(last=False)
        else:
            self._rings.move_to_end(tenant)
        matrix, counter = ring
        seen = min(counter[0], self._ring_size)
        novelty = 1.0
        if seen and vector.any():
            novelty = 1.0 - float(np.max(matrix[:seen] @ vector.astype(np.float32)))
        matrix[counter[0] % self._ring_size] = vector
        counter[0] += 1
        return min(1.0, max(0.0, novelty))
