"""A downstream Cython extension built at test time against ofi_fast.get_include(): it
cimports OFI and calls its nogil push() in a loop, and BookOFI's nogil rows() one message at a
time, and builds a window of its own on the ring (`_ring.pxd`); results must match the Python
API or numpy (numpy's test_extending pattern)."""

import textwrap

import numpy as np
import pytest
from conftest import cython_consumer, random_quotes

import ofi_fast

CONSUMER = textwrap.dedent("""
    # cython: language_level=3, boundscheck=False, wraparound=False
    import numpy as np
    from ofi_fast._ofi cimport OFI
    from ofi_fast._book cimport BookOFI, raise_bookofi
    from ofi_fast._ring cimport (
        Ring, ring_free, ring_init_rows, ring_pop_slot, ring_push_slot, window_reserve,
    )
    from ofi_fast._types cimport float64_t, int64_t, intp_t

    def run(OFI o, const int64_t[::1] ts, const float64_t[::1] bp, const float64_t[::1] bs,
            const float64_t[::1] ap, const float64_t[::1] az):
        cdef intp_t i, n = ts.shape[0]
        out = np.zeros(n)
        cdef float64_t[::1] e = out
        cdef int status = 0
        with nogil:
            for i in range(n):
                status = o.push(ts[i], bp[i], bs[i], ap[i], az[i], &e[i])
                if status != 0:
                    break
        return out, status, i, o.value_c()

    def run_book(BookOFI o, const int64_t[::1] ts, const signed char[::1] side,
                 const float64_t[::1] px, const float64_t[::1] sz,
                 const unsigned char[::1] end, intp_t L, intp_t step):
        # `step` rows per call, as a live client applies one message at a time
        cdef intp_t a = 0, b, at = 0, n = ts.shape[0]
        e_arr, lv_arr = np.zeros(n), np.zeros((n, L))
        cdef float64_t[::1] e = e_arr
        cdef float64_t[:, ::1] lv = lv_arr
        cdef int status = 0
        with nogil:
            while a < n and status == 0:
                b = a + step if a + step < n else n
                status = o.rows(b - a, &ts[a], &side[a], &px[a], &sz[a], &end[a], &e[a],
                                &lv[a, 0], &at)
                at += a
                a = b
        if status != 0:
            raise_bookofi(status, at)
        return e_arr, lv_arr

    def window_counts(const int64_t[::1] ts, int64_t window_time, intp_t capacity, bint grow):
        # a downstream time window on ofi_fast's ring: events in (t - window_time, t] after
        # each event; window_reserve refuses (time order, capacity) before anything changes
        cdef Ring r
        cdef intp_t i = 0, j, n = ts.shape[0]
        out = np.zeros(n, dtype=np.int64)
        cdef int64_t[::1] c = out
        cdef int status = ring_init_rows(&r, capacity, 1, False)
        with nogil:
            while status == 0 and i < n:
                status = window_reserve(&r, i > 0, ts[i - 1] if i > 0 else 0, ts[i],
                                        window_time, grow)
                if status != 0:
                    break
                while r.size > 0 and r.ts[r.head] <= ts[i] - window_time:
                    ring_pop_slot(&r)
                j = ring_push_slot(&r)
                r.ts[j] = ts[i]
                r.val[j] = 1.0
                c[i] = r.size
                i += 1
        cap = r.capacity
        ring_free(&r)
        return out, status, i, cap
""")

@pytest.fixture(scope="module")
def consumer(tmp_path_factory):
    with cython_consumer(tmp_path_factory.mktemp("consumer"), CONSUMER) as mod:
        yield mod


def test_get_include_holds_the_pxd_files():
    """Every compiled module ships its .pxd (DESIGN.md), beside the shared _types/_guard."""
    import importlib.machinery
    from pathlib import Path
    inc = Path(ofi_fast.get_include())
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    compiled = sorted(p.name.split(".")[0] for p in Path(ofi_fast.__file__).parent.iterdir()
                      if p.name.endswith(suffixes))
    assert {"_ofi", "_ring", "_book", "_trades", "_impact", "_csv", "_simulate"} <= set(compiled)
    for name in ["_types", "_guard", *compiled]:
        assert (inc / "ofi_fast" / f"{name}.pxd").is_file(), name


