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
from ofi_fast._guard cimport guard_enter, guard_exit, guard_free, guard_init, guard_wait
from ofi_fast._arrays import column, integer, output
from ofi_fast._ring import alloc_error, check_window
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
        status = ofi_check_row(&b, sb, &a, sa)
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


cdef int ofi_run_window(OFIState* st, const int64_t* ts, const float64_t* bp,
                        const float64_t* bs, const float64_t* ap, const float64_t* az,
                        intp_t start, intp_t n, float64_t* e, float64_t* v,
                        intp_t* bad) noexcept nogil:
    """Batch path with a count or time window, events start..n-1: ofi_update + rolling_push
    with the state in locals (the compiler cannot keep struct fields in registers across the
    stores to ``e`` / ``v``), committed once. The same float operations in the same order, so
    results equal the one-event path bit for bit. ``ts`` is NULL only for a count window
    (then the time order is not checked and the last timestamp is kept); ``v`` may be NULL.

    Stops at the first bad event (``bad[0]`` = its index, events before it committed) with its
    status; a full ring with ``grow`` stops with STATUS_CAPACITY too, for the caller to grow it
    through ofi_update (the only allocation) and resume."""
    cdef float64_t pb = st.bid_px, qb = st.bid_sz, pa = st.ask_px, qa = st.ask_sz
    cdef float64_t b, sb, a, sa, x, out
    cdef float64_t s1 = st.total, c1 = st.total_comp
    cdef float64_t s2 = st.roll.sum, c2 = st.roll.comp
    cdef bint has_prev = st.has_prev, has_last = st.roll.has_last
    cdef int64_t last = st.roll.last_ts, cutoff, t = st.roll.last_ts
    cdef int64_t n_crossed = 0, n_locked = 0
    cdef int64_t window = st.roll.window, window_time = st.roll.window_time
    cdef int64_t* rts = st.roll.ring.ts
    cdef float64_t* rval = st.roll.ring.val
    cdef intp_t cap = st.roll.ring.capacity, head = st.roll.ring.head, size = st.roll.ring.size
    cdef intp_t i, tail
    cdef int status = STATUS_OK
    for i in range(start, n):
        b = bp[i]
        sb = bs[i]
        a = ap[i]
        sa = az[i]
        status = ofi_check_row(&b, sb, &a, sa)
        if status:
            break
        x = ofi_l1_event(pb, qb, pa, qa, b, sb, a, sa) if has_prev else 0.0
        # rolling_push, inlined on the locals
        if ts != NULL:
            t = ts[i]
            if has_last and t < last:
                status = STATUS_TIME_BACKWARDS
                break
        if window_time > 0:
            cutoff = t - window_time
            if size == cap and rts[head] > cutoff:
                status = STATUS_CAPACITY        # full, and nothing leaves the window
                break
            while size > 0 and rts[head] <= cutoff:
                neumaier_add(&s2, &c2, -rval[head])
                head += 1
                if head == cap:
                    head = 0
                size -= 1
            if size == 0:
                s2 = 0.0
                c2 = 0.0
        elif size == cap:
            neumaier_add(&s2, &c2, -rval[head])
            head += 1
            if head == cap:
                head = 0
            size -= 1
        tail = head + size
        if tail >= cap:
            tail -= cap
        rts[tail] = t
        rval[tail] = x
        size += 1
        neumaier_add(&s2, &c2, x)
        has_last = True
        last = t
        # the rest of ofi_update
        neumaier_add(&s1, &c1, x)
        n_crossed += b > a
        n_locked += b == a
        pb = b
        qb = sb
        pa = a
        qa = sa
        has_prev = True
        e[i] = x
        if v != NULL:
            v[i] = s2 + c2
    else:
        i = n
    bad[0] = i
    if i > start:
        st.bid_px, st.bid_sz, st.ask_px, st.ask_sz = pb, qb, pa, qa
        st.has_prev = True
        st.total = s1
        st.total_comp = c1
        st.roll.sum = s2
        st.roll.comp = c2
        st.roll.has_last = True
        st.roll.last_ts = last
        st.roll.n_pushed += i - start
        st.roll.ring.head = head
        st.roll.ring.size = size
        st.n_events += i - start
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
        guard_init(&self.guard)
        self.window = window
        self.window_time = window_time
        if ofi_init(&self.st, w, wt, cap, bool(grow)) != STATUS_OK:
            raise alloc_error("window" if w else "capacity", cap, 16 * cap)

    def __dealloc__(self):
        ofi_free(&self.st)
        guard_free(&self.guard)

    cdef int push(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                  float64_t ask_px, float64_t ask_sz, float64_t* e) noexcept nogil:
        return ofi_update(&self.st, ts, bid_px, bid_sz, ask_px, ask_sz, e)

    cdef float64_t value_c(self) noexcept nogil:
        return rolling_value(&self.st.roll)

    cpdef float64_t update(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                           float64_t ask_px, float64_t ask_sz) except? -1.0:
        """Feed one best-quote state at time ``ts``; return its e_n (0 for the first event)."""
        cdef float64_t e
        if self.guard.busy:
            guard_wait(&self.guard)
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
        cdef int64_t tsi
        cdef bint fast = not want_v and self.st.roll.window == 0 and self.st.roll.window_time == 0
        cdef intp_t start = 0
        guard_enter(&self.guard)
        tsi = self.st.roll.last_ts
        with nogil:
            if n == 0:
                pass
            elif fast:
                status = ofi_run_nowindow(&self.st, &t[0] if has_ts else NULL, &bp[0], &bs[0],
                                          &ap[0], &az[0], n, &e[0], &i)
            elif self.st.roll.window > 0 or self.st.roll.window_time > 0:
                while True:
                    status = ofi_run_window(&self.st, &t[0] if has_ts else NULL, &bp[0],
                                            &bs[0], &ap[0], &az[0], start, n, &e[0],
                                            &v[0] if want_v else NULL, &i)
                    if status != STATUS_CAPACITY or not self.st.roll.grow:
                        break
                    # the ring is full and may grow: one event through the general path
                    status = ofi_update(&self.st, t[i], bp[i], bs[i], ap[i], az[i], &e[i])
                    if status != STATUS_OK:
                        break
                    if want_v:
                        v[i] = rolling_value(&self.st.roll)
                    start = i + 1
            else:
                for i in range(n):
                    if has_ts:
                        tsi = t[i]
                    status = ofi_update(&self.st, tsi, bp[i], bs[i], ap[i], az[i], &e[i])
                    if status != STATUS_OK:
                        break
                    if want_v:
                        v[i] = rolling_value(&self.st.roll)
        guard_exit(&self.guard)
        if status != STATUS_OK:
            raise_ofi(status, &self.st, i)
        return (e_arr, v_arr) if rolling else e_arr

    @property
    def value(self):
        """OFI summed over the current window (over the whole stream without a window)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return rolling_value(&self.st.roll)

    @property
    def total(self):
        """OFI summed over every event since the last reset, whatever the window."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.total + self.st.total_comp

    @property
    def count(self):
        """Events in the current window (all events since reset when there is no window)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        if self.st.roll.window or self.st.roll.window_time:
            return self.st.roll.ring.size
        return self.st.n_events

    @property
    def n_events(self):
        """Events accepted since the last reset."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n_events

    @property
    def n_crossed(self):
        """Events whose quotes were crossed (best bid > best ask)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n_crossed

    @property
    def n_locked(self):
        """Events whose quotes were locked (best bid == best ask)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n_locked

    @property
    def capacity(self):
        """Slots in the window's ring buffer."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.roll.ring.capacity

    def reset(self):
        """Forget all events: the next event is again a first event (e = 0)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        ofi_reset(&self.st)

    def __reduce__(self):
        if self.guard.busy:
            guard_wait(&self.guard)
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
        guard_enter(&self.guard)   # Python code runs in here: hold the lock throughout
        try:
            self.st.bid_px, self.st.bid_sz, self.st.ask_px, self.st.ask_sz = d["prev"]
            self.st.has_prev = d["has_prev"]
            self.st.n_events, self.st.n_crossed, self.st.n_locked = d["counts"]
            self.st.total, self.st.total_comp = d["total"]
            rolling_setstate(&self.st.roll, d["roll"])
        finally:
            guard_exit(&self.guard)


