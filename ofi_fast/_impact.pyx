"""Bars (time aggregation of per-event series), the online price-impact regression
(:class:`RollingOLS`) and the contemporaneous impact fit (:func:`fit_impact`).

Clock bars follow DESIGN.md: bar k holds events with ``k*every <= ts < (k+1)*every`` (left
closed, right open, aligned to multiples of ``every``, labelled by the left edge ``start``),
from the first event's bar to the last event's bar, empty bars included (sum 0, count 0,
first/last NaN). Note Cont-Kukanov-Stoikov's eq. 12 uses right-closed intervals (t_{k-1}, t_k];
the choice only moves events that fall exactly on a boundary; ``closed="right"`` gives theirs.
"""

cimport cython
from cpython.float cimport PyFloat_AS_DOUBLE
from libc.math cimport NAN, fabs, floor, sqrt
from libc.stdint cimport INT64_MIN, SIZE_MAX
from libc.stdlib cimport free, malloc

import numpy as np
from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer,
)
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE

from ofi_fast._types cimport (
    STATUS_BAD_VALUE, STATUS_CAPACITY, STATUS_NEGATIVE, STATUS_NO_MEMORY, STATUS_NON_FINITE,
    STATUS_OK, STATUS_TIME_BACKWARDS, float64_t, int64_t, intp_t,
)
from ofi_fast._guard cimport guard_enter, guard_exit, guard_free, guard_init, guard_wait
from ofi_fast._ring cimport (
    Ring, ring_clear, ring_copy_in, ring_copy_out, ring_free, ring_grow, ring_init_rows,
    ring_next_slot, ring_none, ring_pop_slot, ring_push_slot, ring_row, window_reserve,
)
from ofi_fast._select cimport f64_keep
from ofi_fast._arrays import column, integer, output
from ofi_fast._ring import alloc_error, check_window
from ofi_fast.errors import CapacityError, OFIError, raise_status


class Bars:
    """Per-bar arrays: ``start`` (int64, left edge in ts units), ``sum``, ``count`` (int64),
    ``first`` and ``last`` (the first/last value in the bar; NaN for an empty bar)."""

    __slots__ = ("start", "sum", "count", "first", "last", "every")

    def __init__(self, start, sum, count, first, last, every):
        self.start = start
        self.sum = sum
        self.count = count
        self.first = first
        self.last = last
        self.every = every

    def __len__(self):
        return self.start.shape[0]

    def __repr__(self):
        return f"Bars(n={len(self)}, every={self.every}, events={int(self.count.sum())})"

    def to_dict(self):
        """The columns as a dict of numpy arrays."""
        return {k: getattr(self, k) for k in ("start", "sum", "count", "first", "last")}

    def to_pandas(self):
        """The columns as a pandas DataFrame (pandas is an optional dependency)."""
        import pandas as pd
        return pd.DataFrame(self.to_dict())



# =============================================================================================
# Bars
# =============================================================================================

cdef intp_t _first_unsorted(const int64_t* t, intp_t n) noexcept nogil:
    cdef intp_t i
    for i in range(1, n):
        if t[i] < t[i - 1]:
            return i
    return -1


cdef inline intp_t _first_non_finite(const float64_t* v, intp_t lo, intp_t hi) noexcept nogil:
    cdef intp_t i
    for i in range(lo, hi):
        if not (v[i] - v[i] == 0.0):
            return i
    return -1


cdef intp_t bars_clock_kernel(const int64_t* ts, const float64_t* values, intp_t n,
                              int64_t every, int64_t k0, intp_t nb, int64_t shift,
                              float64_t* bsum, int64_t* bcount,
                              float64_t* bfirst, float64_t* blast, int* status) noexcept nogil:
    # One pass, no division: the bar's right end advances as ts does (ts sorted). The running
    # sum lives in a register and is written out when the next bar starts; count, first and
    # last come from the bar's first index i0. Finiteness is checked once per bar on the sum
    # (a NaN or inf anywhere makes the sum non-finite), then located by a scan of that bar.
    cdef intp_t i, i0 = 0, b = 0, bad
    cdef int64_t end = (k0 + 1) * every + shift     # smallest ts of the next bar
    cdef int64_t t, prev = ts[0]
    cdef float64_t s = 0.0
    for i in range(n):
        t = ts[i]
        if t < prev:
            bad = _first_non_finite(values, i0, i)
            status[0] = STATUS_NON_FINITE if bad >= 0 else STATUS_TIME_BACKWARDS
            return bad if bad >= 0 else i
        prev = t
        if t >= end:
            if not (s - s == 0.0):
                bad = _first_non_finite(values, i0, i)
                if bad >= 0:
                    status[0] = STATUS_NON_FINITE
                    return bad
                # finite values whose sum overflows: the bar keeps it (see _overflow_check)
            bsum[b] = s
            bcount[b] = i - i0
            bfirst[b] = values[i0]
            blast[b] = values[i - 1]
            b += 1
            end += every
            while t >= end:
                b += 1
                end += every
            if b >= nb:
                # only possible when ts is unsorted further on (values[i0:i] were checked)
                bad = _first_unsorted(ts, n)
                i0 = _first_non_finite(values, i, bad)
                status[0] = STATUS_NON_FINITE if i0 >= 0 else STATUS_TIME_BACKWARDS
                return i0 if i0 >= 0 else bad
            s = 0.0
            i0 = i
        s += values[i]
    if not (s - s == 0.0):
        bad = _first_non_finite(values, i0, n)
        if bad >= 0:
            status[0] = STATUS_NON_FINITE
            return bad
    bsum[b] = s
    bcount[b] = n - i0
    bfirst[b] = values[i0]
    blast[b] = values[n - 1]
    status[0] = STATUS_OK
    return -1


# Branch-free fast paths of the bar kernels (issue 13, helper trades3): the events of one bar
# are summed in a loop with no data-dependent branch but its single exit test (the next event
# starts another bar, or is the last), time order and finiteness accumulated (a NaN or inf
# leaves the bar's sum non-finite; an overflowing sum is sent to the exact path too). When
# either check fails, the exact kernel above runs from the start and finds what to report, as
# before; on clean input both write the same bars bit for bit (the same left-to-right sums).
cdef bint bars_clock_fast(const int64_t* ts, const float64_t* values, intp_t n, int64_t every,
                          int64_t k0, intp_t nb, int64_t shift, float64_t* bsum,
                          int64_t* bcount, float64_t* bfirst, float64_t* blast) noexcept nogil:
    """bars_clock_kernel on clean input (n > 0): returns 1 when done, 0 to run the exact one."""
    cdef intp_t i = 0, i0 = 0, b = 0, left
    cdef int64_t end = (k0 + 1) * every + shift, t, prev = ts[0]
    cdef float64_t s = 0.0
    cdef int back = 0
    cdef intp_t stop
    while True:
        left = n - 1 - i
        while True:                     # the events of bar b, then one that is last or later
            t = ts[i]
            stop = t >= end
            if ((left - 1) | -stop) < 0:
                break
            back |= t < prev
            prev = t
            s += values[i]
            i += 1
            left -= 1
        if not stop:                    # the last event, in bar b
            back |= t < prev
            s += values[i]
            i += 1
        if back or not (s - s == 0.0):
            return False
        bsum[b] = s
        bcount[b] = i - i0
        bfirst[b] = values[i0]
        blast[b] = values[i - 1]
        if i == n:
            return True
        prev = t
        b += 1
        end += every
        while t >= end:                 # empty bars between
            b += 1
            end += every
        if b >= nb:
            return False
        s = 0.0
        i0 = i


