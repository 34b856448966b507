"""Structure-aware chunking with overlap, and FAQ entries, from a document's blocks.

Sizes are counted in "tokens" the cheap way (words and punctuation marks), which tracks the
embedding model's word pieces closely enough: the default 150 comes to about 150 word pieces
(200 at the 90th percentile on API documentation), inside the 256 all-MiniLM-L6-v2 reads.
Longer windows keep a passage and the sentences around it together: on the retrieval
benchmark (bench/retrieval_eval.py), 150-token chunks with 30 tokens of overlap found the
answer's passage in the top 5 for 0.74 of the questions against 0.68 at 100/20 with dense
search alone, at a cost: a longer chunk takes longer to embed.

A chunk never crosses a section (the heading path) or, for PDF, a page; a paragraph too long
for one chunk is split at sentences, a sentence too long at words. Consecutive chunks of a
section share up to ``overlap`` tokens of whole sentences.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby

from services.knowledge.media import Block

_TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")
_QUESTION = re.compile(r"^\s*(?:Q|Question)\s*[:.)]\s*", re.IGNORECASE)
_ANSWER = re.compile(r"^\s*(?:A|Answer)\s*[:.)]\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Chunk:
    """A passage to index: its text, where it sits, and the text its vector is made from."""

    index: int
    text: str
    headings: tuple[str, ...]
    page: int

    def embedding_text(self, title: str) -> str:
        """The text embedded for this chunk: title and section path give it context."""
        path = [title, *(h for h in self.headings if h != title)]  # an H1 repeating the title
        context = " > ".join(part for part in path if part)
        return f"{context}\n\n{self.text}" if context else self.text


@dataclass(frozen=True)
class FaqEntry:
    """One question and its answer from a FAQ document."""

    index: int
    question: str
    answer: str


def count_tokens(text: str) -> int:
    """Tokens the cheap way: words and punctuation marks."""
    return len(_TOKEN.findall(text))


def _split_long(text: str, limit: int) -> list[str]:
    """Sentences of ``text``, each at most ``limit`` tokens (long ones cut at words)."""
    pieces: list[str] = []
    for sentence in (s.strip() for s in _SENTENCE.split(text)):
        if not sentence:
            continue
        if count_tokens(sentence) <= limit:
            pieces.append(sentence)
            continue
        words = sentence.split()
        window: list[str] = []
        for word in words:
            if window and count_tokens(" ".join([*window, word])) > limit:
                pieces.append(" ".join(window))
                window = []
            window.append(word)
        if window:
            pieces.append(" ".join(window))
    return pieces


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    paragraph: int


def _units(blocks: Sequence[Block], limit: int) -> list[_Unit]:
    units: list[_Unit] = []
    for number, block in enumerate(blocks):
        if block.heading or not block.text.strip():
            continue
        tokens = count_tokens(block.text)
        if tokens <= limit:
            units.append(_Unit(block.text.strip(), tokens, number))
            continue
        units += [_Unit(s, count_tokens(s), number) for s in _split_long(block.text, limit)]
    return units


def _join(units: Sequence[_Unit]) -> str:
    text = ""
    for previous, unit in zip([None, *units[:-1]], units, strict=True):
        if previous is None:
            text = unit.text
        else:
            text += (" " if previous.paragraph == unit.paragraph else "\n\n") + unit.text
    return text


def _tail(units: Sequence[_Unit], overlap: int) -> list[_Unit]:
    """The last whole sentences of ``units`` that fit in ``overlap`` tokens."""
    carried: list[_Unit] = []
    budget = overlap
    for unit in reversed(units):
        if unit.tokens <= budget:
            carried.insert(0, unit)
            budget -= unit.tokens
            continue
        for sentence in reversed([s.strip() for s in _SENTENCE.split(unit.text) if s.strip()]):
            tokens = count_tokens(sentence)
            if tokens > budget:
                break
            carried.insert(0, _Unit(sentence, tokens, unit.paragraph))
            budget -= tokens
        break
    return carried


def _pack(units: Sequence[_Unit], limit: int, overlap: int) -> Iterator[list[_Unit]]:
    current: list[_Unit] = []
    size = 0
    fresh = 0  # units in ``current`` not carried over from the previous chunk
    for unit in units:
        if current and size + unit.tokens > limit:
            yield current
            carried = _tail(current, overlap)
            if sum(u.tokens for u in carried) + unit.tokens > limit:
                carried = []
            current, size, fresh = carried, sum(u.tokens for u in carried), 0
        current.append(unit)
        size += unit.tokens
        fresh += 1
    if current and fresh:
        yield current


def chunk(blocks: Sequence[Block], max_tokens: int = 150, overlap: int = 30) -> list[Chunk]:
    """Passages of at most ``max_tokens`` tokens, section by section, with sentence overlap."""
    chunks: list[Chunk] = []
    for (headings, page), section in groupby(blocks, key=lambda b: (b.headings, b.page)):
        for packed in _pack(_units(list(section), max_tokens), max_tokens, overlap):
            chunks.append(Chunk(len(chunks), _join(packed), headings, page))
    return chunks


def faq_entries(blocks: Sequence[Block]) -> list[FaqEntry]:
    """Question/answer pairs: headings (those ending "?" if any do) or "Q:" lines ask."""
    asking = [b for b in blocks if b.heading]
    questions_only = any(b.text.rstrip().endswith("?") for b in asking)
    entries: list[tuple[str, list[str]]] = []
    for block in blocks:
        if block.heading:
            if not questions_only or block.text.rstrip().endswith("?"):
                entries.append((block.text.strip(), []))
            continue
        for line in block.text.splitlines():
            if _QUESTION.match(line):
                entries.append((_QUESTION.sub("", line).strip(), []))
            elif entries:
                entries[-1][1].append(_ANSWER.sub("", line).strip())
            # Text before the first question (an introduction) answers nothing.
    found = [(q, " ".join(part for part in a if part)) for q, a in entries]
    return [FaqEntry(i, q, a) for i, (q, a) in enumerate((q, a) for q, a in found if q and a)]
