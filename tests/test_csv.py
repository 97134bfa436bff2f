"""The typed CSV tokenizer (ofi_fast._csv) against its pure-Python twin (reference.csv_parse),
bit-exact floats, exact decimals, line ends, block boundaries, and every error path as the
feed readers report it (file, line, field)."""

import io
import math
import struct
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ofi_fast.feeds as F
from ofi_fast import _csv as C
from ofi_fast import reference as R
from ofi_fast.errors import ParseError
from ofi_fast.feeds._common import ErrorLog, TokenSource


def _bits(x):
    return struct.unpack("<q", struct.pack("<d", x))[0]


def _same(a, b):
    """Equal values, NaN == NaN, and float64 equal bit for bit (so -0.0 != 0.0)."""
    if isinstance(b, float):
        return _bits(float(a)) == _bits(b)
    return int(a) == b


def _run(columns, data, skip_blank=False, block_bytes=None, on_error="raise", prefetch=False):
    """Parse with the compiled tokenizer (optionally through TokenSource in small blocks)."""
    if block_bytes is None:
        arrays, bad_ids = C.parse_rows(columns, data, skip_blank=skip_blank)
        return [None if a is None else a.tolist() for a in arrays], bad_ids, []
    tok = C.Tokenizer(columns, skip_blank)
    log = ErrorLog("mem.csv", on_error)
    src = TokenSource(io.BytesIO(data), tok, log, block_bytes=block_bytes, prefetch=prefetch)
    cap = data.count(b"\n") + 2
    outs = [None if c["kind"] in (C.SKIP, C.MATCH) else np.zeros(cap, C._OUT_DTYPE[c["kind"]])
            for c in columns]
    rows = 0
    with src:
        while True:  # a few lines per call: exercises row0 and blocks cut anywhere
            n, lines, _ = src.read(outs, 3, row0=rows)
            rows += n
            if lines == 0:
                break
    _run.other = src.other
    return ([None if a is None else a[:rows].tolist() for a in outs], src.bad_ids,
            [line for line, _ in log.first])


def _check_equal(got, exp):
    for g, e in zip(got, exp):
        if e is None:
            assert g is None
            continue
        assert len(g) == len(e)
        for a, b in zip(g, e):
            assert _same(a, b), (a, b)


def test_constants_match_reference():
    assert (C.SKIP, C.INT, C.INT8, C.SCALED, C.FLOAT, C.INT_F64, C.BOOL, C.SIDE_BOOK,
            C.SIDE_TRADE, C.ID, C.MATCH) == (R.CSV_SKIP, R.CSV_INT, R.CSV_INT8, R.CSV_SCALED,
                                             R.CSV_FLOAT, R.CSV_INT_F64, R.CSV_BOOL,
                                             R.CSV_SIDE_BOOK, R.CSV_SIDE_TRADE, R.CSV_ID,
                                             R.CSV_MATCH)
    assert (C.PARSE_BAD_NUMBER, C.PARSE_OUT_OF_RANGE, C.PARSE_OVERFLOW, C.PARSE_TOO_FEW,
            C.PARSE_TOO_MANY, C.PARSE_BAD_TOKEN, C.PARSE_EMPTY_FIELD, C.PARSE_EMPTY_LINE,
            C.PARSE_TOO_LONG) == (R.CSV_BAD_NUMBER, R.CSV_OUT_OF_RANGE, R.CSV_OVERFLOW,
                                  R.CSV_TOO_FEW, R.CSV_TOO_MANY, R.CSV_BAD_TOKEN,
                                  R.CSV_EMPTY_FIELD, R.CSV_EMPTY_LINE, R.CSV_TOO_LONG)


# floats: bit for bit equal to float(text) -------------------------------------------------------

_digits = st.text("0123456789", min_size=0, max_size=22)
_float_text = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9).flatmap(
        lambda x: st.sampled_from([f"{x:.2f}", f"{x:.6f}", f"{x:.8f}", f"{x:.17g}", f"{x:e}"])),
    st.tuples(st.sampled_from(["", "-", "+"]), _digits, st.sampled_from(["", "."]), _digits,
              st.sampled_from(["", "e", "E", "e-", "e+"]),
              st.integers(0, 400)).map(
        lambda t: t[0] + t[1] + t[2] + t[3] + (t[4] + str(t[5]) if t[4] else "")),
)


