# Preallocated ring buffers of (timestamp, value) and rolling window sums.
# The C API below is what _ofi, _trades, _book and _impact build on; read it as a C header.

from libc.math cimport fabs
from libc.stdint cimport int8_t

from ofi_fast._guard cimport Guard
from ofi_fast._types cimport (
    STATUS_CAPACITY, STATUS_OK, STATUS_TIME_BACKWARDS, float64_t, int64_t, intp_t,
)

# The one ring layout (issue 13 item 5): a FIFO of `capacity` slots; slot j holds a timestamp
# ts[j], a row of `width` float64 values val[j*width .. j*width+width) (row-major) and, when the
# ring was made with a tag column, one int8 tag[j]. The elements are the `size` slots from
# `head` on, wrapping at `capacity`: the k-th oldest is slot ring_slot(r, k). With width 1 and
# no tag it is the (timestamp, value) ring RollingSum and OFI's window use.
cdef struct Ring:
    int64_t* ts          # timestamps, any unit; non-decreasing in push order
    float64_t* val       # capacity * width values, row-major (width 1: one value per slot)
    intp_t capacity      # slots allocated (> 0)
    intp_t head          # slot of the oldest element
    intp_t size          # elements held, 0 <= size <= capacity
    intp_t width         # float64 values per slot (>= 1)
    int8_t* tag          # one int8 per slot (e.g. a trade side), NULL when the ring has none

cdef struct RollingSumState:
    Ring ring
    float64_t sum        # Neumaier sum of the values in the window
    float64_t comp       # its compensation term: the exact sum is sum + comp
    int64_t window       # count window (elements); 0 = none
    int64_t window_time  # time window, same unit as ts: holds ts in (t - window_time, t]; 0 = none
    bint grow            # time window: double the ring instead of failing when it is full
    bint has_last        # a timestamp has been pushed since the last reset
    int64_t last_ts      # the last timestamp pushed
    int64_t n_pushed     # values pushed since the last reset (whole stream)

# Ring primitives (ring_init allocates with malloc; ring_free releases it).
# ring_init(r, capacity) is ring_init_rows(r, capacity, 1, False). Both return STATUS_OK or
# STATUS_NO_MEMORY (capacity < 1, width < 1, a byte size past SIZE_MAX / 2, or malloc failed);
# on failure every pointer is NULL and capacity 0, so ring_free is safe. Callers with a size
# from a user check it first with ring_check_size (a ValueError naming the argument).
cdef int ring_init(Ring* r, intp_t capacity) noexcept nogil
cdef int ring_init_rows(Ring* r, intp_t capacity, intp_t width, bint tag) noexcept nogil
cdef void ring_free(Ring* r) noexcept nogil        # frees ts, val, tag; leaves an empty ring
cdef void ring_clear(Ring* r) noexcept nogil       # empties it, keeps the buffers
# Reallocate to `capacity` slots (>= size), moving timestamps, rows and tags so that the oldest
# element is slot 0. STATUS_NO_MEMORY (ring unchanged) when capacity < size, it overflows or
# malloc fails.
cdef int ring_grow(Ring* r, intp_t capacity) noexcept nogil
# Wrap-around copies, oldest first: ring_copy_out writes the `size` elements to contiguous
# ts[size], val[size * width] and tag[size] (tag ignored, may be NULL, when the ring has none);
# ring_copy_in replaces the contents with n <= capacity elements read that way (head 0).
# Two memcpy per column at most; nothing is read past size (or n) elements.
cdef void ring_copy_out(const Ring* r, int64_t* ts, float64_t* val, int8_t* tag) noexcept nogil
cdef void ring_copy_in(Ring* r, const int64_t* ts, const float64_t* val, const int8_t* tag,
                       intp_t n) noexcept nogil
# Python edge: a ValueError naming `name` when `capacity` slots of one timestamp, `width`
# float64 and (with tag) one int8 cannot be allocated without overflow (checked_nbytes).
cdef int ring_check_size(Py_ssize_t capacity, Py_ssize_t width, bint tag, str name) except -1

