"""Best-level order flow imbalance (Cont, Kukanov & Stoikov 2014, eq. 10 and 12).

For consecutive best quotes (P^b, q^b, P^a, q^a)::

    e_n = 1{P^b_n >= P^b_{n-1}} q^b_n - 1{P^b_n <= P^b_{n-1}} q^b_{n-1}
        - 1{P^a_n <= P^a_{n-1}} q^a_n + 1{P^a_n >= P^a_{n-1}} q^a_{n-1}

and OFI over an interval is the sum of e_n over its events.

Conventions (see README "Conventions"):

- The first event of a stream (and the first after ``reset()``) has no predecessor: e = 0.
- Prices are compared exactly; pass integer ticks, or prices that are exact multiples of
  the tick as floats.
- An empty side is size 0 with price NaN (or -inf for the bid, +inf for the ask): it compares
  as -inf / +inf, so a bid that empties gives -q^b_{n-1}, one that appears +q^b_n. A NaN price
  with a positive size is an error, as is any NaN/inf size or a negative size.
- Crossed (bid > ask) and locked (bid == ask) quotes are computed normally and counted in
  ``n_crossed`` / ``n_locked``.
"""

cimport cython
from libc.math cimport INFINITY

import numpy as np

from ofi_fast._types cimport (
    STATUS_NON_FINITE, STATUS_OK, STATUS_TIME_BACKWARDS, float64_t, int64_t, intp_t,
)
from ofi_fast._ring cimport neumaier_add
from ofi_fast._ring cimport (
    raise_rolling, rolling_free, rolling_getstate, rolling_init, rolling_reset, rolling_setstate,
    rolling_value,
)
from ofi_fast._arrays import column, output
from ofi_fast._ring import check_window
from ofi_fast.errors import OFIError, raise_status

_FIELDS = ("ts", "bid_px", "bid_sz", "ask_px", "ask_sz")


cdef int ofi_init(OFIState* st, int64_t window, int64_t window_time, intp_t capacity,
                  bint grow) noexcept nogil:
    ofi_reset(st)
    return rolling_init(&st.roll, window, window_time, capacity, grow)


cdef void ofi_free(OFIState* st) noexcept nogil:
    rolling_free(&st.roll)


cdef void ofi_reset(OFIState* st) noexcept nogil:
    st.bid_px = -INFINITY
    st.bid_sz = 0.0
    st.ask_px = INFINITY
    st.ask_sz = 0.0
    st.has_prev = False
    st.n_events = 0
    st.n_crossed = 0
    st.n_locked = 0
    st.total = 0.0
    st.total_comp = 0.0
    if st.roll.ring.ts != NULL:
        rolling_reset(&st.roll)


cdef int ofi_run_nowindow(OFIState* st, const int64_t* ts, const float64_t* bp,
                          const float64_t* bs, const float64_t* ap, const float64_t* az,
                          intp_t n, float64_t* e, intp_t* bad) noexcept nogil:
    """Batch path without a window: the state lives in locals (no aliasing with ``e``) and is
    committed once. Same operations, in the same order, as ofi_update. ``ts`` may be NULL."""
    cdef float64_t pb = st.bid_px, qb = st.bid_sz, pa = st.ask_px, qa = st.ask_sz
    cdef float64_t b, sb, a, sa, x
    cdef float64_t s1 = st.total, c1 = st.total_comp
    cdef bint has_prev = st.has_prev
    cdef int64_t last = st.roll.last_ts, n_crossed = 0, n_locked = 0
    cdef bint has_last = st.roll.has_last
    cdef intp_t i
    cdef int status = STATUS_OK
    for i in range(n):
        b = bp[i]
        sb = bs[i]
        a = ap[i]
        sa = az[i]
        status = ofi_check_side(&b, sb, -INFINITY, 1)
        if status:
            break
        status = ofi_check_side(&a, sa, INFINITY, 3)
        if status:
            break
        if ts != NULL:
            if has_last and ts[i] < last:
                status = STATUS_TIME_BACKWARDS
                break
            last = ts[i]
        has_last = True
        x = ofi_l1_event(pb, qb, pa, qa, b, sb, a, sa) if has_prev else 0.0
        e[i] = x
        neumaier_add(&s1, &c1, x)
        n_crossed += b > a
        n_locked += b == a
        pb = b
        qb = sb
        pa = a
        qa = sa
        has_prev = True
    bad[0] = i
    if status == STATUS_OK:
        i = n
    # commit the events before i (all of them on success)
    if i > 0:
        st.bid_px, st.bid_sz, st.ask_px, st.ask_sz = pb, qb, pa, qa
        st.has_prev = True
        st.total = s1
        st.total_comp = c1
        st.roll.sum = s1           # without a window the rolling sum is the total
        st.roll.comp = c1
        st.roll.has_last = True
        st.roll.last_ts = last
        st.roll.n_pushed += i
        st.n_events += i
        st.n_crossed += n_crossed
        st.n_locked += n_locked
    return status