@settings(max_examples=400, deadline=None)
@given(texts=st.lists(_float_text, min_size=1, max_size=30))
def test_float_bit_exact_vs_python(texts):
    spec = [C.column("x", C.FLOAT)]
    for t in texts:
        data = t.encode() + b"\n"
        try:
            exp = float(t)
            ok = not math.isinf(exp) and t.lstrip("+-")[:1] not in ("e", "E")
        except ValueError:
            ok = False
        try:
            got = C.parse_rows(spec, data)[0][0]
        except ValueError as exc:
            status = exc.args[0]
            assert not ok or status == C.PARSE_TOO_LONG, (t, exc.args)
            with pytest.raises(R.CSVFieldError) as ei:
                R.csv_parse(spec, data)
            assert ei.value.status == status or status == C.PARSE_TOO_LONG
            continue
        assert ok, t
        assert _bits(float(got[0])) == _bits(exp), (t, got[0], exp)


def test_float_hard_cases():
    """Halfway cases and long mantissas that a naive m * 10**e gets wrong go through strtod."""
    for t in ["9007199254740993", "0.1000000000000000055511151231257827021181583404541015625",
              "2.2250738585072011e-308", "4.9e-324", "1.7976931348623157e308", "123456789012345678",
              "0.000000000000000000000000000001", "7541.38", "0.085806", "-0", "-0.0", "1e22",
              "1e23", "8.41e21", "5e-324", "1.", ".5", "+3"]:
        got = C.parse_rows([C.column("x", C.FLOAT)], t.encode())[0][0][0]
        assert _bits(float(got)) == _bits(float(t)), t
    with pytest.raises(ValueError) as ei:
        C.parse_rows([C.column("x", C.FLOAT)], b"1e309")
    assert ei.value.args[0] == C.PARSE_OVERFLOW
    for bad in [b"nan", b"inf", b"1e", b"1.2.3", b"--1", b"0x10", b" 1", b"1 "]:
        with pytest.raises(ValueError) as ei:
            C.parse_rows([C.column("x", C.FLOAT)], bad)
        assert ei.value.args[0] == C.PARSE_BAD_NUMBER, bad


# exact decimals -> scaled integers ---------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["", "-", "+"]), st.text("0123456789", max_size=12),
                               st.booleans(), st.text("0123456789", max_size=14)),
                     min_size=1, max_size=20),
       digits=st.integers(0, 9))
def test_scaled_exact_vs_fraction(rows, digits):
    spec = [C.column("t", C.SCALED, digits=digits)]
    for sign, whole, dot, frac in rows:
        t = sign + whole + ("." if dot else "") + (frac if dot else "")
        if not (whole or (dot and frac)):
            with pytest.raises(ValueError):
                C.parse_rows(spec, t.encode() + b"\n")
            continue
        x = abs(Fraction(t.lstrip("+-").rstrip(".") or "0")) * 10**digits
        mag = int(x) + (1 if x - int(x) >= Fraction(1, 2) else 0)  # halves away from zero
        exp = -mag if sign == "-" else mag
        if not -(2**63) <= exp < 2**63:
            with pytest.raises(ValueError) as ei:
                C.parse_rows(spec, t.encode() + b"\n")
            assert ei.value.args[0] == C.PARSE_OVERFLOW
            continue
        got = C.parse_rows(spec, t.encode() + b"\n")[0][0][0]
        assert got == exp, (t, digits)


