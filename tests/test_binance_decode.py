"""ofi_fast._binance_decode (the live client's diff decoder) against the file reader.

- On every diff of the shared Binance recordings, ``DiffBuffers.scan`` of the raw frame takes
  the frame (the fast path is the common path) and gives the rows ``feeds.BinanceReader``
  produced for that message, bit for bit, and the fields a full JSON decoding gives.
- Fuzzed frames and level lists (hypothesis): the decoder never raises; whatever it takes is
  valid JSON of the depthUpdate shape and decodes to the same fields and, through the file
  reader's conversion (``float()`` + its bounds), to the same rows bit for bit; what it does
  not take (None / -1) goes to the full path of today.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ofi_fast._binance_decode import DiffBuffers
from ofi_fast.feeds import BinanceReader
from ofi_fast.feeds._l2 import FLAG_BATCH_END, FLAG_SNAPSHOT
from ofi_fast.feeds.binance import _px, _sz
from tests.conftest import data_file

FIELDS = ("e", "E", "T", "s", "U", "u", "pu")


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def reference_rows(data):
    """The rows BinanceSync.diff builds for a decoded diff (ValueError / TypeError if bad)."""
    rows = ([(1, _px(p), _sz(q)) for p, q in data["b"]]
            + [(-1, _px(p), _sz(q)) for p, q in data["a"]])
    side = np.array([r[0] for r in rows], np.int8)
    return side, np.array([r[1] for r in rows], np.float64), np.array([r[2] for r in rows],
                                                                       np.float64)


def check_rows(dec, n, side, px, sz, ts):
    assert n == dec.n == side.shape[0]
    assert np.array_equal(dec.side[:n], side)
    assert bits(dec.price[:n]).tobytes() == bits(px).tobytes()      # bit for bit (-0.0 too)
    assert bits(dec.size[:n]).tobytes() == bits(sz).tobytes()
    want_flags = np.zeros(n, np.uint8)
    if n:
        want_flags[-1] = FLAG_BATCH_END
    assert np.array_equal(dec.flags[:n], want_flags)
    assert np.array_equal(dec.batch_end[:n], want_flags != 0)
    assert np.all(dec.ts[:n] == ts)


@pytest.mark.parametrize("market", ["usdm", "spot"])
def test_scan_equals_the_file_reader_on_the_recordings(market):
    path = data_file("binance_hftbacktest", market, "btcusdt_20240808.gz")
    d = BinanceReader(path, on_gap="resync").read().depth
    diff = (d.flags & FLAG_SNAPSHOT) == 0
    uid, side, px, sz = d.update_id[diff], d.side[diff], d.price[diff], d.size[diff]
    ends = np.flatnonzero((d.flags[diff] & FLAG_BATCH_END) != 0)
    starts = np.r_[0, ends[:-1] + 1]
    by_u = {int(uid[a]): (a, b + 1) for a, b in zip(starts, ends)}
    from ofi_fast.feeds._recorded import loads
    from ofi_fast.live.replay import read_lines
    dec = DiffBuffers(8)                      # small: the growth path is exercised too
    n_diffs = n_checked = 0
    for _, ts_local, body in read_lines(path):
        if b'"depthUpdate"' not in body:
            assert dec.scan(body, 0, True) is None
            continue
        n_diffs += 1
        got = dec.scan(body, ts_local, True)
        assert got is not None, body[:120]
        data = loads(body)["data"]
        assert got == {k: data[k] for k in FIELDS if k in data}
        rows = reference_rows(data)
        check_rows(dec, len(rows[0]), *rows, data["E"] * 1_000_000)
        if data["u"] in by_u:                               # applied by the file reader
            a, b = by_u[data["u"]]
            check_rows(dec, b - a, side[a:b], px[a:b], sz[a:b], data["E"] * 1_000_000)
            n_checked += 1
        assert dec.scan(body, ts_local, False) is not None
        assert np.all(dec.ts[:dec.n] == ts_local)          # local clock: the receive time
        assert dec.fill(data["b"], data["a"], 7) == dec.n
        check_rows(dec, dec.n, *rows, 7)
    assert n_diffs > 3000 and n_checked > 0.95 * n_diffs


# -- fuzzing ------------------------------------------------------------------------------------

decimal = st.one_of(
    st.from_regex(r"\A[0-9]{1,8}(\.[0-9]{0,9})?\Z"),           # the plain form
    st.from_regex(r"\A\.[0-9]{1,4}\Z"),
    st.sampled_from(["0", "0.0", "-0", "-1.5", "1e3", "1E-2", "nan", "inf", "-inf", " 1",
                     "1 ", "1_000", "", ".", "1..2", "+1", "0x10", "1e400", "1" * 30,
                     "0." + "0" * 30 + "1", "١٢", "1\u00a0", "12345678901234567890.5"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
level = st.one_of(st.tuples(decimal, decimal).map(list),
                  st.lists(decimal, max_size=3),
                  st.tuples(st.floats(0.1, 1e6), decimal).map(list))
ints = st.one_of(st.integers(0, 2**41), st.integers(-2**70, 2**70), st.sampled_from(
    [0, -1, 2**63 - 1, 2**63, 10**18, 10**19]))


@st.composite
def frames(draw):
    """A depthUpdate frame (wrapped or bare, keys in Binance's order or shuffled, extra or
    missing keys, other values), serialized compactly or with spaces, then maybe mutated."""
    data = {"e": draw(st.sampled_from(["depthUpdate"] * 6 + ["trade", "depthupdate"])),
            "E": draw(ints), "T": draw(ints), "s": draw(st.sampled_from(
                ["BTCUSDT", "btcusdt", "BTC\u00e9", 'B"T', "B\\T"])),
            "U": draw(ints), "u": draw(ints), "pu": draw(ints),
            "b": draw(st.lists(level, max_size=12)), "a": draw(st.lists(level, max_size=12))}
    keys = list(data)
    for k in draw(st.sets(st.sampled_from(keys), max_size=3)):
        del data[k]
    if draw(st.booleans()):
        items = list(data.items())
        data = dict(draw(st.permutations(items)))
    if draw(st.integers(0, 9)) == 0:
        data["x"] = 1
    if draw(st.integers(0, 9)) == 0 and "E" in data:
        data["E"] = float(data["E"])
    msg = {"stream": "btcusdt@depth@100ms", "data": data} if draw(st.booleans()) else data
    sep = draw(st.sampled_from([(",", ":")] * 4 + [(", ", ": ")]))
    raw = json.dumps(msg, separators=sep, ensure_ascii=draw(st.booleans())).encode()
    op = draw(st.integers(0, 5))
    if op == 1 and raw:                                    # cut
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif op == 2 and raw:                                  # one byte changed
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1:]
    elif op == 3:                                          # bytes appended
        raw = raw + draw(st.sampled_from([b" ", b"}", b"x", b"\n", b"{}"]))
    return raw


@given(frames(), st.integers(-2**63, 2**63 - 1), st.booleans())
def test_scan_takes_only_what_the_full_decoding_takes_with_the_same_values(raw, ts_local, exch):
    dec = DiffBuffers(4)
    got = dec.scan(raw, ts_local, exch)
    if got is None:
        assert dec.n == 0
        return
    msg = json.loads(raw)                                  # valid JSON ...
    data = msg.get("data", msg) if isinstance(msg, dict) else None
    assert isinstance(data, dict) and data["e"] == "depthUpdate"       # ... of the diff shape
    assert got == {k: data[k] for k in FIELDS if k in data}
    assert set(data) <= set(FIELDS) | {"b", "a"}
    rows = reference_rows(data)                            # the file reader's conversion
    e = data.get("E")
    ts = (e * 1_000_000 if e is not None else np.iinfo(np.int64).min) if exch else ts_local
    check_rows(dec, len(rows[0]), *rows, ts)


@given(st.lists(level, max_size=10), st.lists(level, max_size=10))
def test_fill_equals_the_file_readers_rows_or_declines(b, a):
    dec = DiffBuffers(2)
    n = dec.fill(b, a, 5)
    try:
        rows = reference_rows({"b": b, "a": a})
    except (ValueError, TypeError):
        rows = None
    if n < 0:
        return                       # the caller converts the general way (either outcome)
    assert rows is not None, (b, a)  # never takes a level the file reader refuses
    check_rows(dec, n, *rows, 5)


binance_price = st.tuples(st.integers(1, 10**6 - 1), st.integers(0, 10**8 - 1)).map(
    lambda t: f"{t[0]}.{t[1]:08d}")          # "61737.63000000": up to 14 significant digits
binance_size = st.tuples(st.integers(0, 10**6 - 1), st.integers(0, 10**8 - 1)).map(
    lambda t: f"{t[0]}.{t[1]:08d}")
binance_levels = st.lists(st.tuples(binance_price, binance_size), max_size=40)


@given(binance_levels, binance_levels)
def test_the_binance_shape_always_takes_the_fast_path(b, a):
    """Prices and sizes as Binance writes them: the scanner takes every such frame (so the
    live client's fast path is the common one), bit for bit float()."""
    data = {"e": "depthUpdate", "E": 1723161256299, "T": 1723161256298, "s": "BTCUSDT",
            "U": 5123107832006, "u": 5123107837557, "pu": 5123107831937,
            "b": [list(x) for x in b], "a": [list(x) for x in a]}
    raw = json.dumps({"stream": "btcusdt@depth@0ms", "data": data},
                     separators=(",", ":")).encode()
    dec = DiffBuffers(1)
    assert dec.scan(raw, 0, True) == {k: data[k] for k in FIELDS}
    check_rows(dec, len(b) + len(a), *reference_rows(data), data["E"] * 1_000_000)
    assert all(math.isfinite(v) for v in dec.price[:dec.n])


def test_bad_capacity_is_a_clear_error():
    with pytest.raises(ValueError, match="capacity"):
        DiffBuffers(0)


# ---- the compiled in-sequence rule and BookOFI application (DiffBuffers.step / apply) ------

def _sync_in_state_sync(market, prev_u):
    from ofi_fast.feeds.binance import BinanceSync
    s = BinanceSync(market=market, symbol="BTCUSDT", on_gap="resync", buffer_gaps=True)
    s.state, s.prev_u, s.last_id = "sync", prev_u, prev_u
    return s


def _accepts(sync, no, data):
    """BinanceSync.accept's answer, and whether it changed anything (stats, state)."""
    import copy
    before = (copy.deepcopy(sync.stats), sync.state, sync.prev_u, list(sync.buffer))
    try:
        ok = sync.accept(no, 0, data)
    except ValueError:
        ok = None
    after = (sync.stats, sync.state, sync.prev_u, sync.buffer)
    return ok, before == after


ids = st.integers(0, 40)


@given(U=ids, du=st.integers(-3, 5), pu=st.one_of(st.none(), ids), prev=ids,
       market=st.sampled_from(["usdm", "spot"]))
def test_in_sequence_is_exactly_what_the_state_machine_applies_in_sync(U, du, pu, prev, market):
    """in_sequence (DiffBuffers.step's rule) is True exactly when BinanceSync.accept, in state
    "sync", applies the diff; then accept changes nothing (no count, no state), so the
    compiled path plus sync.commit is the state machine's decision. Gaps, duplicates,
    old diffs, a futures diff without pu: False, and the state machine decides."""
    from ofi_fast._binance_decode import in_sequence
    u = U + du
    data = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": U, "u": u, "b": [], "a": []}
    if pu is not None:
        data["pu"] = pu
    sync = _sync_in_state_sync(market, prev)
    ok, unchanged = _accepts(sync, 1, data)
    fast = in_sequence(U, u, pu, prev, market == "usdm")
    assert fast == (ok is True)
    if fast:
        assert unchanged


@pytest.mark.parametrize("market", ["usdm", "spot"])
@given(data=st.data())
def test_step_decisions_equal_the_state_machine_on_perturbed_recordings(market, data):
    """A stretch of a recording's messages (snapshot included) with diffs dropped (gaps),
    repeated (duplicates) and swapped (out of order), fed to two copies of the state machine:
    the file reader's way (BinanceSync.feed) and the live client's (DiffBuffers.step's rule in
    state "sync", sync.commit when it holds; sync.feed otherwise). Every decision, the stats
    and the rows applied are the same."""
    from ofi_fast._binance_decode import STEP_APPLIED, STEP_NONE, in_sequence
    from ofi_fast.feeds._l2 import BookDeltas, Columns, Quotes, Trades
    from ofi_fast.feeds.binance import BinanceSync
    msgs = _stretch(market)
    k = len(msgs)
    drop = set(data.draw(st.lists(st.integers(0, k - 1), max_size=4)))
    dup = set(data.draw(st.lists(st.integers(0, k - 1), max_size=4)))
    swap = set(data.draw(st.lists(st.integers(0, k - 2), max_size=4)))
    seq = list(msgs)
    for i in sorted(swap):
        seq[i], seq[i + 1] = seq[i + 1], seq[i]
    seq = [m for i, m in enumerate(seq) if i not in drop for _ in range(2 if i in dup else 1)]
    a = BinanceSync(market=market, symbol="BTCUSDT", on_gap="resync")
    b = BinanceSync(market=market, symbol="BTCUSDT", on_gap="resync")
    cols_a = [Columns(BookDeltas), Columns(Trades), Columns(Quotes)]
    cols_b = [Columns(BookDeltas), Columns(Trades), Columns(Quotes)]
    dec = DiffBuffers()
    dec.expect("BTCUSDT")
    fast = 0
    for no, (raw, msg) in enumerate(seq, 1):
        a.feed(no, 0, msg, *cols_a)
        if b.state == "sync" and dec.scan(raw, 0, True) is not None and dec.n:
            if in_sequence(dec.U, dec.u, dec.pu if dec.has_pu else None, b.prev_u,
                           market == "usdm"):
                b.stats["depth_messages"] += 1
                side, px, sz, flags = dec.rows()
                for j in range(dec.n):
                    cols_b[0].append(NO_T, 0, int(side[j]), float(px[j]), float(sz[j]), dec.u,
                                     int(flags[j]))
                b.commit(dec.u)
                fast += 1
                continue
        b.feed(no, 0, msg, *cols_b)
        assert (a.state, a.prev_u) == (b.state, b.prev_u), no
    assert a.stats == b.stats
    da, db = cols_a[0].flush(), cols_b[0].flush()
    for f in ("side", "price", "size", "update_id", "flags"):
        assert np.array_equal(getattr(da, f), getattr(db, f)), f
    if not (drop or dup or swap):                     # (after a gap no snapshot follows)
        assert fast > 0.8 * a.stats["applied"] > 50   # the compiled rule did decide


NO_T = -(1 << 63)
_STRETCH = {}


def _stretch(market):
    """The recording's first snapshot and ~150 messages around it: (raw frame, decoded),
    every diff's E replaced by NO_TIME in the rows compared (times are not the rule's)."""
    if market not in _STRETCH:
        from ofi_fast.live.replay import read_lines
        lines = read_lines(data_file("binance_hftbacktest", market, "btcusdt_20240808.gz"),
                           3000)
        out = []
        for _, _, body in lines:
            msg = json.loads(body)
            data = msg.get("data", msg)
            if "lastUpdateId" in data or data.get("e") == "depthUpdate":
                out.append((body, data))
        _STRETCH[market] = out[:150]
    return _STRETCH[market]


@pytest.mark.parametrize("market", ["usdm", "spot"])
def test_apply_equals_update_many_bit_for_bit_and_raises_its_error(market):
    """DiffBuffers.apply (BookOFI.rows on the buffers) gives update_many's e, OFI value and
    book on every diff of a recording stretch; a bad row raises update_many's error after the
    same rows, leaving the same state."""
    import ofi_fast
    from ofi_fast.errors import OFIError
    msgs = _stretch(market)
    snap = next(d for _, d in msgs if "lastUpdateId" in d)
    tick = 0.1 if market == "usdm" else 0.01

    def book():
        o = ofi_fast.BookOFI(tick, levels=3, window_time=10**9, grow=True, crossed="keep")
        f = lambda lv: np.array([float(x) for x in lv])      # noqa: E731
        o.load_snapshot(f(p for p, _ in snap["bids"]), f(q for _, q in snap["bids"]),
                        f(p for p, _ in snap["asks"]), f(q for _, q in snap["asks"]))
        return o
    x, y = book(), book()
    dec = DiffBuffers()
    n_diffs = 0
    for raw, d in msgs:
        if "lastUpdateId" in d or dec.scan(raw, 0, True) is None or dec.n == 0:
            continue
        n = dec.n
        e = y.update_many(dec.ts[:n], dec.side[:n], dec.price[:n], dec.size[:n],
                          batch_end=dec.batch_end[:n])
        got = dec.apply(x)
        assert bits(np.array([got])).tobytes() == bits(e[-1:]).tobytes()
        assert bits(dec.out[:n]).tobytes() == bits(e).tobytes()
        assert x.value == y.value and (dec.mid == y.book.mid or math.isnan(y.book.mid))
        n_diffs += 1
    assert n_diffs > 50
    assert np.array_equal(np.asarray(x.book.top(20)), np.asarray(y.book.top(20)),
                          equal_nan=True)
    # row 2 off the tick grid: the same OFIError (field, index), rows 0-1 applied by both
    p0 = x.book.mid
    frame = (b'{"e":"depthUpdate","E":1723161300000,"s":"BTCUSDT","U":1,"u":2,"pu":0,'
             b'"b":[["%.1f","1"],["%.1f","2"],["%.3f","3"]],"a":[]}'
             % (p0 - 50, p0 - 60, p0 - 70.001))
    assert dec.scan(frame, 0, True) is not None and dec.n == 3
    with pytest.raises(OFIError) as ea:
        dec.apply(x)
    with pytest.raises(OFIError) as eb:
        y.update_many(dec.ts[:3], dec.side[:3], dec.price[:3], dec.size[:3],
                      batch_end=dec.batch_end[:3])
    assert str(ea.value) == str(eb.value) and "price[2]" in str(ea.value)
    assert ea.value.field == eb.value.field and ea.value.index == eb.value.index == 2
    assert np.array_equal(np.asarray(x.book.top(50)), np.asarray(y.book.top(50)),
                          equal_nan=True)
