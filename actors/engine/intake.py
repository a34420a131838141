"""The one check every entry point (CLI, HTTP, Telegram, notebook) runs on request text."""

from __future__ import annotations

import re

from actors.errors import UserInputError

# Control characters other than tab and newline carry no meaning in a request
# and confuse terminals, logs and the model alike.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_request(text: str | bytes, max_chars: int) -> str:
    """Return the request as clean text, or raise ``UserInputError`` saying what is wrong."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserInputError(
                f"the request is not valid UTF-8 text (bad byte at position {exc.start})"
            ) from None
    if "\x00" in text:
        raise UserInputError("the request contains NUL bytes; send plain text")
    text = _CONTROL.sub("", text).strip()
    if not text:
        raise UserInputError("the request is empty; send the question or task as text")
    if len(text) > max_chars:
        raise UserInputError(
            f"the request is {len(text):,} characters long; the limit is {max_chars:,}"
        )
    return text