def test_int_limits_and_overflow():
    spec = [C.column("i", C.INT)]
    vals = C.parse_rows(spec, b"9223372036854775807\n-9223372036854775808\n+0\n-0\n00012")[0][0]
    assert vals.tolist() == [2**63 - 1, -(2**63), 0, 0, 12]
    for bad in [b"9223372036854775808", b"-9223372036854775809", b"99999999999999999999"]:
        with pytest.raises(ValueError) as ei:
            C.parse_rows(spec, bad)
        assert ei.value.args[0] == C.PARSE_OVERFLOW
    with pytest.raises(ValueError) as ei:  # x 1000 overflows
        C.parse_rows([C.column("us", C.INT, mult=1000)], b"9223372036854776")
    assert ei.value.args[0] == C.PARSE_OVERFLOW
    with pytest.raises(ValueError) as ei:  # + offset overflows
        C.parse_rows([C.column("t", C.SCALED, digits=9, offset=2**62)], b"9223372037")
    assert ei.value.args[0] == C.PARSE_OVERFLOW


# whole blocks vs the reference: random specs, rows, line ends, blocks -------------------------

_KINDS = [C.SKIP, C.INT, C.INT8, C.SCALED, C.FLOAT, C.INT_F64, C.BOOL, C.SIDE_BOOK, C.SIDE_TRADE,
          C.ID, C.MATCH]


def _spec(kind, i, draw):
    kw = {}
    if kind == C.INT:
        kw = dict(lo=draw(st.sampled_from([None, 0, -5])), mult=draw(st.sampled_from([1, 1000])),
                  offset=draw(st.sampled_from([0, 7, -10**12])))
    elif kind == C.INT8:
        kw = dict(lo=-1, hi=draw(st.sampled_from([1, 7])), nonzero=draw(st.booleans()))
    elif kind == C.SCALED:
        kw = dict(digits=draw(st.integers(0, 9)), lo=draw(st.sampled_from([None, 0])),
                  offset=draw(st.sampled_from([0, 1_583_107_200 * 10**9])))
    elif kind == C.FLOAT:
        kw = dict(positive=draw(st.booleans()), empty=draw(st.sampled_from([None, math.nan, 0.0])))
    elif kind == C.MATCH:
        kw = dict(token=b"BTCUSDT", strict=draw(st.booleans()))
    elif kind == C.INT_F64:
        kw = dict(divisor=draw(st.sampled_from([1.0, 10_000.0])),
                  sentinel=draw(st.sampled_from([None, 9_999_999_999, -9_999_999_999])),
                  zero_after_sentinel=draw(st.booleans()), lo=draw(st.sampled_from([None, 0])))
    return C.column(f"c{i}", kind, **kw)


_FIELD = {
    C.SKIP: st.sampled_from(["binance", "BTCUSDT", "", "x y", "1.5"]),
    C.MATCH: st.sampled_from(["BTCUSDT", "BTCUSDT", "ETHUSDT", "BTCUSD", "BTCUSDTX", ""]),
    C.INT: st.one_of(st.integers(-10**6, 10**17).map(str), st.sampled_from(["", "x", "1.5", "-"])),
    C.INT8: st.sampled_from(["1", "-1", "0", "7", "8", "200", "", "a"]),
    C.SCALED: st.tuples(st.text("0123456789", max_size=6), st.booleans(),
                        st.text("0123456789", max_size=12), st.sampled_from(["", "", "-", "x"])
                        ).map(lambda t: (t[3] if t[3] != "x" else "") + t[0]
                              + ("." + t[2] if t[1] else "") + ("x" if t[3] == "x" else "")),
    C.FLOAT: st.one_of(_float_text, st.sampled_from(["", "0", "-1.5", "nan"])),
    C.INT_F64: st.one_of(st.integers(-10**10, 10**10).map(str),
                         st.sampled_from(["9999999999", "-9999999999", "", "12a"])),
    C.BOOL: st.sampled_from(["true", "false", "", "True"]),
    C.SIDE_BOOK: st.sampled_from(["bid", "ask", "buy", ""]),
    C.SIDE_TRADE: st.sampled_from(["buy", "sell", "unknown", "bid", ""]),
    C.ID: st.one_of(st.integers(-10, 10**19).map(str), st.sampled_from(["", "abc", "12-3"])),
}


