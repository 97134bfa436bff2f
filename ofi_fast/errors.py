"""Exceptions of ofi_fast, and the one helper that turns a kernel's status code into one.

Every error derives from :class:`OFIError` (itself a ``ValueError``), names the offending field
and the index of the offending event, and is raised only after the object's state has been left
as it was before that event.
"""

from __future__ import annotations

# Mirrors the Status enum of _types.pxd (tests/test_ring.py checks the values agree).
STATUS_OK = 0
STATUS_CAPACITY = 1
STATUS_NON_FINITE = 2
STATUS_NEGATIVE = 3
STATUS_TIME_BACKWARDS = 4
STATUS_CROSSED = 5
STATUS_SEQUENCE_GAP = 6
STATUS_BAD_VALUE = 7
STATUS_NO_MEMORY = 8


class OFIError(ValueError):
    """Base class of every ofi_fast error. ``field`` and ``index`` say where the input was bad."""

    def __init__(self, message: str, *, field: str | None = None, index: int | None = None):
        super().__init__(message)
        self.field = field
        self.index = index


class CapacityError(OFIError):
    """A ring buffer (time window) would need more slots than it has; ``needed`` says how many."""

    def __init__(self, message: str, *, field=None, index=None, needed: int | None = None):
        super().__init__(message, field=field, index=index)
        self.needed = needed


class NonFiniteError(OFIError):
    """NaN or infinity where a finite number is required."""


class NegativeSizeError(OFIError):
    """A size or volume below zero."""


class TimeOrderError(OFIError):
    """A timestamp smaller than the previous one (time going backwards)."""


class CrossedBookError(OFIError):
    """Best bid >= best ask after an update, where the crossed-book policy is ``"raise"``."""


class SequenceGapError(OFIError):
    """A feed's update ids do not chain (missed messages)."""


class ChecksumError(SequenceGapError):
    """A feed's checksum disagrees with the book rebuilt from its messages (e.g. Kraken's CRC32
    of the top 10 levels): the message is named by ``path``:``index`` (line) in the text, and
    ``expected`` / ``got`` hold the message's and the rebuilt book's checksums. A subclass of
    :class:`SequenceGapError` (a missed or corrupted update is the usual cause), so code that
    catches gaps catches it too."""

    def __init__(self, message: str, *, field=None, index=None, expected=None, got=None):
        super().__init__(message, field=field, index=index)
        self.expected = expected
        self.got = got


class ParseError(OFIError):
    """Malformed input in a file: ``path`` and ``line`` (1-based) say where, ``field`` which
    column or key when known. The message starts with ``path:line:`` (or ``path:`` when no
    line applies) and quotes at most 80 characters of the offending text."""

    def __init__(self, message: str, *, path=None, line: int | None = None, field=None, index=None):
        if path is not None and line is not None:
            where = f"{path}:{line}: "
        elif path is not None:
            where = f"{path}: "
        else:
            where = ""
        super().__init__(where + message, field=field, index=index)
        self.path = path
        self.line = line
        self.reason = message


class TruncatedError(ParseError):
    """The file's container ended early or is corrupt (a truncated ``.gz`` or zip member, bad
    deflate data, a bad CRC): ``line`` is the first line that could not be read whole. Under
    ``on_error="skip"`` the readers keep everything before it and report the cut in
    ``ErrorLog.truncated`` instead of raising."""


_CLASSES = {
    STATUS_CAPACITY: (CapacityError, "needs more slots than the buffer's capacity"),
    STATUS_NON_FINITE: (NonFiniteError, "is not finite (NaN or inf)"),
    STATUS_NEGATIVE: (NegativeSizeError, "is negative"),
    STATUS_TIME_BACKWARDS: (TimeOrderError, "goes backwards in time"),
    STATUS_CROSSED: (CrossedBookError, "crosses the book (best bid >= best ask)"),
    STATUS_SEQUENCE_GAP: (SequenceGapError, "breaks the sequence (gap in update ids)"),
    STATUS_BAD_VALUE: (OFIError, "is outside its allowed values"),
    STATUS_NO_MEMORY: (OFIError, "could not be stored: out of memory"),
}


def error_from_status(status: int, field: str, index: int, detail: str = "") -> OFIError:
    """Build the exception for a kernel's ``status`` at event ``index`` in input ``field``."""
    cls, what = _CLASSES.get(status, (OFIError, f"failed with status {status}"))
    message = f"{field}[{index}] {what}"
    if detail:
        message += f" ({detail})"
    return cls(message, field=field, index=index)


def raise_status(status: int, field: str, index: int, detail: str = "") -> None:
    """Raise :func:`error_from_status` unless ``status`` is ``STATUS_OK``."""
    if status != STATUS_OK:
        raise error_from_status(status, field, index, detail)
