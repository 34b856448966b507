"""Media checks at the door and structure-aware reading of each format."""

from __future__ import annotations

import io

import pytest
from fpdf import FPDF

from services.kit import errors
from services.knowledge import media
from supportmesh.common.v1 import errors_pb2


def _pdf(pages: list[str], title: str = "") -> bytes:
    document = FPDF()
    if title:
        document.set_title(title)
    document.set_font("helvetica", size=12)
    for text in pages:
        document.add_page()
        document.multi_cell(0, 8, text)
    buffer = io.BytesIO()
    document.output(buffer)
    return buffer.getvalue()


def test_media_types_are_normalised() -> None:
    assert media.normalize("Text/HTML; charset=utf-8") == media.HTML
    assert media.normalize("text/x-markdown") == media.MARKDOWN


@pytest.mark.parametrize(
    ("media_type", "data", "reason"),
    [
        ("image/png", b"\x89PNG", errors_pb2.ERROR_REASON_UNSUPPORTED_MEDIA),
        ("text/plain", b"x" * 101, errors_pb2.ERROR_REASON_PAYLOAD_TOO_LARGE),
        ("text/plain", b"  \n\t", errors_pb2.ERROR_REASON_VALIDATION_FAILED),
        ("text/plain", b"\xff\xfe bad", errors_pb2.ERROR_REASON_VALIDATION_FAILED),
        ("text/html", b"<script>x()</script>", errors_pb2.ERROR_REASON_VALIDATION_FAILED),
        ("application/pdf", b"hello", errors_pb2.ERROR_REASON_VALIDATION_FAILED),
        ("application/pdf", b"%PDF-1.4 garbage", errors_pb2.ERROR_REASON_VALIDATION_FAILED),
    ],
)
def test_check_refuses_with_a_reason(
    media_type: str, data: bytes, reason: errors_pb2.ErrorReason.ValueType
) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        media.check(media_type, data, max_bytes=100)
    assert caught.value.reason == reason


def test_a_valid_pdf_passes_the_check() -> None:
    media.check(media.PDF, _pdf(["hello"]), max_bytes=1 << 20)


def test_markdown_keeps_the_heading_path() -> None:
    text = b"# Guide\n\nIntro.\n\n## Setup\n\nStep one.\n\n- a\n- b\n\n### Deep\n\nDeep text."
    blocks = [b for b in media.read(media.MARKDOWN, text) if not b.heading]
    assert [(b.text, b.headings) for b in blocks] == [
        ("Intro.", ("Guide",)),
        ("Step one.", ("Guide", "Setup")),
        ("- a", ("Guide", "Setup")),
        ("- b", ("Guide", "Setup")),
        ("Deep text.", ("Guide", "Setup", "Deep")),
    ]


def test_html_drops_chrome_and_keeps_sections() -> None:
    page = (
        b"<html><head><title>Help</title></head><body><nav>Menu</nav><h1>Billing</h1>"
        b"<p>Invoices are monthly.</p><script>x()</script><h2>Tax</h2><ul><li>VAT</li></ul>"
        b"<table><tr><td>a</td><td>b</td></tr></table><footer>(c)</footer></body></html>"
    )
    blocks = media.read(media.HTML, page)
    texts = [(b.text, b.headings) for b in blocks if not b.heading]
    assert texts == [
        ("Invoices are monthly.", ("Billing",)),
        ("- VAT", ("Billing", "Tax")),
        ("a | b", ("Billing", "Tax")),
    ]
    assert media.title_of(media.HTML, page, blocks) == "Help"


def test_pdf_keeps_pages() -> None:
    data = _pdf(["First page text.", "Second page text."], title="Manual")
    blocks = media.read(media.PDF, data)
    assert [(b.page, b.text) for b in blocks] == [(1, "First page text."), (2, "Second page text.")]
    assert media.title_of(media.PDF, data, blocks) == "Manual"


def test_plain_text_splits_paragraphs_and_titles_from_the_first_line() -> None:
    blocks = media.read(media.PLAIN, b"Title line\nmore\n\nSecond paragraph.")
    assert [b.text for b in blocks] == ["Title line\nmore", "Second paragraph."]
    assert media.title_of(media.PLAIN, b"", blocks) == "Title line"


def test_a_document_without_text_cannot_be_read() -> None:
    with pytest.raises(media.DocumentError):
        media.read(media.MARKDOWN, b"# Only a heading\n")
