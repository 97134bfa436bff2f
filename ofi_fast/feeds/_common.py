"""Shared plumbing of the feed readers: opening files, reading whole lines in bounded blocks,
error policy, and the small array containers every reader returns.

Pure Python + numpy, except :class:`TokenSource`, which drives the compiled tokenizer
(``ofi_fast._csv``) of the CSV readers (LOBSTER, Tardis).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import queue
import re
import threading
import zipfile
import zlib
from typing import ClassVar, Iterable

import numpy as np

from ofi_fast.errors import ParseError, TruncatedError

#: Sentinel for an int64 timestamp the feed does not carry (e.g. Binance spot bookTicker has no
#: event time). Never silently replaced by the other clock.
NO_TIME = np.iinfo(np.int64).min

#: Default bound on the rows a reader yields per chunk.
DEFAULT_CHUNK_ROWS = 65_536

_NL = 10  # b"\n"

#: Longest line (bytes, without its newline) any reader accepts: a longer one is a ParseError
#: naming the file and line (under ``on_error="skip"`` it is counted and skipped), so one bad
#: line can never make a reader hold more than this much of it in memory.
MAX_LINE_BYTES = 16 << 20

#: Most bytes one read asks the file for (a read of n bytes allocates n bytes up front).
MAX_READ_BYTES = 64 << 20

#: What a damaged container raises while it is being read: truncated gzip / zip member (EOF),
#: corrupt deflate data, bad CRC, bad gzip header. Turned into TruncatedError by CheckedFile.
CONTAINER_ERRORS = (EOFError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile)

#: What stands for an over-long line under on_error="skip" (readers count it as malformed).
_LONG_LINE = b"\x00line longer than MAX_LINE_BYTES (16 MiB), dropped"

_ASCII_INT = re.compile(rb"[+-]?[0-9]+\Z")


def ascii_int(s) -> int:
    """``int(s)`` with the compiled tokenizer's grammar: ``[+-]?[0-9]+`` in ASCII only (no
    ``_``, no spaces, no other scripts' digits). Raises ValueError otherwise."""
    b = s.encode("ascii", "replace") if isinstance(s, str) else bytes(s)
    if not _ASCII_INT.match(b):
        raise ValueError(f"not an integer: {cut(s)}")
    return int(b)


def json_int(v) -> int:
    """An integer field of a JSON message: an int (not a bool) or a string with the
    tokenizer's integer grammar (:func:`ascii_int`), within int64; else ValueError."""
    if type(v) is int:
        if not -2**63 <= v < 2**63:
            raise ValueError(f"integer {str(v)[:40]} does not fit in int64")
        return v
    if isinstance(v, str):
        return json_int(ascii_int(v))
    raise ValueError(f"expected an integer, got {type(v).__name__} {cut(repr(v))}")


def cut(text, limit: int = 80) -> str:
    """``repr`` of ``text`` cut to ``limit`` characters (error messages never echo a whole
    field: a bad 8 MB field gives an 80-character message)."""
    r = repr(text[:limit])
    if len(text) > limit:
        r += f"... ({len(text):,} {'bytes' if isinstance(text, (bytes, bytearray)) else 'chars'})"
    return r


class CheckedFile:
    """A compressed member (gzip, zip) whose container errors (see :data:`CONTAINER_ERRORS`)
    become :class:`~ofi_fast.errors.TruncatedError` naming the file. Reads go through
    ``read1`` pieces, so the data decompressed before a cut is returned first and the error is
    raised by the next read; the line reader that meets it names the line."""

    piece = 1 << 18

    def __init__(self, f, path: str):
        self.f = f
        self.path = path
        self.name = path
        self.failed = None

    def _error(self, exc):
        return TruncatedError(f"file is truncated or its compressed data is corrupt "
                              f"({type(exc).__name__}: {exc})", path=self.path)

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except CONTAINER_ERRORS as exc:
            raise self._error(exc) from None

    def read(self, n: int = -1) -> bytes:
        if self.failed is not None:
            raise self.failed
        parts, got = [], 0
        while n < 0 or got < n:
            try:
                data = self.f.read1(self.piece if n < 0 else min(self.piece, n - got))
            except CONTAINER_ERRORS as exc:
                self.failed = self._error(exc)
                if not parts:
                    raise self.failed from None
                break
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def readline(self, n: int = -1) -> bytes:
        return self._call(self.f.readline, n)

    def peek(self, n: int = 1) -> bytes:
        return self._call(self.f.peek, n)

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_on_error(on_error: str) -> str:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    return on_error


