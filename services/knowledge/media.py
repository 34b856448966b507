"""Accepted media types: checks at the door, and reading text with its structure into blocks.

Markdown and HTML keep their headings (every block knows the headings it sits under), PDF its
pages; paragraphs, list items, table rows and code blocks become one block each, which the
chunker packs into passages without crossing a section (or page) boundary.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass

from bs4 import BeautifulSoup
from bs4.element import Comment, NavigableString, Tag
from markdown_it import MarkdownIt
from markdown_it.token import Token
from pypdf import PdfReader
from pypdf.errors import PyPdfError

from services.kit import errors
from supportmesh.common.v1 import errors_pb2

PLAIN, MARKDOWN, HTML, PDF = "text/plain", "text/markdown", "text/html", "application/pdf"
SUPPORTED = (PLAIN, MARKDOWN, HTML, PDF)
_ALIASES = {"text/x-markdown": MARKDOWN, "application/xhtml+xml": HTML}
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_SKIP = {"script", "style", "noscript", "template", "nav", "footer", "head", "svg", "button"}
_LEAVES = {"p", "li", "pre", "blockquote", "dt", "dd", "tr", "caption", "figcaption"}
_INLINE = {"a", "span", "strong", "b", "em", "i", "code", "small", "sup", "sub", "mark", "abbr"}

# pypdf logs every recoverable oddity of a file at WARNING; the outcome is what matters here.
logging.getLogger("pypdf").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Block:
    """A paragraph-like piece of text with the headings it sits under (and its PDF page)."""

    text: str
    headings: tuple[str, ...] = ()
    page: int = 0
    heading: bool = False


class DocumentError(Exception):
    """The content cannot be read; the document fails with this message as its reason."""


def normalize(media_type: str) -> str:
    """The bare, lower-case media type (parameters such as ``charset`` dropped)."""
    bare = media_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(bare, bare)


def check(media_type: str, data: bytes, max_bytes: int, field: str = "content") -> None:
    """INVALID_ARGUMENT (with its reason) unless ``data`` is acceptable ``media_type`` content."""
    if media_type not in SUPPORTED:
        raise errors.InvalidArgument(
            f"media_type {media_type!r} is not supported; use one of {', '.join(SUPPORTED)}",
            reason=errors_pb2.ERROR_REASON_UNSUPPORTED_MEDIA,
            field="media_type",
        )
    if len(data) > max_bytes:
        raise errors.InvalidArgument(
            f"the document has {len(data)} bytes; the limit is {max_bytes}",
            reason=errors_pb2.ERROR_REASON_PAYLOAD_TOO_LARGE,
            field=field,
            metadata={"limit_bytes": str(max_bytes)},
        )
    if not data.strip():
        raise errors.InvalidArgument("the document is empty", field=field)
    if media_type == PDF:
        _check_pdf(data, field)
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.InvalidArgument(f"{media_type} content must be UTF-8", field=field) from exc
    if media_type == HTML and not _html_text(text):
        raise errors.InvalidArgument("the HTML document has no visible text", field=field)


def _check_pdf(data: bytes, field: str) -> None:
    if not data.lstrip()[:5] == b"%PDF-":
        raise errors.InvalidArgument("the content is not a PDF file", field=field)
    try:
        pages = len(PdfReader(io.BytesIO(data)).pages)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise errors.InvalidArgument(f"the PDF is corrupt: {exc}", field=field) from exc
    if pages == 0:
        raise errors.InvalidArgument("the PDF has no pages", field=field)


def read(media_type: str, data: bytes) -> list[Block]:
    """The document's blocks in reading order; DocumentError when nothing can be read."""
    if media_type == PDF:
        blocks = _pdf(data)
    else:
        text = data.decode("utf-8", errors="replace")
        if media_type == MARKDOWN:
            blocks = _markdown(text)
        elif media_type == HTML:
            blocks = _html(text)
        else:
            blocks = _plain(text)
    if not any(block.text.strip() for block in blocks if not block.heading):
        raise DocumentError("the document has no readable text")
    return blocks


def title_of(media_type: str, data: bytes, blocks: list[Block]) -> str:
    """A title from the content: HTML <title>, PDF metadata, first heading or first line."""
    found = ""
    if media_type == HTML:
        title = BeautifulSoup(data.decode("utf-8", errors="replace"), "html.parser").title
        found = title.get_text(" ", strip=True) if title else ""
    elif media_type == PDF:
        try:
            metadata = PdfReader(io.BytesIO(data)).metadata
            found = str(metadata.title or "") if metadata else ""
        except (PyPdfError, ValueError, KeyError, TypeError, AttributeError):
            found = ""
    if not found:
        first = next((b for b in blocks if b.heading), None) or next(iter(blocks), None)
        found = first.text.strip().splitlines()[0] if first and first.text.strip() else ""
    return _clean(found)[:120]


