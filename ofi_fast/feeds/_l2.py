"""Array containers shared by the exchange-stream readers (Binance, Tardis, Coinbase, Kraken,
Bitstamp, generic): price-level deltas, trades and best quotes, plus the flags of delta rows."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from ofi_fast.feeds._common import Arrays

#: ``flags`` bits of a :class:`BookDeltas` row.
FLAG_SNAPSHOT = 1   #: the row is a level of a (REST / initial / re-sent) snapshot
FLAG_CLEAR = 2      #: discard the whole book *before* applying this row (first row of a snapshot)
FLAG_BATCH_END = 4  #: last row of one exchange message: the book is consistent after this row


@dataclasses.dataclass(frozen=True, eq=False)
class BookDeltas(Arrays):
    """Price-level deltas: absolute size per (side, price); apply in order. A consumer rebuilds the
    book by clearing it on FLAG_CLEAR and reads a consistent state after each FLAG_BATCH_END
    row."""

    ts_exchange: NDArray[np.int64]  # exchange event time, ns since epoch (NO_TIME if not given)
    ts_local: NDArray[np.int64]  # local receive time, ns since epoch (NO_TIME if not recorded)
    side: NDArray[np.int8]  # +1 bid, -1 ask
    price: NDArray[np.float64]  # price level
    size: NDArray[np.float64]  # new absolute size at that level; 0 deletes the level
    update_id: NDArray[np.int64]  # exchange sequence id of the message (Binance u / lastUpdateId)
    flags: NDArray[np.uint8]  # FLAG_SNAPSHOT | FLAG_CLEAR | FLAG_BATCH_END

    DTYPES: ClassVar[dict[str, np.dtype]] = {
        "ts_exchange": np.dtype(np.int64),
        "ts_local": np.dtype(np.int64),
        "side": np.dtype(np.int8),
        "price": np.dtype(np.float64),
        "size": np.dtype(np.float64),
        "update_id": np.dtype(np.int64),
        "flags": np.dtype(np.uint8),
    }


@dataclasses.dataclass(frozen=True, eq=False)
class Trades(Arrays):
    """Trade prints with the aggressor side."""

    ts_exchange: NDArray[np.int64]  # trade time, ns since epoch
    ts_local: NDArray[np.int64]  # local receive time, ns (NO_TIME if not recorded)
    price: NDArray[np.float64]
    size: NDArray[np.float64]
    side: NDArray[np.int8]  # aggressor: +1 buyer-initiated, -1 seller-initiated, 0 unknown
    trade_id: NDArray[np.int64]  # exchange trade id (-1 if none)

    DTYPES: ClassVar[dict[str, np.dtype]] = {
        "ts_exchange": np.dtype(np.int64),
        "ts_local": np.dtype(np.int64),
        "price": np.dtype(np.float64),
        "size": np.dtype(np.float64),
        "side": np.dtype(np.int8),
        "trade_id": np.dtype(np.int64),
    }


@dataclasses.dataclass(frozen=True, eq=False)
class Quotes(Arrays):
    """Best bid / offer stream (e.g. Binance bookTicker)."""

    ts_exchange: NDArray[np.int64]  # exchange time, ns (NO_TIME if the feed does not give one)
    ts_local: NDArray[np.int64]
    bid_px: NDArray[np.float64]  # NaN if the side is empty
    bid_sz: NDArray[np.float64]
    ask_px: NDArray[np.float64]
    ask_sz: NDArray[np.float64]
    update_id: NDArray[np.int64]  # exchange sequence id (-1 if none)

    DTYPES: ClassVar[dict[str, np.dtype]] = {
        "ts_exchange": np.dtype(np.int64),
        "ts_local": np.dtype(np.int64),
        "bid_px": np.dtype(np.float64),
        "bid_sz": np.dtype(np.float64),
        "ask_px": np.dtype(np.float64),
        "ask_sz": np.dtype(np.float64),
        "update_id": np.dtype(np.int64),
    }


class Columns:
    """Row accumulator for one container class: rows are stored as tuples (one list append per
    row); ``flush()`` transposes them into the typed columns and empties the accumulator."""

    def __init__(self, cls):
        self.cls = cls
        self.names = list(cls.DTYPES)
        self.rows = []
        self._ints = [i for i, t in enumerate(cls.DTYPES.values()) if t.kind in "iu"]

    def __len__(self):
        return len(self.rows)

    def append(self, *values):
        """Add one row; a Python int that its integer column cannot hold is a ValueError (the
        reader reports it at the message's line) instead of an OverflowError at flush."""
        for i in self._ints:
            v = values[i]
            if not -0x8000000000000000 <= v <= 0x7FFFFFFFFFFFFFFF:
                raise ValueError(f"{self.names[i]} = {str(v)[:40]} does not fit in int64")
        self.rows.append(values)

    def extend(self, rows):
        """Append an iterable of row tuples."""
        self.rows.extend(rows)

    def flush(self):
        cols = list(zip(*self.rows)) if self.rows else [()] * len(self.names)
        out = {k: np.array(c, dtype=self.cls.DTYPES[k]) for k, c in zip(self.names, cols)}
        self.rows = []
        return self.cls(**out)