def open_binary(path, member: str | None = None):
    """Open ``path`` for binary reading: plain, ``.gz`` (by magic bytes), or a ``.zip`` member.

    Compressed data comes through a :class:`CheckedFile`: a damaged container (a zip whose
    directory is unreadable, a truncated member, corrupt deflate data, a bad CRC) raises :class:`TruncatedError` (a
    :class:`ParseError`) naming the file, never a raw zlib / zipfile / EOF error.
    """
    path = os.fspath(path)
    if member is not None or path.endswith(".zip"):
        try:
            zf = zipfile.ZipFile(path)
            if member is None:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise ParseError(f"zip holds {len(names)} files; name the member",
                                     path=path, line=0)
                member = names[0]
            return CheckedFile(zf.open(member), path)
        except (*CONTAINER_ERRORS, KeyError, NotImplementedError, RuntimeError) as exc:
            raise TruncatedError(f"unreadable zip archive ({type(exc).__name__}: {exc})",
                                 path=path) from None
    f = open(path, "rb")
    if f.peek(2)[:2] == b"\x1f\x8b":
        return CheckedFile(gzip.GzipFile(fileobj=f), path)
    return f


def uncompressed_size(path, member: str | None = None) -> int | None:
    """Bytes of a plain file or of a zip member (None for gzip, whose size is not stored)."""
    path = os.fspath(path)
    if member is not None:
        return zipfile.ZipFile(path).getinfo(member).file_size
    with open(path, "rb") as f:
        if f.read(2) == b"\x1f\x8b":
            return None
    return os.path.getsize(path)


class ErrorLog:
    """Counts (and keeps the first few of) the malformed lines skipped under ``on_error='skip'``.

    Nothing is dropped without a count: readers expose one of these as ``.errors``.
    """

    keep = 20

    def __init__(self, path, on_error: str):
        self.path = str(path)
        self.on_error = check_on_error(on_error)
        self.count = 0
        self.first: list[tuple[int, str]] = []  # (1-based line, reason)
        # Set when the container ended early (truncated .gz / zip member, corrupt deflate data)
        # and on_error="skip" kept what came before the cut: (1-based line of the cut, reason).
        self.truncated: tuple[int, str] | None = None

    def bad(self, line: int, reason: str, field: str | None = None) -> None:
        """Report a malformed line: raise :class:`ParseError` (with ``field`` when known) or
        count it."""
        if self.on_error == "raise":
            raise ParseError(reason, path=self.path, line=line, field=field)
        self.count += 1
        if len(self.first) < self.keep:
            self.first.append((line, reason))

    def cut_short(self, exc: "TruncatedError", line: int, partial: bool) -> None:
        """The container ended early at ``line`` (the first line not read whole): raise
        :class:`TruncatedError` naming the file and line, or (``on_error="skip"``) keep what
        came before, record ``truncated = (line, reason)`` and count the partial line lost."""
        reason = f"file is truncated at line {line}: {exc.reason}"
        if self.on_error == "raise":
            raise TruncatedError(exc.reason, path=self.path, line=line) from None
        self.truncated = (line, reason)
        if partial:
            self.count += 1
            if len(self.first) < self.keep:
                self.first.append((line, reason))

    def __repr__(self):
        return f"ErrorLog({self.path!r}, skipped={self.count}, first={self.first[:3]})"



