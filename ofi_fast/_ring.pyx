"""Preallocated ring buffers and rolling window sums.

Windows:
- count window ``window=N``: the last N values pushed;
- time window ``window_time=W``: values whose timestamp lies in ``(t - W, t]``, t the last
  timestamp pushed (same unit as the timestamps);
- neither: the whole stream since the last reset.

Numerics: the sum is a Neumaier (Kahan-Babuska) compensated sum, carried through every add and
every removal, so a rolling sum over 10 million pushes stays within 1e-9 relative of an exact
(``math.fsum``) summation of the window; ``recompute()`` re-sums the buffer exactly if wanted.
"""

cimport cython
from libc.stdint cimport INT64_MIN, SIZE_MAX, int8_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

import numpy as np

from ofi_fast cimport _types
from ofi_fast._guard cimport (
    checked_nbytes, guard_enter, guard_exit, guard_free, guard_init, guard_wait,
)
from ofi_fast._types cimport (
    STATUS_CAPACITY, STATUS_NO_MEMORY, STATUS_NON_FINITE, STATUS_OK, STATUS_TIME_BACKWARDS,
    float64_t, int64_t, intp_t,
)
from ofi_fast._arrays import column, integer
from ofi_fast.errors import CapacityError, OFIError, raise_status


DEFAULT_TIME_CAPACITY = 1 << 16


