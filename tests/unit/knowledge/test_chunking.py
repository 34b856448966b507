"""Chunk sizes, overlap, section and page boundaries, and FAQ entries."""

from __future__ import annotations

import itertools

from services.knowledge import chunking
from services.knowledge.media import Block


def _sentences(count: int, word: str = "word") -> str:
    return " ".join(f"Sentence {i} has a {word} or two in it." for i in range(count))


def test_chunks_respect_the_limit_and_overlap() -> None:
    blocks = [Block(_sentences(40), ("Guide",))]
    chunks = chunking.chunk(blocks, max_tokens=60, overlap=15)
    assert len(chunks) > 3
    assert all(chunking.count_tokens(c.text) <= 60 for c in chunks)
    for before, after in itertools.pairwise(chunks):
        last = before.text.split(". ")[-1]
        assert last.rstrip(".") in after.text  # whole sentences carried over
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_a_chunk_never_crosses_a_section_or_page() -> None:
    blocks = [
        Block("Alpha text.", ("A",)),
        Block("Beta text.", ("B",)),
        Block("Page one.", (), page=1),
        Block("Page two.", (), page=2),
    ]
    chunks = chunking.chunk(blocks, max_tokens=100, overlap=10)
    assert [(c.text, c.headings, c.page) for c in chunks] == [
        ("Alpha text.", ("A",), 0),
        ("Beta text.", ("B",), 0),
        ("Page one.", (), 1),
        ("Page two.", (), 2),
    ]


def test_small_paragraphs_of_a_section_are_packed_together() -> None:
    blocks = [Block("One.", ("S",)), Block("Two.", ("S",)), Block("Three.", ("S",))]
    (only,) = chunking.chunk(blocks, max_tokens=100, overlap=10)
    assert only.text == "One.\n\nTwo.\n\nThree."


def test_a_sentence_longer_than_the_limit_is_cut_at_words() -> None:
    chunks = chunking.chunk([Block("word " * 500)], max_tokens=50, overlap=0)
    assert len(chunks) == 10
    assert all(chunking.count_tokens(c.text) <= 50 for c in chunks)


def test_the_embedding_text_carries_title_and_section() -> None:
    chunk = chunking.Chunk(0, "Body.", ("Returns", "Window"), 0)
    assert chunk.embedding_text("Help") == "Help > Returns > Window\n\nBody."


def test_faq_from_question_headings() -> None:
    blocks = [
        Block("Store FAQ", (), heading=True),
        Block("Welcome!", ("Store FAQ",)),
        Block("How long is shipping?", ("Store FAQ",), heading=True),
        Block("Three days.", ("Store FAQ", "How long is shipping?")),
        Block("Can I return?", ("Store FAQ",), heading=True),
        Block("Yes, within 30 days.", ("Store FAQ", "Can I return?")),
    ]
    entries = chunking.faq_entries(blocks)
    assert [(e.question, e.answer) for e in entries] == [
        ("How long is shipping?", "Three days."),
        ("Can I return?", "Yes, within 30 days."),
    ]


def test_faq_from_q_and_a_lines() -> None:
    text = "Intro line.\nQ: Do you ship abroad?\nA: Yes, to 40 countries.\n"
    text += "Q: Empty?\nQ. Cost?\nA. Free."
    entries = chunking.faq_entries([Block(text)])
    assert [(e.question, e.answer) for e in entries] == [
        ("Do you ship abroad?", "Yes, to 40 countries."),
        ("Cost?", "Free."),
    ]


def test_default_windows_keep_every_sentence_whole_and_overlap() -> None:
    sentences = [f"Step {i} of the returns guide explains one more detail." for i in range(60)]
    blocks = [Block(" ".join(sentences), ("Returns",))]
    chunks = chunking.chunk(blocks)
    assert all(chunking.count_tokens(c.text) <= 150 for c in chunks)
    for sentence in sentences:  # no sentence is cut in two
        assert any(sentence in c.text for c in chunks)
    for before, after in itertools.pairwise(chunks):
        shared = [s for s in sentences if s in before.text and s in after.text]
        assert 1 <= sum(chunking.count_tokens(s) for s in shared) <= 30