def test_cimport_consumer_matches_python(consumer):
    ts, bp, bs, ap, az = random_quotes(np.random.default_rng(11), 5000, p_empty=0.05)
    o = ofi_fast.OFI(window_time=20_000)
    e, status, _, value = consumer.run(o, ts, bp, bs, ap, az)
    py = ofi_fast.OFI(window_time=20_000)
    assert status == 0
    assert e.tolist() == py.update_many(ts, bp, bs, ap, az).tolist()
    assert value == py.value == o.value and o.n_events == 5000


def test_cimport_consumer_gets_status_codes(consumer):
    o = ofi_fast.OFI()
    bs = np.array([1.0, 2.0, -1.0, 4.0])
    _, status, i, _ = consumer.run(o, np.arange(4), np.full(4, 100.0), bs, np.full(4, 101.0),
                                   np.ones(4))
    # (status & 15) is the Status (3 = negative), (status >> 4) the field (2 = bid_sz)
    assert (status & 15, status >> 4, i) == (ofi_fast.errors.STATUS_NEGATIVE, 2, 2)
    assert o.n_events == 2


def _book_stream(n=3000, seed=5):
    rng = np.random.default_rng(seed)
    side = rng.choice(np.array([1, -1], dtype=np.int8), n)
    off = rng.integers(0, 12, n)
    px = np.where(side > 0, 100.0 - off * 0.5, 100.5 + off * 0.5)
    sz = np.where(rng.random(n) < 0.3, 0.0, rng.integers(1, 50, n).astype(float))
    end = rng.random(n) < 0.4
    end[-1] = True
    return np.arange(n, dtype=np.int64) * 1000, side, px, sz, end


@pytest.mark.parametrize("step", [1, 7, 3000])
def test_cimport_bookofi_rows_equals_update_many(consumer, step):
    """rows() from pointers, any number of rows per call (a batch spanning calls), gives
    update_many's e_1 and per-level e bit for bit, and the same final book."""
    ts, side, px, sz, end = _book_stream()
    o = ofi_fast.BookOFI(0.5, levels=5, window_time=50_000)
    e, lv = consumer.run_book(o, ts, side, px, sz, end.view(np.uint8), 5, step)
    py = ofi_fast.BookOFI(0.5, levels=5, window_time=50_000)
    e_py, lv_py = py.update_many(ts, side, px, sz, levels=True, batch_end=end)
    assert e.tobytes() == e_py.tobytes() and lv.tobytes() == lv_py.tobytes()
    assert [a.tolist() for a in o.book.top(5)] == [a.tolist() for a in py.book.top(5)]
    assert o.ofi.values.tolist() == py.ofi.values.tolist()


def test_cimport_bookofi_rows_raises_update_many_error(consumer):
    """A bad row stops rows() at its index; raise_bookofi gives update_many's error."""
    ts, side, px, sz, end = _book_stream(50)
    sz[31] = -1.0
    o = ofi_fast.BookOFI(0.5, levels=3)
    with pytest.raises(ofi_fast.errors.OFIError) as c:
        consumer.run_book(o, ts, side, px, sz, end.view(np.uint8), 3, 10)
    with pytest.raises(ofi_fast.errors.OFIError) as p:
        ofi_fast.BookOFI(0.5, levels=3).update_many(ts, side, px, sz, batch_end=end)
    assert str(c.value) == str(p.value) and "31" in str(c.value) and "size" in str(c.value)


@pytest.mark.parametrize("grow", [False, True])
def test_cimport_window_on_the_ring(consumer, grow):
    """window_reserve + the ring primitives from a downstream module: the counts are numpy's;
    a full ring without grow stops at the first event it has no slot for, time going
    backwards at its index; with grow the ring doubles (from 4 slots)."""
    ts = np.cumsum(np.random.default_rng(3).integers(0, 4, 400)).astype(np.int64)
    want = np.arange(1, 401) - np.searchsorted(ts, ts - 10, side="right")
    need = int(want.max())
    counts, status, i, cap = consumer.window_counts(ts, 10, 4 if need > 4 else 1, grow)
    if grow:
        assert (status, i) == (0, 400) and counts.tolist() == want.tolist()
        assert cap >= need and cap & (cap - 1) == 0
    else:
        first = int(np.argmax(want > 4 if need > 4 else want > 1))
        assert (status, i) == (ofi_fast.errors.STATUS_CAPACITY, first)
        assert counts[:first].tolist() == want[:first].tolist()
    back = ts.copy()
    back[7] = back[6] - 1
    _, status, i, _ = consumer.window_counts(back, 10, 64, grow)
    assert (status, i) == (ofi_fast.errors.STATUS_TIME_BACKWARDS, 7)