cdef inline bint _rows_overflow(intp_t capacity, intp_t width) noexcept nogil:
    # capacity slots of 8 + 8 * width (+ 1) bytes past SIZE_MAX / 2 (width >= 1, capacity >= 1)
    cdef size_t half = SIZE_MAX // 2
    if <size_t> capacity > half // sizeof(int64_t) or <size_t> width > half // sizeof(float64_t):
        return True
    return <size_t> width > (half // sizeof(float64_t)) // <size_t> capacity


cdef int ring_init(Ring* r, intp_t capacity) noexcept nogil:
    return ring_init_rows(r, capacity, 1, False)


cdef int ring_init_rows(Ring* r, intp_t capacity, intp_t width, bint tag) noexcept nogil:
    # the Python edge has checked the size (check_window / ring_check_size); this refuses an
    # overflow anyway
    ring_none(r, width)
    if capacity < 1 or width < 1 or _rows_overflow(capacity, width):
        return STATUS_NO_MEMORY
    r.ts = <int64_t*> malloc(capacity * sizeof(int64_t))
    r.val = <float64_t*> malloc(capacity * width * sizeof(float64_t))
    if tag:
        r.tag = <int8_t*> malloc(capacity * sizeof(int8_t))
    if r.ts == NULL or r.val == NULL or (tag and r.tag == NULL):
        ring_free(r)
        return STATUS_NO_MEMORY
    r.capacity = capacity
    return STATUS_OK


cdef void ring_free(Ring* r) noexcept nogil:
    free(r.ts)
    free(r.val)
    free(r.tag)
    r.ts = NULL
    r.val = NULL
    r.tag = NULL
    r.capacity = 0
    r.size = 0
    r.head = 0


cdef void ring_clear(Ring* r) noexcept nogil:
    r.head = 0
    r.size = 0


cdef void ring_copy_out(const Ring* r, int64_t* ts, float64_t* val, int8_t* tag) noexcept nogil:
    """The elements oldest first into contiguous arrays: [head, end) then [0, rest)."""
    cdef intp_t n1 = r.capacity - r.head
    cdef intp_t w = r.width
    if n1 > r.size:
        n1 = r.size
    cdef intp_t n2 = r.size - n1
    if r.size == 0:
        return
    memcpy(ts, r.ts + r.head, n1 * sizeof(int64_t))
    memcpy(val, r.val + r.head * w, n1 * w * sizeof(float64_t))
    if n2 > 0:
        memcpy(ts + n1, r.ts, n2 * sizeof(int64_t))
        memcpy(val + n1 * w, r.val, n2 * w * sizeof(float64_t))
    if r.tag != NULL and tag != NULL:
        memcpy(tag, r.tag + r.head, n1 * sizeof(int8_t))
        if n2 > 0:
            memcpy(tag + n1, r.tag, n2 * sizeof(int8_t))


cdef void ring_copy_in(Ring* r, const int64_t* ts, const float64_t* val, const int8_t* tag,
                       intp_t n) noexcept nogil:
    # n <= capacity (the caller grows first); the contents start at slot 0
    r.head = 0
    r.size = n
    if n <= 0:
        r.size = 0
        return
    memcpy(r.ts, ts, n * sizeof(int64_t))
    memcpy(r.val, val, n * r.width * sizeof(float64_t))
    if r.tag != NULL and tag != NULL:
        memcpy(r.tag, tag, n * sizeof(int8_t))


cdef int ring_grow(Ring* r, intp_t capacity) noexcept nogil:
    """Reallocate to ``capacity`` slots (>= size), unrolling the ring to start at slot 0."""
    cdef Ring g
    if capacity < r.size or capacity < 1 or _rows_overflow(capacity, r.width):
        return STATUS_NO_MEMORY      # also a doubled capacity that overflowed
    if ring_init_rows(&g, capacity, r.width, r.tag != NULL) != STATUS_OK:
        return STATUS_NO_MEMORY
    ring_copy_out(r, g.ts, g.val, g.tag)
    g.size = r.size
    ring_free(r)
    r[0] = g
    return STATUS_OK


cdef int ring_check_size(Py_ssize_t capacity, Py_ssize_t width, bint tag, str name) except -1:
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if capacity < 1:
        raise ValueError(f"{name} must be >= 1, got {capacity}")
    checked_nbytes(capacity, sizeof(int64_t) + <size_t> tag, name)
    if <size_t> width > (SIZE_MAX // 2) // sizeof(float64_t):
        raise ValueError(f"width={width} is too large: its rows overflow")
    checked_nbytes(capacity, width * sizeof(float64_t), name)
    return 0


cdef int rolling_init(RollingSumState* st, int64_t window, int64_t window_time,
                      intp_t capacity, bint grow) noexcept nogil:
    st.sum = 0.0
    st.comp = 0.0
    st.window = window
    st.window_time = window_time
    st.grow = grow
    st.has_last = False
    st.last_ts = 0
    st.n_pushed = 0
    st.ring.ts = NULL
    st.ring.val = NULL
    if window > 0:
        capacity = window
    if capacity < 1:
        capacity = 1
    return ring_init(&st.ring, capacity)


cdef void rolling_free(RollingSumState* st) noexcept nogil:
    ring_free(&st.ring)


cdef void rolling_reset(RollingSumState* st) noexcept nogil:
    ring_clear(&st.ring)
    st.sum = 0.0
    st.comp = 0.0
    st.has_last = False
    st.last_ts = 0
    st.n_pushed = 0


cdef void rolling_recompute(RollingSumState* st) noexcept nogil:
    cdef intp_t i, j
    if st.window == 0 and st.window_time == 0:
        return  # no buffer: the whole-stream sum cannot be recomputed
    st.sum = 0.0
    st.comp = 0.0
    j = st.ring.head
    for i in range(st.ring.size):
        neumaier_add(&st.sum, &st.comp, st.ring.val[j])
        j += 1
        if j == st.ring.capacity:
            j = 0


def _status_codes():
    """The Status enum of _types.pxd as a dict (for the test that errors.py mirrors it)."""
    return {
        "STATUS_OK": _types.STATUS_OK, "STATUS_CAPACITY": _types.STATUS_CAPACITY,
        "STATUS_NON_FINITE": _types.STATUS_NON_FINITE, "STATUS_NEGATIVE": _types.STATUS_NEGATIVE,
        "STATUS_TIME_BACKWARDS": _types.STATUS_TIME_BACKWARDS,
        "STATUS_CROSSED": _types.STATUS_CROSSED,
        "STATUS_SEQUENCE_GAP": _types.STATUS_SEQUENCE_GAP,
        "STATUS_BAD_VALUE": _types.STATUS_BAD_VALUE, "STATUS_NO_MEMORY": _types.STATUS_NO_MEMORY,
    }


def check_window(window, window_time, capacity, slot_bytes=16):
    """Validate window arguments; return (window, window_time, capacity) as C-ready ints.

    Integers only (``operator.index``; bools refused). The buffer of ``capacity`` (or
    ``window``) slots of ``slot_bytes`` bytes must not overflow the address space: an
    impossible size is an OFIError (a ValueError) naming the argument; a possible one that
    malloc cannot satisfy is a MemoryError raised by the allocation.
    """
    if window is not None and window_time is not None:
        raise OFIError("give window (events) or window_time (time units), not both",
                       field="window")
    w = 0 if window is None else integer(window, "window", 1)
    wt = 0 if window_time is None else integer(window_time, "window_time", 1)
    if wt > 2**63 - 1:
        raise OFIError(f"window_time must be < 2**63 time units, got {wt}", field="window_time")
    if capacity is None:
        cap = w if w else (DEFAULT_TIME_CAPACITY if wt else 1)
    else:
        cap = integer(capacity, "capacity", 1)
        if w:
            cap = w
    name = "window" if w else "capacity"
    if cap > 2**62:
        raise OFIError(f"{name}={cap} is too large: {cap} slots of {slot_bytes} bytes overflow",
                       field=name)
    checked_nbytes(cap, slot_bytes, name)
    return w, wt, cap


def alloc_error(str name, n, nbytes):
    """The MemoryError for a buffer of ``n`` slots (``nbytes`` bytes) that malloc refused."""
    return MemoryError(f"{name}={n} needs {nbytes:,} bytes, which could not be allocated")


cdef int raise_rolling(int status, RollingSumState* st, str field, intp_t index) except -1:
    """Raise the error for a failed rolling_push (CapacityError carries the needed size)."""
    if status == STATUS_CAPACITY:
        raise CapacityError(
            f"{field}[{index}]: the time window needs at least {st.ring.capacity + 1} slots but "
            f"the buffer holds {st.ring.capacity}; pass a larger capacity= or grow=True",
            field=field, index=index, needed=st.ring.capacity + 1)
    raise_status(status, field, index)
    return 0


cdef dict rolling_getstate(RollingSumState* st):
    """The full state as plain Python objects (window contents oldest first)."""
    cdef intp_t i, j, n = st.ring.size
    ts = np.empty(n, dtype=np.int64)
    val = np.empty(n, dtype=np.float64)
    cdef int64_t[::1] tsv = ts
    cdef float64_t[::1] vv = val
    j = st.ring.head
    for i in range(n):
        tsv[i] = st.ring.ts[j]
        vv[i] = st.ring.val[j]
        j += 1
        if j == st.ring.capacity:
            j = 0
    return {"sum": st.sum, "comp": st.comp, "has_last": bool(st.has_last),
            "last_ts": st.last_ts, "n_pushed": st.n_pushed, "capacity": st.ring.capacity, "ts": ts, "val": val}


cdef int rolling_setstate(RollingSumState* st, dict d) except -1:
    cdef int64_t[::1] tsv = np.ascontiguousarray(d["ts"], dtype=np.int64)
    cdef float64_t[::1] vv = np.ascontiguousarray(d["val"], dtype=np.float64)
    cdef intp_t i, n = tsv.shape[0], cap = d["capacity"]
    if cap != st.ring.capacity or n > st.ring.capacity:
        if ring_grow(&st.ring, max(cap, n)) != STATUS_OK:
            raise MemoryError(f"a ring of {max(cap, n)} slots could not be allocated")
    ring_clear(&st.ring)
    for i in range(n):
        st.ring.ts[i] = tsv[i]
        st.ring.val[i] = vv[i]
    st.ring.size = n
    st.sum = d["sum"]
    st.comp = d["comp"]
    st.has_last = d["has_last"]
    st.last_ts = d["last_ts"]
    st.n_pushed = d["n_pushed"]
    return 0


# --- branch-free batch kernels of RollingSum.update_many (issue 13, helper trades3) -------------
# update_many runs in blocks of RS_BLOCK values: _rs_clean checks a block in one pass (the tests
# of push, accumulated: a NaN that sticks for the values, an integer mask for time); a clean
# block of a count window or of no window goes to its kernel (no check, no data-dependent
# branch: the ring's wrap is a mask), a block with a bad value, and every block of a time window
# (its evictions depend on the data: the per-value rolling_push), go through the per-value push,
# which applies the values before the bad one and names it. The kernels do rolling_push's float
# operations in its order, so the sums are identical bit for bit.
cdef enum:
    RS_BLOCK = 1024


cdef bint _rs_clean(const int64_t* ts, const float64_t* v, intp_t lo, intp_t hi,
                    int64_t prev) noexcept nogil:
    """1 when every value of [lo, hi) is finite and ts (NULL: none) does not go back."""
    cdef float64_t fin = 0.0
    cdef int back = 0
    cdef intp_t i
    cdef int64_t t
    for i in range(lo, hi):
        fin += v[i] - v[i]
    if ts != NULL:
        for i in range(lo, hi):
            t = ts[i]
            back |= t < prev
            prev = t
    return (fin == 0.0) & (back == 0)


cdef void _rs_plain(RollingSumState* st, const float64_t* v, float64_t* o, intp_t lo,
                    intp_t hi) noexcept nogil:
    """No window: the compensated running sum of a clean block [lo, hi)."""
    cdef float64_t s = st.sum, c = st.comp
    cdef intp_t i
    for i in range(lo, hi):
        neumaier_add(&s, &c, v[i])
        o[i] = s + c
    st.sum = s
    st.comp = c


cdef void _rs_count(RollingSumState* st, const int64_t* ts, intp_t tstep, const float64_t* v,
                    float64_t* o, intp_t lo, intp_t hi) noexcept nogil:
    """Count window of st.ring.capacity values, clean block [lo, hi), value i pushed at
    ts[i * tstep] (step 0: one ts for all). While the ring fills, push at its tail; once full,
    the new value takes the oldest's slot (evict, then add, as rolling_push does) and head
    moves on, its wrap a mask."""
    cdef Ring* r = &st.ring
    cdef int64_t* rts = r.ts
    cdef float64_t* rv = r.val
    cdef intp_t cap = r.capacity, head = r.head, size = r.size, i = lo, tail, stop
    cdef float64_t s = st.sum, c = st.comp, x
    stop = hi if hi - lo < cap - size else lo + (cap - size)
    while i < stop:                                 # the fill phase
        tail = head + size
        tail -= cap & -<intp_t> (tail >= cap)
        x = v[i]
        rts[tail] = ts[i * tstep]
        rv[tail] = x
        size += 1
        neumaier_add(&s, &c, x)
        o[i] = s + c
        i += 1
    while i < hi:                                   # full: evict the oldest, reuse its slot
        neumaier_add(&s, &c, -rv[head])
        x = v[i]
        rts[head] = ts[i * tstep]
        rv[head] = x
        head += 1
        head &= -<intp_t> (head != cap)
        neumaier_add(&s, &c, x)
        o[i] = s + c
        i += 1
    r.head = head
    r.size = size
    st.sum = s
    st.comp = c


cdef int _rs_many(RollingSumState* st, const int64_t* ts, const float64_t* v, float64_t* o,
                  intp_t n, intp_t* at) noexcept nogil:
    """update_many's loop: clean blocks through the kernels, the others value by value.
    Returns a status; *at = the index it refers to."""
    cdef intp_t i = 0, hi, j
    cdef int64_t t = st.last_ts
    cdef int status
    cdef bint fast = st.window_time == 0
    while i < n:
        hi = i + RS_BLOCK if n - i > RS_BLOCK else n
        if fast and _rs_clean(ts, v, i, hi, st.last_ts if st.has_last else INT64_MIN):
            if st.window > 0:
                _rs_count(st, ts if ts != NULL else &t, ts != NULL, v, o, i, hi)
            else:
                _rs_plain(st, v, o, i, hi)
            st.has_last = True
            st.last_ts = ts[hi - 1] if ts != NULL else t
            st.n_pushed += hi - i
            i = hi
            continue
        for j in range(i, hi):
            if ts != NULL:
                t = ts[j]
            if not (v[j] - v[j] == 0.0):
                at[0] = j
                return STATUS_NON_FINITE
            status = rolling_push(st, t, v[j])
            if status != STATUS_OK:
                at[0] = j
                return status
            o[j] = st.sum + st.comp
        i = hi
    at[0] = n
    return STATUS_OK


@cython.final
cdef class RollingSum:
    """Rolling sum of values over a count window, a time window, or the whole stream.

    ``RollingSum(window=None, window_time=None, capacity=None, grow=False)``

    - ``window``: the last ``window`` values (count window).
    - ``window_time``: values with timestamp in ``(t - window_time, t]``, ``t`` the latest
      timestamp, same unit as the timestamps. The buffer has ``capacity`` slots (default 65536);
      a window that would need more raises :class:`~ofi_fast.CapacityError` naming the size
      needed, unless ``grow=True`` (then the buffer doubles, the only allocation after
      construction).
    - neither: the sum of everything pushed since ``reset()``.

    Timestamps must be non-decreasing (equal is fine). Values must be finite. Sums are
    Neumaier-compensated (exact to ~1 ulp of the window's magnitude over any stream length).
    """

    def __cinit__(self, window=None, window_time=None, capacity=None, grow=False):
        w, wt, cap = check_window(window, window_time, capacity)
        guard_init(&self.guard)
        self.window = window
        self.window_time = window_time
        if rolling_init(&self.st, w, wt, cap, bool(grow)) != STATUS_OK:
            raise alloc_error("window" if w else "capacity", cap, 16 * cap)

    def __dealloc__(self):
        rolling_free(&self.st)
        guard_free(&self.guard)

    cdef int push(self, int64_t ts, float64_t x) noexcept nogil:
        """C-level push: a status code (STATUS_OK, time backwards, capacity, non-finite)."""
        if not (x - x == 0.0):
            return STATUS_NON_FINITE
        return rolling_push(&self.st, ts, x)

    cpdef float64_t update(self, int64_t ts, float64_t value) except? -1.0:
        """Push one value at time ``ts``; return the window's sum after it."""
        if self.guard.busy:
            guard_wait(&self.guard)
        cdef int status = self.push(ts, value)
        if status != STATUS_OK:
            raise_rolling(status, &self.st, "value" if status == STATUS_NON_FINITE else "ts", 0)
        return self.st.sum + self.st.comp

    def update_many(self, ts, values, out=None):
        """Push arrays of timestamps and values; return the window sum after each push.

        ``ts`` may be None for a count window or no window. On a bad element the elements
        before it are applied, the error names the element's index, and the state is as it
        was after the last good element.
        """
        cdef const float64_t[::1] v = column(values, np.float64, "values")
        cdef intp_t n = v.shape[0], i
        cdef const int64_t[::1] t
        cdef bint has_ts = ts is not None
        if has_ts:
            t = column(ts, np.int64, "ts", n)
        elif self.st.window_time > 0:
            raise OFIError("a time window needs ts", field="ts")
        if out is None:
            out = np.empty(n, dtype=np.float64)
        cdef float64_t[::1] o = out
        if o.shape[0] != n:
            raise OFIError(f"out has {o.shape[0]} elements, expected {n}", field="out")
        cdef int status = STATUS_OK
        cdef const int64_t* pt = &t[0] if has_ts and n else NULL
        i = 0
        guard_enter(&self.guard)
        try:
            if n:
                with nogil:
                    status = _rs_many(&self.st, pt, &v[0], &o[0], n, &i)
        finally:
            guard_exit(&self.guard)
        if status != STATUS_OK:
            raise_rolling(status, &self.st, "values" if status == STATUS_NON_FINITE else "ts", i)
        return out

    @property
    def value(self):
        """The sum over the current window (0.0 when empty)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.sum + self.st.comp

    @property
    def count(self):
        """Elements in the current window (pushes since reset when there is no window)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.ring.size if (self.st.window or self.st.window_time) else self.st.n_pushed

    @property
    def capacity(self):
        """Slots in the ring buffer (grows only with grow=True)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.ring.capacity

    def reset(self):
        """Forget everything pushed; keep the window and the buffer."""
        if self.guard.busy:
            guard_wait(&self.guard)
        rolling_reset(&self.st)

    def recompute(self):
        """Re-sum the window exactly from the buffer (drops accumulated rounding)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        rolling_recompute(&self.st)

    def __reduce__(self):
        if self.guard.busy:
            guard_wait(&self.guard)
        return (RollingSum, (self.window, self.window_time, self.st.ring.capacity,
                             bool(self.st.grow)), rolling_getstate(&self.st))

    def __setstate__(self, state):
        guard_enter(&self.guard)   # the state's arrays are converted inside: hold the lock
        try:
            rolling_setstate(&self.st, state)
        finally:
            guard_exit(&self.guard)


# --- ring4: test-only entry point to the shared ring's primitives ------------------------------
cdef class _RingProbe:
    """Test-only: a strided Ring driven through its C primitives (tests/test_ring.py).

    ``_RingProbe(capacity, width, tag)``; ``push(ts, row, tag)`` appends one slot (False when
    full), ``pop()`` drops the oldest and returns it, ``grow(capacity)`` reallocates,
    ``contents()`` is (ts, val[size, width], tag or None) oldest first via ring_copy_out,
    ``load(ts, val, tag)`` replaces the contents via ring_copy_in. Every method keeps the GIL.
    """
    cdef Ring r

    def __cinit__(self, capacity, width=1, tag=False):
        ring_check_size(capacity, width, tag, "capacity")
        if ring_init_rows(&self.r, capacity, width, tag) != STATUS_OK:
            raise alloc_error("capacity", capacity, capacity * (8 * width + 9))

    def __dealloc__(self):
        ring_free(&self.r)

    @property
    def head(self):
        return self.r.head

    @property
    def size(self):
        return self.r.size

    @property
    def capacity(self):
        return self.r.capacity

    def push(self, int64_t ts, row, int tag=0):
        cdef float64_t[::1] v = np.ascontiguousarray(row, dtype=np.float64)
        cdef intp_t j, i
        if v.shape[0] != self.r.width:
            raise ValueError(f"row has {v.shape[0]} values, the ring's width is {self.r.width}")
        if self.r.size == self.r.capacity:
            return False
        j = ring_push_slot(&self.r)
        self.r.ts[j] = ts
        for i in range(self.r.width):
            ring_row(&self.r, j)[i] = v[i]
        if self.r.tag != NULL:
            self.r.tag[j] = <int8_t> tag
        return True

    def pop(self):
        cdef intp_t j
        if self.r.size == 0:
            raise IndexError("pop from an empty ring")
        j = ring_pop_slot(&self.r)
        row = [ring_row(&self.r, j)[i] for i in range(self.r.width)]
        return (self.r.ts[j], row, self.r.tag[j] if self.r.tag != NULL else None)

    def grow(self, capacity):
        return ring_grow(&self.r, capacity) == STATUS_OK

    def contents(self):
        n = self.r.size
        ts = np.empty(n, dtype=np.int64)
        val = np.empty((n, self.r.width), dtype=np.float64)
        tag = np.empty(n, dtype=np.int8)
        cdef int64_t[::1] tv = ts
        cdef float64_t[:, ::1] vv = val
        cdef int8_t[::1] gv = tag
        if n:
            ring_copy_out(&self.r, &tv[0], &vv[0, 0], &gv[0])
        return ts, val, (tag if self.r.tag != NULL else None)

    def load(self, ts, val, tag=None):
        cdef int64_t[::1] tv = np.ascontiguousarray(ts, dtype=np.int64)
        cdef float64_t[:, ::1] vv = np.ascontiguousarray(val, dtype=np.float64).reshape(
            -1, self.r.width)
        cdef int8_t[::1] gv = np.ascontiguousarray(
            np.zeros(tv.shape[0]) if tag is None else tag, dtype=np.int8)
        cdef intp_t n = tv.shape[0]
        if vv.shape[0] != n or gv.shape[0] != n or n > self.r.capacity:
            raise ValueError("ts, val and tag need one row each, at most capacity rows")
        if n:
            ring_copy_in(&self.r, &tv[0], &vv[0, 0], &gv[0], n)
        else:
            ring_clear(&self.r)