def _clean(text: str) -> str:
    return re.sub(r"[ \t\r\f\v]+", " ", text).strip()


def _plain(text: str) -> list[Block]:
    paragraphs = re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
    return [Block(p.strip()) for p in paragraphs if p.strip()]


def _inline(token: Token) -> str:
    parts: list[str] = []
    for child in token.children or []:
        if child.type in ("text", "code_inline", "html_inline"):
            parts.append(child.content)
        elif child.type == "softbreak" or child.type == "hardbreak":
            parts.append("\n")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts).strip()


def _markdown(text: str) -> list[Block]:
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    blocks: list[Block] = []
    stack: list[tuple[int, str]] = []
    item: list[str] = []
    row: list[str] = []
    list_depth, heading_level, in_table = 0, 0, False
    for token in tokens:
        headings = tuple(title for _, title in stack)
        kind = token.type
        if kind == "heading_open":
            heading_level = int(token.tag[1])
        elif kind == "heading_close":
            heading_level = 0
        elif kind in ("bullet_list_open", "ordered_list_open"):
            list_depth += 1
        elif kind in ("bullet_list_close", "ordered_list_close"):
            list_depth -= 1
        elif kind in ("table_open", "table_close"):
            in_table = kind == "table_open"
        elif kind == "tr_close":
            blocks.append(Block(" | ".join(cell for cell in row if cell), headings))
            row = []
        elif kind == "list_item_close" and list_depth == 1 and item:
            blocks.append(Block("- " + "\n".join(item), headings))
            item = []
        elif kind in ("fence", "code_block"):
            blocks.append(Block(token.content.rstrip(), headings))
        elif kind == "inline":
            content = _inline(token)
            if heading_level:
                title = _clean(content)
                blocks.append(Block(title, headings, heading=True))
                stack = [(lvl, t) for lvl, t in stack if lvl < heading_level]
                stack.append((heading_level, title))
            elif in_table:
                row.append(content)
            elif list_depth:
                item.append(content)
            else:
                blocks.append(Block(content, headings))
    return [block for block in blocks if block.text.strip()]


def _html_text(text: str) -> str:
    soup = BeautifulSoup(text, "html.parser")
    for tag in soup.find_all(_SKIP):
        tag.decompose()
    return soup.get_text(" ", strip=True)


def _html(text: str) -> list[Block]:
    soup = BeautifulSoup(text, "html.parser")
    blocks: list[Block] = []
    stack: list[tuple[int, str]] = []
    buffer: list[str] = []

    def headings() -> tuple[str, ...]:
        return tuple(title for _, title in stack)

    def flush() -> None:
        joined = _clean(" ".join(buffer))
        buffer.clear()
        if joined:
            blocks.append(Block(joined, headings()))

    def walk(node: Tag) -> None:
        nonlocal stack
        for child in node.children:
            if isinstance(child, Comment):
                continue
            if isinstance(child, NavigableString):
                buffer.append(str(child))
                continue
            if not isinstance(child, Tag) or child.name in _SKIP:
                continue
            if child.name in _HEADINGS:
                flush()
                level, title = _HEADINGS[child.name], _clean(child.get_text(" "))
                if title:
                    blocks.append(Block(title, headings(), heading=True))
                    stack = [(lvl, t) for lvl, t in stack if lvl < level] + [(level, title)]
            elif child.name in _LEAVES:
                flush()
                separator = " | " if child.name == "tr" else " "
                leaf = _clean(child.get_text(separator, strip=True))
                if child.name == "pre":
                    leaf = child.get_text().rstrip()
                if leaf:
                    blocks.append(Block(("- " if child.name == "li" else "") + leaf, headings()))
            elif child.name == "br":
                buffer.append("\n")
            elif child.name in _INLINE:
                buffer.append(child.get_text(" "))
            else:
                flush()
                walk(child)
                flush()

    walk(soup)
    flush()
    return blocks


def _pdf(data: bytes) -> list[Block]:
    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise DocumentError(f"the PDF cannot be read: {exc}") from exc
    blocks: list[Block] = []
    for number, raw in enumerate(pages, start=1):
        text = re.sub(r"(\w)-\n(\w)", r"\1\2", raw.replace("\r\n", "\n"))
        for paragraph in re.split(r"\n\s*\n", text):
            joined = _clean(paragraph.replace("\n", " "))
            if joined:
                blocks.append(Block(joined, page=number))
    return blocks