cdef int raise_ofi(int status, OFIState* st, intp_t index) except -1:
    field = _FIELDS[status >> 4]
    if (status & 15) != STATUS_OK and field == "ts":
        raise_rolling(status & 15, &st.roll, field, index)
    raise_status(status & 15, field, index)
    return 0


@cython.final
cdef class OFI:
    """Streaming best-level OFI (Cont, Kukanov & Stoikov 2014, eq. 10) with an optional window.

    ``OFI(window=None, window_time=None, capacity=None, grow=False)``

    - ``window``: ``value`` sums e over the last ``window`` events;
    - ``window_time``: over events with ts in ``(t - window_time, t]`` (ts units); the ring
      buffer has ``capacity`` slots (default 65536) and raises CapacityError when the window
      needs more, unless ``grow=True``;
    - neither: ``value`` is the sum over the whole stream.

    ``update(ts, bid_px, bid_sz, ask_px, ask_sz)`` returns the event's e_n;
    ``update_many(ts, bid_px, bid_sz, ask_px, ask_sz)`` does the same for arrays with the GIL
    released. Timestamps must be non-decreasing. A bad event raises an OFIError subclass naming
    the field and index and leaves the state as it was before that event.
    """

    def __cinit__(self, window=None, window_time=None, capacity=None, grow=False):
        w, wt, cap = check_window(window, window_time, capacity)
        self.window = window
        self.window_time = window_time
        if ofi_init(&self.st, w, wt, cap, bool(grow)) != STATUS_OK:
            raise MemoryError()

    def __dealloc__(self):
        ofi_free(&self.st)

    cdef int push(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                  float64_t ask_px, float64_t ask_sz, float64_t* e) noexcept nogil:
        return ofi_update(&self.st, ts, bid_px, bid_sz, ask_px, ask_sz, e)

    cdef float64_t value_c(self) noexcept nogil:
        return rolling_value(&self.st.roll)

    cpdef float64_t update(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                           float64_t ask_px, float64_t ask_sz) except? -1.0:
        """Feed one best-quote state at time ``ts``; return its e_n (0 for the first event)."""
        cdef float64_t e
        cdef int status = ofi_update(&self.st, ts, bid_px, bid_sz, ask_px, ask_sz, &e)
        if status != STATUS_OK:
            raise_ofi(status, &self.st, 0)
        return e

    def update_many(self, ts, bid_px, bid_sz, ask_px, ask_sz, *, out=None, rolling=False,
                    rolling_out=None):
        """Feed arrays of best quotes; return e_n per event (float64).

        ``ts`` may be None when there is no time window (the events are then taken as
        simultaneous). With ``rolling=True`` return ``(e, value)``, ``value[i]`` the windowed
        OFI after event i. On a bad event at index i, events 0..i-1 are applied and the error
        names field and index i.
        """
        cdef const float64_t[::1] bp = column(bid_px, np.float64, "bid_px")
        cdef intp_t n = bp.shape[0]
        cdef const float64_t[::1] bs = column(bid_sz, np.float64, "bid_sz", n)
        cdef const float64_t[::1] ap = column(ask_px, np.float64, "ask_px", n)
        cdef const float64_t[::1] az = column(ask_sz, np.float64, "ask_sz", n)
        cdef const int64_t[::1] t
        cdef bint has_ts = ts is not None
        if has_ts:
            t = column(ts, np.int64, "ts", n)
        elif self.st.roll.window_time > 0:
            raise OFIError("a time window needs ts", field="ts")
        e_arr = output(out, n)
        cdef float64_t[::1] e = e_arr
        cdef float64_t[::1] v
        v_arr = None
        if rolling:
            v_arr = output(rolling_out, n, "rolling_out")
            v = v_arr
        cdef bint want_v = rolling
        cdef intp_t i = 0
        cdef int status = STATUS_OK
        cdef int64_t tsi = self.st.roll.last_ts
        cdef bint fast = not want_v and self.st.roll.window == 0 and self.st.roll.window_time == 0
        with nogil:
            if fast and n > 0:
                status = ofi_run_nowindow(&self.st, &t[0] if has_ts else NULL, &bp[0], &bs[0],
                                          &ap[0], &az[0], n, &e[0], &i)
            else:
                for i in range(n):
                    if has_ts:
                        tsi = t[i]
                    status = ofi_update(&self.st, tsi, bp[i], bs[i], ap[i], az[i], &e[i])
                    if status != STATUS_OK:
                        break
                    if want_v:
                        v[i] = rolling_value(&self.st.roll)
        if status != STATUS_OK:
            raise_ofi(status, &self.st, i)
        return (e_arr, v_arr) if rolling else e_arr

    @property
    def value(self):
        """OFI summed over the current window (over the whole stream without a window)."""
        return rolling_value(&self.st.roll)

    @property
    def total(self):
        """OFI summed over every event since the last reset, whatever the window."""
        return self.st.total + self.st.total_comp

    @property
    def count(self):
        """Events in the current window (all events since reset when there is no window)."""
        if self.st.roll.window or self.st.roll.window_time:
            return self.st.roll.ring.size
        return self.st.n_events

    @property
    def n_events(self):
        """Events accepted since the last reset."""
        return self.st.n_events

    @property
    def n_crossed(self):
        """Events whose quotes were crossed (best bid > best ask)."""
        return self.st.n_crossed

    @property
    def n_locked(self):
        """Events whose quotes were locked (best bid == best ask)."""
        return self.st.n_locked

    @property
    def capacity(self):
        """Slots in the window's ring buffer."""
        return self.st.roll.ring.capacity

    def reset(self):
        """Forget all events: the next event is again a first event (e = 0)."""
        ofi_reset(&self.st)

    def __reduce__(self):
        st = {
            "prev": (self.st.bid_px, self.st.bid_sz, self.st.ask_px, self.st.ask_sz),
            "has_prev": bool(self.st.has_prev),
            "counts": (self.st.n_events, self.st.n_crossed, self.st.n_locked),
            "total": (self.st.total, self.st.total_comp),
            "roll": rolling_getstate(&self.st.roll),
        }
        return (OFI, (self.window, self.window_time, self.st.roll.ring.capacity,
                      bool(self.st.roll.grow)), st)

    def __setstate__(self, d):
        self.st.bid_px, self.st.bid_sz, self.st.ask_px, self.st.ask_sz = d["prev"]
        self.st.has_prev = d["has_prev"]
        self.st.n_events, self.st.n_crossed, self.st.n_locked = d["counts"]
        self.st.total, self.st.total_comp = d["total"]
        rolling_setstate(&self.st.roll, d["roll"])


def l1_ofi(bid_px, bid_sz, ask_px, ask_sz):
    """e_n of Cont, Kukanov & Stoikov (2014, eq. 10) for each row of best quotes.

    Arrays of equal length (any float-convertible dtype); returns float64 e_n with e_0 = 0.
    Empty sides are size 0 with NaN price. Same as ``OFI().update_many(None, ...)``.
    """
    return OFI().update_many(None, bid_px, bid_sz, ask_px, ask_sz)


@cython.final
cdef class _EmptyCall:
    """An empty cpdef method with OFI.update's signature: the call-overhead floor in benchmarks."""

    cpdef float64_t update(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                           float64_t ask_px, float64_t ask_sz) except? -1.0:
        return 0.0
