"""A hypothesis-driven mutator over the real files in ../shared/data (issue 14, item 7).

Each example takes the head of one real file (a few hundred lines), applies a few seeded
mutations (truncation, byte flips, deleted / duplicated / swapped lines, fields replaced by
``''``, ``nan``, ``inf``, ``-1``, ``1e400``, huge integers, a long field, NUL bytes, CRLF,
non-UTF-8 bytes), optionally gzips (and cuts) the result, and reads it with its format's
reader under both error policies. A reader may return (then what it skipped is counted in
``errors``) or raise an ``ofi_fast.ParseError``-family error (an ``OFIError``); any other
exception, a crash or a hang fails the test.

Bounded for CI: the default profile runs ``FUZZ_EXAMPLES`` examples per format (a few seconds
each); ``HYPOTHESIS_PROFILE=deep`` runs thousands (tests/conftest.py).
"""

import gzip
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import ofi_fast
from ofi_fast import feeds
from tests.conftest import DATA_DIR

DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
FUZZ_EXAMPLES = int(os.environ.get("OFI_FAST_FUZZ_EXAMPLES", 3000 if DEEP else 25))
HEAD_LINES = 300

# (name, file under ../shared/data, reader, header lines kept intact)
FORMATS = {
    "tardis_book": ("tardis/tardis_binance_BTCUSDT_incremental_book_L2_2019-12-01_rows_1_2050.csv",
                    lambda p, oe: feeds.read_tardis(p, on_error=oe), 1),
    "tardis_trades": ("tardis/tardis_binance_BTCUSDT_trades_2019-12-01_rows_1_100.csv",
                      lambda p, oe: feeds.read_tardis(p, on_error=oe), 1),
    "lobster": ("lobster/AAPL_2012-06-21_34200000_57600000_message_10.csv",
                lambda p, oe: feeds.read_lobster(p, on_error=oe), 0),
    "bitstamp_trades": ("bitstamp_ob_analytics/trades.csv",
                        lambda p, oe: feeds.read_bitstamp_trades(p, on_error=oe), 1),
    "coinbase": ("cryptofeed_sample_data/COINBASE.ws.28.0",
                 lambda p, oe: feeds.read_coinbase(p, on_error=oe), 0),
    "kraken_book": ("cryptofeed_sample_data/KRAKEN.ws.50.0",
                    lambda p, oe: feeds.read_kraken_book(p, on_error=oe), 0),
    "kraken_trades": ("cryptofeed_sample_data/KRAKEN.ws.48.0",
                      lambda p, oe: feeds.read_kraken_trades(p, on_error=oe), 0),
    "binance": ("cryptofeed_sample_data/BINANCE.ws.1.0",
                lambda p, oe: feeds.read_binance(p, on_error=oe), 0),
    "generic": (None, lambda p, oe: feeds.read_trades(
        p, {"ts": "timestamp", "price": "price", "size": "amount"}, ts_unit="us",
        on_error=oe), 1),
}

REPLACEMENTS = [b"", b"nan", b"inf", b"-inf", b"-1", b"0", b"1e400", b"1_000", b"\xd9\xa3",
                b"99999999999999999999999", b"-9223372036854775809", b"null", b"true",
                b"x" * 5000, b"\x00", b'"', b"{", b"]"]


def _head(name):
    rel = FORMATS[name][0]
    if rel is None:   # the generic reader over the Tardis trades file
        rel = FORMATS["tardis_trades"][0]
    path = DATA_DIR / rel
    if not path.exists():
        pytest.skip(f"real data file not available: {path}")
    with open(path, "rb") as f:
        return [f.readline() for _ in range(HEAD_LINES)]


