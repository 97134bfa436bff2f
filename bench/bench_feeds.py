"""Reader throughput of ofi_fast.feeds beside pandas.read_csv / json loops, in the same run.

    python -m pytest bench/bench_feeds.py --benchmark-only --benchmark-columns=min,median
    python bench/bench_feeds.py            # + peak RSS vs chunk size (one subprocess each)

Each benchmark reads the whole file; extra_info holds bytes (uncompressed) and events so that
MB/s and events/s follow from the min time. Baselines do *less* work than the readers (no
validation, no exact time conversion, no sync): pandas.read_csv only tokenises to a DataFrame;
the json loops only decode each line.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ofi_fast.feeds as F

DATA = Path(os.environ.get("OFI_FAST_DATA", Path(__file__).resolve().parents[1].parent
                           / "shared" / "data"))
pd = pytest.importorskip("pandas") if "pytest" in sys.modules else None

try:
    import orjson
except ImportError:  # pragma: no cover
    orjson = None


def _need(*parts):
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"data not available: {p}")
    return p


def _run(benchmark, fn, nbytes, events):
    benchmark.extra_info.update(bytes=nbytes, events=events)
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)


# LOBSTER: GOOG level 10 zip (message 6.1 MB + order book 34 MB) ----------------------------------
GOOG10 = ("lobster", "LOBSTER_SampleFile_GOOG_2012-06-21_10.zip")
GOOG10_MEMBERS = ("GOOG_2012-06-21_34200000_57600000_message_10.csv",
                  "GOOG_2012-06-21_34200000_57600000_orderbook_10.csv")


@pytest.mark.benchmark(group="lobster GOOG 10-level zip")
def test_lobster_ofi_fast(benchmark):
    p = _need(*GOOG10)
    _run(benchmark, lambda: F.read_lobster(p), 6_094_817 + 34_073_243, 147_916)


@pytest.mark.benchmark(group="lobster GOOG 10-level zip")
def test_lobster_pandas_read_csv(benchmark):
    p = _need(*GOOG10)
    z = zipfile.ZipFile(p)

    def read():
        for m in GOOG10_MEMBERS:
            pd.read_csv(z.open(m), header=None)
    _run(benchmark, read, 6_094_817 + 34_073_243, 147_916)


# Tokenizer alone: the decompressed order-book member in memory (34 MB, 40 columns) --------------------
@pytest.fixture(scope="module")
def goog10_book_bytes():
    p = _need(*GOOG10)
    return zipfile.ZipFile(p).read(GOOG10_MEMBERS[1])


@pytest.mark.benchmark(group="lobster GOOG orderbook in memory")
def test_book_tokenizer_ofi_fast(benchmark, goog10_book_bytes):
    import numpy as np

    from ofi_fast.feeds.lobster import _BOOK_COLS, LobsterReader
    r = LobsterReader(DATA.joinpath(*GOOG10))
    tok = r._book_tokenizer()
    n = 147_916

    def parse():
        book = {k: np.empty((n, 10)) for k in _BOOK_COLS}
        tok.bind([book[k][:, i] for i in range(10) for k in _BOOK_COLS])
        assert tok.parse(goog10_book_bytes, 0, n, True, 0)[3] == n
        tok.unbind()
    _run(benchmark, parse, len(goog10_book_bytes), n)


@pytest.mark.benchmark(group="lobster GOOG orderbook in memory")
def test_book_pandas_read_csv_bytesio(benchmark, goog10_book_bytes):
    import io
    _run(benchmark, lambda: pd.read_csv(io.BytesIO(goog10_book_bytes), header=None),
         len(goog10_book_bytes), 147_916)


# Tardis incremental_book_L2 (the 2,050-row sample, repeated 40x to a 6 MB file) --------------------
@pytest.fixture(scope="module")
def tardis_big(tmp_path_factory):
    src = _need("tardis", "tardis_binance_BTCUSDT_incremental_book_L2_2019-12-01_rows_1_2050.csv")
    head, _, body = src.read_bytes().partition(b"\n")
    p = tmp_path_factory.mktemp("tardis") / "l2x40.csv"
    p.write_bytes(head + b"\n" + body * 40)
    return p


@pytest.mark.benchmark(group="tardis L2 x40")
def test_tardis_ofi_fast(benchmark, tardis_big):
    _run(benchmark, lambda: F.read_tardis(tardis_big), tardis_big.stat().st_size, 2050 * 40)


@pytest.mark.benchmark(group="tardis L2 x40")
def test_tardis_pandas_read_csv(benchmark, tardis_big):
    _run(benchmark, lambda: pd.read_csv(tardis_big), tardis_big.stat().st_size, 2050 * 40)


# Tardis trades (the 100-row sample, repeated 400x to a 3.2 MB file) ------------------------------------
@pytest.fixture(scope="module")
def tardis_trades_big(tmp_path_factory):
    src = _need("tardis", "tardis_binance_BTCUSDT_trades_2019-12-01_rows_1_100.csv")
    head, _, body = src.read_bytes().partition(b"\n")
    p = tmp_path_factory.mktemp("tardis") / "tradesx400.csv"
    p.write_bytes(head + b"\n" + body * 400)
    return p


@pytest.mark.benchmark(group="tardis trades x400")
def test_tardis_trades_ofi_fast(benchmark, tardis_trades_big):
    _run(benchmark, lambda: F.read_tardis(tardis_trades_big), tardis_trades_big.stat().st_size,
         100 * 400)


@pytest.mark.benchmark(group="tardis trades x400")
def test_tardis_trades_pandas_read_csv(benchmark, tardis_trades_big):
    _run(benchmark, lambda: pd.read_csv(tardis_trades_big), tardis_trades_big.stat().st_size,
         100 * 400)


# Binance USD-M recording (gzip, 27.8 MB of JSON lines) ----------------------------------------------
USDM = ("binance_hftbacktest", "usdm", "btcusdt_20240808.gz")


@pytest.mark.benchmark(group="binance usdm")
def test_binance_ofi_fast(benchmark):
    p = _need(*USDM)
    _run(benchmark, lambda: F.read_binance(p), 27_757_550, 93_954)


def _json_loop(p, loads):
    with gzip.open(p, "rb") as f:
        for line in f:
            loads(line.partition(b" ")[2])


@pytest.mark.benchmark(group="binance usdm")
def test_binance_json_loop(benchmark):
    p = _need(*USDM)
    _run(benchmark, lambda: _json_loop(p, json.loads), 27_757_550, 93_954)


@pytest.mark.benchmark(group="binance usdm")
def test_binance_orjson_loop(benchmark):
    if orjson is None:
        pytest.skip("orjson not installed")
    p = _need(*USDM)
    _run(benchmark, lambda: _json_loop(p, orjson.loads), 27_757_550, 93_954)


# Kraken / Coinbase / Bitstamp -------------------------------------------------------------------------
@pytest.mark.benchmark(group="kraken book (1 pair, all lines)")
def test_kraken_ofi_fast(benchmark):
    p = _need("cryptofeed_sample_data", "KRAKEN.ws.50.0")
    _run(benchmark, lambda: F.read_kraken_book(p, pair="XMR/USD"), p.stat().st_size, 4321)


@pytest.mark.benchmark(group="kraken book (1 pair, all lines)")
def test_kraken_json_loop(benchmark):
    p = _need("cryptofeed_sample_data", "KRAKEN.ws.50.0")

    def loop():
        for line in p.read_bytes().splitlines():
            if line and not line.startswith(b"wss"):
                json.loads(line.partition(b": ")[2])
    _run(benchmark, loop, p.stat().st_size, 4321)


@pytest.mark.benchmark(group="bitstamp L3 -> L2")
def test_bitstamp_ofi_fast(benchmark):
    p = _need("bitstamp_ob_analytics", "orders.csv.gz")
    _run(benchmark, lambda: F.read_bitstamp_l3(p), 22_947_138, 314_057)


@pytest.mark.benchmark(group="bitstamp L3 -> L2")
def test_bitstamp_pandas_read_csv(benchmark):
    p = _need("bitstamp_ob_analytics", "orders.csv.gz")
    _run(benchmark, lambda: pd.read_csv(p), 22_947_138, 314_057)


# Peak memory vs chunk size -------------------------------------------------------------------------------
_RSS = """
import sys, ofi_fast.feeds as F

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

base = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
n = 0
for c in F.iter_lobster(sys.argv[1], chunk_rows=int(sys.argv[2])):
    n += len(c)
print(n, base, status("VmHWM:"))
"""


def peak_rss_table(chunks=(1_000, 10_000, 100_000, 1_000_000)):
    """[(chunk_rows, rows, RSS after import MiB, peak RSS while reading MiB)] reading GOOG
    level 10 in chunks (Linux: the peak is reset after the imports via /proc/self/clear_refs,
    so it measures the reading alone)."""
    p = DATA.joinpath(*GOOG10)
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root)
    out = []
    for c in chunks:
        n, base, peak = subprocess.check_output([sys.executable, "-c", _RSS, str(p), str(c)],
                                                env=env).split()
        out.append((c, int(n), int(base) / 1024, int(peak) / 1024))
    return out


if __name__ == "__main__":
    for c, n, base, peak in peak_rss_table():
        print(f"chunk_rows={c:>9}  rows={n:>7}  RSS after import={base:6.1f} MiB  "
              f"peak while reading={peak:6.1f} MiB  (+{peak - base:5.1f})")