def l1_ofi(bid_px, bid_sz, ask_px, ask_sz, *, out=None):
    """e_n of Cont, Kukanov & Stoikov (2014, eq. 10) for each row of best quotes.

    Arrays of equal length (any float-convertible dtype); returns float64 e_n with e_0 = 0
    (written into ``out``, a C-contiguous float64 array of the same length, when given: no
    allocation). Empty sides are size 0 with NaN price. Same as ``OFI().update_many(None, ...)``.
    """
    return OFI().update_many(None, bid_px, bid_sz, ask_px, ask_sz, out=out)


@cython.final
cdef class _EmptyCall:
    """An empty cpdef method with OFI.update's signature: the call-overhead floor in benchmarks."""

    cpdef float64_t update(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                           float64_t ask_px, float64_t ask_sz) except? -1.0:
        return 0.0


# =============================================================================================
# Multi-level OFI (Xu, Gould & Howison 2018), depth-normalised and integrated OFI
# (Cont, Cucuringu & Zhang 2023)
# =============================================================================================
#
# For level m (1 = best, levels by rank of occupied price levels, as in LOBSTER):
#     e_{m,n} = qb_{m,n} 1{Pb_{m,n} >= Pb_{m,n-1}} - qb_{m,n-1} 1{Pb_{m,n} <= Pb_{m,n-1}}
#             - qa_{m,n} 1{Pa_{m,n} <= Pa_{m,n-1}} + qa_{m,n-1} 1{Pa_{m,n} >= Pa_{m,n-1}}
# (CKS eq. 10 with level-m inputs; XGH 2018 sec. 3; CCZ 2023 eq. 1-2). Empty level: price
# -inf (bid) / +inf (ask), size 0, so a level that empties gives -q (bid) / +q (ask), one that
# appears +q / -q, and one that stays empty 0 (THEORY-DETAIL 2.2); LOBSTER's +-9999999999
# dummies with size 0 behave the same. When a new best level is inserted every deeper level
# shifts one rank and produces flow at every rank: that is the rank-based definition.

