"""The factuality gate: each answer sentence must be backed by the run's evidence.

A deterministic lexical check, so the gate is cheap, reproducible and explainable without a
model. Evidence is the retrieved passages and, for every tool (and human) step that ran, its
step id, input and output flattened to ``key value`` text. Known context — the customer's
input and the prompt the workflow gave the model, whose facts come from earlier steps — may
be repeated freely but is not evidence for anything new.

For each sentence of the answer:

1. Tokens are lower-cased words and facts — runs holding a digit, such as amounts, dates
   and ids (``1,234.50`` → ``1234.5``, ``2026-12-01``, ``ch_1``); stop words and
   conversational filler are dropped, and words are lightly stemmed
   (``shipped`` / ``shipping`` / ``ships`` → ``ship``, ``charge`` / ``charged`` → ``charg``).
2. Every fact must appear in the evidence or the known context — whole, or for a plain
   number as a piece of one — so a wrong amount, date or order number fails the sentence.
3. The sentence's *new* content tokens (words and facts not already in the known context)
   must be covered to at least ``min_overlap`` by one single evidence item, so a sentence
   cannot be stitched together from unrelated sources. A sentence with nothing new (it only
   restates the question, or is a pleasantry) is neutral.

The gate passes when at least ``min_supported`` of the non-neutral sentences are supported.
Known limits: it cannot see negation ("not shipped" matches "shipped") or paraphrase with
no shared words; the critic_call gate covers those with a model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# Words, or "facts": runs holding a digit, joined by - _ / . , : (42.50, 2026-12-01, A-1234).
_TOKEN = re.compile(r"(?:[a-z]+[-_])*[a-z0-9]*\d[a-z0-9]*(?:[-_/.,:][a-z0-9]+)*|[a-z]+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_PARTS = re.compile(r"[a-z0-9]+")
_STOP_WORDS = re.findall(
    r"[a-z]+",
    """
    a about above after again all also am an and any are as at be been before being below both
    but by can could did do does doing down during each few for from further had has have
    having he her here hers him his how i if in into is it its itself just let me more most my
    no nor not now of off on once only or other our ours out over own same she should so some
    such than that the their theirs them then there these they this those through to too under
    until up very was we were what when where which while who whom why will with would you your
    yours yourself hi hello thanks thank please sorry glad happy help anything else know need
    feel free reach reaching contact question questions today currently right away sure may
    might ask asking great hope assist welcome day
    """,
)
_SUFFIXES = ("ing", "ed", "es", "s", "ly")


@dataclass(frozen=True)
class SentenceSupport:
    """How one sentence fared."""

    sentence: str
    supported: bool
    neutral: bool
    overlap: float
    missing_facts: tuple[str, ...]


@dataclass(frozen=True)
class FactualityReport:
    """The gate's verdict and the per-sentence detail behind it."""

    passed: bool
    supported_share: float
    sentences: tuple[SentenceSupport, ...]

    def explain(self) -> str:
        """The first unsupported sentence and why, for the run's record."""
        for item in self.sentences:
            if not item.supported:
                if item.missing_facts:
                    numbers = ", ".join(item.missing_facts)
                    return f"unsupported facts {numbers} in {item.sentence!r}"
                return f"unsupported sentence {item.sentence!r} (overlap {item.overlap:.2f})"
        return f"{self.supported_share:.0%} of sentences supported"


def flatten(value: Any, prefix: str = "") -> str:
    """Tool output (JSON) as ``key value`` text."""
    if isinstance(value, Mapping):
        return " ".join(flatten(item, f"{prefix} {key}") for key, item in value.items())
    if isinstance(value, list | tuple):
        return " ".join(flatten(item, prefix) for item in value)
    return f"{prefix} {value}".strip() if value is not None else prefix.strip()


def check_factuality(
    answer: str,
    evidence: Sequence[str],
    known: Iterable[str] = (),
    *,
    min_overlap: float = 0.5,
    min_supported: float = 1.0,
) -> FactualityReport:
    """Check ``answer`` against ``evidence``; ``known`` is context the customer gave."""
    units = [set(_tokens(text, parts=True)) for text in evidence]
    every = set().union(*units) if units else set()
    given = {token for text in known for token in _tokens(text, parts=True)}
    results = [
        _support(sentence, units, every, given, min_overlap)
        for sentence in _SENTENCE_END.split(answer.strip())
        if sentence.strip()
    ]
    counted = [item for item in results if not item.neutral]
    share = sum(item.supported for item in counted) / len(counted) if counted else 1.0
    passed = bool(answer.strip()) and share >= min_supported
    return FactualityReport(passed, share, tuple(results))


def _support(
    sentence: str, units: list[set[str]], every: set[str], given: set[str], min_overlap: float
) -> SentenceSupport:
    tokens = [token for token in _tokens(sentence) if token not in _STOP]
    facts = {token for token in tokens if not token.isalpha()}
    missing = tuple(sorted(facts - every - given))
    # Facts count as content too: "It arrives on 2026-12-01" is carried by the eta it quotes.
    fresh = {token for token in tokens if token not in given}
    if not fresh:
        return SentenceSupport(sentence, not missing, not facts, 1.0, missing)
    overlap = max((len(fresh & unit) / len(fresh) for unit in units), default=0.0)
    supported = not missing and overlap >= min_overlap
    return SentenceSupport(sentence, supported, False, overlap, missing)


def _tokens(text: str, *, parts: bool = False) -> list[str]:
    """Normalized tokens; with ``parts``, facts are also indexed piece by piece."""
    # Pieces let an answer's "December 1, 2026" find evidence 2026-12-01, while an answer's
    # own "2026-11-02" is one token and must match a fact whole.
    found = []
    for token in _TOKEN.findall(text.lower()):
        found.append(_normalize(token))
        if parts and not token.isalpha():
            found.extend(_normalize(part) for part in _PARTS.findall(token) if part != token)
    return found


def _normalize(token: str) -> str:
    if _NUMBER.fullmatch(token):
        number = token.replace(",", "")
        if "." in number:
            number = number.rstrip("0").rstrip(".")
        return number.lstrip("0") or "0"
    if not token.isalpha():
        return token
    for suffix in _SUFFIXES:
        if len(token) > len(suffix) + 3 and token.endswith(suffix):
            token = token[: -len(suffix)]
            break
    # Undo the doubled consonant of "shipped" → "shipp" → "ship".
    if len(token) > 3 and token[-1] == token[-2] and token[-1] not in "aeiouls":
        token = token[:-1]
    # "charge" and "charged" meet at "charg".
    if len(token) > 4 and token.endswith("e"):
        token = token[:-1]
    return token


# Matched after stemming, like every other token.
_STOP = frozenset(_normalize(word) for word in _STOP_WORDS)