#: The values of a reader's ``time_order`` (which clock must not go backwards in file order).
TIME_ORDERS = (None, "local", "exchange")


def check_time_order(time_order):
    if time_order not in TIME_ORDERS:
        raise ValueError(f"time_order must be None, 'local' or 'exchange', not {time_order!r}")
    return time_order


class TimeOrder:
    """Holds one clock to file order: a message (or row) earlier than the latest one judged
    before it is a malformed line, reported through ``errors`` (an :class:`ErrorLog`) with its
    line and ``field``: a ``ParseError`` by default, or, under ``on_error="skip"``, counted and
    dropped (the rows after it are held to the latest time kept). Times equal to
    :data:`NO_TIME` are not judged.

    The readers of L2 deltas judge update messages only: a snapshot's time does not order it
    (it resets the book; a resync's snapshot may be older than diffs already applied).
    ``clock``: "local" or "exchange", the clock judged (the message then names the other one
    to try, and :meth:`pick` chooses between a row's two times), or None (one clock only).
    """

    def __init__(self, errors: ErrorLog, field: str, clock: str | None = None):
        self.errors = errors
        self.field = field
        self.local = clock == "local"
        self.other = None if clock is None else ("exchange" if self.local else "local")
        self.last: int | None = None

    @classmethod
    def of(cls, errors: ErrorLog, time_order: str | None, local_field: str,
           exchange_field: str) -> TimeOrder | None:
        """A reader's judge of ``time_order`` (see :data:`TIME_ORDERS`): the clock's field
        is ``local_field`` or ``exchange_field``; None when nothing is judged."""
        if check_time_order(time_order) is None:
            return None
        return cls(errors, local_field if time_order == "local" else exchange_field, time_order)

    def pick(self, ts_local, ts_exchange):
        """The judged clock's time (or array) of the two."""
        return ts_local if self.local else ts_exchange

    def _bad(self, line: int, t: int) -> None:
        hint = f"; --clock {self.other} reads the other clock" if self.other else ""
        self.errors.bad(int(line), f"{self.field}: time goes backwards: {t} ns after "
                        f"{self.last} ns (rows must be in time order{hint})", self.field)

    def ok(self, line: int, t: int) -> bool:
        """Judge one message at ``line`` with time ``t`` (ns); False: it is to be dropped."""
        if t == NO_TIME:
            return True
        if self.last is not None and t < self.last:
            self._bad(line, t)
            return False
        self.last = t
        return True

    def ok_message(self, line: int, times) -> bool:
        """Judge one message whose rows carry ``times`` (in row order) at once: every time must
        be >= the one before it and the latest judged; on failure it is reported once and
        nothing moves (the message is to be dropped whole)."""
        last = self.last
        for t in times:
            if t == NO_TIME:
                continue
            if last is not None and t < last:
                self._bad(line, t)
                return False
            last = t
        self.last = last
        return True

    def keep(self, ts, lines, judged=None):
        """Judge the rows of a chunk at once (``lines``: each row's line; ``judged``: a mask
        of the rows to judge, default all): None when every row is in order (the common case,
        one vectorised test), else the mask of the rows to keep."""
        t = ts if judged is None else ts[judged]
        t = t[t != NO_TIME]
        if not len(t):
            return None
        if (self.last is None or t[0] >= self.last) and not (t[1:] < t[:-1]).any():
            self.last = int(t[-1])
            return None
        keep = np.ones(len(ts), bool)
        for i in (range(len(ts)) if judged is None else np.flatnonzero(judged)):
            keep[i] = self.ok(int(lines[i]), int(ts[i]))   # rare: raises at the first, or skip
        return keep