cdef int64_t _shift(closed) except -1:
    if closed == "left":
        return 0
    if closed == "right":
        return 1
    raise OFIError(f'closed must be "left" or "right", got {closed!r}', field="closed")


def bars(ts, values, *, every, closed="left", max_bars=50_000_000):
    """Aggregate a per-event series into clock bars of length ``every`` (ts units).

    With ``closed="left"`` (default, DESIGN.md) bar k holds the events with
    ``k*every <= ts < (k+1)*every``; with ``closed="right"`` it holds
    ``k*every < ts <= (k+1)*every``, the intervals (t_{k-1}, t_k] of Cont, Kukanov & Stoikov
    (2014, eq. 12). Either way the bar is labelled by its left edge ``start = k*every``
    (aligned to multiples of ``every``, not to the first event). Bars run from the first
    event's bar to the last event's bar with empty bars included (sum 0, count 0, first/last
    NaN): dropping them would bias regressions. Sums are plain left-to-right float64 sums
    (exact for integer-valued inputs).

    ``ts`` must be non-decreasing, ``values`` finite, and no bar's sum may overflow float64;
    otherwise an OFIError subclass names the field and index (for an overflow, the bar's
    first event). Returns :class:`Bars`. Raises OFIError if more than ``max_bars`` bars
    would be created (a unit mistake, e.g. ns timestamps with ``every`` in seconds).
    """
    cdef const int64_t[::1] t = column(ts, np.int64, "ts")
    cdef intp_t n = t.shape[0]
    cdef const float64_t[::1] v = column(values, np.float64, "values", n)
    cdef int64_t ev = int(every)
    cdef int64_t shift = _shift(closed)
    if ev <= 0:
        raise OFIError(f"every must be a positive number of ts units, got {every!r}",
                       field="every")
    if n == 0:
        e64 = np.empty(0, dtype=np.int64)
        ef = np.empty(0, dtype=np.float64)
        return Bars(e64, ef, e64.copy(), ef.copy(), ef.copy(), ev)
    cdef int64_t k0 = floor_div(t[0] - shift, ev)
    cdef int64_t k1 = floor_div(t[n - 1] - shift, ev)
    if k1 < k0:
        # time goes backwards somewhere: let the kernel find the first index
        k1 = k0
    nb = k1 - k0 + 1
    if nb > max_bars:
        raise OFIError(f"{nb} bars of {ev} ts units needed (max_bars={max_bars}); check the "
                       "units of ts and every", field="every")
    start = (np.arange(k0, k1 + 1, dtype=np.int64) * ev)
    bsum = np.zeros(nb, dtype=np.float64)
    bcount = np.zeros(nb, dtype=np.int64)
    bfirst = np.full(nb, np.nan)
    blast = np.full(nb, np.nan)
    cdef float64_t[::1] s = bsum, f = bfirst, l = blast
    cdef int64_t[::1] c = bcount
    cdef int status = STATUS_OK
    cdef intp_t bad, nbc = nb
    with nogil:
        bad = -1
        if not bars_clock_fast(&t[0], &v[0], n, ev, k0, nbc, shift, &s[0], &c[0], &f[0],
                               &l[0]):
            bad = bars_clock_kernel(&t[0], &v[0], n, ev, k0, nbc, shift, &s[0], &c[0], &f[0],
                                    &l[0], &status)
    if bad >= 0:
        raise_status(status, "ts" if status == STATUS_TIME_BACKWARDS else "values", bad)
    _overflow_check(bsum, bcount)
    return Bars(start, bsum, bcount, bfirst, blast, ev)


def _overflow_check(bsum, bcount):
    """Finite values whose bar sum overflows float64 (|sum| > 1.8e308): an error naming the
    bar's first event, not an inf bar (the kernels have checked every value already)."""
    over = np.flatnonzero(~np.isfinite(bsum))
    if over.size:
        k = int(over[0])
        first = int(np.sum(bcount[:k]))
        raise_status(STATUS_BAD_VALUE, "values", first,
                     f"the sum of bar {k}, which starts at this event, overflows float64")


cdef intp_t _segment_kernel(const int64_t* bar_of, const float64_t* values, intp_t n,
                            float64_t* bsum, int64_t* bcount, float64_t* bfirst,
                            float64_t* blast, int64_t* bstart_idx) noexcept nogil:
    # bar_of is non-decreasing and starts at 0; bars are consecutive groups of equal bar_of.
    cdef intp_t i, b = -1
    cdef int64_t cur = -1
    cdef float64_t x
    for i in range(n):
        x = values[i]
        if not (x - x == 0.0):
            return i
        if bar_of[i] != cur:
            cur = bar_of[i]
            b += 1
            bstart_idx[b] = i
            bfirst[b] = x
            bsum[b] = 0.0
            bcount[b] = 0
        bsum[b] += x
        bcount[b] += 1
        blast[b] = x
    return -1


cdef bint _segment_fast(const int64_t* bar_of, const float64_t* values, intp_t n,
                        float64_t* bsum, int64_t* bcount, float64_t* bfirst, float64_t* blast,
                        int64_t* bstart_idx) noexcept nogil:
    """_segment_kernel with no branch (n > 0): every event rewrites its bar's row (the sum in a
    register, a new bar's start by selects); returns 0 when a value was not finite (then run
    _segment_kernel for the index), 1 when done."""
    cdef intp_t i, i0 = 0, b = -1
    cdef int64_t cur = -1, k
    cdef float64_t s = 0.0, x, fin = 0.0
    cdef bint new
    for i in range(n):
        x = values[i]
        fin += x - x
        k = bar_of[i]
        new = k != cur
        cur = k
        b += new
        i0 += (i - i0) & -<intp_t> new
        s = f64_keep(not new, s) + x            # a new bar: 0.0 + x, as _segment_kernel
        bstart_idx[b] = i0
        bfirst[b] = values[i0]
        bsum[b] = s
        bcount[b] = i - i0 + 1
        blast[b] = x
    return fin == 0.0


cdef inline void _event_bar(const float64_t* values, intp_t i0, intp_t i1, intp_t b,
                            float64_t* fin, float64_t* bsum, int64_t* bcount,
                            float64_t* bfirst, float64_t* blast, int64_t* bstart_idx) noexcept nogil:
    # bar b = values[i0:i1] (i1 > i0), summed in order from 0.0; finiteness as a sticky NaN.
    # A do-while: the bar is never empty, so the loop needs no zero-trip test.
    cdef intp_t j = i0
    cdef float64_t s = 0.0, f = fin[0], x
    while True:
        x = values[j]
        f += x - x
        s = s + x
        j += 1
        if j == i1:
            break
    fin[0] = f
    bsum[b] = s
    bcount[b] = i1 - i0
    bfirst[b] = values[i0]
    blast[b] = values[i1 - 1]
    bstart_idx[b] = i0


cdef bint _event_bars_fast(const float64_t* values, intp_t n, intp_t k, float64_t* bsum,
                           int64_t* bcount, float64_t* bfirst, float64_t* blast,
                           int64_t* bstart_idx) noexcept nogil:
    """Event bars of k >= 1 events: bar b sums values[b*k : min((b+1)*k, n)] in order from 0.0,
    as _segment_kernel does, so the sums are its bits; one store per bar, not per event. The
    full bars, then the partial last one. Returns 0 when a value was not finite (then locate
    it with _first_non_finite), 1 when done. The inner loop has no branch."""
    cdef intp_t b, full = n // k
    cdef float64_t fin = 0.0
    for b in range(full):
        _event_bar(values, b * k, b * k + k, b, &fin, bsum, bcount, bfirst, blast, bstart_idx)
    if full * k < n:
        _event_bar(values, full * k, n, full, &fin, bsum, bcount, bfirst, blast, bstart_idx)
    return fin == 0.0