# An empty ring without buffers (capacity 0, NULL pointers) of `width` values a row: the ring
# of a state that has no window; ring_free and ring_clear accept it, nothing may be pushed.
cdef inline void ring_none(Ring* r, intp_t width) noexcept nogil:
    r.ts = NULL
    r.val = NULL
    r.tag = NULL
    r.width = width if width >= 1 else 1
    r.capacity = 0
    r.head = 0
    r.size = 0

# --- slot and row accessors (inline, branch-free where the wrap is unpredictable) ---
# Slot of the k-th oldest element, 0 <= k < capacity (k < size for an element held).
cdef inline intp_t ring_slot(const Ring* r, intp_t k) noexcept nogil:
    cdef intp_t j = r.head + k
    return j - r.capacity * (j >= r.capacity)

# The slot after slot j (0 after the last): for walking the elements oldest first, from
# r.head, where the wrap comes once per pass and a predictable test is cheaper than ring_slot.
cdef inline intp_t ring_next_slot(const Ring* r, intp_t j) noexcept nogil:
    j += 1
    if j == r.capacity:
        j = 0
    return j

# The row of slot j: width float64 values.
cdef inline float64_t* ring_row(const Ring* r, intp_t j) noexcept nogil:
    return r.val + j * r.width

# Append a slot at the tail and return it (size + 1); the caller writes ts[j], the row and
# tag[j]. Needs size < capacity (evict or grow first).
cdef inline intp_t ring_push_slot(Ring* r) noexcept nogil:
    cdef intp_t j = ring_slot(r, r.size)
    r.size += 1
    return j

# Drop the oldest element and return its slot (still readable until the next push). Needs
# size > 0.
cdef inline intp_t ring_pop_slot(Ring* r) noexcept nogil:
    cdef intp_t j = r.head
    r.head = ring_slot(r, 1)
    r.size -= 1
    return j

# Whether a push with this cutoff finds the ring full after its evictions (the elements with
# ts <= cutoff, oldest first: timestamps are non-decreasing): full, and its oldest element not
# expired (an eviction makes room, and the oldest is the first to go). No count is needed.
cdef inline bint ring_full_after_expiry(const Ring* r, int64_t cutoff) noexcept nogil:
    return r.size == r.capacity and (r.size == 0 or r.ts[r.head] > cutoff)

# Neumaier (Kahan-Babuska) compensated accumulation: *s + *c is the running sum. The rounding
# error of s + x is computed by Knuth's TwoSum (six additions, no comparison, no branch), which
# is exact, so it equals Neumaier's |s| >= |x| ? (s - t) + x : (x - t) + s bit for bit (both
# are the exact error; tests/test_ring.py checks it against that form).
cdef inline void neumaier_add(float64_t* s, float64_t* c, float64_t x) noexcept nogil:
    cdef float64_t t = s[0] + x
    cdef float64_t z = t - s[0]
    c[0] += (s[0] - (t - z)) + (x - z)
    s[0] = t

# Rolling sum over a count window, a time window, or the whole stream (no window).
cdef int rolling_init(RollingSumState* st, int64_t window, int64_t window_time,
                      intp_t capacity, bint grow) noexcept nogil
cdef void rolling_free(RollingSumState* st) noexcept nogil
cdef void rolling_reset(RollingSumState* st) noexcept nogil

# --- hot path, inline so that every module using a window compiles it into its own loop ---
# The status of an event at ts for a window over ring r, changing nothing: time order against
# the last event (when there is one), then, for a time window that may not grow, room in r
# once the events at or before ts - window_time leave (shared by every windowed state).
cdef inline int window_check(const Ring* r, bint has_last, int64_t last_ts, int64_t ts,
                             int64_t window_time, bint grow) noexcept nogil:
    if has_last and ts < last_ts:
        return STATUS_TIME_BACKWARDS
    if window_time > 0 and not grow:
        if ring_full_after_expiry(r, ts - window_time):
            return STATUS_CAPACITY
    return STATUS_OK


