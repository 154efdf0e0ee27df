"""Line iteration shared by every reader: strict UTF-8, BOM, CRLF, trailing whitespace, line numbers."""

from __future__ import annotations

import os
from collections.abc import Iterator

from distgem.errors import InputError

_BOM = b"\xef\xbb\xbf"


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text without line ending or trailing whitespace).

    Raises InputError for a missing, unreadable or empty file, for invalid UTF-8 and for a NUL byte (a
    binary file, or a corpus truncated onto zeros by a crash: never a character of a real sentence, and
    a tokenizer would take it as part of a token), naming the line.
    """
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise InputError(path, None, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, None, "is a directory, expected a file") from None
    except OSError as err:
        raise InputError(path, None, f"cannot read: {err.strerror}") from None
    number = 0
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            nul = raw.find(b"\0")
            if nul >= 0:
                raise InputError(path, number, f"NUL byte (at column {nul + 1})")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    path, number, f"invalid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
                ) from None
            yield number, text.rstrip()
    if number == 0:
        raise InputError(path, None, "empty file")


def iter_blocks(path: str | os.PathLike) -> Iterator[list[tuple[int, str]]]:
    """Yield blank-line separated blocks of (line number, text); the last block needs no final blank line."""
    block: list[tuple[int, str]] = []
    for number, text in iter_lines(path):
        if text:
            block.append((number, text))
        elif block:
            yield block
            block = []
    if block:
        yield block