class LineBlocks:
    """Read a binary stream as blocks of whole lines, at most ``n`` lines per block.

    Carries the partial last line over to the next block; adds a final newline when the file
    lacks one; strips ``\r``. ``line`` is the 1-based number of the first line of the next block.
    Cutting after the n-th newline starts from a position estimated from the mean line length
    and corrects it with C-level ``count`` / ``find``, so a block costs O(its bytes).
    """

    def __init__(self, f, block_bytes: int = 1 << 22, errors: "ErrorLog | None" = None):
        self.f = f
        self.block_bytes = block_bytes
        self.errors = errors
        self.path = errors.path if errors is not None else getattr(f, "name", None)
        self.buf = b""
        self.nl = 0  # newlines in buf
        self.eof = False
        self.line = 1
        self.dropping = False  # skipping the rest of an over-long line (on_error="skip")

    def _read(self, n: int) -> bytes:
        try:
            return self.f.read(n)
        except TruncatedError as exc:
            # the cut is in the first line not yet complete: the partial line after the last
            # newline is lost (never handed out as if it were whole)
            cut_line = self.line + self.nl
            i = self.buf.rfind(b"\n")
            partial = len(self.buf) > i + 1 or self.dropping
            self.buf = self.buf[:i + 1]
            self.dropping = False
            log = self.errors if self.errors is not None else ErrorLog(self.path, "raise")
            log.cut_short(exc, cut_line, partial)
            self.eof = True
            return b""

    def _too_long(self) -> None:
        """The buffer's last line exceeds MAX_LINE_BYTES: raise ParseError, or (skip) replace
        it by a short placeholder line that the reader counts as malformed at its number."""
        i = self.buf.rfind(b"\n")
        line = self.line + self.nl
        if self.errors is None or self.errors.on_error == "raise":
            raise ParseError(f"line longer than {MAX_LINE_BYTES >> 20} MiB (MAX_LINE_BYTES)",
                             path=self.path, line=line)
        self.buf = self.buf[:i + 1] + _LONG_LINE
        self.dropping = True

    def _fill(self, want: int) -> None:
        data = self._read(min(max(self.block_bytes, want), MAX_READ_BYTES))
        if data and self.dropping:
            j = data.find(b"\n")
            if j < 0:
                return      # still inside the over-long line
            self.dropping = False
            data = data[j:]  # its newline ends the placeholder
        if not data:
            self.eof = True
            self.dropping = False
            if self.buf and self.buf[-1] != _NL:
                self.buf += b"\n"
                self.nl += 1
            return
        if b"\r" in data:
            data = data.replace(b"\r", b"")
        old = len(self.buf)
        self.buf += data
        self.nl += data.count(b"\n")
        if len(data) > MAX_LINE_BYTES // 2:
            self._check_complete(max(0, old - MAX_LINE_BYTES))
        if len(self.buf) - (self.buf.rfind(b"\n") + 1) > MAX_LINE_BYTES:
            self._too_long()

    def _check_complete(self, start: int) -> None:
        """Complete lines over MAX_LINE_BYTES in buf[start:] (one read can hold them whole).
        Such a line covers a whole window of MAX_LINE_BYTES // 2 bytes without a newline, so
        only len / (8 MiB) windows are searched, not every line."""
        h = MAX_LINE_BYTES // 2
        w = start
        while w + h <= len(self.buf):
            if self.buf.find(b"\n", w, w + h) < 0:
                lo = self.buf.rfind(b"\n", 0, w) + 1
                hi = self.buf.find(b"\n", w)
                if hi >= 0 and hi - lo > MAX_LINE_BYTES:
                    line = self.line + self.buf.count(b"\n", 0, lo)
                    if self.errors is None or self.errors.on_error == "raise":
                        raise ParseError(f"line longer than {MAX_LINE_BYTES >> 20} MiB "
                                         "(MAX_LINE_BYTES)", path=self.path, line=line)
                    self.buf = self.buf[:lo] + _LONG_LINE + self.buf[hi:]
                    w = lo + len(_LONG_LINE)
                    continue
                if hi < 0:
                    return      # the partial last line: checked by the caller
                w = hi + 1
                continue
            w += h

    def _cut(self, n: int) -> int:
        """Index just after the n-th newline of buf (buf holds more than n newlines)."""
        buf = self.buf
        est = min(len(buf), int(n * len(buf) / self.nl))
        c = buf.count(b"\n", 0, est)
        pos = est
        if c < n:
            for _ in range(n - c):
                pos = buf.find(b"\n", pos) + 1
            return pos
        for _ in range(c - n + 1):
            pos = buf.rfind(b"\n", 0, pos)
        return pos + 1

    def take(self, n: int) -> tuple[bytes, int]:
        """Up to ``n`` complete lines (bytes ending in a newline) and their count; (b"", 0) at end."""
        while self.nl < n and not self.eof:
            avg = len(self.buf) / self.nl if self.nl else 256
            self._fill(int((n - self.nl) * avg * 1.1))
        if self.nl < n or (self.nl == n and (not self.buf or self.buf[-1] == _NL)):
            # at end of file (a partial last line has been closed by _fill), or exactly n lines
            out, cnt = self.buf, self.nl
            self.buf = b""
            self.nl = 0
        else:
            cut = self._cut(n)
            out, cnt = self.buf[:cut], n
            self.buf = self.buf[cut:]
            self.nl -= n
        self.line += cnt
        return out, cnt

    def lines(self) -> Iterable[tuple[int, bytes]]:
        """Every line (without newline) with its 1-based number."""
        while True:
            block, cnt = self.take(DEFAULT_CHUNK_ROWS)
            if not cnt:
                return
            first = self.line - cnt
            for i, ln in enumerate(block.split(b"\n")[:cnt]):
                yield first + i, ln


