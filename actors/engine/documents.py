"""Documents sent with a request (a Telegram file, ``run --file``, ``POST /tasks``).

Each document becomes text before anything runs: a PDF (known by its ``%PDF-`` header)
through pypdf, a plain text or Markdown file (``.txt``, ``.md``, ``.markdown`` or no
extension) as UTF-8. Anything else is refused with a ``UserInputError`` that names the
file and what is accepted; a limit passed is a ``DocumentLimitError`` (HTTP 413).

``attach`` puts the documents after the request, one block each, so the request text
every agent receives carries them (and the stored request, so a resumed task keeps them):

>>> attach("Summarise it", [Document(name="notes.md", text="# Notes")], Settings())
'Summarise it\\n\\n<document name="notes.md">\\n# Notes\\n</document>'
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import PurePath

from pydantic import BaseModel

from actors.config import Settings
from actors.errors import DocumentLimitError, UserInputError

ACCEPTED = "plain text (.txt), Markdown (.md) or PDF"
TEXT_SUFFIXES = frozenset({"", ".txt", ".md", ".markdown"})
PDF_MAGIC = b"%PDF-"
# Headers of files people send by mistake, to say what was sent rather than "not UTF-8".
_KNOWN_BINARY = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"RIFF": "a media file",
    b"PK\x03\x04": "a zip archive (Word and Excel files are zip archives too)",
    b"\x1f\x8b": "a gzip archive",
    b"\x7fELF": "a program",
}
# Tab, newline and carriage return stay; other control characters mean nothing in a document.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A document must not close its own block (or the request's) and pose as the user.
_BLOCK_TAGS = re.compile(r"<(/?)\s*(document|request)\b", re.IGNORECASE)
_NAME_CHARS = 120


class Document(BaseModel):
    """One document as text, under the name the user gave it."""

    name: str
    text: str


def read_document(name: str, data: bytes, settings: Settings) -> Document:
    """The text of the file ``name`` holding ``data``, or ``UserInputError`` saying why not.

    The size limit is checked on the raw bytes before any parsing.
    """
    name = _clean_name(name)
    check_size(name, len(data), settings)
    if data.startswith(PDF_MAGIC):
        return text_document(name, _pdf_text(name, data, settings.max_document_chars), settings)
    kind = next((what for magic, what in _KNOWN_BINARY.items() if data.startswith(magic)), None)
    suffix = PurePath(name).suffix.lower()
    if kind is not None or suffix not in TEXT_SUFFIXES:
        what = kind or f"a {suffix} file"
        raise UserInputError(f"{name} is {what}; send {ACCEPTED}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserInputError(
            f"{name} is not UTF-8 text (bad byte at position {exc.start}); send {ACCEPTED}"
        ) from None
    if "\x00" in text:
        raise UserInputError(f"{name} holds NUL bytes, so it is no text file; send {ACCEPTED}")
    return text_document(name, text, settings)


def check_size(name: str, size: int, settings: Settings) -> None:
    """Raise ``DocumentLimitError`` when a file of ``size`` bytes is over the per-file limit
    (also before a download or a read: Telegram and the file system tell the size)."""
    limit = settings.max_document_bytes
    if size > limit:
        raise DocumentLimitError(
            f"{_clean_name(name)} is {_size(size)}; the limit is {_size(limit)} per document"
        )


def text_document(name: str, text: str, settings: Settings) -> Document:
    """A document from text already decoded (a PDF's, or sent as text over HTTP), checked."""
    name = _clean_name(name)
    text = _CONTROL.sub("", text.replace("\r\n", "\n")).strip()
    if not text:
        raise UserInputError(f"{name} is empty")
    limit = settings.max_document_chars
    if len(text) > limit:
        raise DocumentLimitError(
            f"{name} has {len(text):,} characters of text; the limit is {limit:,} per document"
        )
    return Document(name=name, text=text)


def check_limits(documents: Sequence[Document], settings: Settings) -> None:
    """Raise ``DocumentLimitError`` past the number of documents or their characters in all."""
    if len(documents) > settings.max_documents:
        raise DocumentLimitError(
            f"{len(documents)} documents were sent; the limit is {settings.max_documents} "
            "per request"
        )
    total, limit = sum(len(d.text) for d in documents), settings.max_documents_chars
    if total > limit:
        raise DocumentLimitError(
            f"the documents have {total:,} characters of text together; the limit is "
            f"{limit:,} per request"
        )


def attach(text: str, documents: Sequence[Document], settings: Settings) -> str:
    """The request ``text`` followed by one ``<document name="...">`` block per document."""
    check_limits(documents, settings)
    blocks = [
        f'<document name="{_tag_name(d.name)}">\n{_BLOCK_TAGS.sub(_inert, d.text)}\n</document>'
        for d in documents
    ]
    return "\n\n".join([text, *blocks])


def _pdf_text(name: str, data: bytes, max_chars: int) -> str:
    """The PDF's text, page after page; extraction stops once past ``max_chars``."""
    from pypdf import PdfReader  # only a PDF needs it

    pages: list[str] = []
    try:
        reader = PdfReader(io.BytesIO(data))
        locked = reader.is_encrypted and not reader.decrypt("")
        if not locked:
            chars = 0
            for page in reader.pages:
                pages.append(page.extract_text() or "")
                chars += len(pages[-1])
                if chars > max_chars:  # too long already: text_document says so
                    break
    # A damaged PDF can fail inside pypdf in many ways (PdfReadError, but also KeyError,
    # ValueError, ...); to the user each means the same: this file cannot be read.
    except Exception as exc:
        raise UserInputError(
            f"{name} could not be read as a PDF ({type(exc).__name__}); send a valid PDF "
            "or its text"
        ) from None
    if locked:
        raise UserInputError(f"{name} is a password-protected PDF; send it unlocked")
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise UserInputError(
            f"{name} has no text to extract (a scanned PDF?); send its text instead"
        )
    return text


def _clean_name(name: str) -> str:
    """The file's own name (no folders), without control characters, bounded."""
    base = PurePath(name.replace("\\", "/")).name
    base = _CONTROL.sub("", base).replace("\n", " ").replace("\r", " ").replace("\t", " ")
    return base.strip()[:_NAME_CHARS] or "document"


def _tag_name(name: str) -> str:
    return name.replace('"', "").replace("<", "").replace(">", "")


def _inert(match: re.Match[str]) -> str:
    return "‹" + match.group(1) + match.group(2)  # one character for one, as merger.defuse


def _size(n: int) -> str:
    """``12.3 MB``, ``800 kB``, ``512 bytes``."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:,.1f}".removesuffix(".0") + " MB"
    if n >= 1_000:
        return f"{n / 1_000:.0f} kB"
    return f"{n} bytes"