@st.composite
def _blocks(draw):
    kinds = draw(st.lists(st.sampled_from(_KINDS), min_size=1, max_size=6))
    spec = [_spec(k, i, draw) for i, k in enumerate(kinds)]
    nrows = draw(st.integers(0, 12))
    lines = []
    for _ in range(nrows):
        r = draw(st.integers(0, 9))
        if r == 0:
            lines.append("")  # blank line
            continue
        fields = [draw(_FIELD[k]) for k in kinds]
        if r == 1:  # column count off by one
            fields = fields[:-1] if draw(st.booleans()) and len(fields) > 1 else fields + ["1"]
        lines.append(",".join(fields))
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    text = nl.join(lines) + (nl if draw(st.booleans()) else "")
    return spec, text.encode()


@settings(max_examples=300, deadline=None)
@given(case=_blocks(), skip_blank=st.booleans(), block_bytes=st.sampled_from([None, 1, 7, 64]))
def test_tokenizer_matches_reference(case, skip_blank, block_bytes):
    spec, data = case
    counts = {}
    try:
        exp, exp_ids, _ = R.csv_parse(spec, data, skip_blank=skip_blank, counts=counts)
    except R.CSVFieldError as e:
        if block_bytes is None:
            with pytest.raises(ValueError) as ei:
                _run(spec, data, skip_blank)
            assert ei.value.args[:3] == (e.status, e.line, e.field)
        else:
            with pytest.raises(ParseError) as ei:
                _run(spec, data, skip_blank, block_bytes)
            assert ei.value.line == e.line
        return
    got, ids, _ = _run(spec, data, skip_blank, block_bytes)
    _check_equal(got, exp)
    assert ids == exp_ids
    if block_bytes is not None:
        assert _run.other == counts["other"]


@settings(max_examples=150, deadline=None)
@given(case=_blocks(), block_bytes=st.sampled_from([1, 5, 64, 1 << 20]), prefetch=st.booleans())
def test_tokenizer_skip_mode_matches_reference(case, block_bytes, prefetch):
    spec, data = case
    counts = {}
    exp, exp_ids, bad = R.csv_parse(spec, data, on_error="skip", counts=counts)
    got, ids, got_bad = _run(spec, data, False, block_bytes, on_error="skip", prefetch=prefetch)
    _check_equal(got, exp)
    assert ids == exp_ids
    assert _run.other == counts["other"]
    assert got_bad == [line for _, line, _ in bad][:ErrorLog.keep]


def test_line_ends_and_final_newline():
    spec = [C.column("a", C.INT), C.column("b", C.FLOAT)]
    for data in [b"1,2.5\r\n3,4\r\n", b"1,2.5\n3,4", b"1,2.5\r\n3,4\r", b"1,2.5\n3,4\n"]:
        (a, b), _ = C.parse_rows(spec, data)
        assert a.tolist() == [1, 3] and b.tolist() == [2.5, 4.0], data
    (a, _), _ = C.parse_rows(spec, b"\n1,2\n\n\r\n3,4\n\n", skip_blank=True)
    assert a.tolist() == [1, 3]
    with pytest.raises(ValueError) as ei:
        C.parse_rows(spec, b"1,2\n\n3,4\n")
    assert ei.value.args[:3] == (C.PARSE_EMPTY_LINE, 2, -1)
    with pytest.raises(ValueError) as ei:  # a lone \r inside a line is not a line end
        C.parse_rows(spec, b"1,2\r3,4\n")
    assert ei.value.args[:3] == (C.PARSE_BAD_NUMBER, 1, 1)


def test_bind_checks():
    tok = C.Tokenizer([C.column("a", C.INT), C.column("s", C.SKIP), C.column("f", C.FLOAT)])
    with pytest.raises(ValueError, match="int64"):
        tok.bind([np.zeros(3), None, np.zeros(3)])
    with pytest.raises(ValueError, match="skipped"):
        tok.bind([np.zeros(3, np.int64), np.zeros(3), np.zeros(3)])
    with pytest.raises(ValueError, match="outputs"):
        tok.bind([np.zeros(3, np.int64)])
    a, f = np.zeros(2, np.int64), np.zeros((2, 3))
    tok.bind([a, None, f[:, 1]])  # strided destination
    st_, pos, lines, rows = tok.parse(b"1,x,2\n3,y,4\n5,z,6\n", 0, 10, True, 0)[:4]
    assert (st_, lines, rows) == (0, 2, 2)  # capped by the outputs' length
    assert a.tolist() == [1, 3] and f[:, 1].tolist() == [2.0, 4.0] and not f[:, 0].any()
    with pytest.raises(ValueError, match="kind"):
        C.Tokenizer([C.column("a", 42)])
    with pytest.raises(ValueError, match="int8"):
        C.Tokenizer([C.column("a", C.INT8, lo=-200)])


