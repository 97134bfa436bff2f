"""Regression tests for the findings of issue 14 (hardening): sizes, integer arguments,
threads, bounded work (VPIN, line caps), one error type for damaged files, value checks.

Each test asserts the behaviour the issue asks for; before the fix it failed (heap overflow,
hang, raw exception or silently wrong data, as the issue's text says)."""

import fractions
import gzip
import pickle
import threading
import time
import zipfile

import numpy as np
import pytest

import ofi_fast
from ofi_fast import feeds, reference
from ofi_fast.errors import OFIError, ParseError, TruncatedError
from ofi_fast.feeds._common import MAX_LINE_BYTES, ErrorLog, LineBlocks, open_binary
from tests.conftest import data_file

TARDIS_BOOK = "tardis_binance_BTCUSDT_incremental_book_L2_2019-12-01_rows_1_2050.csv"
HUGE = 2**61      # slots whose byte size overflows size_t on a 64-bit machine
BIG = 2**40       # a possible size that malloc cannot satisfy here (16 TiB and more)

# constructor, the argument that sizes its buffer, the other arguments
SIZED = [
    (ofi_fast.RollingSum, "window", {}),
    (ofi_fast.OFI, "window", {}),
    (lambda **kw: ofi_fast.MultiLevelOFI(3, **kw), "window", {}),
    (ofi_fast.TradeFlow, "window", {}),
    (ofi_fast.RollingOLS, "window", {}),
    (ofi_fast.RollingSum, "capacity", {"window_time": 10}),
    (ofi_fast.OFI, "capacity", {"window_time": 10}),
    (ofi_fast.TradeFlow, "capacity", {"window_time": 10}),
    (ofi_fast.RollingOLS, "capacity", {"window_time": 10}),
    (lambda **kw: ofi_fast.VPIN(10.0, **kw), "n_buckets", {}),
]


# ------------------------------------------------------------------------------- 1. sizes
@pytest.mark.parametrize("make, arg, extra", SIZED)
def test_overflowing_size_is_a_value_error_naming_the_argument(make, arg, extra):
    with pytest.raises(ValueError, match=arg):
        make(**{arg: HUGE}, **extra)


@pytest.mark.parametrize("make, arg, extra", SIZED)
def test_size_that_does_not_fit_is_a_memory_error(make, arg, extra):
    with pytest.raises(MemoryError, match=arg):
        make(**{arg: BIG}, **extra)


@pytest.mark.parametrize("bad", ["5", 5.0, fractions.Fraction(5), True, None.__class__])
@pytest.mark.parametrize("make, arg, extra", SIZED)
def test_integer_arguments_must_be_integers(make, arg, extra, bad):
    with pytest.raises(OFIError, match=arg):
        make(**{arg: bad}, **extra)


def test_integer_arguments_accept_numpy_integers():
    assert ofi_fast.OFI(window=np.int64(7)).update(0, 1.0, 1.0, 2.0, 1.0) == 0.0
    assert ofi_fast.VPIN(1.0, np.int32(3)).n_buckets == 3


def test_level_and_feature_counts_are_bounded():
    with pytest.raises(OFIError, match="levels"):
        ofi_fast.MultiLevelOFI(2**61)
    with pytest.raises(OFIError, match="n_features"):
        ofi_fast.RollingOLS(n_features=2**40)
    with pytest.raises(OFIError, match="quote_lag"):
        ofi_fast.Classifier("quote", quote_lag=1.5)


# ------------------------------------------------------------------------------ 2. threads
def _hammer(fn, chunks, n_threads=2):
    """Call fn(chunk) for every chunk from n_threads threads at once; re-raise any error."""
    errors = []
    barrier = threading.Barrier(n_threads)

    def work(part):
        barrier.wait()
        try:
            for c in part:
                fn(c)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(chunks[k::n_threads],))
               for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_one_rolling_sum_from_two_threads_loses_nothing(rng):
    # integer values: the sum is exact in any order, so any lost or torn update shows
    chunks = [rng.integers(-50, 50, 20_000).astype(np.float64) for _ in range(40)]
    r = ofi_fast.RollingSum()
    _hammer(lambda c: r.update_many(None, c), chunks)
    assert r.count == sum(len(c) for c in chunks)
    assert r.value == float(sum(int(c.sum()) for c in chunks))