# The room step of a time window's push, after its time-order test: STATUS_OK when the ring
# has a slot for ts once the events at or before ts - window_time leave (always, without a
# time window), else STATUS_CAPACITY, or with `grow` the ring doubles (the only allocation of
# a windowed push; STATUS_NO_MEMORY, ring unchanged, when that fails). Nothing is evicted.
cdef inline int window_room(Ring* r, int64_t ts, int64_t window_time, bint grow) noexcept nogil:
    if window_time > 0 and ring_full_after_expiry(r, ts - window_time):
        if not grow:
            return STATUS_CAPACITY
        return ring_grow(r, 2 * r.capacity)
    return STATUS_OK


# Everything that can fail for an event at ts before a windowed state changes: time order
# against the last event (when there is one), then window_room. Shared by rolling_push,
# MLOFIState (mlofi_reserve) and RollingOLS; TradeFlow tests time order with its other
# fields, then calls window_room.
cdef inline int window_reserve(Ring* r, bint has_last, int64_t last_ts, int64_t ts,
                               int64_t window_time, bint grow) noexcept nogil:
    if has_last and ts < last_ts:
        return STATUS_TIME_BACKWARDS
    return window_room(r, ts, window_time, grow)


# Check only: the status rolling_push(ts) would return, without changing anything.
cdef inline int rolling_check(const RollingSumState* st, int64_t ts) noexcept nogil:
    return window_check(&st.ring, st.has_last, st.last_ts, ts, st.window_time, st.grow)


# Push (ts, x): evicts what leaves the window, then adds x. Returns STATUS_OK, or
# STATUS_TIME_BACKWARDS / STATUS_CAPACITY / STATUS_NO_MEMORY with the state unchanged.
# A time window evicts in one pass (the room is known from the oldest element alone).
cdef inline int rolling_push(RollingSumState* st, int64_t ts, float64_t x) noexcept nogil:
    cdef Ring* r = &st.ring
    cdef intp_t tail
    cdef int64_t cutoff
    cdef int status = window_reserve(r, st.has_last, st.last_ts, ts, st.window_time, st.grow)
    if status != STATUS_OK:
        return status
    if st.window_time > 0:
        cutoff = ts - st.window_time
        while r.size > 0 and r.ts[r.head] <= cutoff:   # (ring_next_slot's wrap test is
            # predictable here: 5 instructions a call fewer than ring_pop_slot's select)
            neumaier_add(&st.sum, &st.comp, -r.val[r.head])
            r.head = ring_next_slot(r, r.head)
            r.size -= 1
        if r.size == 0:
            # An empty window sums to exactly zero: drop the rounding residue.
            st.sum = 0.0
            st.comp = 0.0
    elif st.window > 0:
        if r.size == r.capacity:
            neumaier_add(&st.sum, &st.comp, -r.val[ring_pop_slot(r)])
    if st.window > 0 or st.window_time > 0:
        tail = ring_push_slot(r)
        r.ts[tail] = ts
        r.val[tail] = x
    neumaier_add(&st.sum, &st.comp, x)
    st.has_last = True
    st.last_ts = ts
    st.n_pushed += 1
    return STATUS_OK


cdef inline float64_t rolling_value(const RollingSumState* st) noexcept nogil:
    return st.sum + st.comp


# Recompute the sum exactly from the buffer (removes accumulated rounding).
cdef void rolling_recompute(RollingSumState* st) noexcept nogil


cdef class RollingSum:
    cdef RollingSumState st
    cdef Guard guard            # serialises calls from several threads (see _guard.pxd)
    cdef readonly object window
    cdef readonly object window_time
    cdef int push(self, int64_t ts, float64_t x) noexcept nogil
    cpdef float64_t update(self, int64_t ts, float64_t value) except? -1.0

# Python-edge helpers shared by the modules that own a RollingSumState.
cdef int raise_rolling(int status, RollingSumState* st, str field, intp_t index) except -1
cdef dict rolling_getstate(RollingSumState* st)
cdef int rolling_setstate(RollingSumState* st, dict d) except -1