# error paths through the readers: ParseError names file, line and field ----------------------

MSG = ["34200.1,1,11,100,1000000,1", "34200.2,1,12,50,1000100,-1", "34200.3,3,11,100,1000000,1"]
BOOK = ["1000100,50,1000000,100"] * 3


def _lobster(tmp_path, msg, book):
    mp = tmp_path / "X_2020-03-02_34200000_57600000_message_1.csv"
    (tmp_path / "X_2020-03-02_34200000_57600000_orderbook_1.csv").write_text("\n".join(book) + "\n")
    mp.write_text("\n".join(msg) + "\n")
    return mp


@pytest.mark.parametrize("bad,words", [
    ("34200.25,1,12,50,1000100", ["too few columns", "field 6 (direction)"]),
    ("34200.25,1,12,50,1000100,1,9", ["too many columns"]),
    ("34200.25,1,12,5x0,1000100,1", ["field 4 (size)", "'5x0'", "not an integer"]),
    ("34200.2.5,1,12,50,1000100,1", ["field 1 (time)", "not a decimal number"]),
    ("-34200.25,1,12,50,1000100,1", ["field 1 (time)", "negative"]),
    ("34200.25,8,12,50,1000100,1", ["field 2 (type)", "outside 1..7"]),
    ("34200.25,1,12,50,1000100,0", ["field 6 (direction)", "non-zero"]),
    ("34200.25,1,99999999999999999999,50,1000100,1", ["field 3 (order_id)", "overflows int64"]),
    ("34200.25,1,12,,1000100,1", ["field 4 (size)", "empty"]),
    ("", ["empty line"]),
    ("34200.25,7,0,0,5,-1", ["halt", "not -1/0/1"]),
])
def test_lobster_errors_name_file_line_field(tmp_path, bad, words):
    mp = _lobster(tmp_path, MSG[:2] + [bad] + MSG[2:], BOOK + BOOK[:1])
    with pytest.raises(ParseError) as ei:
        F.read_lobster(mp, tz=None)
    msg = str(ei.value)
    assert ei.value.line == 3 and f"{mp}:3:" in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    if "field" in words[0]:  # the column name is also an attribute
        assert ei.value.field == words[0].split("(")[1].rstrip(")")
    r = F.LobsterReader(mp, tz=None, on_error="skip", chunk_rows=2)
    m = r.read()
    assert r.errors.count == 1 and r.errors.first[0][0] == 3 and len(m) == 3
    np.testing.assert_array_equal(m.order_id, [11, 12, 11])


def test_lobster_book_errors_name_level(tmp_path):
    mp = _lobster(tmp_path, MSG, BOOK[:1] + ["1000100,-5,1000000,100"] + BOOK[2:])
    with pytest.raises(ParseError) as ei:
        F.read_lobster(mp, tz=None)
    assert ei.value.line == 2 and "orderbook" in str(ei.value) and "ask_sz[0]" in str(ei.value)
    mp = _lobster(tmp_path, MSG, BOOK[:2] + ["1000100,5,10x0000,100"])
    with pytest.raises(ParseError, match=r"field 3 \(bid_px\[0\]\)") as ei:
        F.read_lobster(mp, tz=None)
    assert ei.value.line == 3


HDR = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"