def _segments(bar_of, values, n, ts, every):
    cdef const int64_t[::1] bo = bar_of
    cdef const float64_t[::1] v = values
    cdef intp_t nb = 0 if n == 0 else int(np.count_nonzero(np.diff(bar_of))) + 1
    bsum, bcount, bfirst, blast, bidx = _bar_outputs(nb)
    cdef float64_t[::1] s = bsum, f = bfirst, l = blast
    cdef int64_t[::1] c = bcount, bi = bidx
    cdef intp_t bad = -1, nn = n
    if nn:
        with nogil:
            if not _segment_fast(&bo[0], &v[0], nn, &s[0], &c[0], &f[0], &l[0], &bi[0]):
                bad = _segment_kernel(&bo[0], &v[0], nn, &s[0], &c[0], &f[0], &l[0], &bi[0])
    return _bars_result(bad, bsum, bcount, bfirst, blast, bidx, ts, every)


def _bar_outputs(nb):
    """The five output arrays of nb bars: sum, count, first, last (NaN until set), start index."""
    return (np.zeros(nb), np.zeros(nb, dtype=np.int64), np.full(nb, np.nan),
            np.full(nb, np.nan), np.zeros(nb, dtype=np.int64))


def _bars_result(bad, bsum, bcount, bfirst, blast, bidx, ts, every):
    """Bars from a segment kernel's outputs; bad >= 0 is the first non-finite value's index."""
    if bad >= 0:
        raise_status(STATUS_NON_FINITE, "values", bad)
    _overflow_check(bsum, bcount)
    start = bidx if ts is None else np.asarray(ts)[bidx]
    return Bars(start, bsum, bcount, bfirst, blast, every)


def event_bars(values, *, every, ts=None):
    """Event-count bars: bar j holds events ``j*every .. (j+1)*every - 1`` (the last bar may be
    partial; ``count`` says how full). ``every=1`` gives the event-level series.

    ``start`` is the index of each bar's first event, or its timestamp when ``ts`` is given
    (``ts`` must then be non-decreasing). ``values`` must be finite. Returns :class:`Bars`.
    """
    v = column(values, np.float64, "values")
    n = v.shape[0]
    k = int(every)
    if k <= 0:
        raise OFIError(f"every must be a positive number of events, got {every!r}",
                       field="every")
    if ts is not None:
        ts = column(ts, np.int64, "ts", n)
        back = _first_unsorted_py(ts)
        if back >= 0:
            raise_status(STATUS_TIME_BACKWARDS, "ts", back)
    cdef intp_t nn = n, kk = k if k < n else max(n, 1), bad = -1   # k >= n: one bar
    cdef intp_t nb = 0 if n == 0 else (nn - 1) // kk + 1
    bsum, bcount, bfirst, blast, bidx = _bar_outputs(nb)
    cdef const float64_t[::1] vv = v
    cdef float64_t[::1] s = bsum, f = bfirst, l = blast
    cdef int64_t[::1] c = bcount, bi = bidx
    if nn:
        with nogil:
            if not _event_bars_fast(&vv[0], nn, kk, &s[0], &c[0], &f[0], &l[0], &bi[0]):
                bad = _first_non_finite(&vv[0], 0, nn)
    return _bars_result(bad, bsum, bcount, bfirst, blast, bidx, ts, k)


def _first_unsorted_py(ts):
    cdef const int64_t[::1] t = ts
    cdef intp_t r = -1
    if t.shape[0] > 1:
        with nogil:
            r = _first_unsorted(&t[0], t.shape[0])
    return r


def volume_bars(volume, values, *, every, ts=None):
    """Volume bars (the VPIN clock): event i belongs to bar ``floor(V_i / every)``, where V_i is
    the volume of the events *before* i, so an event (a trade, or a book event with volume 0
    between trades) belongs to the bar that is open when it occurs.

    An event is never split: one event larger than ``every`` closes several buckets at once and
    its bar holds more than ``every``. Bars are therefore never empty (no zero-count rows).
    ``start`` is the index of each bar's first event, or its ts when ``ts`` is given.
    ``volume`` must be finite and >= 0, ``values`` finite, and the bar numbers below 2**62
    (OFIError otherwise, naming the field and index). Returns :class:`Bars`.
    """
    vol = column(volume, np.float64, "volume")
    n = vol.shape[0]
    v = column(values, np.float64, "values", n)
    V = float(every)
    if not (V > 0 and np.isfinite(V)):
        raise OFIError(f"every must be a positive volume, got {every!r}", field="every")
    bad = np.flatnonzero(~np.isfinite(vol))
    if bad.size:
        raise_status(STATUS_NON_FINITE, "volume", int(bad[0]))
    bad = np.flatnonzero(vol < 0)
    if bad.size:
        raise_status(STATUS_NEGATIVE, "volume", int(bad[0]))
    if ts is not None:
        ts = column(ts, np.int64, "ts", n)
        b = _first_unsorted_py(ts)
        if b >= 0:
            raise_status(STATUS_TIME_BACKWARDS, "ts", b)
    before = np.empty(n)
    if n:
        before[0] = 0.0
        with np.errstate(over="ignore"):         # an infinite total is judged below
            np.cumsum(vol[:n - 1], out=before[1:])
    q = np.floor(before / V)
    if n and not q[n - 1] < 2.0 ** 62:       # (non-decreasing: the last is the largest)
        b = int(np.argmax(~(q < 2.0 ** 62)))
        raise_status(STATUS_BAD_VALUE, "volume", b,
                     f"the volume before this event, {before[b]:g}, is {q[b]:g} bars of "
                     f"{V:g}: too many to number; check the units of volume and every")
    return _segments(q.astype(np.int64), v, n, ts, V)


def bar_mid(ts, mid, *, every, closed="left", tick_size=None):
    """Mid price per clock bar and its change, Cont, Kukanov & Stoikov (2014, eq. 11).

    ``mid`` is the mid after each event (finite). For each clock bar of :func:`bars` (same
    ``every``/``closed``; empty bars included) returns a dict of numpy arrays:

    - ``start``: the bar's left edge (ts units);
    - ``mid``: the mid at the last event at or before the bar's end, carried forward through
      empty bars;
    - ``dmid``: ``mid[k] - mid[k-1]`` in price units; for the first bar the reference is the
      first event's mid (so dmid[0] is the move inside the first bar). Empty bars give 0;
    - ``dmid_ticks``: ``dmid / tick_size`` (present when ``tick_size`` is given);
    - ``count``: events in the bar.

    This is bar-to-bar (CKS eq. 11), not "last minus first mid inside the bar", which would
    omit the move caused by the bar's first event while its OFI is counted.
    """
    b = bars(ts, mid, every=every, closed=closed)
    cdef float64_t[::1] last = b.last
    cdef intp_t i, nb = last.shape[0]
    out_mid = np.empty(nb)
    dmid = np.empty(nb)
    cdef float64_t[::1] m = out_mid, d = dmid
    cdef float64_t prev
    if nb:
        prev = float(np.asarray(mid, dtype=np.float64)[0])
        for i in range(nb):
            m[i] = last[i] if last[i] == last[i] else prev
            d[i] = m[i] - prev
            prev = m[i]
    res = {"start": b.start, "mid": out_mid, "dmid": dmid, "count": b.count}
    if tick_size is not None:
        res["dmid_ticks"] = dmid / float(tick_size)
    return res


