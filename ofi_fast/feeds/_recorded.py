"""Line-level input of recorded WebSocket captures (cryptofeed, hftbacktest, bare JSON)."""

from __future__ import annotations

import datetime as _dt
import json

from ofi_fast.feeds._common import NO_TIME, LineBlocks, ascii_int, decimal_to_int, open_binary

try:  # optional, ~3x faster JSON
    import orjson as _orjson

    loads = _orjson.loads
    JSON_ERRORS = (ValueError, TypeError, _orjson.JSONDecodeError)
except ImportError:  # pragma: no cover
    loads = json.loads
    JSON_ERRORS = (ValueError, TypeError)


def split_line(line: bytes):
    """(local ns, or NO_TIME when absent, or None for a marker line; JSON bytes) of one line.

    Layouts: ``<ns> <json>`` (hftbacktest), ``<seconds>: <json>`` (cryptofeed),
    ``<url> -> <seconds>: <json>`` (cryptofeed http), ``wss://... <-> ...`` markers, ``<json>``.
    cryptofeed's ``wss://... <- <seconds>: <json>`` lines are our own subscribe requests: markers.
    """
    if line.startswith((b"{", b"[")):
        return NO_TIME, line
    if line.startswith((b"wss://", b"ws://")):
        return None, b""
    if line.startswith((b"https://", b"http://")):
        _, sep, rest = line.partition(b" -> ")
        if not sep:
            raise ValueError("http line without ' -> '")
        head, _, body = rest.partition(b": ")
        return _local_ns(decimal_to_int(head, 9)), body
    head, sep, body = line.partition(b" ")
    if not sep:
        raise ValueError("no space between the local time and the JSON")
    if head.endswith(b":"):
        return _local_ns(decimal_to_int(head[:-1], 9)), body
    return _local_ns(ascii_int(head)), body


def _local_ns(v: int) -> int:
    """A recorder's local time in ns: non-negative and within int64, else ValueError."""
    if not 0 < v < 2**63:
        raise ValueError(f"local time {v} ns is not a positive int64")
    return v


def recorded_messages(path, errors, stats, inspect=None):
    """Yield (line number, local ns, decoded JSON) of a capture; markers counted in stats.

    ``inspect(msg, line)``, when given, checks or completes each decoded message and returns
    it; a ValueError/TypeError it raises counts the line as malformed, as a decoding error does.
    """
    with open_binary(path) as f:
        for no, line in LineBlocks(f, errors=errors).lines():
            if not line.strip():
                continue
            try:
                ts_local, body = split_line(line)
                if ts_local is None:
                    stats["markers"] += 1
                    continue
                msg = loads(body)
                if inspect is not None:
                    msg = inspect(msg, line)
            except JSON_ERRORS as exc:
                errors.bad(no, f"malformed line ({exc}): {line[:80]!r}")
                continue
            yield no, ts_local, msg


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def iso_to_ns(s: str) -> int:
    """``"2021-04-17T16:43:37.075687Z"`` -> int ns since the epoch, exactly (UTC if no offset)."""
    if not isinstance(s, str):
        raise ValueError(f"time is not a string: {s!r}")
    body = s[:-1] if s.endswith("Z") else s
    head, dot, frac = body.partition(".")
    tz = ""
    if dot:
        for mark in ("+", "-"):
            if mark in frac:
                frac, _, off = frac.partition(mark)
                tz = mark + off
    d = _dt.datetime.fromisoformat(head + tz)
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    sec = (d - _EPOCH) // _dt.timedelta(seconds=1)
    if frac and not frac.isdigit():
        raise ValueError(f"bad fraction in {s!r}")
    return sec * 1_000_000_000 + decimal_to_int("0." + (frac or "0"), 9)
