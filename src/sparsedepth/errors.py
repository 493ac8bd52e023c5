"""The one base class of errors a user can fix: bad input, a damaged file, a busy run directory.

The command line prints such an error as one line on stderr and exits with status 2, never a traceback;
any other exception is a bug and keeps its traceback. Each error's message names what is wrong and how to
fix it.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input or state that the user can fix; the message says what and how."""


class CorruptFileError(UserError, ValueError):
    """A file the package wrote earlier cannot be read back (truncated, bit-flipped, hand-edited)."""


def one_line(e: BaseException | str) -> str:
    """An error's message on one line (multi-line messages of libraries joined with ' | ')."""
    text = " | ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
    return text or type(e).__name__
