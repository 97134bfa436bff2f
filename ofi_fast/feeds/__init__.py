"""Feed readers: files in the formats users hold -> numpy arrays in package units.

int64 ns timestamps, float64 prices and sizes, int8 sides (+1 bid / buyer-initiated, -1 ask /
seller-initiated, 0 unknown). Each reader iterates chunks of bounded size and has a whole-file
convenience. Python + numpy; the CSV readers (LOBSTER, Tardis) parse with the compiled
tokenizer ``ofi_fast._csv``. :func:`open` detects the format of any of them and returns one
:class:`Source` (chunks of quotes or L2 deltas plus trades, and its data quality).
"""

from ofi_fast.feeds._common import NO_TIME, ErrorLog
from ofi_fast.feeds._l2 import (
    FLAG_BATCH_END,
    FLAG_CLEAR,
    FLAG_SNAPSHOT,
    BookDeltas,
    Quotes,
    Trades,
)
from ofi_fast.feeds.tardis import TardisBookSnapshots, TardisReader, iter_tardis, read_tardis
from ofi_fast.feeds.kraken import (
    KrakenBookReader,
    KrakenTradesReader,
    kraken_checksum,
    read_kraken_book,
    read_kraken_trades,
)
from ofi_fast.feeds.coinbase import CoinbaseChunk, CoinbaseReader, read_coinbase
from ofi_fast.feeds.bitstamp import (
    BitstampL3Reader,
    BitstampTradesReader,
    read_bitstamp_l3,
    read_bitstamp_trades,
)
from ofi_fast.feeds.generic import (
    QuotesReader,
    TradesReader,
    iter_quotes,
    iter_trades,
    read_quotes,
    read_trades,
)
from ofi_fast.feeds.binance import BinanceChunk, BinanceReader, iter_binance, read_binance
from ofi_fast.feeds.lobster import (
    LobsterMessages,
    LobsterReader,
    LobsterTrades,
    iter_lobster,
    lobster_trades,
    midnight_ns,
    read_lobster,
)
from ofi_fast.feeds.sources import (
    FORMATS,
    Chunk,
    InputError,
    Source,
    detect_format,
    infer_tick_size,
    open,
)

__all__ = [
    "FORMATS",
    "Chunk",
    "InputError",
    "Source",
    "detect_format",
    "infer_tick_size",
    "open",
    "BinanceChunk",
    "BinanceReader",
    "BitstampL3Reader",
    "BitstampTradesReader",
    "BookDeltas",
    "read_bitstamp_l3",
    "read_bitstamp_trades",
    "FLAG_BATCH_END",
    "FLAG_CLEAR",
    "FLAG_SNAPSHOT",
    "Quotes",
    "QuotesReader",
    "TradesReader",
    "iter_quotes",
    "iter_trades",
    "read_quotes",
    "read_trades",
    "TardisBookSnapshots",
    "TardisReader",
    "Trades",
    "iter_tardis",
    "read_tardis",
    "iter_binance",
    "read_binance",
    "CoinbaseChunk",
    "CoinbaseReader",
    "ErrorLog",
    "KrakenBookReader",
    "KrakenTradesReader",
    "kraken_checksum",
    "read_coinbase",
    "read_kraken_book",
    "read_kraken_trades",
    "LobsterMessages",
    "LobsterReader",
    "LobsterTrades",
    "NO_TIME",
    "iter_lobster",
    "lobster_trades",
    "midnight_ns",
    "read_lobster",
]
