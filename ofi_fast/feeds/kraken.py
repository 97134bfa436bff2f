"""Kraken WebSocket v1 ``book`` captures: snapshot + updates -> price-level deltas, with every
CRC32 checksum verified against the rebuilt top 10.

Messages (docs.kraken.com, "WebSocket API v1 - book"): ``[channelID, {"as": [...], "bs": [...]},
"book-D", pair]`` snapshot; ``[channelID, {"a": [...]}, ({"b": [...], "c": "crc"}), "book-D",
pair]`` updates, entries ``[price, volume, timestamp(, "r")]``, volume = new absolute size
(0 deletes). Checksum (Kraken "Book checksum" guide): for the 10 best asks (ascending) then the 10
best bids (descending), concatenate price and volume strings with the ``.`` removed and leading
zeros stripped; CRC32 of that as an unsigned 32-bit integer. The book is kept to the subscribed
depth D (levels pushed beyond D are removed, as Kraken requires of clients).

The reader keeps a small pure-Python book (prices as the exact strings Kraken sent) for the
chosen pair. A checksum mismatch raises :class:`~ofi_fast.errors.ChecksumError` (a subclass of
:class:`~ofi_fast.errors.SequenceGapError`) naming the file and line of the message, the pair
and both checksums (``on_gap="raise"``), or under ``on_gap="resync"`` drops the pair's updates
(counted) until the next snapshot. Output rows: ``ts_exchange`` = the level's own
timestamp, ``ts_local`` = the recorder's, ``update_id`` = -1 (Kraken v1 has no sequence id).
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import heapq
import zlib

from ofi_fast.errors import ChecksumError, ParseError, SequenceGapError
from ofi_fast.feeds._common import (
    DEFAULT_CHUNK_ROWS,
    ErrorLog,
    TimeOrder,
    check_time_order,
    decimal_to_int,
)
from ofi_fast.feeds._l2 import (
    FLAG_BATCH_END,
    FLAG_CLEAR,
    FLAG_SNAPSHOT,
    BookDeltas,
    Columns,
    Trades,
)
from ofi_fast.feeds._recorded import recorded_messages


def _digits(s: str) -> str:
    return s.replace(".", "").lstrip("0")


def kraken_checksum(asks: dict, bids: dict) -> int:
    """CRC32 of the top 10 levels; ``asks``/``bids`` map float price -> (price str, volume str)."""
    parts = []
    for p in heapq.nsmallest(10, asks):
        ps, vs = asks[p]
        parts.append(_digits(ps) + _digits(vs))
    for p in heapq.nlargest(10, bids):
        ps, vs = bids[p]
        parts.append(_digits(ps) + _digits(vs))
    return zlib.crc32("".join(parts).encode()) & 0xFFFFFFFF


class KrakenBookReader:
    """Read one pair's book from a Kraken v1 capture (cryptofeed layout); see module doc.

    ``pair`` defaults to the first pair with a book message; other pairs are counted in
    ``stats["other_pair"]``. ``stats["checksums_verified"]`` counts verified messages.
    Iterating yields :class:`BookDeltas` of about ``chunk_rows`` rows; :meth:`read` one.

    ``time_order``: ``"local"`` (the recorder's receive time) or ``"exchange"`` (the levels'
    own times, in row order): an update earlier on that clock than the rows before it is a
    malformed message (``ParseError`` naming file and line, or skipped whole and counted, and
    the next checksum then fails: the book resyncs); snapshots are not judged (their levels
    carry the times they were last changed). None (default): not judged here.
    """

    def __init__(self, path, *, pair=None, verify: bool = True,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, on_gap: str = "raise",
                 on_error: str = "raise", time_order: str | None = None):
        if on_gap not in ("raise", "resync"):
            raise ValueError(f"on_gap must be 'raise' or 'resync', not {on_gap!r}")
        self.path = str(path)
        self.time_order = check_time_order(time_order)
        self.pair = pair
        self.verify = verify
        self.chunk_rows = int(chunk_rows)
        self.on_gap = on_gap
        self.errors = ErrorLog(self.path, on_error)

    def __iter__(self):
        self.stats = st = {"lines": 0, "markers": 0, "events": 0, "snapshots": 0, "updates": 0,
                           "checksums_verified": 0, "other_pair": 0, "other_channel": 0,
                           "dropped_gap": 0, "before_snapshot": 0, "gaps": []}
        out = Columns(BookDeltas)
        self._asks, self._bids = {}, {}
        self._synced = False
        self._order = TimeOrder.of(self.errors, self.time_order, "ts_local", "time")
        for no, ts_local, msg in recorded_messages(self.path, self.errors, st):
            st["lines"] += 1
            if isinstance(msg, dict):
                st["events"] += 1
                continue
            try:
                if (not isinstance(msg, list) or len(msg) < 4 or not isinstance(msg[-2], str)
                        or not isinstance(msg[-1], str)):
                    raise ValueError("not [channelID, payload..., channelName, pair]")
                if not msg[-2].startswith("book"):
                    st["other_channel"] += 1
                    continue
                if self.pair is None:
                    self.pair = msg[-1]
                if msg[-1] != self.pair:
                    st["other_pair"] += 1
                    continue
                self._depth = int(msg[-2].partition("-")[2] or 10)
                self._message(no, ts_local, msg[1:-2], out)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                if isinstance(exc, (SequenceGapError, ParseError)):   # ParseError: time order
                    raise
                self.errors.bad(no, f"bad Kraken book message ({type(exc).__name__}: {exc})")
            if len(out) >= self.chunk_rows:
                yield out.flush()
        if len(out):
            yield out.flush()

    def read(self):
        """The whole capture (for the chosen pair) as one :class:`BookDeltas`."""
        return BookDeltas.concat(list(self))

    def _message(self, no, ts_local, payloads, out):
        st = self.stats
        if not payloads or not all(isinstance(p, dict) for p in payloads):
            raise ValueError("book payloads are not objects")
        rows = []
        if "as" in payloads[0] or "bs" in payloads[0]:
            asks, bids = {}, {}
            for key, side, book in (("bs", 1, bids), ("as", -1, asks)):
                for e in payloads[0].get(key, []):
                    p, v, t = self._entry(e)
                    book[float(p)] = (p, v)
                    rows.append((t, side, float(p), float(v)))
            self._asks, self._bids, self._synced = asks, bids, True
            st["snapshots"] += 1
            for i, (t, side, p, v) in enumerate(rows):
                out.append(t, ts_local, side, p, v, -1, FLAG_SNAPSHOT | (FLAG_CLEAR if i == 0 else 0)
                           | (FLAG_BATCH_END if i == len(rows) - 1 else 0))
            return
        if not self._synced:
            st["before_snapshot"] += 1
            return
        checksum = None
        parsed = []
        for pl in payloads:
            for key, side in (("a", -1), ("b", 1)):
                for e in pl.get(key, []):
                    parsed.append((side, *self._entry(e)))
            if "c" in pl:
                checksum = int(pl["c"])
        if not parsed:
            raise ValueError("update without a or b levels")
        if self._order is not None and not self._order.ok_message(
                no, [ts_local] if self._order.local else [x[3] for x in parsed]):
            return
        asks, bids = dict(self._asks), dict(self._bids)   # commit only when verified
        for side, p, v, t in parsed:
            book = bids if side == 1 else asks
            fp = float(p)
            if float(v) == 0.0:
                book.pop(fp, None)
            else:
                book[fp] = (p, v)
            rows.append((t, side, fp, float(v)))
        for book, worst in ((asks, heapq.nlargest), (bids, heapq.nsmallest)):
            if len(book) > self._depth:
                for fp in worst(len(book) - self._depth, book):
                    del book[fp]
        if self.verify and checksum is not None:
            got = kraken_checksum(asks, bids)
            if got != checksum:
                detail = (f"{self.path}:{no}: Kraken checksum mismatch for {self.pair}: "
                          f"message says {checksum}, rebuilt top-10 book gives {got}")
                if self.on_gap == "raise":
                    raise ChecksumError(detail, field="c", index=no, expected=checksum, got=got)
                st["gaps"].append((no, detail))
                st["dropped_gap"] += 1
                self._synced = False
                return
            st["checksums_verified"] += 1
        self._asks, self._bids = asks, bids
        st["updates"] += 1
        for i, (t, side, p, v) in enumerate(rows):
            out.append(t, ts_local, side, p, v, -1, FLAG_BATCH_END if i == len(rows) - 1 else 0)

    @staticmethod
    def _entry(e):
        if not isinstance(e, list) or len(e) < 3:
            raise ValueError(f"level entry {e!r} is not [price, volume, time, ...]")
        p, v, t = e[0], e[1], e[2]
        fp, fv = float(p), float(v)
        if not (fp > 0 and fv >= 0 and fp < float("inf") and fv < float("inf")):
            raise ValueError(f"bad price/volume {p!r}/{v!r}")
        return p, v, decimal_to_int(t, 9)


def read_kraken_book(path: str | os.PathLike[str], **kwargs: Any) -> BookDeltas:
    """Whole-file convenience: ``KrakenBookReader(path, **kwargs).read()``."""
    return KrakenBookReader(path, **kwargs).read()


_TAKER_SIDE = {"b": 1, "s": -1}


class KrakenTradesReader:
    """Kraken WebSocket v1 ``trade`` captures -> :class:`Trades` (one pair).

    Messages (docs.kraken.com, "WebSocket API v1 - trade"): ``[channelID, [[price, volume,
    time, side, orderType, misc], ...], "trade", pair]``; ``side`` is the taker's (``b`` buy ->
    buyer-initiated +1, ``s`` sell -> -1), ``time`` decimal seconds -> int64 ns exactly. Kraken
    v1 trades carry no id: ``trade_id`` = -1. ``pair`` defaults to the first pair with a trade
    message; other pairs are counted in ``stats["other_pair"]``, trade messages in
    ``stats["messages"]``. A malformed message raises ParseError (file, line) or, under
    ``on_error="skip"``, is counted in ``errors``.
    """

    def __init__(self, path, *, pair=None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 on_error: str = "raise"):
        self.path = str(path)
        self.pair = pair
        self.chunk_rows = int(chunk_rows)
        self.errors = ErrorLog(self.path, on_error)

    def __iter__(self):
        self.stats = st = {"lines": 0, "markers": 0, "events": 0, "messages": 0, "trades": 0,
                           "other_pair": 0, "other_channel": 0}
        out = Columns(Trades)
        for no, ts_local, msg in recorded_messages(self.path, self.errors, st):
            st["lines"] += 1
            if isinstance(msg, dict):
                st["events"] += 1
                continue
            try:
                if (isinstance(msg, list) and len(msg) >= 4 and isinstance(msg[-2], str)
                        and msg[-2] != "trade"):
                    # another channel's message (a book update has 4 or 5 elements)
                    st["other_channel"] += 1
                    continue
                if (not isinstance(msg, list) or len(msg) != 4 or not isinstance(msg[2], str)
                        or not isinstance(msg[3], str)):
                    raise ValueError("not [channelID, trades, channelName, pair]")
                if self.pair is None:
                    self.pair = msg[3]
                if msg[3] != self.pair:
                    st["other_pair"] += 1
                    continue
                if not isinstance(msg[1], list) or not msg[1]:
                    raise ValueError("trade payload is not a non-empty list")
                rows = [self._trade(e, ts_local) for e in msg[1]]
            except (TypeError, ValueError, IndexError, AttributeError) as exc:
                self.errors.bad(no, f"bad Kraken trade message ({type(exc).__name__}: {exc})")
                continue
            st["messages"] += 1
            st["trades"] += len(rows)
            out.extend(rows)
            if len(out) >= self.chunk_rows:
                yield out.flush()
        if len(out):
            yield out.flush()

    def read(self):
        """The whole capture (for the chosen pair) as one :class:`Trades`."""
        return Trades.concat(list(self))

    @staticmethod
    def _trade(e, ts_local):
        if not isinstance(e, list) or len(e) < 4:
            raise ValueError(f"trade entry {e!r} is not [price, volume, time, side, ...]")
        price, size = float(e[0]), float(e[1])
        if not (0 < price < float("inf") and 0 <= size < float("inf")):
            raise ValueError(f"bad price/volume {e[0]!r}/{e[1]!r}")
        side = _TAKER_SIDE.get(e[3])
        if side is None:
            raise ValueError(f"side {e[3]!r} is not 'b' or 's'")
        # Trades columns: ts_exchange, ts_local, price, size, side, trade_id
        return decimal_to_int(e[2], 9), ts_local, price, size, side, -1


def read_kraken_trades(path: str | os.PathLike[str], **kwargs: Any) -> Trades:
    """Whole-file convenience: ``KrakenTradesReader(path, **kwargs).read()``."""
    return KrakenTradesReader(path, **kwargs).read()
