"""User-facing errors: one clear line, exit code 2 at the CLI boundary."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem with what the user asked for (bad path, key, column, model...).

    The CLI prints ``error: <message>`` on one line and exits with code 2;
    no traceback is shown.
    """


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or '' if none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def first_items(items: Iterable[object], n: int = 5) -> str:
    """Comma-join the first ``n`` items, noting how many were left out."""
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


# Bidirectional-text controls reorder what a terminal shows ("Trojan Source"); they are escaped too.
_BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))


def printable(text: object) -> str:
    """``text`` with control characters (ANSI escapes, newlines, bidi controls) shown as ``\\x1b`` etc.

    For user- or data-supplied strings that reach a terminal or a one-line message.
    """
    out = []
    for ch in str(text):
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif code in _BIDI:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