class BlockPrefetcher:
    """Read ``block_bytes`` blocks of ``f`` in a background thread, at most ``depth`` ahead.

    Inflating a zip or gzip member (zlib) and reading a file release the GIL, and so does the
    tokenizer, so decompression of the next block overlaps the parsing of this one. Memory:
    ``depth + 1`` blocks. :meth:`read` returns the next block (``b""`` at the end) or re-raises
    the exception the thread met; :meth:`close` stops and joins the thread (``f`` stays open:
    its owner closes it after).
    """

    def __init__(self, f, block_bytes: int, depth: int = 2):
        self.f = f
        self.block_bytes = block_bytes
        self.q = queue.Queue(depth)
        self.stopped = False
        self.done = False
        self.thread = threading.Thread(target=self._run, name="ofi_fast-prefetch", daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped:
            try:
                data = self.f.read(self.block_bytes)
            except BaseException as exc:  # handed to the reading thread
                data = exc
            while not self.stopped:
                try:
                    self.q.put(data, timeout=0.05)
                    break
                except queue.Full:
                    pass
            if not isinstance(data, bytes) or not data:
                return

    def read(self, n: int = -1) -> bytes:
        if self.done:
            return b""
        data = self.q.get()
        if isinstance(data, BaseException):
            self.done = True
            raise data
        if not data:
            self.done = True
        return data

    def close(self) -> None:
        self.stopped = True
        self.thread.join()


class _LongLine(Exception):
    """A partial line grew past MAX_LINE_BYTES (internal to TokenSource)."""


class TokenSource:
    """Feed whole lines of a binary stream to a compiled :class:`ofi_fast._csv.Tokenizer`.

    Reads ``block_bytes`` at a time (through a :class:`BlockPrefetcher` when ``prefetch``);
    memory: a few blocks plus the partial line carried over. :meth:`read` parses up to
    ``max_lines`` lines straight into the caller's output arrays. Malformed lines go to
    ``errors`` (an :class:`ErrorLog`): it raises ``ParseError`` with the 1-based line number and
    the field, or (``on_error="skip"``) counts the line and parsing continues with the next one.
    ``skip_lines`` header lines are skipped first. ``line`` is the 1-based number of the next
    line to read; ``bad_ids`` counts ``ID`` fields read as -1; ``other`` counts lines a
    ``MATCH`` column skipped (another symbol's rows). Call :meth:`close` (or use it as
    a context manager) before closing ``f``.

    Block boundaries: the partial line at the end of a block is joined with the start of the
    next block up to its first newline (a short buffer); the rest of that block is parsed in
    place, so a block is never copied.
    """

    def __init__(self, f, tok, errors: ErrorLog, *, skip_lines: int = 0,
                 block_bytes: int = 1 << 22, prefetch: bool = False):
        self.f = BlockPrefetcher(f, block_bytes) if prefetch else f
        self.tok = tok
        self.errors = errors
        self.block_bytes = block_bytes
        self.buf = b""
        self.pos = 0
        self.pending = None  # (block, offset): the rest of a block after a joined line
        self.final = False
        self.line = 1
        self.bad_ids = 0
        self.other = 0
        for _ in range(skip_lines):
            self.skip_line()

    def close(self) -> None:
        if isinstance(self.f, BlockPrefetcher):
            self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def fill(self) -> None:
        """Make more bytes available after the unparsed tail (or note the end of the stream)."""
        if self.pending is not None:
            self.buf, self.pos = self.pending
            self.pending = None
            return
        data = self.f.read(self.block_bytes)
        if not data:
            self.final = True
            return
        if self.pos < len(self.buf):  # a partial line: join it with the next line only
            tail = self.buf[self.pos:]
            i = data.find(b"\n")
            if i < 0:
                if len(tail) + len(data) > MAX_LINE_BYTES:
                    self.buf, self.pos, self.pending = b"", 0, None
                    raise _LongLine(False)
                self.buf = tail + data
            elif len(tail) + i > MAX_LINE_BYTES:
                self.buf, self.pos, self.pending = b"", 0, (data, i + 1)
                raise _LongLine(True)
            else:
                self.buf = tail + data[:i + 1]
                self.pending = (data, i + 1)
        else:
            self.buf = data
        self.pos = 0

    def estimate_lines(self, total_bytes: int | None) -> int | None:
        """Lines left in a stream of ``total_bytes`` uncompressed bytes, extrapolated from the
        first 256 KiB of the first block, plus 5 % margin (an under-estimate only costs the
        arrays a doubling); None if unknown."""
        if not self.buf and not self.final:
            self.fill()
        seen = min(len(self.buf) - self.pos, 1 << 18)
        nl = self.buf.count(b"\n", self.pos, self.pos + seen)
        if not total_bytes or not seen:
            return None if not self.final else nl + 1
        return int(total_bytes * max(nl, 1) / seen * 1.05) + 64

    def first_line(self) -> bytes:
        """The next line (without its end), not consumed; b"" at the end of the stream."""
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0 or self.final:
                return self.buf[self.pos:(i if i >= 0 else len(self.buf))].rstrip(b"\r")
            self._fill_at(0)

    def skip_line(self) -> None:
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0 or self.final:
                if i >= 0 or self.pos < len(self.buf):
                    self.line += 1
                self.pos = i + 1 if i >= 0 else len(self.buf)
                return
            self._fill_at(0)

    def _fill_at(self, lines: int) -> bool:
        """:meth:`fill`, with the container's end and over-long lines handled at line
        ``self.line + lines``; returns True when a long line was dropped (skip) in its place."""
        try:
            self.fill()
        except TruncatedError as exc:
            partial = self.pos < len(self.buf)
            self.errors.cut_short(exc, self.line + lines, partial)  # raises unless skip
            self.buf, self.pos, self.pending, self.final = b"", 0, None, True
        except _LongLine as exc:
            self.errors.bad(self.line + lines,
                            f"line longer than {MAX_LINE_BYTES >> 20} MiB (MAX_LINE_BYTES)")
            if not exc.args[0]:      # its newline is still ahead: read up to it
                self._drop_line(lines)
            return True
        return False

    def _drop_line(self, lines: int) -> None:
        # skip: discard the over-long line up to its newline (or the end of the stream)
        while True:
            try:
                data = self.f.read(self.block_bytes)
            except TruncatedError as exc:
                self.errors.cut_short(exc, self.line + lines, False)
                self.final = True
                return
            if not data:
                self.final = True
                return
            i = data.find(b"\n")
            if i >= 0:
                self.buf, self.pos = data, i + 1
                return

    def read(self, outs, max_lines: int, row0: int = 0, lines_out=None):
        """Parse up to ``max_lines`` lines into ``outs`` (rows from ``row0``).

        Returns ``(rows, lines, bad)``: rows written, lines consumed (0 only at the end of the
        stream) and the 0-based indices, within these lines, of the malformed lines skipped.
        ``lines_out`` (an int64 array as long as the outputs): each row's 1-based line number
        in the stream, written at the row's index (exact whatever was skipped before it).
        """
        tok = self.tok.bind(outs, lines_out)
        rows = lines = 0
        bad = []
        while lines < max_lines:
            st, pos, nl, nr, field, fs, fe, nxt, nbad, nother = tok.parse(
                self.buf, self.pos, max_lines - lines, self.final, row0 + rows,
                self.line + lines)
            self.pos = pos
            lines += nl
            rows += nr
            self.bad_ids += nbad
            self.other += nother
            if st == 0:
                if lines >= max_lines or self.final:
                    break
                if self._fill_at(lines):   # an over-long line was counted and dropped
                    bad.append(lines)
                    lines += 1
                continue
            reason = tok.describe(st, field, bytes(self.buf[fs:min(fe, fs + 100)]))
            name = tok.names[field] if 0 <= field < len(tok.names) else None
            self.errors.bad(self.line + lines, reason, name)  # raises under on_error="raise"
            bad.append(lines)
            lines += 1
            self.pos = nxt
        tok.unbind()
        self.line += lines
        return rows, lines, bad


class Arrays:
    """Base of the readers' chunk containers: each subclass is a frozen dataclass of
    equal-length numpy columns (module-level, so it pickles and is typed), with ``DTYPES``
    ({column: dtype}) in field order."""

    DTYPES: ClassVar[dict[str, np.dtype]]

    def __len__(self) -> int:
        return len(getattr(self, dataclasses.fields(self)[0].name))

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def concat(cls, chunks: list):
        """One container holding the rows of ``chunks`` in order (an empty one if none)."""
        if len(chunks) == 1:
            return chunks[0]
        out = {}
        for f in dataclasses.fields(cls):
            parts = [getattr(c, f.name) for c in chunks]
            if parts:
                out[f.name] = np.concatenate(parts)
            else:
                out[f.name] = cls._empty(f.name)
        return cls(**out)

    @classmethod
    def _empty(cls, name):
        return np.empty(0, dtype=cls.DTYPES[name])

    def take(self, mask):
        return type(self)(**{k: v[mask] for k, v in self.as_dict().items()})


def decimal_to_int(s: bytes | str, digits: int) -> int:
    """Exact conversion of a decimal string to an integer in units of ``10**-digits``.

    ``"34200.00426064"`` with ``digits=9`` -> ``34200004260640``. Decimals beyond ``digits`` are
    rounded to the nearest unit, halves away from zero (``"1.0000000005"`` -> 1000000001), in
    integer arithmetic. Raises ValueError when the string is not a plain decimal.
    """
    if isinstance(s, bytes):
        s = s.decode("ascii")
    s = s.strip()
    neg = s.startswith("-")
    if neg or s.startswith("+"):
        s = s[1:]
    whole, dot, frac = s.partition(".")
    if not s.isascii() or (not whole and not frac) or (whole and not whole.isdigit()) or (
            frac and not frac.isdigit()):
        raise ValueError(f"not a decimal number: {s!r}")
    extra = 0
    if len(frac) > digits:
        extra = int(frac[digits] >= "5")
        frac = frac[:digits]
    v = int(whole or "0") * 10**digits + int((frac or "0").ljust(digits, "0")) + extra
    return -v if neg else v