@pytest.mark.parametrize("bad,words", [
    ("x,Y,3,3,false,bod,10,2", ["field 6 (side)", "bid/ask"]),
    ("x,Y,3,3,nope,bid,10,2", ["field 5 (is_snapshot)", "true/false"]),
    ("x,Y,3,3,false,bid,0,2", ["field 7 (price)", "> 0"]),
    ("x,Y,3,3,false,bid,1e999,2", ["field 7 (price)", "overflows float64"]),
    ("x,Y,3,3,false,bid,10," + "1" * 500, ["field 8 (amount)", "longer than"]),
    ("x,Y,3,3,false,bid,10,-0.5", ["field 8 (amount)", ">= 0"]),
    ("x,Y,3,9223372036854776,false,bid,10,2", ["field 4 (local_timestamp)", "overflows"]),
    ("x,Y,3,3,false,,10,2", ["field 6 (side)", "empty"]),
])
def test_tardis_errors_name_file_line_field(tmp_path, bad, words):
    p = tmp_path / "t.csv"
    p.write_text(HDR + "\nx,Y,2,2,true,bid,10,1\n" + bad + "\nx,Y,4,4,false,ask,11.5,3\n")
    with pytest.raises(ParseError) as ei:
        F.read_tardis(p)
    msg = str(ei.value)
    assert ei.value.line == 3 and f"{p}:3:" in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    r = F.TardisReader(p, on_error="skip")
    d = r.read()
    assert r.errors.count == 1 and len(d) == 2


def test_tardis_trade_ids_and_crlf(tmp_path):
    p = tmp_path / "tr.csv"
    p.write_bytes(b"exchange,symbol,timestamp,local_timestamp,id,side,price,amount\r\n"
                  b"x,Y,1,2,17,buy,10.5,1\r\nx,Y,3,4,ab-c,sell,10.25,2\r\nx,Y,5,6,,unknown,11,3")
    r = F.TardisReader(p)
    t = r.read()
    assert t.trade_id.tolist() == [17, -1, -1] and r.stats["non_numeric_ids"] == 2
    assert t.side.tolist() == [1, -1, 0] and t.ts_local.tolist() == [2000, 4000, 6000]
    assert t.price.tolist() == [10.5, 10.25, 11.0]


def test_whole_file_growth_path_equals_chunks(monkeypatch):
    """read() parses into arrays grown in place (ndarray.resize); force many doublings by
    under-estimating the line count, and compare with the chunked iteration."""
    from conftest import data_file
    lob = data_file("lobster", "AAPL_2012-06-21_34200000_57600000_message_10.csv")
    tar = data_file("tardis",
                    "tardis_binance_BTCUSDT_incremental_book_L2_2019-12-01_rows_1_2050.csv")
    tr = data_file("tardis", "tardis_binance_BTCUSDT_trades_2019-12-01_rows_1_100.csv")
    chunked = [F.LobsterMessages.concat(list(F.iter_lobster(lob, chunk_rows=100))),
               F.BookDeltas.concat(list(F.iter_tardis(tar, chunk_rows=100))),
               F.Trades.concat(list(F.iter_tardis(tr, chunk_rows=7)))]
    monkeypatch.setattr(TokenSource, "estimate_lines", lambda self, total: 1)
    whole = [F.read_lobster(lob), F.read_tardis(tar), F.read_tardis(tr)]
    for w, c in zip(whole, chunked):
        assert len(w) == len(c) > 0
        for k, v in c.as_dict().items():
            np.testing.assert_array_equal(getattr(w, k), v, err_msg=k)