# =============================================================================================
# RollingOLS
# =============================================================================================

_OLS_FIELDS = ("ts", "x", "y")

# Exact recompute from the ring after max(window size, this many) removals: O(p^2) amortised
# per update, and the Welford rounding never runs for more than that many steps.
cdef intp_t _RECOMPUTE_MIN = 1024

#: A pair with |x| or |y| above this makes the window's running moments overflow or lose all
#: precision (squares near 1e200): the moments are recomputed exactly from the ring as soon as
#: the pair has left the window. Cost: two compares per value on the update path.
cdef float64_t _OLS_HUGE = 1e100
#: Most regressors (the solve is O(p^3) and the state 2 p^2 doubles).
cdef enum:
    OLS_MAX_FEATURES = 4096
MAX_FEATURES = OLS_MAX_FEATURES


cdef int ols_init(OLSState* st, intp_t p, int64_t window, int64_t window_time,
                  intp_t capacity, bint grow, float64_t ridge) noexcept nogil:
    st.p = p
    st.window = window
    st.inv_window = 1.0 / window if window > 0 else 0.0
    st.window_time = window_time
    st.grow = grow
    st.ridge = ridge
    ring_none(&st.ring, p + 1)
    st.mx = NULL
    st.poison_until = 0
    # sizes were checked at the Python edge (RollingOLS.__cinit__); refuse an overflow anyway
    if (p < 1 or p > OLS_MAX_FEATURES or capacity < 0
            or <size_t> capacity > (SIZE_MAX // 4) // ((<size_t> p + 2) * sizeof(float64_t))):
        return STATUS_NO_MEMORY
    # one block for the p-sized vectors and p*p matrices
    st.mx = <float64_t*> malloc((5 * p + 2 * p * p) * sizeof(float64_t))
    if st.mx == NULL:
        return STATUS_NO_MEMORY
    st.cxy = st.mx + p
    st.dx = st.cxy + p
    st.beta = st.dx + p
    st.xin = st.beta + p
    st.cxx = st.xin + p
    st.chol = st.cxx + p * p
    if window > 0 or window_time > 0:
        if ring_init_rows(&st.ring, capacity, p + 1, False) != STATUS_OK:
            return STATUS_NO_MEMORY
    ols_reset(st)
    return STATUS_OK


cdef void ols_free(OLSState* st) noexcept nogil:
    free(st.mx)
    ring_free(&st.ring)
    st.mx = NULL


cdef inline void _ols_zero(OLSState* st) noexcept nogil:
    cdef intp_t i
    st.n = 0
    st.my = 0.0
    st.cyy = 0.0
    for i in range(st.p):
        st.mx[i] = 0.0
        st.cxy[i] = 0.0
    for i in range(st.p * st.p):
        st.cxx[i] = 0.0
    st.dirty = True


cdef void ols_reset(OLSState* st) noexcept nogil:
    _ols_zero(st)
    ring_clear(&st.ring)
    st.removed = 0
    st.cancelled = False
    st.has_last = False
    st.last_ts = 0
    st.n_updates = 0
    st.poison_until = 0
    st.singular = False
    st.alpha = NAN
    cdef intp_t i
    for i in range(st.p):
        st.beta[i] = NAN


cdef inline void _check_cancel(OLSState* st, float64_t before, float64_t after) noexcept nogil:
    # A removal that takes a centred sum of squares from `before` down to rounding noise (a
    # regressor or y becoming constant in the window) leaves an error of order eps * before,
    # not 0: flag an exact recompute from the ring, so a constant window is seen as constant
    # (singular fit) and not as a tiny spurious variance.
    if before > 0.0 and after <= 1e-9 * before:
        st.cancelled = True


cdef inline void _ols_add1(OLSState* st, float64_t x, float64_t y) noexcept nogil:
    # _ols_add for one regressor, with scalars (the hot path of the CKS model).
    cdef float64_t inv, dx, dy, ey
    st.n += 1
    inv = 1.0 / <float64_t> st.n
    dx = x - st.mx[0]
    dy = y - st.my
    st.mx[0] += dx * inv
    st.my += dy * inv
    ey = y - st.my
    st.cyy += dy * ey
    st.cxy[0] += dx * ey
    st.cxx[0] += dx * (x - st.mx[0])


cdef inline void _ols_remove1(OLSState* st, float64_t x, float64_t y) noexcept nogil:
    cdef float64_t inv, dx, dy, ey
    if st.n <= 1:
        _ols_zero(st)
        return
    st.n -= 1
    inv = 1.0 / <float64_t> st.n
    dx = x - st.mx[0]
    dy = y - st.my
    st.mx[0] -= dx * inv
    st.my -= dy * inv
    ey = y - st.my
    cdef float64_t cxx0 = st.cxx[0], cyy0 = st.cyy
    st.cyy -= dy * ey
    st.cxy[0] -= dx * ey
    st.cxx[0] -= dx * (x - st.mx[0])
    _check_cancel(st, cxx0, st.cxx[0])
    _check_cancel(st, cyy0, st.cyy)


cdef inline void _ols_replace1(OLSState* st, float64_t xa, float64_t ya, float64_t xb,
                               float64_t yb) noexcept nogil:
    # Full count window, one regressor: replace the oldest pair (xa, ya) by (xb, yb) with n
    # fixed. Same result as remove + add, with centred terms only and no division:
    #   C' = C + (xb - mx)(yb - my) - (xa - mx)(ya - my) - (xb - xa)(yb - ya)/n,  m' = m + d/n
    cdef float64_t inv = st.inv_window
    cdef float64_t ax = xa - st.mx[0], ay = ya - st.my, bx = xb - st.mx[0], by = yb - st.my
    cdef float64_t ddx = xb - xa, ddy = yb - ya
    cdef float64_t cxx0 = st.cxx[0], cyy0 = st.cyy
    st.cxx[0] += ddx * (bx + ax - ddx * inv)
    st.cxy[0] += bx * by - ax * ay - ddx * ddy * inv
    st.cyy += ddy * (by + ay - ddy * inv)
    st.mx[0] += ddx * inv
    st.my += ddy * inv
    _check_cancel(st, cxx0, st.cxx[0])
    _check_cancel(st, cyy0, st.cyy)


cdef inline void _ols_add(OLSState* st, const float64_t* x, float64_t y) noexcept nogil:
    # Welford: dx with the old mean, the second factor with the new one (THEORY-DETAIL 9.2).
    cdef intp_t i, j, p = st.p
    cdef float64_t nn, dy, ey
    if p == 1:
        _ols_add1(st, x[0], y)
        return
    st.n += 1
    nn = <float64_t> st.n
    for i in range(p):
        st.dx[i] = x[i] - st.mx[i]
        st.mx[i] += st.dx[i] / nn
    dy = y - st.my
    st.my += dy / nn
    ey = y - st.my
    st.cyy += dy * ey
    for i in range(p):
        st.cxy[i] += st.dx[i] * ey
        for j in range(i + 1):
            st.cxx[i * p + j] += st.dx[i] * (x[j] - st.mx[j])
            st.cxx[j * p + i] = st.cxx[i * p + j]


cdef inline void _ols_remove(OLSState* st, const float64_t* x, float64_t y) noexcept nogil:
    cdef intp_t i, j, p = st.p
    cdef float64_t nn, dy, ey
    if p == 1:
        _ols_remove1(st, x[0], y)
        return
    if st.n <= 1:
        _ols_zero(st)
        return
    st.n -= 1
    nn = <float64_t> st.n
    for i in range(p):
        st.dx[i] = x[i] - st.mx[i]
        st.mx[i] -= st.dx[i] / nn
    dy = y - st.my
    st.my -= dy / nn
    ey = y - st.my
    cdef float64_t c0 = st.cyy
    st.cyy -= dy * ey
    _check_cancel(st, c0, st.cyy)
    for i in range(p):
        st.cxy[i] -= st.dx[i] * ey
        for j in range(i + 1):
            c0 = st.cxx[i * p + j]
            st.cxx[i * p + j] -= st.dx[i] * (x[j] - st.mx[j])
            st.cxx[j * p + i] = st.cxx[i * p + j]
            if j == i:
                _check_cancel(st, c0, st.cxx[i * p + i])


cdef inline void _ols_pop(OLSState* st) noexcept nogil:
    cdef const float64_t* row = ring_row(&st.ring, ring_pop_slot(&st.ring))
    _ols_remove(st, row, row[st.p])
    st.removed += 1


cdef int ols_update(OLSState* st, int64_t ts, const float64_t* x, float64_t y) noexcept nogil:
    cdef intp_t i, j, p = st.p
    cdef int64_t cutoff
    cdef Ring* r = &st.ring
    cdef float64_t* row
    cdef int status
    cdef bint huge = fabs(y) > _OLS_HUGE
    for i in range(p):
        if not (x[i] - x[i] == 0.0):
            return STATUS_NON_FINITE | (1 << 4)
        huge |= fabs(x[i]) > _OLS_HUGE
    if not (y - y == 0.0):
        return STATUS_NON_FINITE | (2 << 4)
    # the room first (from the oldest element alone), so a failure changes nothing; then
    # one pass evicts what left a time window
    status = window_reserve(r, st.has_last, st.last_ts, ts, st.window_time, st.grow)
    if status != STATUS_OK:
        return status
    if st.window_time > 0:
        cutoff = ts - st.window_time
        while r.size > 0 and r.ts[r.head] <= cutoff:
            _ols_pop(st)
    elif st.window > 0 and r.size == r.capacity:
        if p == 1:
            # the hot path: slide the full window by one pair in place (the oldest slot
            # becomes the newest: the same slot pop + push would use); rows are (x, y)
            j = r.head
            row = r.val + 2 * j             # ring_row(r, j) with width p + 1 == 2
            _ols_replace1(st, row[0], row[1], x[0], y)
            r.ts[j] = ts
            row[0] = x[0]
            row[1] = y
            r.head = ring_next_slot(r, j)
            st.removed += 1
            if huge:
                st.poison_until = st.n_updates + 1
            return _ols_done(st, ts)
        _ols_pop(st)
    if r.capacity > 0:
        j = ring_push_slot(r)
        r.ts[j] = ts
        row = ring_row(r, j)
        for i in range(p):
            row[i] = x[i]
        row[p] = y
    _ols_add(st, x, y)
    if huge and r.capacity > 0:
        st.poison_until = st.n_updates + 1
    return _ols_done(st, ts)


cdef inline int _ols_done(OLSState* st, int64_t ts) noexcept nogil:
    # the last huge pair (pair number poison_until) has left once n_updates + 1 - size >= it
    if st.poison_until > 0 and st.n_updates + 1 - st.ring.size >= st.poison_until:
        st.poison_until = 0
        st.cancelled = True
    if st.cancelled or (st.removed >= st.ring.size and st.removed >= _RECOMPUTE_MIN):
        ols_recompute(st)
    st.has_last = True
    st.last_ts = ts
    st.n_updates += 1
    st.dirty = True
    return STATUS_OK


cdef void ols_recompute(OLSState* st) noexcept nogil:
    cdef intp_t i, j, k, s, p = st.p
    cdef float64_t nn, ey, c
    cdef const float64_t* xr
    cdef const Ring* r = &st.ring
    st.removed = 0
    st.cancelled = False
    if r.capacity == 0:
        return          # no buffer: the whole-stream moments cannot be recomputed
    _ols_zero(st)
    st.n = r.size
    if st.n == 0:
        return
    nn = <float64_t> st.n
    # pass 1: means, with the usual correction term sum(x - m) / n (row: x_1..x_p, then y)
    for k in range(2):
        for i in range(p):
            st.dx[i] = 0.0
        ey = 0.0
        s = r.head
        for j in range(r.size):
            xr = ring_row(r, s)
            for i in range(p):
                st.dx[i] += xr[i] - st.mx[i]
            ey += xr[p] - st.my
            s = ring_next_slot(r, s)
        for i in range(p):
            st.mx[i] += st.dx[i] / nn
        st.my += ey / nn
    # pass 2: centred cross products
    s = r.head
    for j in range(r.size):
        xr = ring_row(r, s)
        for i in range(p):
            st.dx[i] = xr[i] - st.mx[i]
        ey = xr[p] - st.my
        st.cyy += ey * ey
        for i in range(p):
            st.cxy[i] += st.dx[i] * ey
            for k in range(i + 1):
                st.cxx[i * p + k] += st.dx[i] * st.dx[k]
        s = ring_next_slot(r, s)
    for i in range(p):
        for k in range(i):
            st.cxx[k * p + i] = st.cxx[i * p + k]
    st.dirty = True


cdef bint ols_solve(OLSState* st) noexcept nogil:
    """Cholesky solve of (Cxx + ridge I) beta = Cxy; alpha = my - beta . mx.

    Singular (beta NaN, returns False) when a regressor is constant in the window (its centred
    variance is zero, or below 1e-24 of its raw second moment: rounding noise) or a pivot falls
    below 1e-10 of its diagonal (a regressor is a linear combination of the others).
    """
    cdef intp_t i, j, k, p = st.p
    cdef float64_t a, d, nn
    if not st.dirty:
        return not st.singular
    st.dirty = False
    st.singular = True
    st.alpha = NAN
    for i in range(p):
        st.beta[i] = NAN
    if st.n == 0:
        return False
    nn = <float64_t> st.n
    for j in range(p):
        a = st.cxx[j * p + j] + st.ridge
        if not (a > 1e-24 * nn * st.mx[j] * st.mx[j]) or not (a > 0.0):
            return False
        d = a
        for k in range(j):
            d -= st.chol[j * p + k] * st.chol[j * p + k]
        if not (d > 1e-10 * a):
            return False
        d = sqrt(d)
        st.chol[j * p + j] = d
        for i in range(j + 1, p):
            a = st.cxx[i * p + j]
            for k in range(j):
                a -= st.chol[i * p + k] * st.chol[j * p + k]
            st.chol[i * p + j] = a / d
    # forward: L z = cxy (z in beta), backward: L^T beta = z
    for i in range(p):
        a = st.cxy[i]
        for k in range(i):
            a -= st.chol[i * p + k] * st.beta[k]
        st.beta[i] = a / st.chol[i * p + i]
    for i in range(p - 1, -1, -1):
        a = st.beta[i]
        for k in range(i + 1, p):
            a -= st.chol[k * p + i] * st.beta[k]
        st.beta[i] = a / st.chol[i * p + i]
    a = st.my
    for i in range(p):
        a -= st.beta[i] * st.mx[i]
    st.alpha = a
    st.singular = False
    return True


cdef float64_t ols_predict(OLSState* st, const float64_t* x) noexcept nogil:
    cdef intp_t i
    cdef float64_t r
    if not ols_solve(st):
        return NAN
    r = st.alpha
    for i in range(st.p):
        r += st.beta[i] * x[i]
    return r


cdef float64_t ols_r2(OLSState* st) noexcept nogil:
    """1 - SSR/Syy with SSR = Syy - 2 b.Cxy + b'Cxx b (equals b.Cxy/Syy without ridge)."""
    cdef intp_t i, j, p = st.p
    cdef float64_t ssr, q = 0.0
    if not ols_solve(st):
        return NAN
    if not (st.cyy > 1e-24 * (<float64_t> st.n) * st.my * st.my) or not (st.cyy > 0.0):
        return NAN                     # y constant in the window: R^2 undefined
    ssr = st.cyy
    for i in range(p):
        ssr -= 2.0 * st.beta[i] * st.cxy[i]
        for j in range(p):
            q += st.beta[i] * st.cxx[i * p + j] * st.beta[j]
    ssr += q
    return 1.0 - ssr / st.cyy


cdef int _raise_ols(int status, OLSState* st, intp_t index) except -1:
    field = _OLS_FIELDS[status >> 4]
    status &= 15
    if status == STATUS_CAPACITY:
        raise CapacityError(
            f"{field}[{index}]: the time window needs at least {st.ring.capacity + 1} slots "
            f"but the buffer holds {st.ring.capacity}; pass a larger capacity= or grow=True",
            field=field, index=index, needed=st.ring.capacity + 1)
    raise_status(status, field, index)
    return 0


@cython.final
cdef class RollingOLS:
    """Online least squares with intercept, ``y = alpha + beta . x + eps``, over a window.

    ``RollingOLS(window=None, window_time=None, n_features=1, *, capacity=None, grow=False,
    ridge=0.0)``

    - ``window``: the last ``window`` pairs; ``window_time``: the pairs with ts in
      ``(t - window_time, t]`` (ring of ``capacity`` slots, default 65536, CapacityError when
      full unless ``grow=True``); neither: every pair since reset.
    - Moments are centred and updated Welford-style on add *and* remove (THEORY-DETAIL 9.2), so
      large offsets (prices ~1e8, cumulative OFI) do not cancel; they are recomputed exactly
      (two-pass) from the ring after every max(size, 1024) removals, so rounding cannot
      accumulate. A full one-regressor count window slides in place (exact replace formula,
      no division).
    - Several regressors: the centred cross-product matrix is solved by Cholesky. A constant
      regressor or an exactly collinear set makes the fit *singular*: ``beta``/``alpha``/``r2``
      are NaN and ``singular`` is True (never garbage or inf). ``ridge`` = lambda adds
      lambda I to the centred matrix (the intercept is not penalised).
    - ``r2`` is NaN when y is constant in the window (Syy = 0), even if beta is defined.

    ``update(x, y, ts=...)`` adds one pair (x a float, or a sequence of ``n_features``) and
    returns the number of pairs in the window; ``ts`` is required with ``window_time`` and
    checked non-decreasing whenever given. A NaN/inf x or y raises NonFiniteError (field "x" or
    "y") and leaves the state unchanged. ``update_many(x, y, ts=None, forecast=False)`` does the
    same for arrays with the GIL released; ``forecast=True`` returns, for each pair, the
    prediction made *before* that pair was added (a walk-forward, look-ahead-free forecast).
    """

    def __cinit__(self, window=None, window_time=None, n_features=1, *, capacity=None,
                  grow=False, ridge=0.0):
        p = integer(n_features, "n_features", 1, MAX_FEATURES)
        w, wt, cap = check_window(window, window_time, capacity, 8 * (p + 2))
        if isinstance(ridge, (bool, np.bool_, str, bytes)):
            raise OFIError(f"ridge must be a number, got {ridge!r:.80}", field="ridge")
        r = float(ridge)
        if not (r >= 0.0 and np.isfinite(r)):
            raise OFIError(f"ridge must be finite and >= 0, got {ridge!r}", field="ridge")
        self.window = window
        self.window_time = window_time
        self.st.mx = NULL
        guard_init(&self.guard)
        if ols_init(&self.st, p, w, wt, cap if (w or wt) else 0, bool(grow), r) != STATUS_OK:
            ols_free(&self.st)
            raise alloc_error("window" if w else "capacity", cap,
                              8 * (p + 2) * cap + 8 * (5 * p + 2 * p * p))

    def __dealloc__(self):
        ols_free(&self.st)
        guard_free(&self.guard)

    cdef int push(self, int64_t ts, const float64_t* x, float64_t y) noexcept nogil:
        return ols_update(&self.st, ts, x, y)

    cdef int _load_x(self, object x) except -1:
        cdef intp_t i, p = self.st.p
        cdef const float64_t[::1] xv
        cdef Py_buffer view
        cdef bint got = False, ok = False
        if type(x) is list and PyList_GET_SIZE(x) == p:
            for i in range(p):
                self.st.xin[i] = float(<object> PyList_GET_ITEM(x, i))
            return 0
        if PyObject_CheckBuffer(x):
            # a contiguous float64 vector (numpy array): read it in place, no conversion
            try:
                PyObject_GetBuffer(x, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
                got = True
            except (BufferError, ValueError):   # strided: use a converted copy below
                got = False
        if got:
            ok = (view.ndim == 1 and view.itemsize == 8 and view.format != NULL
                  and view.format[0] == b'd' and view.format[1] == 0
                  and view.len == p * 8)
            if ok:
                for i in range(p):
                    self.st.xin[i] = (<const float64_t*> view.buf)[i]
            PyBuffer_Release(&view)
            if ok:
                return 0
        if p == 1 and not hasattr(x, "__len__"):
            self.st.xin[0] = float(x)
            return 0
        try:
            xv = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise OFIError(f"x cannot be read as float64: {exc}", field="x") from None
        if xv.shape[0] != p:
            raise OFIError(f"x has {xv.shape[0]} values, expected n_features={p}", field="x")
        for i in range(p):
            self.st.xin[i] = xv[i]
        return 0

    cpdef int64_t update(self, object x, float64_t y, int64_t ts=INT64_MIN) except -1:
        """Add the pair (x, y) (at time ``ts``); return the number of pairs in the window."""
        cdef int status
        if type(x) is float and self.st.p == 1:
            # the hot path: nothing here runs Python code, so a quiet guard check suffices
            if self.guard.busy:
                guard_wait(&self.guard)
            ts = self._ts(ts)
            self.st.xin[0] = PyFloat_AS_DOUBLE(x)
            status = ols_update(&self.st, ts, self.st.xin, y)
        else:
            # _load_x may run Python code (x's __float__ / __array__) between which another
            # thread could take the object: hold its lock from loading x to the update
            guard_enter(&self.guard)
            try:
                ts = self._ts(ts)
                self._load_x(x)
                status = ols_update(&self.st, ts, self.st.xin, y)
            finally:
                guard_exit(&self.guard)
        if status != STATUS_OK:
            _raise_ols(status, &self.st, 0)
        return self.st.n

    cdef int64_t _ts(self, int64_t ts) except? -1:
        if ts == INT64_MIN:
            if self.st.window_time > 0:
                raise OFIError("a time window needs ts", field="ts")
            return self.st.last_ts if self.st.has_last else 0
        return ts

    def update_many(self, x, y, ts=None, *, forecast=False, out=None):
        """Add pairs from arrays: ``x`` of shape (n,) (one regressor) or (n, n_features).

        With ``forecast=True`` return ``yhat`` (float64, n): ``yhat[i]`` is the prediction for
        x[i] from the window *before* pair i was added (NaN while the fit is singular or
        empty); otherwise return None. On a bad pair at index i, pairs 0..i-1 are applied and
        the error names the field and index i.
        """
        cdef intp_t p = self.st.p
        xa = np.ascontiguousarray(x, dtype=np.float64)
        if xa.ndim == 1 and p == 1:
            xa = xa.reshape(-1, 1)
        if xa.ndim != 2 or xa.shape[1] != p:
            raise OFIError(f"x must have shape (n, {p}), got {np.shape(x)}", field="x")
        cdef const float64_t[:, ::1] xv = xa
        cdef intp_t n = xv.shape[0]
        cdef const float64_t[::1] yv = column(y, np.float64, "y", n)
        cdef const int64_t[::1] t
        cdef bint has_ts = ts is not None
        if has_ts:
            t = column(ts, np.int64, "ts", n)
        elif self.st.window_time > 0:
            raise OFIError("a time window needs ts", field="ts")
        cdef bint want = forecast
        cdef float64_t[::1] fv
        f_arr = None
        if want:
            f_arr = output(out, n)
            fv = f_arr
        cdef intp_t i = 0
        cdef int status = STATUS_OK
        cdef int64_t tsi
        if n == 0:
            return f_arr
        guard_enter(&self.guard)
        try:
            tsi = self.st.last_ts if self.st.has_last else 0
            with nogil:
                for i in range(n):
                    if has_ts:
                        tsi = t[i]
                    if want:
                        fv[i] = ols_predict(&self.st, &xv[i, 0])
                    status = ols_update(&self.st, tsi, &xv[i, 0], yv[i])
                    if status != STATUS_OK:
                        break
        finally:
            guard_exit(&self.guard)
        if status != STATUS_OK:
            _raise_ols(status, &self.st, i)
        return f_arr

    def predict(self, x):
        """alpha + beta . x with the current fit (NaN while singular or empty)."""
        guard_enter(&self.guard)   # _load_x may run Python code: hold the lock for it
        try:
            self._load_x(x)
            return ols_predict(&self.st, self.st.xin)
        finally:
            guard_exit(&self.guard)

    @property
    def beta(self):
        """Slope(s): a float with one regressor, else an array of n_features (NaN if singular)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        ols_solve(&self.st)
        if self.st.p == 1:
            return self.st.beta[0]
        return np.array([self.st.beta[i] for i in range(self.st.p)])

    @property
    def alpha(self):
        """Intercept, ``mean(y) - beta . mean(x)`` (NaN if singular)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        ols_solve(&self.st)
        return self.st.alpha

    @property
    def r2(self):
        """In-sample R^2 over the window, 1 - SSR/Syy (NaN if singular or y constant)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return ols_r2(&self.st)

    @property
    def n(self):
        """Pairs in the window (all pairs since reset without a window)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n

    @property
    def singular(self):
        """True when the current window cannot identify beta (see the class docstring)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        ols_solve(&self.st)
        return bool(self.st.singular)

    @property
    def n_features(self):
        return self.st.p

    @property
    def ridge(self):
        return self.st.ridge

    @property
    def capacity(self):
        """Slots in the ring buffer (0 without a window)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.ring.capacity

    @property
    def n_updates(self):
        """Pairs accepted since the last reset."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n_updates

    @property
    def mean_x(self):
        if self.guard.busy:
            guard_wait(&self.guard)
        if self.st.p == 1:
            return self.st.mx[0]
        return np.array([self.st.mx[i] for i in range(self.st.p)])

    @property
    def mean_y(self):
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.my

    def moments(self):
        """The centred moments (n, mean_x, mean_y, Cxx, Cxy, Syy) as numpy arrays/floats."""
        if self.guard.busy:
            guard_wait(&self.guard)
        cdef intp_t p = self.st.p
        return {"n": self.st.n, "mean_x": np.array([self.st.mx[i] for i in range(p)]),
                "mean_y": self.st.my,
                "cxx": np.array([self.st.cxx[i] for i in range(p * p)]).reshape(p, p),
                "cxy": np.array([self.st.cxy[i] for i in range(p)]), "cyy": self.st.cyy}

    def recompute(self):
        """Recompute the moments exactly from the window (no-op without a window)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        ols_recompute(&self.st)

    def reset(self):
        """Forget all pairs."""
        if self.guard.busy:
            guard_wait(&self.guard)
        ols_reset(&self.st)

    def __reduce__(self):
        cdef intp_t i, p = self.st.p, n
        cdef int64_t[::1] tv
        cdef float64_t[:, ::1] rv
        if self.guard.busy:
            guard_wait(&self.guard)
        n = self.st.ring.size
        ts = np.empty(n, dtype=np.int64)
        rows = np.empty((n, p + 1))          # the ring's rows, oldest first: x_1..x_p, y
        if n > 0:
            tv = ts
            rv = rows
            ring_copy_out(&self.st.ring, &tv[0], &rv[0, 0], NULL)
        xs = np.ascontiguousarray(rows[:, :p])
        ys = np.ascontiguousarray(rows[:, p])
        d = {"ring": (ts, xs, ys), "capacity": self.st.ring.capacity,
             "moments": (self.st.n, [self.st.mx[i] for i in range(p)], self.st.my,
                         [self.st.cxx[i] for i in range(p * p)],
                         [self.st.cxy[i] for i in range(p)], self.st.cyy),
             "counters": (self.st.removed, bool(self.st.has_last), self.st.last_ts,
                          self.st.n_updates), "poison_until": self.st.poison_until}
        return (_restore_ols, (self.window, self.window_time, p, self.st.ring.capacity or None,
                               bool(self.st.grow), self.st.ridge), d)

    def __setstate__(self, d):
        guard_enter(&self.guard)   # Python code runs in here: hold the lock throughout
        try:
            self._setstate(d)
        finally:
            guard_exit(&self.guard)

    def _setstate(self, d):
        cdef intp_t i, p = self.st.p, n
        cdef const int64_t[::1] tv
        cdef const float64_t[:, ::1] rv
        ts, xs, ys = d["ring"]
        tv = np.ascontiguousarray(ts, dtype=np.int64)
        n = tv.shape[0]
        if n > max(d["capacity"], self.st.ring.capacity):
            raise OFIError("pickled RollingOLS state holds more pairs than its capacity",
                           field="state")
        rows = np.empty((n, p + 1))
        rows[:, :p] = np.asarray(xs, dtype=np.float64).reshape(n, p)
        rows[:, p] = ys
        rv = rows
        while self.st.ring.capacity < d["capacity"]:
            if ring_grow(&self.st.ring, 2 * self.st.ring.capacity) != STATUS_OK:
                raise MemoryError()
        ring_clear(&self.st.ring)
        if n > 0:
            ring_copy_in(&self.st.ring, &tv[0], &rv[0, 0], NULL, n)
        n, mx, my, cxx, cxy, cyy = d["moments"]
        self.st.n = n
        self.st.my = my
        self.st.cyy = cyy
        for i in range(p):
            self.st.mx[i] = mx[i]
            self.st.cxy[i] = cxy[i]
        for i in range(p * p):
            self.st.cxx[i] = cxx[i]
        self.st.removed, self.st.has_last, self.st.last_ts, self.st.n_updates = d["counters"]
        self.st.poison_until = d.get("poison_until", 0)
        self.st.dirty = True


def _restore_ols(window, window_time, p, capacity, grow, ridge):
    return RollingOLS(window, window_time, p, capacity=capacity, grow=grow, ridge=ridge)


@cython.final
cdef class _EmptyOLSCall:
    """An empty cpdef with RollingOLS.update's signature: the call floor in benchmarks."""

    cpdef int64_t update(self, object x, float64_t y, int64_t ts=INT64_MIN) except -1:
        return 0


# =============================================================================================
# fit_impact
# =============================================================================================

class ImpactFit:
    """Result of :func:`fit_impact` (fields below; ``to_dict()`` gives them as a dict)."""

    __slots__ = ("beta", "alpha", "r2", "t_beta", "t_alpha", "t_beta_hc", "t_beta_robust",
                 "se_beta", "se_beta_hc", "se_beta_robust", "lags", "n", "n_skipped")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw[k])

    def to_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self):
        return (f"ImpactFit(beta={self.beta:.6g}, alpha={self.alpha:.6g}, r2={self.r2:.4f}, "
                f"t_beta={self.t_beta:.3f}, t_beta_robust={self.t_beta_robust:.3f}, "
                f"n={self.n})")


cdef void _fit_kernel(const float64_t* x, const float64_t* y, intp_t n, intp_t lags,
                      float64_t* out) noexcept nogil:
    # out: mx, my, sxx, sxy, syy, ssr, sum u^2, NW omega
    cdef intp_t i, j
    cdef float64_t mx = 0.0, my = 0.0, cx = 0.0, cy = 0.0, sxx = 0.0, sxy = 0.0, syy = 0.0
    cdef float64_t dx, dy, beta, alpha, e, ssr = 0.0, uu = 0.0, om, acc, w
    for i in range(n):
        mx += x[i]
        my += y[i]
    mx /= n
    my /= n
    for i in range(n):
        cx += x[i] - mx
        cy += y[i] - my
    mx += cx / n
    my += cy / n
    for i in range(n):
        dx = x[i] - mx
        dy = y[i] - my
        sxx += dx * dx
        sxy += dx * dy
        syy += dy * dy
    beta = sxy / sxx if sxx > 0.0 else NAN
    alpha = my - beta * mx
    for i in range(n):
        e = y[i] - alpha - beta * x[i]
        ssr += e * e
        e *= x[i] - mx                    # u_i = (x_i - mx) e_i
        uu += e * e
    om = uu
    for j in range(1, lags + 1):
        acc = 0.0
        for i in range(j, n):
            acc += ((x[i] - mx) * (y[i] - alpha - beta * x[i])) * \
                   ((x[i - j] - mx) * (y[i - j] - alpha - beta * x[i - j]))
        w = 1.0 - (<float64_t> j) / (<float64_t> (lags + 1))
        om += 2.0 * w * acc
    out[0] = mx
    out[1] = my
    out[2] = sxx
    out[3] = sxy
    out[4] = syy
    out[5] = ssr
    out[6] = uu
    out[7] = om


def fit_impact(ofi, dmid, *, lags=None, small_sample=False):
    """OLS of the mid change on OFI with intercept: ``dmid = alpha + beta * ofi + eps``
    (Cont, Kukanov & Stoikov 2014, eq. 14), with plain and robust t-statistics.

    - ``beta = Sxy/Sxx``, ``alpha = mean(y) - beta mean(x)``, ``r2 = Sxy^2/(Sxx Syy)`` from
      centred sums (two-pass; no cancellation for large values).
    - ``t_beta``: classical, ``se^2 = SSR/(n-2)/Sxx``; ``t_alpha`` likewise.
    - ``t_beta_hc``: White (HC0), ``Var = sum u_t^2 / Sxx^2`` with ``u_t = (x_t - mx) e_t``.
    - ``t_beta_robust``: Newey-West (CKS's choice) with Bartlett weights ``1 - j/(L+1)``,
      ``j = 1..L``; ``L = lags``, default ``floor(4 (n/100)^(2/9))`` (CKS do not report L).
      ``lags=0`` gives White. ``small_sample=True`` multiplies the HC and NW variances by
      ``n/(n-2)`` (HC1-style).

    Pairs where either value is NaN are skipped and counted in ``n_skipped`` (lags then run
    over the remaining pairs in order); +-inf raises NonFiniteError naming field and index.
    Edge cases: n < 2 -> everything NaN; n < 3 -> t-statistics NaN; Sxx = 0 (constant OFI) ->
    beta NaN (never inf); Syy = 0 -> r2 NaN. Units: beta is dmid units per OFI unit (CKS: ticks
    per round lot when dmid is in ticks and OFI in 100-share lots). Returns :class:`ImpactFit`.
    """
    x = column(ofi, np.float64, "ofi")
    y = column(dmid, np.float64, "dmid", x.shape[0])
    for name, a in (("ofi", x), ("dmid", y)):
        bad = np.flatnonzero(np.isinf(a))
        if bad.size:
            raise_status(STATUS_NON_FINITE, name, int(bad[0]))
    keep = ~(np.isnan(x) | np.isnan(y))
    n_skipped = int(x.shape[0] - np.count_nonzero(keep))
    if n_skipped:
        x = np.ascontiguousarray(x[keep])
        y = np.ascontiguousarray(y[keep])
    cdef intp_t n = x.shape[0]
    if lags is None:
        L = int(np.floor(4.0 * (n / 100.0) ** (2.0 / 9.0))) if n > 0 else 0
    else:
        L = int(lags)
        if L < 0:
            raise OFIError(f"lags must be >= 0, got {lags!r}", field="lags")
    L = min(L, max(n - 1, 0))
    nan = float("nan")
    res = dict(beta=nan, alpha=nan, r2=nan, t_beta=nan, t_alpha=nan, t_beta_hc=nan,
               t_beta_robust=nan, se_beta=nan, se_beta_hc=nan, se_beta_robust=nan, lags=L,
               n=int(n), n_skipped=n_skipped)
    if n < 2:
        return ImpactFit(**res)
    cdef const float64_t[::1] xv = x, yv = y
    cdef float64_t out[8]
    cdef intp_t lg = L
    with nogil:
        _fit_kernel(&xv[0], &yv[0], n, lg, out)
    mx, my, sxx, sxy, syy, ssr, uu, om = [out[i] for i in range(8)]
    if not sxx > 0.0:
        return ImpactFit(**res)
    beta = sxy / sxx
    res["beta"] = beta
    res["alpha"] = my - beta * mx
    if syy > 0.0:
        res["r2"] = (sxy * sxy) / (sxx * syy)
    if n >= 3:
        s2 = max(ssr, 0.0) / (n - 2)
        f = n / (n - 2.0) if small_sample else 1.0
        se = np.sqrt(s2 / sxx)
        se_a = np.sqrt(s2 * (1.0 / n + mx * mx / sxx))
        se_hc = np.sqrt(f * uu) / sxx
        se_nw = np.sqrt(f * max(om, 0.0)) / sxx
        res.update(se_beta=se, se_beta_hc=se_hc, se_beta_robust=se_nw)
        with np.errstate(divide="ignore", invalid="ignore"):
            res["t_beta"] = float(np.float64(beta) / se)
            res["t_alpha"] = float(np.float64(res["alpha"]) / se_a)
            res["t_beta_hc"] = float(np.float64(beta) / se_hc)
            res["t_beta_robust"] = float(np.float64(beta) / se_nw)
    return ImpactFit(**res)