from libc.math cimport fabs
from libc.stdlib cimport free as c_free, malloc as c_malloc
from libc.string cimport memcpy as c_memcpy

from libc.stdint cimport SIZE_MAX

from ofi_fast._types cimport STATUS_CAPACITY, STATUS_NO_MEMORY, STATUS_TIME_BACKWARDS

#: Most levels a MultiLevelOFI (or BookOFI) tracks: a sane bound far beyond any real book's
#: depth of interest (the state is 9 doubles per level, rewritten on every event).
cdef enum:
    MLOFI_MAX_LEVELS = 1 << 20
MAX_LEVELS = MLOFI_MAX_LEVELS

_ML_FIELDS = ("ts", "bid_px", "bid_sz", "ask_px", "ask_sz")


cdef int mlofi_init(MLOFIState* st, intp_t levels, int64_t window, int64_t window_time,
                    intp_t capacity, bint grow) noexcept nogil:
    cdef intp_t w = levels + 1
    st.levels = levels
    st.width = w
    st.window = window
    st.window_time = window_time
    st.grow = grow
    if window > 0:
        capacity = window
    if window == 0 and window_time == 0:
        capacity = 1
    if capacity < 1:
        capacity = 1
    st.capacity = capacity
    st.prev = st.cur = st.e = st.sum = st.comp = st.total = st.total_comp = NULL
    st.weights = st.ring_val = NULL
    st.ring_ts = NULL
    # the Python edge has checked these sizes (MultiLevelOFI.__cinit__); refuse overflow anyway
    if (levels < 1 or capacity < 1 or levels > MLOFI_MAX_LEVELS
            or <size_t> capacity > (SIZE_MAX // 2) // (<size_t> w * sizeof(float64_t))):
        return STATUS_NO_MEMORY
    st.prev = <float64_t*> c_malloc(4 * levels * sizeof(float64_t))
    st.cur = <float64_t*> c_malloc(4 * levels * sizeof(float64_t))
    st.e = <float64_t*> c_malloc(w * sizeof(float64_t))
    st.sum = <float64_t*> c_malloc(w * sizeof(float64_t))
    st.comp = <float64_t*> c_malloc(w * sizeof(float64_t))
    st.total = <float64_t*> c_malloc(w * sizeof(float64_t))
    st.total_comp = <float64_t*> c_malloc(w * sizeof(float64_t))
    st.weights = <float64_t*> c_malloc(levels * sizeof(float64_t))
    st.ring_ts = <int64_t*> c_malloc(capacity * sizeof(int64_t))
    st.ring_val = <float64_t*> c_malloc(capacity * w * sizeof(float64_t))
    st.has_weights = False
    if (st.prev == NULL or st.cur == NULL or st.e == NULL or st.sum == NULL or st.comp == NULL
            or st.total == NULL or st.total_comp == NULL or st.weights == NULL
            or st.ring_ts == NULL or st.ring_val == NULL):
        return STATUS_NO_MEMORY
    mlofi_reset(st)
    return STATUS_OK


cdef void mlofi_free(MLOFIState* st) noexcept nogil:
    c_free(st.prev)
    c_free(st.cur)
    c_free(st.e)
    c_free(st.sum)
    c_free(st.comp)
    c_free(st.total)
    c_free(st.total_comp)
    c_free(st.weights)
    c_free(st.ring_ts)
    c_free(st.ring_val)
    st.prev = st.cur = st.e = st.sum = st.comp = st.total = st.total_comp = NULL
    st.weights = st.ring_val = NULL
    st.ring_ts = NULL


cdef void mlofi_reset(MLOFIState* st) noexcept nogil:
    cdef intp_t j, L = st.levels
    for j in range(st.width):
        st.e[j] = 0.0
        st.sum[j] = 0.0
        st.comp[j] = 0.0
        st.total[j] = 0.0
        st.total_comp[j] = 0.0
    for j in range(L):
        st.prev[j] = -INFINITY
        st.prev[L + j] = 0.0
        st.prev[2 * L + j] = INFINITY
        st.prev[3 * L + j] = 0.0
    st.head = 0
    st.size = 0
    st.has_prev = False
    st.has_last = False
    st.last_ts = 0
    st.n_events = 0


cdef int mlofi_check(MLOFIState* st, const float64_t* bid_px, const float64_t* bid_sz,
                     const float64_t* ask_px, const float64_t* ask_sz,
                     intp_t stride) noexcept nogil:
    cdef intp_t m, L = st.levels
    cdef float64_t* c = st.cur
    cdef int status
    for m in range(L):
        c[m] = bid_px[m * stride]
        c[L + m] = bid_sz[m * stride]
        c[2 * L + m] = ask_px[m * stride]
        c[3 * L + m] = ask_sz[m * stride]
        status = ofi_check_side(&c[m], c[L + m], -INFINITY, 1)
        if status == STATUS_OK:
            status = ofi_check_side(&c[2 * L + m], c[3 * L + m], INFINITY, 3)
        if status != STATUS_OK:
            return status | (m << 8)
    return STATUS_OK


cdef int mlofi_grow(MLOFIState* st) noexcept nogil:
    """Double the ring, unrolled so the oldest event is at slot 0."""
    cdef intp_t cap = 2 * st.capacity, w = st.width, i, j
    cdef int64_t* ts = NULL
    cdef float64_t* val = NULL
    if <size_t> st.capacity > (SIZE_MAX // 4) // (<size_t> w * sizeof(float64_t)):
        return STATUS_NO_MEMORY      # the doubled ring would overflow
    ts = <int64_t*> c_malloc(cap * sizeof(int64_t))
    val = <float64_t*> c_malloc(cap * w * sizeof(float64_t))
    if ts == NULL or val == NULL:
        c_free(ts)
        c_free(val)
        return STATUS_NO_MEMORY
    for i in range(st.size):
        j = st.head + i
        if j >= st.capacity:
            j -= st.capacity
        ts[i] = st.ring_ts[j]
        c_memcpy(&val[i * w], &st.ring_val[j * w], w * sizeof(float64_t))
    c_free(st.ring_ts)
    c_free(st.ring_val)
    st.ring_ts = ts
    st.ring_val = val
    st.capacity = cap
    st.head = 0
    return STATUS_OK


cdef inline void mlofi_evict(MLOFIState* st) noexcept nogil:
    cdef intp_t j, w = st.width
    cdef float64_t* row = &st.ring_val[st.head * w]
    for j in range(w):
        neumaier_add_nb(&st.sum[j], &st.comp[j], -row[j])
    st.head += 1
    if st.head == st.capacity:
        st.head = 0
    st.size -= 1


cdef int mlofi_check_ts(const MLOFIState* st, int64_t ts) noexcept nogil:
    cdef intp_t j, k = 0
    cdef int64_t cutoff
    if st.has_last and ts < st.last_ts:
        return STATUS_TIME_BACKWARDS
    if st.window_time > 0 and not st.grow:
        cutoff = ts - st.window_time
        j = st.head
        while k < st.size and st.ring_ts[j] <= cutoff:
            k += 1
            j += 1
            if j == st.capacity:
                j = 0
        if st.size - k >= st.capacity:
            return STATUS_CAPACITY
    return STATUS_OK


cdef int mlofi_reserve(MLOFIState* st, int64_t ts) noexcept nogil:
    """Everything that can fail for an event at ts (time order, window capacity, growing the
    ring), done before any state changes; mlofi_push(ts) cannot fail afterwards."""
    cdef int status = mlofi_check_ts(st, ts)
    if status != STATUS_OK:
        return status
    cdef intp_t j, k = 0
    cdef int64_t cutoff
    if st.window_time > 0 and st.grow:
        cutoff = ts - st.window_time
        j = st.head
        while k < st.size and st.ring_ts[j] <= cutoff:
            k += 1
            j += 1
            if j == st.capacity:
                j = 0
        if st.size - k >= st.capacity:
            if mlofi_grow(st) != STATUS_OK:
                return STATUS_NO_MEMORY
    return STATUS_OK


cdef inline void neumaier_add_nb(float64_t* s, float64_t* c, float64_t x) noexcept nogil:
    """neumaier_add (same arithmetic, same result) with the branch turned into a select:
    per-level flows change sign at random, so the branch mispredicts often."""
    cdef float64_t t = s[0] + x
    cdef float64_t a = (s[0] - t) + x
    cdef float64_t b = (x - t) + s[0]
    c[0] += a if fabs(s[0]) >= fabs(x) else b
    s[0] = t


cdef void mlofi_push(MLOFIState* st, int64_t ts) noexcept nogil:
    mlofi_push_range(st, ts, 0, st.levels)


cdef void mlofi_push_range(MLOFIState* st, int64_t ts, intp_t lo, intp_t hi) noexcept nogil:
    cdef intp_t j, tail, w = st.width, L = st.levels
    cdef float64_t* e = st.e
    cdef int64_t cutoff
    if st.window_time > 0:
        cutoff = ts - st.window_time
        while st.size > 0 and st.ring_ts[st.head] <= cutoff:
            mlofi_evict(st)
        if st.size == 0:
            for j in range(w):
                st.sum[j] = 0.0
                st.comp[j] = 0.0
    elif st.window > 0 and st.size == st.capacity:
        mlofi_evict(st)
    if st.window > 0 or st.window_time > 0:
        tail = st.head + st.size
        if tail >= st.capacity:
            tail -= st.capacity
        st.ring_ts[tail] = ts
        c_memcpy(&st.ring_val[tail * w], e, w * sizeof(float64_t))
        st.size += 1
        for j in range(w):
            neumaier_add_nb(&st.total[j], &st.total_comp[j], e[j])
        lo = 0                  # the window sums take every level (zeros change nothing)
        hi = L
    for j in range(lo, hi):     # e[j] == 0 outside [lo, hi): adding it changes nothing
        neumaier_add_nb(&st.sum[j], &st.comp[j], e[j])
    neumaier_add_nb(&st.sum[L], &st.comp[L], e[L])
    st.has_last = True
    st.last_ts = ts
    st.n_events += 1


cdef int mlofi_commit(MLOFIState* st, int64_t ts) noexcept nogil:
    cdef int status = mlofi_reserve(st, ts)
    if status != STATUS_OK:
        return status
    cdef intp_t m, L = st.levels
    cdef float64_t* p = st.prev
    cdef float64_t* c = st.cur
    cdef float64_t* e = st.e
    cdef float64_t d = 0.0
    if st.has_prev:
        for m in range(L):
            e[m] = ofi_l1_event(p[m], p[L + m], p[2 * L + m], p[3 * L + m],
                                c[m], c[L + m], c[2 * L + m], c[3 * L + m])
            d += c[L + m] + c[3 * L + m]
    else:
        for m in range(L):
            e[m] = 0.0
            d += c[L + m] + c[3 * L + m]
    e[L] = d
    st.prev = c
    st.cur = p
    st.has_prev = True
    mlofi_push(st, ts)
    return STATUS_OK


cdef float64_t mlofi_depth(const MLOFIState* st) noexcept nogil:
    cdef intp_t dn = st.size if (st.window > 0 or st.window_time > 0) else st.n_events
    if dn == 0:
        return 0.0
    return (st.sum[st.levels] + st.comp[st.levels]) / (2.0 * dn * st.levels)


cdef int raise_mlofi(int status, intp_t index) except -1:
    cdef int code = status & 15
    field = _ML_FIELDS[(status >> 4) & 15]
    if code == STATUS_CAPACITY:
        from ofi_fast.errors import CapacityError
        raise CapacityError(f"{field}[{index}]: the time window needs more slots than the "
                            f"buffer holds; pass a larger capacity= or grow=True",
                            field=field, index=index)
    raise_status(code, field, index, f"level {status >> 8}" if field != "ts" else "")
    return 0


def integrated_weights(sample):
    """Integrated-OFI weights (Cont, Cucuringu & Zhang 2023, eq. 4) from a fitting sample.

    ``sample``: (n, L) multi-level OFIs (e.g. depth-normalised OFI per interval), past data
    only when the result feeds a prediction. w_1 = the eigenvector of the largest eigenvalue
    of the centred sample covariance (as sklearn's PCA), scaled to unit L1 norm, sign fixed so
    that sum(w) > 0 (a tie sum(w) == 0 is broken by making the largest-magnitude loading
    positive). Returns ``(weights, explained_variance_ratio)``. Needs n >= 2 and a non-zero
    variance.
    """
    x = np.asarray(sample, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise OFIError(f"sample must be (n >= 2, L >= 1), got shape {x.shape}", field="sample")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise_status(STATUS_NON_FINITE, "sample", bad)
    cov = np.atleast_2d(np.cov(x, rowvar=False, ddof=1))
    vals, vecs = np.linalg.eigh(cov)
    tot = vals.sum()
    if not tot > 0:
        raise OFIError("sample has zero variance: no principal component", field="sample")
    top = vals.shape[0] - 1   # eigh sorts eigenvalues ascending
    w = vecs[:, top].copy()
    w /= np.abs(w).sum()
    s = w.sum()
    if s < 0 or (s == 0 and w[np.argmax(np.abs(w))] < 0):
        w = -w
    return w, float(vals[top] / tot)


@cython.final
cdef class MultiLevelOFI:
    """Streaming multi-level OFI (Xu, Gould & Howison 2018) with depth-normalised and
    integrated OFI (Cont, Cucuringu & Zhang 2023, eq. 3-4).

    ``MultiLevelOFI(levels, window=None, window_time=None, capacity=None, grow=False,
    weights=None)``

    - ``update(ts, bid_px, bid_sz, ask_px, ask_sz)``: one event, each argument the L values of
      levels 1..L (best first); returns e_m (array of L) for that event (zeros for the first).
      Absent levels: NaN (or -inf bid / +inf ask, or LOBSTER's dummy) price with size 0.
    - ``update_many(ts, bid_px, bid_sz, ask_px, ask_sz)``: (n, L) arrays, GIL released;
      returns (n, L) e (and the windowed values per event with ``rolling=True``).
    - ``values``: OFI per level over the window (whole stream without one); ``total``.
    - ``depth``: Q of CCZ eq. 3 over the window, (1/L) sum_m sum_n (qb_{m,n} + qa_{m,n}) /
      (2 dN), post-event sizes, empty levels count as 0 (they lower Q).
    - ``normalized``: ``values / depth`` (zeros when the window is empty or Q = 0).
    - ``integrated``: sum_m w_m normalized_m with weights from ``fit(sample)`` or
      ``weights=`` (L1-normalised, sum > 0); NaN until weights are set. CCZ fit the weights on
      past data only: fit them on a training sample, then apply online.
    """

    def __cinit__(self, levels, window=None, window_time=None, capacity=None, grow=False,
                  weights=None):
        L = integer(levels, "levels", 1, MLOFI_MAX_LEVELS)
        w, wt, cap = check_window(window, window_time, capacity, 8 + 8 * (L + 1))
        if not (w or wt):
            cap = 1
        guard_init(&self.guard)
        self.window = window
        self.window_time = window_time
        self.explained_variance_ratio = None
        if mlofi_init(&self.st, L, w, wt, cap, bool(grow)) != STATUS_OK:
            mlofi_free(&self.st)
            raise alloc_error("window" if w else ("capacity" if wt else "levels"),
                              cap if (w or wt) else L, (8 + 8 * (L + 1)) * cap + 72 * L)
        if weights is not None:
            self.weights = weights

    def __dealloc__(self):
        mlofi_free(&self.st)
        guard_free(&self.guard)

    cdef int push(self, int64_t ts, const float64_t* bid_px, const float64_t* bid_sz,
                  const float64_t* ask_px, const float64_t* ask_sz) noexcept nogil:
        cdef int status = mlofi_check(&self.st, bid_px, bid_sz, ask_px, ask_sz, 1)
        if status != STATUS_OK:
            return status
        return mlofi_commit(&self.st, ts)

    cdef int check_ts(self, int64_t ts) noexcept nogil:
        return mlofi_check_ts(&self.st, ts)

    @property
    def levels(self):
        return self.st.levels

    def update(self, int64_t ts, bid_px, bid_sz, ask_px, ask_sz):
        """Feed one top-L state at time ``ts``; return its e_m per level (array of L)."""
        cdef intp_t L = self.st.levels
        cdef const float64_t[::1] bp = column(bid_px, np.float64, "bid_px", L)
        cdef const float64_t[::1] bs = column(bid_sz, np.float64, "bid_sz", L)
        cdef const float64_t[::1] ap = column(ask_px, np.float64, "ask_px", L)
        cdef const float64_t[::1] az = column(ask_sz, np.float64, "ask_sz", L)
        out = np.empty(L, dtype=np.float64)
        if self.guard.busy:
            guard_wait(&self.guard)
        cdef int status = self.push(ts, &bp[0], &bs[0], &ap[0], &az[0])
        if status != STATUS_OK:
            raise_mlofi(status, 0)
        cdef float64_t[::1] o = out
        c_memcpy(&o[0], self.st.e, L * sizeof(float64_t))
        return out

    def update_many(self, ts, bid_px, bid_sz, ask_px, ask_sz, *, out=None, rolling=False):
        """Feed (n, L) arrays of top-L states; return (n, L) e per event and level.

        ``ts`` may be None without a time window. ``rolling=True`` returns ``(e, values)``,
        ``values[i]`` the windowed OFI per level after event i. On a bad event at index i,
        events 0..i-1 are applied and the error names the field, index i and the level.
        """
        cdef intp_t L = self.st.levels
        arrs = []
        for name, a in (("bid_px", bid_px), ("bid_sz", bid_sz), ("ask_px", ask_px),
                        ("ask_sz", ask_sz)):
            x = np.ascontiguousarray(a, dtype=np.float64)
            if x.ndim == 1 and L == 1:
                x = x.reshape(-1, 1)
            if x.ndim != 2 or x.shape[1] != L or (arrs and x.shape[0] != arrs[0].shape[0]):
                raise OFIError(f"{name} must have shape (n, {L}), got {x.shape}", field=name)
            arrs.append(x)
        cdef const float64_t[:, ::1] bp = arrs[0]
        cdef const float64_t[:, ::1] bs = arrs[1]
        cdef const float64_t[:, ::1] ap = arrs[2]
        cdef const float64_t[:, ::1] az = arrs[3]
        cdef intp_t n = bp.shape[0]
        cdef const int64_t[::1] t
        cdef bint has_ts = ts is not None
        if has_ts:
            t = column(ts, np.int64, "ts", n)
        elif self.st.window_time > 0:
            raise OFIError("a time window needs ts", field="ts")
        if out is None:
            e_arr = np.empty((n, L), dtype=np.float64)
        else:
            e_arr = out
            if not isinstance(out, np.ndarray) or out.dtype != np.float64 \
                    or out.shape != (n, L) or not out.flags.c_contiguous:
                raise OFIError(f"out must be a contiguous float64 array of shape ({n}, {L})",
                               field="out")
        cdef float64_t[:, ::1] e = e_arr
        v_arr = np.empty((n, L), dtype=np.float64) if rolling else np.empty((0, L))
        cdef float64_t[:, ::1] v = v_arr
        cdef bint want_v = rolling
        cdef intp_t i = 0, m
        cdef int status = STATUS_OK
        cdef int64_t tsi
        if n == 0:
            return (e_arr, v_arr) if rolling else e_arr
        guard_enter(&self.guard)
        tsi = self.st.last_ts
        with nogil:
            for i in range(n):
                if has_ts:
                    tsi = t[i]
                status = mlofi_check(&self.st, &bp[i, 0], &bs[i, 0], &ap[i, 0], &az[i, 0], 1)
                if status == STATUS_OK:
                    status = mlofi_commit(&self.st, tsi)
                if status != STATUS_OK:
                    break
                for m in range(L):
                    e[i, m] = self.st.e[m]
                if want_v:
                    for m in range(L):
                        v[i, m] = self.st.sum[m] + self.st.comp[m]
        guard_exit(&self.guard)
        if status != STATUS_OK:
            raise_mlofi(status, i)
        return (e_arr, v_arr) if rolling else e_arr

    def _vec(self, bint total=False):
        cdef intp_t m, L = self.st.levels
        out = np.empty(L, dtype=np.float64)
        if self.guard.busy:
            guard_wait(&self.guard)
        cdef float64_t[::1] o = out
        cdef bint windowed = self.st.window > 0 or self.st.window_time > 0
        for m in range(L):
            if total and windowed:
                o[m] = self.st.total[m] + self.st.total_comp[m]
            else:
                o[m] = self.st.sum[m] + self.st.comp[m]
        return out

    @property
    def values(self):
        """Multi-level OFI over the window, per level (array of L)."""
        return self._vec()

    @property
    def total(self):
        """Multi-level OFI per level over every event since reset."""
        return self._vec(True)

    @property
    def last(self):
        """The last event's e_m per level."""
        out = np.empty(self.st.levels, dtype=np.float64)
        if self.guard.busy:
            guard_wait(&self.guard)
        for m in range(self.st.levels):
            out[m] = self.st.e[m]
        return out

    @property
    def depth(self):
        """Depth scale Q (CCZ eq. 3) over the window; 0 when the window is empty."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return mlofi_depth(&self.st)

    @property
    def normalized(self):
        """values / depth (CCZ eq. 3); zeros when the window is empty or Q = 0."""
        if self.guard.busy:
            guard_wait(&self.guard)
        q = mlofi_depth(&self.st)
        v = self._vec()
        return v / q if q > 0 else np.zeros_like(v)

    @property
    def integrated(self):
        """Integrated OFI (CCZ eq. 4): weights . normalized; NaN until weights are set."""
        if not self.st.has_weights:
            return float("nan")
        return float(np.dot(self.weights, self.normalized))

    @property
    def weights(self):
        """Integrated-OFI weights (None until fitted or given)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        if not self.st.has_weights:
            return None
        return np.array([self.st.weights[m] for m in range(self.st.levels)])

    @weights.setter
    def weights(self, w):
        """Set weights; they are L1-normalised and their sign fixed so that sum(w) > 0."""
        if w is None:
            if self.guard.busy:
                guard_wait(&self.guard)
            self.st.has_weights = False
            return
        a = column(w, np.float64, "weights", self.st.levels)
        if not np.isfinite(a).all() or not np.abs(a).sum() > 0:
            raise OFIError("weights must be finite and not all zero", field="weights")
        a = a / np.abs(a).sum()
        if a.sum() < 0:
            a = -a
        if self.guard.busy:
            guard_wait(&self.guard)
        for m in range(self.st.levels):
            self.st.weights[m] = a[m]
        self.st.has_weights = True

    def fit(self, sample):
        """Fit the integrated-OFI weights on ``sample`` ((n, L) normalised multi-level OFIs
        over past intervals) with :func:`integrated_weights`; returns the weights."""
        w, ratio = integrated_weights(sample)
        if w.shape[0] != self.st.levels:
            raise OFIError(f"sample must have {self.st.levels} columns", field="sample")
        self.weights = w
        self.explained_variance_ratio = ratio
        return self.weights

    @property
    def count(self):
        """Events in the window (all events since reset without a window)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        if self.st.window > 0 or self.st.window_time > 0:
            return self.st.size
        return self.st.n_events

    @property
    def n_events(self):
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n_events

    def reset(self):
        """Forget all events (weights are kept): the next event is a first event (e = 0)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        mlofi_reset(&self.st)

    def __reduce__(self):
        cdef intp_t L = self.st.levels, w = self.st.width, i, j
        if self.guard.busy:
            guard_wait(&self.guard)
        ring_ts = np.empty(self.st.size, dtype=np.int64)
        ring_val = np.empty((self.st.size, w), dtype=np.float64)
        for i in range(self.st.size):
            j = (self.st.head + i) % self.st.capacity
            ring_ts[i] = self.st.ring_ts[j]
            ring_val[i] = [self.st.ring_val[j * w + k] for k in range(w)]
        st = {
            "prev": [self.st.prev[k] for k in range(4 * L)],
            "e": [self.st.e[k] for k in range(w)],
            "sum": [self.st.sum[k] for k in range(w)],
            "comp": [self.st.comp[k] for k in range(w)],
            "total": [self.st.total[k] for k in range(w)],
            "total_comp": [self.st.total_comp[k] for k in range(w)],
            "ring_ts": ring_ts, "ring_val": ring_val,
            "flags": (bool(self.st.has_prev), bool(self.st.has_last), self.st.last_ts,
                      self.st.n_events),
            "weights": self.weights, "ratio": self.explained_variance_ratio,
        }
        return (MultiLevelOFI, (L, self.window, self.window_time, self.st.capacity,
                                bool(self.st.grow)), st)

    def __setstate__(self, d):
        guard_enter(&self.guard)   # Python code runs in here: hold the lock throughout
        try:
            self._setstate(d)
        finally:
            guard_exit(&self.guard)

    def _setstate(self, d):
        cdef intp_t L = self.st.levels, w = self.st.width, i, k
        for k in range(4 * L):
            self.st.prev[k] = d["prev"][k]
        for k in range(w):
            self.st.e[k] = d["e"][k]
            self.st.sum[k] = d["sum"][k]
            self.st.comp[k] = d["comp"][k]
            self.st.total[k] = d["total"][k]
            self.st.total_comp[k] = d["total_comp"][k]
        n = len(d["ring_ts"])
        while self.st.capacity < n:
            if mlofi_grow(&self.st) != STATUS_OK:
                raise MemoryError()
        self.st.head = 0
        self.st.size = n
        for i in range(n):
            self.st.ring_ts[i] = d["ring_ts"][i]
            for k in range(w):
                self.st.ring_val[i * w + k] = d["ring_val"][i][k]
        hp, hl, self.st.last_ts, self.st.n_events = d["flags"]
        self.st.has_prev = hp
        self.st.has_last = hl
        wts = d["weights"]
        self.st.has_weights = wts is not None
        if wts is not None:    # stored already normalised: copy bit for bit
            for k in range(L):
                self.st.weights[k] = wts[k]
        self.explained_variance_ratio = d["ratio"]


def mlofi(bid_px, bid_sz, ask_px, ask_sz):
    """Multi-level OFI e_{m,n} (Xu, Gould & Howison 2018) for (n, L) arrays of top-L states,
    best level first; returns (n, L) float64 with row 0 all zeros (first event).

    Absent levels: NaN / -inf bid, NaN / +inf ask (or LOBSTER's dummies) with size 0.
    Same as ``MultiLevelOFI(L).update_many(None, ...)``.
    """
    b = np.asarray(bid_px)
    L = b.shape[1] if b.ndim == 2 else 1
    return MultiLevelOFI(L).update_many(None, bid_px, bid_sz, ask_px, ask_sz)