def test_prefetch_errors_and_early_close():
    import threading

    class Broken(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > 20:
                raise OSError("disk on fire")
            return super().read(8)

    spec = [C.column("a", C.INT), C.column("b", C.INT)]
    src = TokenSource(Broken(b"1,2\n" * 100), C.Tokenizer(spec), ErrorLog("x", "raise"),
                      block_bytes=8, prefetch=True)
    a, b = np.zeros(200, np.int64), np.zeros(200, np.int64)
    with src, pytest.raises(OSError, match="fire"):
        src.read([a, b], 200)
    assert a[:5].tolist() == [1] * 5  # rows before the failing read were parsed
    # a reader abandoned after its first chunk stops its prefetch threads
    from conftest import data_file
    before = threading.active_count()
    it = F.iter_lobster(data_file("lobster", "LOBSTER_SampleFile_GOOG_2012-06-21_10.zip"),
                        chunk_rows=10)
    assert len(next(it)) == 10
    assert threading.active_count() > before  # the order-book prefetcher waits on its queue
    it.close()
    assert threading.active_count() == before


@pytest.mark.parametrize("kind", [C.INT, C.INT_F64, C.ID, C.FLOAT, C.SCALED])
def test_every_digit_count_fast_and_slow_paths(kind):
    """Numbers of 1..20 digits (and with a fraction for floats / decimals), in the middle of a
    long buffer (SWAR paths: 1, 2 or 3 steps of 8 digits) and at its very end (scalar path)."""
    rng = np.random.default_rng(7)
    texts = []
    for n in range(1, 21):
        texts += ["9" * n, "1" + "0" * (n - 1), "".join(rng.choice(list("0123456789"), n)),
                  "-" + "7" * n]
        if kind in (C.FLOAT, C.SCALED):
            for k in range(0, 10):
                texts.append("".join(rng.choice(list("0123456789"), n)) + "." + "3" * k)
    spec = [C.column("x", kind, digits=9), C.column("y", C.INT)]
    for t in texts:
        for data in [(t + ",5\n") * 3 + "1,2\n" * 4, "1,2\n" + t + ",5"]:
            data = data.encode()
            try:
                exp, exp_ids, _ = R.csv_parse(spec, data)
            except R.CSVFieldError as e:
                with pytest.raises(ValueError) as ei:
                    C.parse_rows(spec, data)
                assert ei.value.args[:3] == (e.status, e.line, e.field), t
                continue
            got, ids = C.parse_rows(spec, data)
            _check_equal([a.tolist() for a in got], exp)
            assert ids == exp_ids


def test_lobster_level_from_first_book_line(tmp_path):
    """Files named freely: the level count comes from the first order-book line."""
    mp, bp = tmp_path / "msg.csv", tmp_path / "book.csv"
    mp.write_text("\n".join(MSG) + "\n")
    bp.write_text("\n".join(["1000100,50,1000000,100,1000200,5,9999,1"] * 3) + "\n")
    r = F.LobsterReader(mp, bp, date="2020-03-02", tz=None)
    m = r.read()
    assert r.level == 2 and m.bid_px.shape == (3, 2)
    np.testing.assert_array_equal(m.ask_px[0], [100.01, 100.02])
    np.testing.assert_array_equal(m.bid_sz[0], [100.0, 1.0])


@settings(max_examples=60, deadline=None)
@given(kinds=st.lists(st.sampled_from(["ok", "bad", "other", "blank"]), min_size=1,
                      max_size=60),
       block=st.sampled_from([7, 16, 64, 1 << 16]), want=st.sampled_from([1, 3, 1000]))
def test_lines_output_is_each_rows_line_whatever_was_skipped(kinds, block, want):
    """``TokenSource.read(..., lines_out=)`` writes each row's 1-based line number exactly:
    malformed lines skipped under on_error="skip", another symbol's lines (MATCH) and blank
    lines all consume a line and write no row, across blocks and calls."""
    text = {"ok": b"A,%d", "bad": b"A,x%d", "other": b"B,%d", "blank": b""}
    lines = [b"header"] + [text[k] % i if b"%d" in text[k] else text[k]
                           for i, k in enumerate(kinds)]
    data = b"\n".join(lines) + b"\n"
    spec = [C.column("sym", C.MATCH, token=b"A"), C.column("v", C.INT)]
    tok = C.Tokenizer(spec, skip_blank=True)
    src = TokenSource(io.BytesIO(data), tok, ErrorLog("x", "skip"), skip_lines=1,
                      block_bytes=block)
    n = len(kinds)
    v, ln = np.zeros(n, np.int64), np.zeros(n, np.int64)
    rows = 0
    while True:
        dr, dl, _ = src.read([None, v[rows:]], want, lines_out=ln[rows:])
        rows += dr
        if not dl:
            break
    expect = [i + 2 for i, k in enumerate(kinds) if k == "ok"]   # line 1 is the header
    assert ln[:rows].tolist() == expect
    assert v[:rows].tolist() == [i for i, k in enumerate(kinds) if k == "ok"]