def _mutate(lines, header, data):
    """Apply 1-4 mutations drawn from ``data`` to a list of lines (bytes with newlines)."""
    lines = [ln for ln in lines if ln]
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "delete", "dup", "swap", "field", "crlf",
                                        "nul", "latin1", "cut_line", "long"]))
        if len(lines) <= header + 1:
            break
        i = data.draw(st.integers(header, len(lines) - 1))
        ln = lines[i]
        if op == "flip" and ln:
            k = data.draw(st.integers(0, len(ln) - 1))
            ln = ln[:k] + bytes([ln[k] ^ (1 << data.draw(st.integers(0, 7)))]) + ln[k + 1:]
        elif op == "delete":
            lines.pop(i)
            continue
        elif op == "dup":
            lines.insert(i, ln)
            continue
        elif op == "swap":
            j = data.draw(st.integers(header, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            continue
        elif op == "field":
            sep = b"," if b"," in ln else b" "
            parts = ln.rstrip(b"\n").split(sep)
            k = data.draw(st.integers(0, len(parts) - 1))
            parts[k] = data.draw(st.sampled_from(REPLACEMENTS))
            ln = sep.join(parts) + b"\n"
        elif op == "crlf":
            ln = ln.replace(b"\n", b"\r\n")
        elif op == "nul":
            ln = b"\x00" + ln
        elif op == "latin1":
            ln = b"\xe9\xff" + ln
        elif op == "cut_line":
            ln = ln[:data.draw(st.integers(0, len(ln)))]
        elif op == "long":
            ln = ln.rstrip(b"\n") + b"9" * 100_000 + b"\n"
        lines[i] = ln
    return b"".join(lines)


def _read_all(reader, path, on_error):
    try:
        out = reader(str(path), on_error)
    except ofi_fast.OFIError:
        return None
    return out


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_readers_raise_only_parse_errors(name, tmp_path):
    lines = _head(name)
    rel, reader, header = FORMATS[name]
    base = "m.csv" if rel is None else rel.rsplit("/", 1)[-1]   # LOBSTER names carry the date

    @seed(14)
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=not DEEP,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(data=st.data())
    def run(data):
        blob = _mutate(list(lines), header, data)
        # LOBSTER's reader takes the trading date from the plain file name
        compress = "plain" if name == "lobster" else data.draw(
            st.sampled_from(["plain", "gz", "gz_cut"]))
        path = tmp_path / (f"{base}.gz" if compress != "plain" else base)
        if compress != "plain":
            blob = gzip.compress(blob)
            if compress == "gz_cut":
                blob = blob[:data.draw(st.integers(10, max(10, len(blob) - 1)))]
        path.write_bytes(blob)
        for on_error in ("raise", "skip"):
            _read_all(reader, path, on_error)

    run()


CLI_EXAMPLES = int(os.environ.get("OFI_FAST_FUZZ_CLI_EXAMPLES", 300 if DEEP else 6))


def test_cli_exits_0_or_2_with_one_line(tmp_path):
    """``python -m ofi_fast analyze MUTANT`` (a Tardis book file): exit 0, or exit 2 with
    exactly one line on stderr (no traceback)."""
    path = DATA_DIR / FORMATS["tardis_book"][0]
    if not path.exists():
        pytest.skip(f"real data file not available: {path}")
    lines = path.read_bytes().splitlines(keepends=True)

    @seed(1414)
    @settings(max_examples=CLI_EXAMPLES, deadline=None, derandomize=not DEEP,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(data=st.data())
    def run(data):
        blob = _mutate(list(lines), 1, data)
        compress = data.draw(st.sampled_from(["plain", "gz_cut"]))
        p = tmp_path / ("m.csv.gz" if compress == "gz_cut" else "m.csv")
        if compress == "gz_cut":
            blob = gzip.compress(blob)
            blob = blob[:data.draw(st.integers(10, len(blob) - 1))]
        p.write_bytes(blob)
        r = subprocess.run([sys.executable, "-m", "ofi_fast", "analyze", str(p)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode in (0, 2), r.stderr[-2000:]
        if r.returncode == 2:
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]

    run()