def test_one_object_mixed_update_and_update_many_from_two_threads(rng):
    chunks = [rng.integers(0, 9, 5_000).astype(np.float64) for _ in range(20)]
    tf = ofi_fast.TradeFlow()

    def feed(c):
        if c[0] % 2:
            tf.update_many(None, np.full(len(c), 100.0), c, np.ones(len(c), np.int8))
        else:
            for x in c[:500]:
                tf.update(0, 100.0, float(x), 1)
            tf.update_many(None, np.full(len(c) - 500, 100.0), c[500:],
                           np.ones(len(c) - 500, np.int8))

    _hammer(feed, chunks)
    assert tf.n_buy == sum(len(c) for c in chunks)
    assert tf.buy_volume == float(sum(int(c.sum()) for c in chunks))


def test_ofi_state_after_two_threads_equals_a_serial_run(rng):
    # every chunk starts and ends with the same quote Q0, so the event at each chunk join has
    # e = 0 whatever chunk came before: every order of the (serialised) calls gives the same
    # state, bit for bit (integer sizes), and an interleaving of two calls would not
    from tests.conftest import random_quotes
    chunks = []
    for _ in range(30):
        ts, bp, bs, ap, az = random_quotes(rng, 3_000)
        for a in (bp, bs, ap, az):
            a[0] = a[-1] = {id(bp): 1000.0, id(bs): 5.0, id(ap): 1001.0, id(az): 5.0}[id(a)]
        chunks.append((bp, bs, ap, az))
    shared = ofi_fast.OFI()
    _hammer(lambda c: shared.update_many(None, *c), chunks)
    serial = ofi_fast.OFI()
    for c in chunks:
        serial.update_many(None, *c)
    assert shared.n_events == serial.n_events == 30 * 3_000
    assert shared.total == serial.total and shared.value == serial.value
    assert pickle.dumps(shared) == pickle.dumps(serial)


@pytest.mark.parametrize("make, feed", [
    (lambda: ofi_fast.VPIN(7.0, 5),
     lambda o, c: o.update_many(np.zeros(len(c), np.int64), c, np.ones(len(c), np.int8))),
    (lambda: ofi_fast.RollingOLS(),
     lambda o, c: o.update_many(c, c)),
    (lambda: ofi_fast.Classifier("tick"),
     lambda o, c: o.update_many(None, c)),
    (lambda: ofi_fast.MultiLevelOFI(2),
     lambda o, c: o.update_many(None, np.c_[c, c - 1], np.c_[c, c], np.c_[c + 1, c + 2],
                                np.c_[c, c])),
])
def test_shared_object_in_two_threads_counts_every_event(make, feed, rng):
    chunks = [rng.integers(1, 9, 4_000).astype(np.float64) for _ in range(16)]
    o = make()
    _hammer(lambda c: feed(o, c), chunks)
    total = sum(len(c) for c in chunks)
    if isinstance(o, ofi_fast.VPIN):
        assert o.n_closed == int(sum(c.sum() for c in chunks) // 7)
    elif isinstance(o, ofi_fast.RollingOLS):
        assert o.n == total
    elif isinstance(o, ofi_fast.Classifier):
        assert o.n_trades == total
    else:
        assert o.n_events == total


def test_tokenizer_shared_by_two_threads(rng):
    from ofi_fast import _csv
    tok = _csv.Tokenizer([_csv.column("a", _csv.INT), _csv.column("b", _csv.FLOAT)])
    text = b"".join(b"%d,%d.5\n" % (i, i) for i in range(20_000))

    def parse(_):
        a = np.zeros(20_000, np.int64)
        b = np.zeros(20_000, np.float64)
        # bind + parse must not interleave with the other thread's bind: hold one sequence
        with lock:
            tok.bind([a, b])
            st, pos, lines, rows, *_ = tok.parse(text, 0, 20_000, True, 0)
            tok.unbind()
        assert st == 0 and rows == 20_000 and a[-1] == 19_999 and b[-1] == 19_999.5

    lock = threading.Lock()
    _hammer(parse, list(range(8)))


# ------------------------------------------------------------------------ 3. bounded work
def _quick(fn, limit=2.0):
    t0 = time.perf_counter()
    try:
        return fn()
    finally:
        assert time.perf_counter() - t0 < limit, "did not return at once"


def test_vpin_huge_trade_is_a_clear_error_at_once():
    v = ofi_fast.VPIN(1.0, 5)
    with pytest.raises(OFIError, match="2\\*\\*53 buckets"):
        _quick(lambda: v.update(0, 1e20, 1))
    assert v.n_closed == 0 and v.open_volume == 0.0   # state unchanged


def test_vpin_tiny_bucket_is_a_clear_error_at_once():
    v = ofi_fast.VPIN(1e-300, 5)
    with pytest.raises(OFIError, match="size"):
        _quick(lambda: v.update(0, 1.0, 1))


def test_vpin_many_buckets_in_closed_form():
    # 1e14 buckets of 10 in one all-buy trade: every bucket has |V_S - V_B| = V, VPIN = 1
    v = ofi_fast.VPIN(10.0, 5)
    assert _quick(lambda: v.update(0, 1e15, 1)) == 10**14
    assert v.n_closed == 10**14 and v.value == 1.0 and v.open_volume == 0.0
    v.update(1, 25.0, -1)       # two all-sell buckets follow: VPIN still 1, 5 in the ring
    assert v.n_closed == 10**14 + 2 and v.open_volume == 5.0 and v.value == 1.0


def test_vpin_closed_form_equals_reference_on_integer_volumes():
    ts = np.arange(6, dtype=np.int64)
    size = np.array([7.0, 100.0, 2.0, 50.0, 61.0, 3.0])
    side = np.array([1, -1, 0, 1, -1, 1], np.int8)
    v = ofi_fast.VPIN(3.0, 5)
    closed = [v.update(int(t), float(s), int(d)) for t, s, d in zip(ts, size, side)]
    r_ts, r_vpin, r_buy, r_sell = reference.vpin(list(ts), list(size), list(side),
                                                 bucket_volume=3.0, n_buckets=5)
    assert sum(closed) == len(r_ts) == 74
    assert v.value == r_vpin[-1]
    assert v.open_volume == float(size.sum() - 3.0 * len(r_ts))


def test_vpin_update_many_refuses_before_allocating_a_huge_output():
    with pytest.raises(OFIError, match="bucket_volume"):
        _quick(lambda: ofi_fast.vpin(np.arange(3), np.array([1e6, 1e6, 1e6]), bucket_volume=1e-9,
                                     n_buckets=50))


def test_line_reader_caps_a_long_line(tmp_path):
    p = tmp_path / "long.csv"
    p.write_bytes(b"a,b\n1,2\n" + b"3" * (MAX_LINE_BYTES + 10) + b",4\n5,6\n")
    with open_binary(p) as f:
        with pytest.raises(ParseError, match=r"long\.csv:3: line longer than 16 MiB"):
            list(LineBlocks(f).lines())
    log = ErrorLog(p, "skip")
    with open_binary(p) as f:
        got = list(LineBlocks(f, errors=log).lines())
    assert [no for no, _ in got] == [1, 2, 3, 4]          # line 3 is a short placeholder
    assert got[3][1] == b"5,6" and len(got[2][1]) < 100


def test_tokenizer_source_caps_a_long_line(tmp_path):
    src = data_file("tardis", "tardis_binance_BTCUSDT_trades_2019-12-01_rows_1_100.csv")
    lines = src.read_bytes().splitlines(keepends=True)
    p = tmp_path / "t.csv"
    p.write_bytes(b"".join(lines[:5]) + b"x" * (MAX_LINE_BYTES + 1) + b"\n" + b"".join(lines[5:]))
    with pytest.raises(ParseError, match=r"t\.csv:6: .*16 MiB"):
        feeds.read_tardis(p)
    r = feeds.TardisReader(p, on_error="skip")
    out = r.read()
    assert len(out) == len(lines) - 1 and r.errors.count == 1


# --------------------------------------------------------------------- 4. one error type
def _tardis_gz_cut(tmp_path):
    src = data_file("tardis", TARDIS_BOOK)
    raw = src.read_bytes()
    blob = gzip.compress(raw)
    p = tmp_path / "cut.csv.gz"
    p.write_bytes(blob[:len(blob) * 2 // 3])
    with gzip.open(p) as f:      # what survives the cut, read independently with gzip
        kept = b""
        try:
            while True:
                b = f.read(1)
                if not b:
                    break
                kept += b
        except EOFError:
            pass
    return p, raw, kept


def test_truncated_gz_raises_naming_file_and_line(tmp_path):
    p, raw, kept = _tardis_gz_cut(tmp_path)
    cut_line = kept.count(b"\n") + 1
    with pytest.raises(TruncatedError, match=rf"cut\.csv\.gz:{cut_line}: .*truncated"):
        feeds.read_tardis(p)


def test_truncated_gz_under_skip_keeps_rows_before_the_cut(tmp_path):
    p, raw, kept = _tardis_gz_cut(tmp_path)
    r = feeds.TardisReader(p, on_error="skip")
    out = r.read()
    whole = feeds.read_tardis(data_file("tardis", TARDIS_BOOK))
    n_kept = kept.count(b"\n") - 1                        # complete data lines (minus header)
    assert len(out) == n_kept
    assert np.array_equal(out.price, whole.price[:n_kept])
    line, reason = r.errors.truncated
    assert line == n_kept + 2 and "truncated" in reason
    assert r.errors.count == (1 if not kept.endswith(b"\n") else 0)


def test_truncated_gz_line_reader(tmp_path):
    body = b"".join(b"%d,x\n" % i for i in range(50_000))
    blob = gzip.compress(body)
    p = tmp_path / "x.gz"
    p.write_bytes(blob[:len(blob) // 2])
    with open_binary(p) as f:
        with pytest.raises(TruncatedError, match="truncated"):
            list(LineBlocks(f).lines())
    log = ErrorLog(p, "skip")
    with open_binary(p) as f:
        got = list(LineBlocks(f, errors=log).lines())
    assert [ln for _, ln in got] == body.split(b"\n")[:len(got)]
    assert log.truncated[0] == len(got) + 1


def test_bad_zip_crc_is_a_parse_error(tmp_path):
    p = tmp_path / "AAPL_2012-06-21_34200000_57600000_message_1.zip"
    text = b"".join(b"34200.%05d,1,%d,100,5858000,1\n" % (i, i) for i in range(2_000))
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as z:
        z.writestr("AAPL_2012-06-21_34200000_57600000_message_1.csv", text)
    blob = bytearray(p.read_bytes())
    i = blob.index(b"34200.01000")
    blob[i] = ord("9")           # same length, wrong CRC
    p.write_bytes(bytes(blob))
    with pytest.raises(ParseError, match="Bad CRC|corrupt"):
        with open_binary(p) as f:
            while f.read(1 << 16):
                pass


def test_corrupt_deflate_is_a_parse_error(tmp_path):
    blob = bytearray(gzip.compress(b"".join(b"%d,1\n" % i for i in range(100_000))))
    blob[len(blob) // 2:len(blob) // 2 + 8] = b"\xff" * 8
    p = tmp_path / "c.gz"
    p.write_bytes(bytes(blob))
    with pytest.raises(ParseError):
        with open_binary(p) as f:
            list(LineBlocks(f).lines())


def test_non_utf8_header_is_a_parse_error(tmp_path):
    p = tmp_path / "q.csv"
    p.write_bytes(b"ts,pri\xffce,size\n1,2,3\n")
    with pytest.raises(ParseError, match=r"q\.csv:1: header is not UTF-8"):
        feeds.read_trades(p, {"ts": "ts", "price": "price", "size": "size"})


def test_error_message_quotes_at_most_80_characters(tmp_path):
    src = data_file("tardis", "tardis_binance_BTCUSDT_trades_2019-12-01_rows_1_100.csv")
    lines = src.read_bytes().splitlines(keepends=True)
    parts = lines[3].split(b",")
    parts[5] = b"9" * 100_000 + b"x"
    p = tmp_path / "f.csv"
    p.write_bytes(b"".join(lines[:3]) + b",".join(parts) + b"".join(lines[4:]))
    with pytest.raises(ParseError) as e:
        feeds.read_tardis(p)
    assert "f.csv:4:" in str(e.value) and len(str(e.value)) < 400


# ---------------------------------------------------------------------------- 5. values
@pytest.mark.parametrize("ts", [np.array([1.0, 2.0]), np.array([np.nan, 1.0]), [1.5, 2.5],
                                np.array([True, False]), np.array([2**63], dtype=np.uint64)])
def test_update_many_refuses_non_integer_timestamps(ts):
    q = (np.array([1.0, 1.0]), np.array([1.0, 2.0]), np.array([2.0, 2.0]), np.array([1.0, 1.0]))
    for call in (lambda: ofi_fast.OFI().update_many(ts, *q),
                 lambda: ofi_fast.RollingSum().update_many(ts, [1.0, 2.0]),
                 lambda: ofi_fast.TradeFlow().update_many(ts, [1.0, 1.0], [1.0, 1.0]),
                 lambda: ofi_fast.VPIN(1.0, 2).update_many(ts, [1.0, 1.0]),
                 lambda: ofi_fast.RollingOLS().update_many([1.0, 2.0], [1.0, 2.0], ts),
                 lambda: ofi_fast.Classifier("tick").update_many(ts, [1.0, 2.0])):
        with pytest.raises(OFIError, match="ts"):
            call()


def test_update_many_accepts_datetime64_timestamps():
    ts = np.array(["2024-01-01T00:00:00", "2024-01-01T00:00:01"], dtype="datetime64[ns]")
    out = ofi_fast.RollingSum(window_time=10**9).update_many(ts, [1.0, 2.0])
    assert list(out) == [1.0, 2.0]          # 1 s apart: the first left the 1 s window
    with pytest.raises(OFIError, match="NaT"):
        ofi_fast.RollingSum().update_many(np.array(["NaT", "2024-01-01"], "datetime64[ns]"),
                                          [1.0, 2.0])


def test_infinite_quotes_are_rejected():
    c = ofi_fast.Classifier("quote")
    with pytest.raises(OFIError, match="bid_px"):
        c.update_quote(0, np.inf, 2.0)
    with pytest.raises(OFIError, match="ask_px"):
        ofi_fast.TradeFlow(classify="quote").update_quote(0, 1.0, -np.inf)
    with pytest.raises(OFIError, match=r"ask_px\[1\]"):
        ofi_fast.classify_trades([1.0, 2.0], method="quote", bid_px=[0.5, 1.5],
                                 ask_px=[1.5, np.inf])
    tf = ofi_fast.TradeFlow(classify="quote")
    with pytest.raises(OFIError, match=r"bid_px\[2\]"):
        tf.update_many(None, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], bid_px=[0.5, 0.5, np.inf],
                       ask_px=[1.5, 1.5, 1.5])
    assert tf.n_events == 2            # the rows before the bad one are applied
    with pytest.raises(OFIError, match=r"ask_px\[1\]"):
        ofi_fast.TradeFlow(classify="quote").update_many(
            None, [1.0] * 3, [1.0] * 3, bid_px=[0.5, 0.5, np.inf], ask_px=[1.5, np.inf, 1.5])
    c = ofi_fast.Classifier("quote")
    c.update_quote(0, np.nan, 2.0)     # NaN is a missing side, not an error
    assert c.update(0, 1.0) == 0       # first trade, no usable quote: tick rule gives 0


def test_rolling_ols_recovers_exactly_once_a_huge_pair_left(rng):
    x = rng.normal(size=40)
    y = 2.0 * x + rng.normal(size=40)
    o = ofi_fast.RollingOLS(window=10)
    for i in range(20):
        o.update(float(x[i]), float(y[i]))
    o.update(1e200, 1.0)
    assert not np.isfinite(o.beta) or abs(o.beta) < 1e-150   # the huge pair dominates
    for i in range(20, 30):
        o.update(float(x[i]), float(y[i]))
    fresh = ofi_fast.RollingOLS(window=10)
    for i in range(20, 30):
        fresh.update(float(x[i]), float(y[i]))
    fresh.recompute()
    assert o.beta == fresh.beta and o.alpha == fresh.alpha and o.r2 == fresh.r2


def test_kraken_null_or_true_where_a_string_belongs(tmp_path):
    src = data_file("cryptofeed_sample_data", "KRAKEN.ws.48.0")
    lines = src.read_bytes().splitlines(keepends=True)
    k = next(i for i, ln in enumerate(lines) if b',"trade","' in ln)
    bad = lines[k].replace(b',"trade","', b',null,"', 1)
    bad2 = lines[k + 1].replace(b'"s"', b'true', 1).replace(b'"b"', b'true', 1)
    p = tmp_path / "k.ws"
    p.write_bytes(b"".join(lines[:k]) + bad + bad2 + b"".join(lines[k + 2:]))
    whole = feeds.read_kraken_trades(src, on_error="skip")
    r = feeds.KrakenTradesReader(p, on_error="skip")
    out = r.read()
    assert r.errors.count >= 1 and len(out) < len(whole)
    with pytest.raises(ParseError, match=rf"k\.ws:{k + 1}:"):
        feeds.read_kraken_trades(p)


def test_lobster_price_must_be_positive(tmp_path):
    src = data_file("lobster", "AAPL_2012-06-21_34200000_57600000_message_10.csv")
    lines = src.read_bytes().splitlines(keepends=True)[:100]
    parts = lines[10].split(b",")
    parts[4] = b"0"
    lines[10] = b",".join(parts)
    p = tmp_path / src.name
    p.write_bytes(b"".join(lines))
    with pytest.raises(ParseError, match=rf"{src.name}:11: price"):
        feeds.read_lobster(p)
    r = feeds.LobsterReader(p, on_error="skip")
    assert len(r.read()) == 99 and r.errors.count == 1


@pytest.mark.parametrize("ts", [b"1_618_678_132", "\u0661\u0662\u0663".encode(), b"-5",
                                b"99999999999999999999", b"9223372036854775807"])
def test_generic_reader_integer_grammar_and_range(tmp_path, ts):
    p = tmp_path / "g.csv"
    p.write_bytes(b"ts,price,size\n1000,1.5,2\n" + ts + b",1.5,2\n3000,1.5,2\n")
    cols = {"ts": "ts", "price": "price", "size": "size"}
    with pytest.raises(ParseError, match=r"g\.csv:3:"):
        feeds.read_trades(p, cols, ts_unit="ms")
    r = feeds.TradesReader(p, cols, ts_unit="ms", on_error="skip")
    out = r.read()
    assert list(out.ts_exchange) == [1_000_000_000, 3_000_000_000] and r.errors.count == 1


def test_recorded_local_time_beyond_int64_is_reported_at_its_line(tmp_path):
    src = data_file("cryptofeed_sample_data", "BINANCE.ws.1.0")
    lines = src.read_bytes().splitlines(keepends=True)[:200]
    k = next(i for i, ln in enumerate(lines) if ln[:1].isdigit())
    lines[k] = b"1" * 30 + lines[k][lines[k].index(b":"):]
    p = tmp_path / "b.ws"
    p.write_bytes(b"".join(lines))
    with pytest.raises(ParseError, match=rf"b\.ws:{k + 1}:"):
        feeds.read_binance(p)


@pytest.mark.parametrize("chunk_rows", [2, 10**6])
def test_csv_auto_time_unit_holds_every_row_to_the_first_rows_unit(tmp_path, chunk_rows):
    """ts_unit="auto" decides the unit from the first row's magnitude, then a time of another
    magnitude (here microseconds among milliseconds, in a later chunk) is a malformed row
    naming its line, not a silent factor of 1000; each time column has its own unit."""
    from ofi_fast.errors import ParseError
    rows = ["ts,lt,bid_px,bid_sz,ask_px,ask_sz"]
    rows += [f"{1717000000000 + i},{1717000000000000000 + i},100,1,101,1" for i in range(5)]
    rows += ["1717000000005000,1717000000000000005,100,1,101,1"]
    p = tmp_path / "q.csv"
    p.write_text("\n".join(rows) + "\n")
    cols = {"ts": "ts", "ts_local": "lt", "bid_px": "bid_px", "bid_sz": "bid_sz",
            "ask_px": "ask_px", "ask_sz": "ask_sz"}
    with pytest.raises(ParseError) as ei:
        feeds.read_quotes(p, cols, ts_unit="auto", chunk_rows=chunk_rows)
    assert ei.value.line == 7 and "1717000000005000" in str(ei.value) and "ms" in str(ei.value)
    r = feeds.QuotesReader(p, cols, ts_unit="auto", chunk_rows=chunk_rows, on_error="skip")
    q = r.read()
    assert r.ts_unit_found == {"ts": "ms", "ts_local": "ns"}
    assert r.errors.count == 1 and len(q) == 5
    np.testing.assert_array_equal(q.ts_exchange, [(1717000000000 + i) * 10**6 for i in range(5)])
    np.testing.assert_array_equal(q.ts_local, [1717000000000000000 + i for i in range(5)])
    # through feeds.open (the CLI's path): the same error, and the count under skip
    with pytest.raises(ParseError, match=r"q.csv:7"):
        sum(len(c) for c in feeds.open([p], chunk_rows=chunk_rows).chunks())
    s = feeds.open([p], chunk_rows=chunk_rows, on_error="skip")
    assert sum(len(c) for c in s.chunks()) == 5 and s.quality.dropped == {"parse_skip": 1}


def test_every_gil_released_section_leaves_its_guard_in_finally():
    """A guard_exit must run on every way out of a guarded section: a bounds error of the
    debug build (or any exception) inside ``with nogil`` would otherwise leave the object busy
    and every later call waiting for ever. So each ``guard_exit`` of a .pyx is the body of a
    ``finally:`` or the step just before a ``raise`` (an early exit)."""
    from conftest import REPO
    bad = []
    for path in sorted((REPO / "ofi_fast").glob("*.pyx")):
        lines = path.read_text().splitlines()
        for i, ln in enumerate(lines):
            if not ln.strip().startswith("guard_exit("):
                continue
            ind = len(ln) - len(ln.lstrip())
            j = i - 1
            while j >= 0 and (not lines[j].strip()
                              or len(lines[j]) - len(lines[j].lstrip()) >= ind):
                j -= 1
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if not (lines[j].strip() == "finally:" or nxt.startswith("raise ")):
                bad.append(f"{path.name}:{i + 1}")
    assert not bad, bad


@pytest.mark.parametrize("chunk_rows", [3, 10**6])
def test_csv_time_going_backwards_is_a_malformed_row(tmp_path, chunk_rows):
    """A generic CSV row earlier than the row before it names its file, line and column (the
    streaming path would otherwise have sorted it into place silently); under skip it is
    dropped, counted, and the rows after it are held to the last time kept."""
    from ofi_fast.errors import ParseError
    ts = [1_000, 2_000, 3_000, 2_500, 2_900, 4_000, 5_000]      # line 5 and 6 go back
    p = tmp_path / "q.csv"
    p.write_text("time,bid,bid_size,ask,ask_size\n"
                 + "".join(f"{t},100,1,101,2\n" for t in ts))
    cols = {"ts": "time", "bid_px": "bid", "bid_sz": "bid_size", "ask_px": "ask",
            "ask_sz": "ask_size"}
    with pytest.raises(ParseError) as ei:
        feeds.read_quotes(p, cols, chunk_rows=chunk_rows)
    assert ei.value.line == 5 and "time: time goes backwards" in str(ei.value)
    r = feeds.QuotesReader(p, cols, chunk_rows=chunk_rows, on_error="skip")
    q = r.read()
    assert q.ts_exchange.tolist() == [1_000, 2_000, 3_000, 4_000, 5_000]
    assert r.errors.count == 2 and [ln for ln, _ in r.errors.first] == [5, 6]
    for run in (lambda: ofi_fast.analyze(str(p), chunk_rows=chunk_rows),
                lambda: list(ofi_fast.stream(str(p), every=1.0, chunk_rows=chunk_rows))):
        with pytest.raises(ParseError, match=r"q.csv:5: time: time goes backwards"):
            run()


# ---- time going backwards in the L2 delta readers ------------------------------------------
def _earlier_json_local(line, dt=100.0):
    """A cryptofeed line ``<receive time>: <json>`` with its receive time ``dt`` s earlier."""
    head, sep, rest = line.partition(b": ")
    return b"%.6f" % (float(head) - dt) + sep + rest


def _earlier_coinbase_time(line, dt=100.0):
    import datetime as dtm
    i = line.index(b'"time":"') + 8
    j = line.index(b'"', i)
    t = dtm.datetime.fromisoformat(line[i:j].decode().replace("Z", "+00:00"))
    new = (t - dtm.timedelta(seconds=dt)).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
    return line[:i] + new + line[j:]


def _earlier_kraken_times(line, dt=100.0):
    """Every level time of a Kraken update ``[price, volume, "time"]`` ``dt`` s earlier."""
    import re
    return re.sub(rb'\["([0-9.]+)","([0-9.]+)","([0-9.]+)"',
                  lambda m: b'["%s","%s","%.6f"' % (m[1], m[2], float(m[3]) - dt), line)


def _earlier_binance_e(line, dt=100_000):
    """A Binance diff's event time ``"E":ms`` ``dt`` ms earlier."""
    import re
    return re.sub(rb'"E":(\d+)', lambda m: b'"E":%d' % (int(m[1]) - dt), line, count=1)


def _earlier_csv_field(col, dt):
    def f(line):
        parts = line.split(b",")
        parts[col] = b"%d" % (int(parts[col]) - dt)
        return b",".join(parts)
    return f


def _backwards_cases():
    """(case id, input files, index of the file mutated, predicate of the lines that may be
    mutated, mutation, clock, field named)."""
    d = "cryptofeed_sample_data"
    tl2 = ("tardis", "tardis_binance_BTCUSDT_incremental_book_L2_2019-12-01_rows_1_2050.csv")
    ttr = ("tardis", "tardis_binance_BTCUSDT_trades_2019-12-01_rows_1_100.csv")
    cb = (d, "COINBASE.ws.28.0")
    kr = (d, "KRAKEN.ws.50.0")
    bo = ("bitstamp_ob_analytics", "orders.csv.gz")
    bt = ("bitstamp_ob_analytics", "trades.csv")
    bn, bh = (d, "BINANCE.ws.1.0"), (d, "BINANCE.http.0.0")
    bnu = lambda no, ln: b'"e":"depthUpdate","E":' in ln and b'"NKNUSDT"' in ln and no > 100
    upd = lambda no, ln: b",false," in ln and no > 2030
    cbu = lambda no, ln: b'"l2update","product_id":"BAND-GBP"' in ln and no > 3000
    kru = lambda no, ln: b'"ADA/XBT"' in ln and (b'{"a":' in ln or b'{"b":' in ln) \
        and no > 200
    live = lambda no, ln: no > 7000
    any_ = lambda no, ln: no > 20
    return [
        ("tardis-local", [tl2], 0, upd, _earlier_csv_field(3, 10**8), "local", "local_timestamp"),
        ("tardis-exchange", [tl2], 0, upd, _earlier_csv_field(2, 10**8), "exchange", "timestamp"),
        ("tardis-trades", [tl2, ttr], 1, any_, _earlier_csv_field(3, 10**8), "local",
         "local_timestamp"),
        ("coinbase-local", [cb], 0, cbu, _earlier_json_local, "local", "ts_local"),
        ("coinbase-exchange", [cb], 0, cbu, _earlier_coinbase_time, "exchange", "time"),
        ("kraken-local", [kr], 0, kru, _earlier_json_local, "local", "ts_local"),
        ("kraken-exchange", [kr], 0, kru, _earlier_kraken_times, "exchange", "time"),
        ("binance-local", [bn, bh], 0, bnu, _earlier_json_local, "local", "ts_local"),
        ("binance-exchange", [bn, bh], 0, bnu, _earlier_binance_e, "exchange", "E"),
        ("bitstamp-exchange", [bo, bt], 0, live, _earlier_csv_field(2, 10**5), "exchange",
         "exchange_timestamp"),
        ("bitstamp-trades", [bo, bt], 1, any_, _earlier_csv_field(2, 10**5), "exchange",
         "exchange_timestamp"),
    ]


@pytest.mark.parametrize("case", _backwards_cases(), ids=lambda c: c[0])
def test_delta_feed_time_going_backwards_names_file_line_and_field(case, tmp_path):
    """A book update (or trade) earlier, on the clock the bars use, than the one before it is
    a malformed line: ``ParseError`` naming the file, line and field, from ``analyze`` and
    ``stream`` alike (it used to be "ts[27] goes backwards", an index into a chunk). Under
    ``on_error="skip"`` the message is dropped whole and counted: the bars equal those of the
    file with that line deleted."""
    _, files, k, can, mutate, clock, field = case
    srcs = [data_file(*f) for f in files]
    lines = open_binary(str(srcs[k])).read().split(b"\n")
    no = next(i + 1 for i, ln in enumerate(lines) if can(i + 1, ln))
    bad, cut = list(lines), list(lines)
    bad[no - 1] = mutate(lines[no - 1])
    assert bad[no - 1] != lines[no - 1]
    del cut[no - 1]
    paths = {}
    for tag, content in (("bad", bad), ("cut", cut)):
        ps = []
        for i, s in enumerate(srcs):
            p = tmp_path / tag / s.name.removesuffix(".gz")
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(b"\n".join(content) if i == k else open_binary(str(s)).read())
            ps.append(str(p))
        paths[tag] = ps
    where = f"{paths['bad'][k]}:{no}: {field}: time goes backwards"
    with pytest.raises(ParseError) as ei:
        ofi_fast.analyze(paths["bad"], clock=clock)
    assert str(ei.value).startswith(where) and ei.value.line == no, str(ei.value)
    with pytest.raises(ParseError, match="time goes backwards") as ei:
        for _ in ofi_fast.stream(paths["bad"], every=1.0, clock=clock):
            pass
    assert str(ei.value).startswith(where)
    skip = ofi_fast.analyze(paths["bad"], clock=clock, on_error="skip")
    ref = ofi_fast.analyze(paths["cut"], clock=clock, on_error="skip")
    assert skip.quality.dropped.get("parse_skip") == 1
    assert not ref.quality.dropped.get("parse_skip")
    for col in ("start_ns", "ofi", "dmid", "trade_imbalance", "events"):
        np.testing.assert_array_equal(skip.bars[col], ref.bars[col], err_msg=col)
    assert len(skip.bars["ofi"]) > 0
