"""L2 order book from price-level deltas, in integer ticks.

Feeds (Binance, Kraken, Tardis, LOBSTER at price-level granularity) send the *absolute* size at
a price: ``apply(side, price, size)`` sets it, size 0 deletes the level. Prices are converted to
integer ticks once, ``tick = round(price / tick_size)``; a price more than 1e-6 tick (plus
1e-13 relative, the rounding of the division itself) away from a multiple of ``tick_size`` is
rejected (OFIError, field ``price``). The fast path multiplies by 1 / tick_size instead and
accepts only within a 1 % tighter tolerance; a price near the edge is decided by the division,
so the outcome and the tick never depend on the path. Prices come back as ``tick / (1 / tick_size)`` when
``1 / tick_size`` is an integer (0.01 -> 100: the double nearest the decimal price, e.g.
61828.02 and not 61828.020000000004), else ``tick * tick_size``.

Structure (decision): per side one sorted array of (key, size) with the best level at the end
(key = tick for bids, -tick for asks, so both sides are "ascending key, best last"). Why:

- best bid/ask is the last slot: O(1) after every update, with no re-scan when the best level
  is deleted (the next best is simply the new last slot);
- updates cluster at the touch: a valid update among the 8 best slots of a side (that does
  not cross) takes a fast path with no data-dependent branch (see ``_apply``): a branch-free
  count of the 8 best keys finds the slot, and insert, overwrite and delete are one fixed
  8-slot move whose offsets come from (found, size == 0); deeper updates use a branch-free
  binary search;
- ``top(n)`` is a copy of the last n slots, contiguous in memory;
- the array keeps free slots at both ends, so an insert or delete moves the levels on the
  shorter side of it: near the touch the few better ones, deep in the book the few worse
  ones; only a level in the middle of a deep book moves ~n/2 slots (~1 ns per 4 levels);
- memory is proportional to the number of live levels, never to the price range: a price
  thousands of ticks away costs one slot; a dense tick array would need re-centering and an
  overflow structure for the same cases.
Measured in bench/bench_book.py (see bench/RESULTS.md).

Crossing is judged at the end of an exchange message, never between its rows (issue 12):
a Binance diff lists all its bids before its asks, a Kraken or Tardis message several levels,
and the book between two rows of one message is a state the exchange never had (on the
Binance samples such transient states cross at USD-M row 2,326 and spot row 1,557; no
message END is crossed). ``batch_end`` (``apply``, ``apply_many``, ``BookOFI.update_many``)
marks the row that ends a message; without it every row is its own message. At a message end
with best bid >= best ask, by ``crossed=``:
- ``"keep"`` (default): nothing is removed (the book shows what the feed shows); the state is
  counted in ``n_crossed`` (best bid > best ask) or ``n_locked`` (equal);
- ``"raise"``: the row ending the message is refused with CrossedBookError (field price; the
  book stays as it was before that row, earlier rows of the message stay applied).
No policy deletes a level the feed still shows (issue 12 item 4): the former ``"drop_stale"``
took the last row's side as the truth and deleted the other side's levels through it, which on
the Bitstamp L3 capture moved the mid by +-$400 for one message; it is now a ValueError.
Deleting a level that does not exist is ignored (counted in ``n_missing``) unless
``strict=True`` (then OFIError on field ``price``): feeds do send such deletions.
"""

cimport cython
from libc.float cimport DBL_MAX
from libc.math cimport NAN, fabs, round as c_round
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memmove
from libc.stdint cimport INT64_MAX, INT64_MIN
cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX


import numpy as np
cdef extern from "numpy/arrayobject.h":
    ctypedef Py_ssize_t npy_intp
    enum: NPY_FLOAT64
    object PyArray_EMPTY(int nd, npy_intp* dims, int typenum, int fortran)
    void* PyArray_DATA(object arr)
    bint PyArray_Check(object obj)
    int PyArray_NDIM(object arr)
    npy_intp* PyArray_DIMS(object arr)
    int PyArray_TYPE(object arr)
    bint PyArray_ISCARRAY(object arr)
    int _import_array() except -1

from ofi_fast._guard cimport (
    Guard, checked_nbytes, guard_enter, guard_exit, guard_free, guard_init, guard_wait,
)
from ofi_fast._types cimport (
    STATUS_BAD_VALUE, STATUS_CROSSED, STATUS_NEGATIVE, STATUS_NO_MEMORY, STATUS_NON_FINITE,
    STATUS_OK, float64_t, int64_t, intp_t,
)
from ofi_fast._arrays import column
from ofi_fast.errors import OFIError, raise_status

_import_array()

_FIELDS = ("side", "price", "size")
_POLICIES = {"raise": BOOK_RAISE, "keep": BOOK_KEEP}
cdef int64_t KEY_MIN = INT64_MIN
cdef int64_t KEY_MAX = INT64_MAX
# Largest |tick| accepted: keeps every key and every key sum inside int64.
cdef float64_t MAX_TICK = 4.0e18
cdef intp_t RANK_NONE = PY_SSIZE_T_MAX
# Slots always kept free past the last level, so that inserts and deletes near the touch can
# move a fixed 4 slots without bounds branches.
cdef enum:
    SLACK = 8


cdef int side_init(BookSide* s, intp_t capacity) noexcept nogil:
    if capacity < 1:
        capacity = 1
    capacity += 2 * SLACK
    s.base = <BookLevel*> malloc(capacity * sizeof(BookLevel))
    s.lv = s.base + capacity // 2 if s.base != NULL else NULL
    s.n = 0
    s.capacity = capacity
    if s.base == NULL:
        return STATUS_NO_MEMORY
    return STATUS_OK


cdef void side_free(BookSide* s) noexcept nogil:
    free(s.base)
    s.base = NULL
    s.lv = NULL
    s.n = 0
    s.capacity = 0


cdef int side_recenter(BookSide* s, intp_t capacity) noexcept nogil:
    """Put the levels in the middle of a buffer of `capacity` slots (the same buffer, or a new
    one when the size changes), leaving free slots at both ends."""
    cdef intp_t front = (capacity - s.n) // 2
    cdef BookLevel* buf
    if capacity != s.capacity:
        buf = <BookLevel*> malloc(capacity * sizeof(BookLevel))
        if buf == NULL:
            return STATUS_NO_MEMORY
        if s.n:
            memcpy(buf + front, s.lv, s.n * sizeof(BookLevel))
        free(s.base)
        s.base = buf
        s.capacity = capacity
    elif s.n:
        memmove(s.base + front, s.lv, s.n * sizeof(BookLevel))
    s.lv = s.base + front
    return STATUS_OK


cdef int side_room(BookSide* s) noexcept nogil:
    """Room for one more level at either end: re-center the levels, doubling the buffer when
    less than a quarter of the levels (plus the slack) would be free, so that each end then
    has at least n / 8 free slots and re-centering (n moves) happens at most once per n / 8
    inserts at one end: amortised O(1) moves per insert at either end (issue 14: a million
    levels, each deeper than all others, were quadratic)."""
    cdef intp_t capacity = s.capacity
    while s.n + 1 + 2 * SLACK + s.n // 4 > capacity:
        if capacity > PY_SSIZE_T_MAX // (4 * <intp_t> sizeof(BookLevel)):
            return STATUS_NO_MEMORY
        capacity = 2 * capacity
    return side_recenter(s, capacity)


cdef int side_prepare(BookSide* s, intp_t m) noexcept nogil:
    """Empty the side and make room for m levels written at s.lv[0 .. m) (snapshots)."""
    s.n = 0
    cdef intp_t capacity = s.capacity
    if capacity < 2 * (m + 2 * SLACK):
        capacity = 2 * (m + 2 * SLACK)
    if side_recenter(s, capacity) != STATUS_OK:
        return STATUS_NO_MEMORY
    s.lv = s.base + (capacity - m) // 2
    return STATUS_OK


cdef inline intp_t side_lower(const BookSide* s, int64_t key) noexcept nogil:
    """First index i with s.lv[i].key >= key (s.n if none). Keys ascend, so among the 8 best
    slots those >= key form a suffix: counting them (branch-free, a fixed 8-step loop) gives
    the answer for updates near the touch; far prices fall back to a branch-free binary
    search (conditional moves, no data-dependent jumps)."""
    cdef intp_t n = s.n, c = 0, j
    if n < 8:
        while n > 0 and s.lv[n - 1].key >= key:
            n -= 1
        return n
    for j in range(1, 9):
        c += s.lv[n - j].key >= key
    if c < 8:
        return n - c
    return side_search(s.lv, n - 8, key)    # s.lv[n - 8].key >= key is known


cdef inline intp_t side_search(const BookLevel* lv, intp_t m, int64_t key) noexcept nogil:
    """First index i in [0, m] with lv[i].key >= key, given lv[m].key >= key (Khuong &
    Morin's branch-free lower bound: conditional moves, no data-dependent jumps). Invariant:
    the answer lies in [base, base + m]."""
    cdef const BookLevel* base = lv
    cdef intp_t half
    while m > 1:
        half = m >> 1
        base = base + half if base[half].key < key else base
        m -= half
    return (base - lv) + (base[0].key < key)


cdef inline int side_insert_at(BookSide* s, intp_t i, int64_t key,
                               float64_t size) noexcept nogil:
    """Insert a new level at index i (s.lv[i - 1].key < key < s.lv[i].key), moving the
    shorter side of the array (re-centering first when that end has no free slot)."""
    if i < s.n - i:
        # nearer the deep end: move the worse levels one slot towards the front instead
        if s.lv == s.base and side_room(s) != STATUS_OK:
            return STATUS_NO_MEMORY
        memmove(s.lv - 1, s.lv, i * sizeof(BookLevel))
        s.lv -= 1
        s.lv[i].key = key
        s.lv[i].size = size
        s.n += 1
        return STATUS_OK
    if s.capacity - (s.lv - s.base) - s.n < SLACK + 1:
        if side_room(s) != STATUS_OK:
            return STATUS_NO_MEMORY
    if s.n - i <= 4:
        # near the touch: a fixed 4-slot move (inlined, no branch on the count); the slack
        # slots past n make the extra copies harmless
        memmove(&s.lv[i + 1], &s.lv[i], 4 * sizeof(BookLevel))
    else:
        memmove(&s.lv[i + 1], &s.lv[i], (s.n - i) * sizeof(BookLevel))
    s.lv[i].key = key
    s.lv[i].size = size
    s.n += 1
    return STATUS_OK


cdef inline void side_remove_at(BookSide* s, intp_t i) noexcept nogil:
    """Remove the level at index i, moving the shorter side of the array."""
    if i < s.n - 1 - i:
        # nearer the deep end: move the worse levels one slot towards the back
        memmove(s.lv + 1, s.lv, i * sizeof(BookLevel))
        s.lv += 1
    elif s.n - i <= 5:
        memmove(&s.lv[i], &s.lv[i + 1], 4 * sizeof(BookLevel))   # fixed size, see insert
    else:
        memmove(&s.lv[i], &s.lv[i + 1], (s.n - i - 1) * sizeof(BookLevel))
    s.n -= 1


cdef inline int side_set(BookSide* s, int64_t key, float64_t size, intp_t* index,
                         bint* inserted) noexcept nogil:
    cdef intp_t i = side_lower(s, key)
    index[0] = i
    if i < s.n and s.lv[i].key == key:
        s.lv[i].size = size
        inserted[0] = False
        return STATUS_OK
    inserted[0] = True
    return side_insert_at(s, i, key, size)


cdef int book_side_set(BookSide* s, int64_t key, float64_t size) noexcept nogil:
    cdef intp_t i
    cdef bint inserted
    return side_set(s, key, size, &i, &inserted)


cdef inline intp_t side_delete(BookSide* s, int64_t key) noexcept nogil:
    """Remove the level with this key; return its index, or -1 when it does not exist."""
    cdef intp_t i = side_lower(s, key)
    if i == s.n or s.lv[i].key != key:
        return -1
    side_remove_at(s, i)
    return i


cdef int book_init(BookState* b, float64_t tick_size, int policy, bint strict,
                   intp_t capacity) noexcept nogil:
    b.tick_size = tick_size
    b.tick_mul = 1.0 / tick_size
    cdef float64_t inv = c_round(1.0 / tick_size)
    b.inv_tick = inv if inv >= 1.0 and fabs(1.0 / tick_size - inv) <= 1e-9 * inv else 0.0
    b.policy = policy
    b.strict = strict
    book_clear(b)
    if side_init(&b.bid, capacity) != STATUS_OK:
        return STATUS_NO_MEMORY
    return side_init(&b.ask, capacity)


cdef void book_free(BookState* b) noexcept nogil:
    side_free(&b.bid)
    side_free(&b.ask)


cdef void book_clear(BookState* b) noexcept nogil:
    b.bid.n = 0
    b.ask.n = 0
    b.last_side = 0
    b.last_rank = 0
    b.last_shift = True
    b.n_updates = 0
    b.n_crossed = 0
    b.n_locked = 0
    b.n_missing = 0


cdef inline int _tick(const BookState* b, float64_t price, int64_t* tick) noexcept nogil:
    if not (price - price == 0.0):
        return STATUS_NON_FINITE
    cdef float64_t x = price / b.tick_size
    if not (fabs(x) < MAX_TICK):
        return STATUS_BAD_VALUE
    # round half away from zero by truncation (one instruction, no libm call)
    cdef int64_t t = <int64_t> (x + 0.5) if x >= 0.0 else <int64_t> (x - 0.5)
    # off-grid tolerance: 1e-6 tick, widened by the rounding error of price / tick_size
    # itself for very large tick counts (1e-13 relative, e.g. 56218.3 / 1e-5)
    if fabs(x - <float64_t> t) > 1e-6 + fabs(x) * 1e-13:
        return STATUS_BAD_VALUE
    tick[0] = t
    return STATUS_OK


cdef inline int _apply_tick(BookState* b, int side, int64_t tick, float64_t size) noexcept nogil:
    """One row, valid except possibly `side` and a strict missing delete; no crossing logic
    (that is judged at the end of the message, in `_judge`)."""
    cdef BookSide* s
    cdef int64_t key
    if side == 1:
        s = &b.bid
        key = tick
    elif side == -1:
        s = &b.ask
        key = -tick
    else:
        return STATUS_BAD_VALUE                # field 0: side
    cdef intp_t i
    cdef bint inserted
    if size == 0.0:
        i = side_delete(s, key)
        if i < 0:
            if b.strict:
                return STATUS_BAD_VALUE | (1 << 4)
            b.n_missing += 1
            b.last_rank = RANK_NONE
        else:
            b.last_rank = s.n - i              # rank the deleted level had
        b.last_side = side
        b.last_shift = True
        b.n_updates += 1
        return STATUS_OK
    if side_set(s, key, size, &i, &inserted) != STATUS_OK:
        return STATUS_NO_MEMORY | (1 << 4)
    b.last_side = side
    b.last_rank = s.n - 1 - i
    b.last_shift = inserted
    b.n_updates += 1
    return STATUS_OK


cdef inline int _apply_checked(BookState* b, int side, float64_t price,
                               float64_t size) noexcept nogil:
    """The general path: every check in order (the first failing one is reported)."""
    if side != 1 and side != -1:
        return STATUS_BAD_VALUE
    if not (size - size == 0.0):
        return STATUS_NON_FINITE | (2 << 4)
    if size < 0.0:
        return STATUS_NEGATIVE | (2 << 4)
    cdef int64_t tick = 0
    cdef int status = _tick(b, price, &tick)
    if status != STATUS_OK:
        return status | (1 << 4)
    return _apply_tick(b, side, tick, size)


# 1.5 * 2**52: (x + ROUND_MAGIC) - ROUND_MAGIC rounds x to the nearest integer (ties to even)
# for |x| < 2**51, in two additions (no libm call, no branch).
cdef float64_t ROUND_MAGIC = 6755399441055744.0
# The fast path handles |price / tick_size| < 2**40 ticks, where the off-grid tolerance
# (1e-6 + 1e-13 |x| < 0.12 tick) keeps the nearest integer unambiguous.
cdef float64_t FAST_TICKS = 1099511627776.0
cdef enum:
    NEAR = 8          # slots searched (and moved) by the near-touch fast path; <= SLACK


cdef int _apply_far(BookState* b, BookSide* s, int side, int64_t key,
                    float64_t size) noexcept nogil:
    """The fast path's continuation for a valid update deeper than the NEAR best levels of
    a side of >= NEAR levels with room behind (side, key and the search window already
    known): branch-free binary search, then the insert/delete moves the shorter side. A
    missing level goes to `_apply_tick` (counter, strict mode)."""
    cdef intp_t n = s.n
    cdef intp_t i = side_search(s.lv, n - NEAR, key)       # s.lv[n - NEAR].key >= key
    cdef bint found = s.lv[i].key == key                   # i <= n - NEAR < n
    if size == 0.0:
        if not found:
            return _apply_tick(b, side, key * side, size)
        side_remove_at(s, i)
        b.last_rank = n - 1 - i
        b.last_shift = True
    elif found:
        s.lv[i].size = size
        b.last_rank = n - 1 - i
        b.last_shift = False
    else:
        if side_insert_at(s, i, key, size) != STATUS_OK:
            return STATUS_NO_MEMORY | (1 << 4)
        b.last_rank = n - i
        b.last_shift = True
    b.last_side = side
    b.n_updates += 1
    return STATUS_OK


cdef inline int _apply(BookState* b, int side, float64_t price, float64_t size) noexcept nogil:
    """One delta. Fast path, taken by a valid update whose price is among the NEAR best
    slots of its side (or just better than the best) and that does not cross: no division
    and no data-dependent branch. Validity is one AND of comparisons (sizes finite and >= 0,
    side +-1, price on the grid after multiplying by 1/tick_size, with a tolerance 1 % tighter
    than the exact check so that the division could not disagree); insert, overwrite and
    delete are one fixed NEAR-slot move whose source and destination offsets (0 or 1) come
    from (found, size == 0). A valid update deeper than the NEAR best continues in
    `_apply_far`. Anything else goes to the general code, which decides everything again from
    the unchanged state, so results and errors are those of the general code: a bad value or
    an off-grid-looking price to `_apply_checked` (every check in order, the exact division);
    a small side, a side that must grow or a strict missing delete to `_apply_tick`.
    No crossing logic: see `_apply_end`."""
    cdef float64_t x = price * b.tick_mul
    cdef float64_t r = (x + ROUND_MAGIC) - ROUND_MAGIC
    cdef float64_t ax = fabs(x)
    cdef bint ok = (((side == 1) | (side == -1)) & (size >= 0.0) & (size <= DBL_MAX)
                    & (ax < FAST_TICKS) & (fabs(x - r) <= 1e-6 + 0.99e-13 * ax))
    if not ok:
        return _apply_checked(b, side, price, size)
    cdef int64_t key = (<int64_t> r) * side
    # the side by arithmetic, not a branch (bid/ask arrive in random order): k = 0 bid, 1 ask
    cdef intp_t k = (1 - side) >> 1
    cdef intp_t stride = <char*> &b.ask - <char*> &b.bid
    cdef BookSide* s = <BookSide*> (<char*> &b.bid + k * stride)
    cdef intp_t n = s.n
    cdef BookLevel* lv = s.lv
    if n < NEAR or s.capacity - (lv - s.base) - n < SLACK + 1:
        return _apply_tick(b, side, <int64_t> r, size)
    # levels among the NEAR best with key >= this key (a suffix: keys ascend), unrolled
    cdef intp_t c = ((lv[n - 1].key >= key) + (lv[n - 2].key >= key)
                     + (lv[n - 3].key >= key) + (lv[n - 4].key >= key)
                     + (lv[n - 5].key >= key) + (lv[n - 6].key >= key)
                     + (lv[n - 7].key >= key) + (lv[n - 8].key >= key))
    if c == NEAR:
        return _apply_far(b, s, side, key, size)            # deeper than the NEAR best
    cdef intp_t i = n - c
    # lv[n] (c == 0) is a free slot, readable (SLACK slots behind the last level)
    cdef bint found = (c > 0) & (lv[i].key == key)
    cdef bint zero = size == 0.0
    cdef bint missing = (found == 0) & zero
    if missing & b.strict:
        return _apply_tick(b, side, <int64_t> r, size)       # the strict error
    cdef intp_t ins = (found == 0) & (zero == 0)
    cdef intp_t dele = found & zero
    cdef BookLevel tmp[NEAR]
    # insert: lv[i .. i + NEAR) -> lv[i + 1 ..); delete: lv[i + 1 .. i + 1 + NEAR) -> lv[i ..);
    # overwrite / missing delete: a copy onto itself. Everything read or written lies below
    # lv + n + 2 <= lv + n + SLACK.
    memcpy(tmp, lv + i + dele, NEAR * sizeof(BookLevel))
    memcpy(lv + i + ins, tmp, NEAR * sizeof(BookLevel))
    # the level's slot; for a deletion a free slot instead (the one just vacated at the end,
    # or lv[n] for a missing level), chosen by arithmetic: no branch on the kind of update
    cdef intp_t at = i + zero * (n - dele - i)
    lv[at].key = key
    lv[at].size = size
    s.n = n + ins - dele
    b.last_side = side
    b.last_rank = RANK_NONE if missing else c - found
    b.last_shift = (found == 0) | zero
    b.n_missing += missing
    b.n_updates += 1
    return STATUS_OK


cdef inline void _judge(BookState* b) noexcept nogil:
    """Judge the state at the end of a message (policy keep): count a crossed (best bid >
    best ask) or locked (equal) state; nothing is removed."""
    cdef int64_t x
    if b.bid.n > 0 and b.ask.n > 0:
        # bid tick t and ask tick a: t - a = bid key + ask key
        x = b.bid.lv[b.bid.n - 1].key + b.ask.lv[b.ask.n - 1].key
        b.n_locked += x == 0
        b.n_crossed += x > 0


cdef int _apply_end_raise(BookState* b, int side, float64_t price, float64_t size) noexcept nogil:
    """Policy raise, a row that ends a message: refused (CrossedBookError on field price,
    nothing changes) when the state after it would be crossed or locked. Every check of
    `_apply_checked` comes first, then a strict missing delete, then the crossing."""
    if side != 1 and side != -1:
        return STATUS_BAD_VALUE
    if not (size - size == 0.0):
        return STATUS_NON_FINITE | (2 << 4)
    if size < 0.0:
        return STATUS_NEGATIVE | (2 << 4)
    cdef int64_t tick = 0
    cdef int status = _tick(b, price, &tick)
    if status != STATUS_OK:
        return status | (1 << 4)
    cdef BookSide* s = &b.bid if side == 1 else &b.ask
    cdef BookSide* o = &b.ask if side == 1 else &b.bid
    cdef int64_t key = tick * side, top
    cdef intp_t i
    if size == 0.0 and b.strict:
        i = side_lower(s, key)
        if i == s.n or s.lv[i].key != key:
            return STATUS_BAD_VALUE | (1 << 4)
    if o.n > 0:
        # this side's best after the row
        if size > 0.0:
            top = key if s.n == 0 or key > s.lv[s.n - 1].key else s.lv[s.n - 1].key
        elif s.n == 0 or (s.n == 1 and s.lv[0].key == key):
            return _apply_tick(b, side, tick, size)          # the side ends up empty
        elif s.lv[s.n - 1].key == key:
            top = s.lv[s.n - 2].key                          # the best level is deleted
        else:
            top = s.lv[s.n - 1].key
        if top + o.lv[o.n - 1].key >= 0:
            return STATUS_CROSSED | (1 << 4)
    return _apply_tick(b, side, tick, size)


cdef inline int _apply_end(BookState* b, int side, float64_t price,
                           float64_t size) noexcept nogil:
    """A row that ends a message (or is one): apply it, then judge the resulting state."""
    if b.policy == BOOK_RAISE:
        return _apply_end_raise(b, side, price, size)
    cdef int status = _apply(b, side, price, size)
    if status == STATUS_OK:
        _judge(b)
    return status


# The C API (see _book.pxd); the loops of this module call the inline bodies above.
cdef int book_tick(const BookState* b, float64_t price, int64_t* tick) noexcept nogil:
    return _tick(b, price, tick)


cdef int book_apply_tick(BookState* b, int side, int64_t tick, float64_t size) noexcept nogil:
    return _apply_tick(b, side, tick, size)


cdef int book_apply(BookState* b, int side, float64_t price, float64_t size) noexcept nogil:
    return _apply_end(b, side, price, size)


cdef int book_apply_row(BookState* b, int side, float64_t price, float64_t size,
                        bint end) noexcept nogil:
    if end:
        return _apply_end(b, side, price, size)
    return _apply(b, side, price, size)


cdef void book_top(const BookState* b, intp_t n, float64_t* bid_px, float64_t* bid_sz,
                   float64_t* ask_px, float64_t* ask_sz) noexcept nogil:
    cdef intp_t m
    cdef intp_t nb = b.bid.n
    cdef intp_t na = b.ask.n
    for m in range(n):
        if m < nb:
            bid_px[m] = book_price(b, <float64_t> b.bid.lv[nb - 1 - m].key)
            bid_sz[m] = b.bid.lv[nb - 1 - m].size
        else:
            bid_px[m] = NAN
            bid_sz[m] = 0.0
        if m < na:
            ask_px[m] = book_price(b, <float64_t> -b.ask.lv[na - 1 - m].key)
            ask_sz[m] = b.ask.lv[na - 1 - m].size
        else:
            ask_px[m] = NAN
            ask_sz[m] = 0.0


def _policy(crossed):
    """The policy code of ``crossed``; anything else is an OFIError (a ValueError) listing
    the valid policies."""
    try:
        return _POLICIES[crossed]
    except (KeyError, TypeError):
        why = (" (removed: it deleted levels the feed still shows)"
               if crossed == "drop_stale" else "")
        raise OFIError(f"crossed must be one of {sorted(_POLICIES)}, got {crossed!r}{why}",
                       field="crossed") from None


cdef inline int _wait(Guard* g) except -1:
    """GIL-holding methods: wait while another thread is inside a GIL-released section."""
    if g.busy:
        guard_wait(g)
    return 0


def _int_arg(value, name, minimum):
    """An integer argument (bool, float, str refused: OFIError naming it) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise OFIError(f"{name} must be an integer, got {value!r}", field=name)
    v = int(value)
    if v < minimum:
        raise OFIError(f"{name} must be >= {minimum}, got {v}", field=name)
    return v


def side_column(side, n=None, field="side"):
    """``side`` as an int8 array; values other than +1/-1 become 0, which the kernel rejects
    at their index (so no narrowing conversion can turn e.g. 257 into 1)."""
    a = np.asarray(side)
    if a.dtype != np.int8:
        a = column(a, np.float64 if a.dtype.kind == "f" else np.int64, field, n)
        a = np.where((a == 1) | (a == -1), a, 0).astype(np.int8)
    return column(a, np.int8, field, n)


@cython.final
cdef class Book:
    """L2 order book fed by absolute-size price-level updates, in integer ticks.

    ``Book(tick_size, crossed="keep", strict=False, capacity=1024)``

    - ``apply(side, price, size, batch_end=True)``: side +1 bid / -1 ask; ``size`` is the new
      absolute size at that price (>= 0, finite); 0 deletes the level.
      ``apply_many(side, price, size, batch_end=None)`` does the same for arrays with the GIL
      released (events before a bad one stay applied; the error names field and index).
    - Messages: ``batch_end`` marks the row that ends an exchange message; the crossing policy
      judges the book only there (a Binance diff lists its bids before its asks, so the book
      between its rows may look crossed although the exchange never was). Without it every
      row is its own message. ``n_crossed`` / ``n_locked`` count message ends at which best
      bid > / == best ask (``crossed="keep"``, the default; ``"raise"`` refuses the row
      instead); ``n_missing`` deletions of absent levels.
    - ``load_snapshot(bid_px, bid_sz, ask_px, ask_sz)`` replaces the given side(s) (pass None
      to keep a side); levels of size 0 (e.g. LOBSTER's +-9999999999 dummies) are skipped;
      duplicates: the last one wins.
    - ``best_bid``, ``best_ask`` (price; NaN when the side is empty), ``best_bid_size``,
      ``best_ask_size``, ``mid``, ``spread``, ``weighted_mid``, ``imbalance(levels, decay)``,
      ``top(n)`` (a new (4, n) array; ``top(n, out=)`` fills yours without allocating).
    ``capacity`` is the initial number of levels per side (an integer >= 1; sides grow by
    doubling); a size that overflows is a ValueError naming it, one that cannot be allocated
    a MemoryError. See the module docstring for the structure and the crossed-book policies.
    Threads: one Book may be shared; its calls serialise (see README, thread safety).
    """

    def __cinit__(self, tick_size, crossed="keep", strict=False, capacity=1024):
        guard_init(&self.guard)
        try:
            ts = float(tick_size)
        except (TypeError, ValueError):
            ts = float("nan")
        if not (ts > 0.0 and ts < float("inf")):
            raise OFIError(f"tick_size must be a positive finite number, got {tick_size!r}",
                           field="tick_size")
        cap = _int_arg(capacity, "capacity", 1)
        cdef size_t nbytes = checked_nbytes(cap, 2 * sizeof(BookLevel), "capacity")
        cdef int policy = _policy(crossed)
        self.crossed = crossed
        if book_init(&self.st, ts, policy, bool(strict), cap) != STATUS_OK:
            raise MemoryError(f"capacity={cap} needs {nbytes:,} bytes, which could not be "
                              "allocated")

    def __dealloc__(self):
        book_free(&self.st)
        guard_free(&self.guard)

    cdef int push(self, int side, float64_t price, float64_t size) noexcept nogil:
        return book_apply(&self.st, side, price, size)

    cpdef int apply(self, int side, float64_t price, float64_t size,
                    bint batch_end=True) except -1:
        """Set the absolute ``size`` at ``price`` on ``side`` (+1 bid, -1 ask); 0 deletes.
        ``batch_end=False``: the row does not end its message (no crossing judgement)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        cdef int status
        if batch_end:
            status = _apply_end(&self.st, side, price, size)
        else:
            status = _apply(&self.st, side, price, size)
        if status != STATUS_OK:
            raise_book(status, 0)
        return 0

    def apply_many(self, side, price, size, batch_end=None):
        """Apply arrays of updates in order (GIL released). Returns the number applied.

        ``batch_end`` (optional bool array): True on the row that ends each exchange message;
        the crossing policy judges the book only there. None: every row ends its message."""
        cdef const float64_t[::1] p = column(price, np.float64, "price")
        cdef intp_t n = p.shape[0]
        cdef const float64_t[::1] z = column(size, np.float64, "size", n)
        cdef const signed char[::1] s = side_column(side, n)
        cdef const unsigned char[::1] be
        cdef bint has_end = batch_end is not None
        if has_end:
            be = column(batch_end, np.bool_, "batch_end", n).view(np.uint8)
        cdef intp_t i = 0
        cdef int status = STATUS_OK
        cdef BookState* b = &self.st
        guard_enter(&self.guard)
        with nogil:
            if has_end:
                for i in range(n):
                    if be[i]:
                        status = _apply_end(b, s[i], p[i], z[i])
                    else:
                        status = _apply(b, s[i], p[i], z[i])
                    if status != STATUS_OK:
                        break
            else:
                for i in range(n):
                    status = _apply_end(b, s[i], p[i], z[i])
                    if status != STATUS_OK:
                        break
        guard_exit(&self.guard)
        if status != STATUS_OK:
            raise_book(status, i)
        return n

    def load_snapshot(self, bid_px=None, bid_sz=None, ask_px=None, ask_sz=None):
        """Replace the bid side and/or the ask side with the given levels (any order).

        Levels with size 0 are skipped whatever their price; the others must have finite
        prices on the tick grid. A crossed snapshot raises CrossedBookError under the
        ``"raise"`` policy (nothing changes) and is kept as sent under the other policies (a
        snapshot has no stale side). The update counters are not changed.
        """
        _wait(&self.guard)
        sides = []
        for name, px, sz, sign in (("bid", bid_px, bid_sz, 1), ("ask", ask_px, ask_sz, -1)):
            if px is None and sz is None:
                sides.append(None)
                continue
            if px is None or sz is None:
                raise OFIError(f"give both {name}_px and {name}_sz", field=f"{name}_px")
            p = column(px, np.float64, f"{name}_px")
            z = column(sz, np.float64, f"{name}_sz", p.shape[0])
            bad = np.flatnonzero(~np.isfinite(z))
            if bad.size:
                raise_status(STATUS_NON_FINITE, f"{name}_sz", int(bad[0]))
            bad = np.flatnonzero(z < 0)
            if bad.size:
                raise_status(STATUS_NEGATIVE, f"{name}_sz", int(bad[0]))
            keep = np.flatnonzero(z > 0)
            x = p[keep] / self.st.tick_size
            r = np.round(x)
            bad = np.flatnonzero(~(np.abs(r) < MAX_TICK)
                               | ~(np.abs(x - r) <= 1e-6 + np.abs(x) * 1e-13))
            if bad.size:
                i = int(keep[bad[0]])
                raise_status(STATUS_NON_FINITE if not np.isfinite(p[i]) else STATUS_BAD_VALUE,
                             f"{name}_px", i, "not a finite price on the tick grid")
            key = r.astype(np.int64) * sign
            zz = z[keep]
            # last occurrence wins: unique over the reversed arrays
            key_u, first = np.unique(key[::-1], return_index=True)
            sides.append((key_u, zz[::-1][first]))
        cdef int64_t bb = KEY_MIN
        cdef int64_t aa = KEY_MIN
        if sides[0] is not None:
            if sides[0][0].size:
                bb = sides[0][0][sides[0][0].size - 1]
        elif self.st.bid.n:
            bb = self.st.bid.lv[self.st.bid.n - 1].key
        if sides[1] is not None:
            if sides[1][0].size:
                aa = sides[1][0][sides[1][0].size - 1]
        elif self.st.ask.n:
            aa = self.st.ask.lv[self.st.ask.n - 1].key
        if bb != KEY_MIN and aa != KEY_MIN and bb + aa >= 0 and self.st.policy == BOOK_RAISE:
            raise_status(STATUS_CROSSED, "bid_px", 0, "snapshot best bid >= best ask")
        cdef BookSide* s
        cdef const int64_t[::1] kv
        cdef const float64_t[::1] zv
        cdef intp_t m, q
        for j in range(2):
            if sides[j] is None:
                continue
            s = &self.st.bid if j == 0 else &self.st.ask
            kv = np.ascontiguousarray(sides[j][0])
            zv = np.ascontiguousarray(sides[j][1])
            m = kv.shape[0]
            if side_prepare(s, m) != STATUS_OK:
                raise MemoryError()
            if m:
                for q in range(m):
                    s.lv[q].key = kv[q]
                    s.lv[q].size = zv[q]
            s.n = m

    def top(self, n=10, out=None):
        """The best ``n`` levels, best first: a new float64 array of shape (4, n) whose rows
        are ``bid_px, bid_sz, ask_px, ask_sz`` (so ``bid_px, bid_sz, ask_px, ask_sz =
        book.top(n)`` unpacks it); missing levels have NaN price and size 0.

        Decision: the result is always the caller's own array (never a view of the book, so
        it stays valid after further updates and may be modified): one allocation per call.
        For no allocation at all pass ``out=``: a writeable C-contiguous float64 array of
        shape (4, n) (the fast path; returned filled) or a tuple of four float64 arrays of
        length ``n``.
        """
        cdef npy_intp dims[2]
        cdef float64_t* d0
        if type(n) is not int or n < 0:
            n = _int_arg(n, "n", 0)
        _wait(&self.guard)
        cdef intp_t k = n
        if out is None:
            dims[0] = 4
            dims[1] = k
            res = PyArray_EMPTY(2, dims, NPY_FLOAT64, 0)
            d0 = <float64_t*> PyArray_DATA(res)
            book_top(&self.st, k, d0, d0 + k, d0 + 2 * k, d0 + 3 * k)
            return res
        cdef float64_t[::1] a, b, c, d
        cdef npy_intp* shape
        if PyArray_Check(out):
            # one (4, k) array, rows bid_px, bid_sz, ask_px, ask_sz, checked with the numpy
            # C API (a buffer or typed-memoryview acquisition costs several times more)
            shape = PyArray_DIMS(out)
            if not (PyArray_NDIM(out) == 2 and shape[0] == 4 and shape[1] == k
                    and PyArray_TYPE(out) == NPY_FLOAT64 and PyArray_ISCARRAY(out)):
                raise OFIError(f"out must be a writeable C-contiguous float64 array of shape "
                               f"(4, {k})", field="out")
            d0 = <float64_t*> PyArray_DATA(out)
            book_top(&self.st, k, d0, d0 + k, d0 + 2 * k, d0 + 3 * k)
            return out
        if len(out) != 4:
            raise OFIError("out must be a (4, n) array or a tuple of 4 arrays", field="out")
        a, b, c, d = out
        if a.shape[0] != k or b.shape[0] != k or c.shape[0] != k or d.shape[0] != k:
            raise OFIError(f"out arrays must have length {k}", field="out")
        if k:
            book_top(&self.st, k, &a[0], &b[0], &c[0], &d[0])
        return out

    @property
    def tick_size(self):
        return self.st.tick_size

    @property
    def strict(self):
        return bool(self.st.strict)

    @property
    def best_bid(self):
        """Best bid price (NaN when the bid side is empty)."""
        _wait(&self.guard)
        if self.st.bid.n == 0:
            return NAN
        return book_price(&self.st, <float64_t> self.st.bid.lv[self.st.bid.n - 1].key)

    @property
    def best_ask(self):
        """Best ask price (NaN when the ask side is empty)."""
        _wait(&self.guard)
        if self.st.ask.n == 0:
            return NAN
        return book_price(&self.st, <float64_t> -self.st.ask.lv[self.st.ask.n - 1].key)

    @property
    def best_bid_size(self):
        _wait(&self.guard)
        return book_bid_size(&self.st, 0)

    @property
    def best_ask_size(self):
        _wait(&self.guard)
        return book_ask_size(&self.st, 0)

    @property
    def best_bid_tick(self):
        """Best bid in ticks (None when empty)."""
        _wait(&self.guard)
        return self.st.bid.lv[self.st.bid.n - 1].key if self.st.bid.n else None

    @property
    def best_ask_tick(self):
        """Best ask in ticks (None when empty)."""
        _wait(&self.guard)
        return -self.st.ask.lv[self.st.ask.n - 1].key if self.st.ask.n else None

    @property
    def mid(self):
        """(best bid + best ask) / 2 in price units; NaN when a side is empty."""
        _wait(&self.guard)
        if self.st.bid.n == 0 or self.st.ask.n == 0:
            return NAN
        return book_price(&self.st, (<float64_t> book_bid_tick(&self.st, 0)
                                     + <float64_t> book_ask_tick(&self.st, 0)) * 0.5)

    @property
    def spread(self):
        """best ask - best bid in price units (<= 0 when crossed/locked); NaN if a side is empty."""
        _wait(&self.guard)
        if self.st.bid.n == 0 or self.st.ask.n == 0:
            return NAN
        return book_price(&self.st, <float64_t> (book_ask_tick(&self.st, 0)
                                                 - book_bid_tick(&self.st, 0)))

    @property
    def weighted_mid(self):
        """Size-weighted mid of the best level (THEORY-DETAIL 6.3, not Stoikov's micro-price):
        W = (Pa qb + Pb qa) / (qb + qa); NaN when a side is empty."""
        _wait(&self.guard)
        if self.st.bid.n == 0 or self.st.ask.n == 0:
            return NAN
        cdef float64_t qb = book_bid_size(&self.st, 0)
        cdef float64_t qa = book_ask_size(&self.st, 0)
        return book_price(&self.st, (book_ask_tick(&self.st, 0) * qb
                                     + book_bid_tick(&self.st, 0) * qa) / (qb + qa))

    def imbalance(self, levels=1, float64_t decay=1.0):
        """Depth imbalance (sum w_m qb_m - sum w_m qa_m) / (sum w_m qb_m + sum w_m qa_m),
        w_m = decay**(m-1), over the best ``levels`` levels by rank (empty levels size 0).

        ``levels=1`` is the queue imbalance at the touch (Gould & Bonart 2016); the decayed
        multi-level form is a practitioner generalisation (THEORY-DETAIL 6.2). Both sides empty:
        0. One side empty: +-1. ``levels`` beyond the book's depth add nothing (the loop stops
        at the deeper side's last level).
        """
        if type(levels) is not int or levels < 1:
            levels = _int_arg(levels, "levels", 1)
        if not (decay > 0.0 and decay <= 1.0):
            raise OFIError(f"decay must be in (0, 1], got {decay}", field="decay")
        _wait(&self.guard)
        cdef intp_t depth = max(self.st.bid.n, self.st.ask.n)
        cdef intp_t L = depth if levels > depth else levels
        cdef float64_t wb = 0.0, wa = 0.0, w = 1.0
        cdef intp_t m
        for m in range(L):
            wb += w * book_bid_size(&self.st, m)
            wa += w * book_ask_size(&self.st, m)
            w *= decay
        if wb + wa == 0.0:
            return 0.0
        return (wb - wa) / (wb + wa)

    @property
    def bid_levels(self):
        """Number of bid levels."""
        _wait(&self.guard)
        return self.st.bid.n

    @property
    def ask_levels(self):
        _wait(&self.guard)
        return self.st.ask.n

    @property
    def capacity(self):
        """Level slots allocated per side (bid, ask): memory follows live levels, not prices."""
        _wait(&self.guard)
        return (self.st.bid.capacity, self.st.ask.capacity)

    @property
    def n_updates(self):
        _wait(&self.guard)
        return self.st.n_updates

    @property
    def n_crossed(self):
        _wait(&self.guard)
        return self.st.n_crossed

    @property
    def n_locked(self):
        """Message ends at which best bid == best ask (policy keep)."""
        _wait(&self.guard)
        return self.st.n_locked

    @property
    def n_missing(self):
        _wait(&self.guard)
        return self.st.n_missing

    def levels(self, int side):
        """All levels of a side as (ticks int64, sizes float64), best first."""
        _wait(&self.guard)
        cdef BookSide* s = &self.st.bid if side == 1 else &self.st.ask
        k = np.empty(s.n, dtype=np.int64)
        z = np.empty(s.n, dtype=np.float64)
        cdef intp_t i
        for i in range(s.n):
            k[i] = s.lv[s.n - 1 - i].key * side
            z[i] = s.lv[s.n - 1 - i].size
        return k, z

    def reset(self):
        """Empty both sides and zero the counters."""
        _wait(&self.guard)
        book_clear(&self.st)

    def __reduce__(self):
        _wait(&self.guard)
        state = {"bid": self.levels(1), "ask": self.levels(-1),
                 "counters": (self.st.n_updates, self.st.n_crossed, self.st.n_locked,
                              self.st.n_missing)}
        return (Book, (self.st.tick_size, self.crossed, bool(self.st.strict),
                       max(self.st.bid.capacity, self.st.ask.capacity)), state)

    def __setstate__(self, d):
        _wait(&self.guard)
        cdef BookSide* s
        cdef intp_t i, m
        for j, name, sign in ((0, "bid", 1), (1, "ask", -1)):
            s = &self.st.bid if j == 0 else &self.st.ask
            k, z = d[name]
            m = len(k)
            if side_prepare(s, m) != STATUS_OK:
                raise MemoryError()
            for i in range(m):
                s.lv[m - 1 - i].key = k[i] * sign
                s.lv[m - 1 - i].size = z[i]
            s.n = m
        if "counters" in d:
            (self.st.n_updates, self.st.n_crossed, self.st.n_locked,
             self.st.n_missing) = d["counters"]
        else:   # pickles made before drop_stale was removed: (updates, crossed, dropped,
                # missing[, locked])
            counts = tuple(d["counts"]) + (0,) * (5 - len(d["counts"]))
            self.st.n_updates, self.st.n_crossed, _, self.st.n_missing, self.st.n_locked = counts


@cython.final
cdef class _EmptyApply:
    """An empty cpdef method with Book.apply's signature: the Python call-overhead floor that
    bench/bench_book.py measures beside Book.apply."""

    cpdef int apply(self, int side, float64_t price, float64_t size,
                    bint batch_end=True) except -1:
        return 0


cdef int raise_book(int status, intp_t index) except -1:
    raise_status(status & 15, _FIELDS[status >> 4], index)
    return 0


# =============================================================================================
# BookOFI: deltas in, book maintained, multi-level OFI out
# =============================================================================================
from libc.math cimport INFINITY
from ofi_fast._ofi cimport (
    mlofi_check_ts, mlofi_commit, mlofi_push_range, mlofi_reserve, mlofi_reset,
)
from ofi_fast._types cimport STATUS_TIME_BACKWARDS

from ofi_fast._ofi import MultiLevelOFI as _MultiLevelOFI

_BOOKOFI_FIELDS = ("side", "price", "size", "ts")


cdef int bookofi_commit(const BookState* b, MLOFIState* m, int64_t ts) noexcept nogil:
    cdef intp_t j, L = m.levels
    cdef float64_t* c = m.cur
    cdef intp_t nb = b.bid.n, na = b.ask.n
    for j in range(L):
        if j < nb:
            c[j] = <float64_t> b.bid.lv[nb - 1 - j].key
            c[L + j] = b.bid.lv[nb - 1 - j].size
        else:
            c[j] = -INFINITY
            c[L + j] = 0.0
        if j < na:
            c[2 * L + j] = <float64_t> (-b.ask.lv[na - 1 - j].key)
            c[3 * L + j] = b.ask.lv[na - 1 - j].size
        else:
            c[2 * L + j] = INFINITY
            c[3 * L + j] = 0.0
    return mlofi_commit(m, ts)


cdef inline void bookofi_side(const BookState* b, MLOFIState* m, int side, intp_t lo,
                              intp_t hi) noexcept nogil:
    """Only `side` changed, at ranks lo..hi-1: e_j from that side's part of CKS eq. 10, in
    place on m.prev (the other side's part is 0: its levels did not move)."""
    cdef intp_t j, L = m.levels
    cdef float64_t* p = m.prev
    cdef float64_t px, sz, x
    if side == 1:
        for j in range(lo, hi):
            if j < b.bid.n:
                px = <float64_t> b.bid.lv[b.bid.n - 1 - j].key
                sz = b.bid.lv[b.bid.n - 1 - j].size
            else:
                px = -INFINITY
                sz = 0.0
            # CKS eq. 10, bid part, as selects (the comparisons are data-dependent)
            x = (sz if px >= p[j] else 0.0) - (p[L + j] if px <= p[j] else 0.0)
            m.e[j] = x
            p[j] = px
            p[L + j] = sz
    else:
        for j in range(lo, hi):
            if j < b.ask.n:
                px = <float64_t> (-b.ask.lv[b.ask.n - 1 - j].key)
                sz = b.ask.lv[b.ask.n - 1 - j].size
            else:
                px = INFINITY
                sz = 0.0
            x = (p[3 * L + j] if px >= p[2 * L + j] else 0.0) \
                - (sz if px <= p[2 * L + j] else 0.0)
            m.e[j] = x
            p[2 * L + j] = px
            p[3 * L + j] = sz


cdef inline int bookofi_push(BookState* b, MLOFIState* m, int64_t ts, int side,
                             float64_t price, float64_t size) noexcept nogil:
    cdef int status = mlofi_reserve(m, ts)
    if status != STATUS_OK:
        return status | (3 << 4)
    status = _apply_end(b, side, price, size)
    if status != STATUS_OK:
        return status
    cdef intp_t j, L = m.levels, lo = b.last_rank, hi
    cdef float64_t d = 0.0
    if not m.has_prev or b.last_side == 0:
        return bookofi_commit(b, m, ts)       # first event, or both sides changed
    # one side changed, at rank lo (and every deeper rank when a level was added/removed)
    for j in range(L):
        m.e[j] = 0.0
    if lo < L:
        hi = L if b.last_shift else lo + 1
        bookofi_side(b, m, b.last_side, lo, hi)
        for j in range(L):
            d += m.prev[L + j] + m.prev[3 * L + j]
        m.e[L] = d
    else:
        # the top L did not change: e = 0, and the depth m.e[L] is the previous event's
        lo = hi = L
    mlofi_push_range(m, ts, lo, hi)
    return STATUS_OK


cdef inline int bookofi_push_inside(BookState* b, MLOFIState* m, int64_t ts, int side,
                                    float64_t price, float64_t size) noexcept nogil:
    """A delta inside a batch: the book only (time order still checked; no crossing
    judgement: the batch is one message)."""
    cdef int status = mlofi_check_ts(m, ts)
    if status != STATUS_OK:
        return status | (3 << 4)
    return _apply(b, side, price, size)


cdef inline int bookofi_push_full(BookState* b, MLOFIState* m, int64_t ts, int side,
                                  float64_t price, float64_t size) noexcept nogil:
    """The delta that ends a batch: crossing judged, then OFI between the whole top L before
    and after."""
    cdef int status = mlofi_reserve(m, ts)
    if status != STATUS_OK:
        return status | (3 << 4)
    status = _apply_end(b, side, price, size)
    if status != STATUS_OK:
        return status
    bookofi_commit(b, m, ts)
    return STATUS_OK


cdef int raise_bookofi(int status, intp_t index) except -1:
    raise_status(status & 15, _BOOKOFI_FIELDS[status >> 4], index)
    return 0


@cython.final
cdef class BookOFI:
    """An order book fed by L2 deltas plus multi-level OFI over its top ``levels`` levels.

    ``BookOFI(tick_size, levels=10, window=None, window_time=None, capacity=None, grow=False,
    crossed="keep", strict=False, weights=None)``

    After every delta the top ``levels`` of the book form one state of
    :class:`~ofi_fast.MultiLevelOFI` (levels by rank, absent levels empty); the event's e_m
    are those of Xu, Gould & Howison (2018), e_1 the best-level e_n of Cont, Kukanov & Stoikov
    (2014, eq. 10). Every delta is an event, so OFI is computed between per-delta states (for
    feeds that batch many deltas in one message, feed a batch and read the OFI between batch
    states from ``ofi.values`` if wanted). The first event after construction, ``reset()`` or
    ``load_snapshot()`` with no snapshot has e = 0; ``load_snapshot`` makes the snapshot the
    previous state, so the next delta is diffed against it (OFI never spans a reset).

    - ``update(ts, side, price, size)`` -> best-level e of the event;
    - ``update_many(ts, side, price, size, levels=False)`` -> e_1 per event, and with
      ``levels=True`` also the (n, L) per-level e (GIL released);
    - ``book`` (the :class:`Book`), ``ofi`` (the :class:`MultiLevelOFI`: ``values``,
      ``depth``, ``normalized``, ``integrated``, ``fit``).
    A bad delta (or ts going backwards) raises with field and index; nothing changes for it.
    ``load_snapshot(..., ts=None, allow_older=False)`` keeps the time order (see there).
    The crossing policy judges the book at batch ends (every row without ``batch_end``);
    ``n_crossed``, ``n_locked``, ``n_missing`` are the book's counters.
    Threads: calls serialise on the book's guard (see README, thread safety).
    """

    def __cinit__(self, tick_size, levels=10, window=None, window_time=None, capacity=None,
                  grow=False, crossed="keep", strict=False, weights=None):
        self._book = Book(tick_size, crossed=crossed, strict=strict)
        self._ml = _MultiLevelOFI(levels, window=window, window_time=window_time,
                                  capacity=capacity, grow=grow, weights=weights)
        self._pending = False

    cdef int push(self, int64_t ts, int side, float64_t price, float64_t size) noexcept nogil:
        cdef int status
        if self._pending:
            status = bookofi_push_full(&self._book.st, &self._ml.st, ts, side, price, size)
        else:
            status = bookofi_push(&self._book.st, &self._ml.st, ts, side, price, size)
        if status == STATUS_OK:
            self._pending = False
        return status

    cpdef float64_t update(self, int64_t ts, int side, float64_t price,
                           float64_t size) except? -1.0:
        """Apply one delta at time ``ts``; return the event's best-level e (it ends a pending
        batch, if any)."""
        if self._book.guard.busy:
            guard_wait(&self._book.guard)
        cdef int status
        if self._pending:
            status = bookofi_push_full(&self._book.st, &self._ml.st, ts, side, price, size)
        else:
            status = bookofi_push(&self._book.st, &self._ml.st, ts, side, price, size)
        if status != STATUS_OK:
            raise_bookofi(status, 0)
        self._pending = False
        return self._ml.st.e[0]

    def update_many(self, ts, side, price, size, *, levels=False, out=None, batch_end=None):
        """Apply arrays of deltas; return e_1 per event (and (n, L) per-level e if
        ``levels``). ``ts`` may be None without a time window.

        ``batch_end`` (optional bool array): feeds that pack many deltas into one message
        (Binance diffs, Kraken updates, Tardis rows sharing a local_timestamp) should not
        produce OFI between the intermediate per-row states (a transient crossed book, a
        level removed and re-added). Rows with ``batch_end[i] == False`` update the book only
        (their e is 0 and they are not window events); the row that ends the batch is one
        OFI event, computed between the states after consecutive batches. A batch may span
        calls. Without ``batch_end`` every delta is an event.
        """
        cdef const float64_t[::1] p = column(price, np.float64, "price")
        cdef intp_t n = p.shape[0]
        cdef const float64_t[::1] z = column(size, np.float64, "size", n)
        cdef const signed char[::1] s = side_column(side, n)
        cdef const int64_t[::1] t
        cdef const unsigned char[::1] be
        cdef bint has_ts = ts is not None
        cdef bint has_end = batch_end is not None
        if has_ts:
            t = column(ts, np.int64, "ts", n)
        elif self._ml.st.window_time > 0:
            raise OFIError("a time window needs ts", field="ts")
        if has_end:
            be = column(batch_end, np.bool_, "batch_end", n).view(np.uint8)
        from ofi_fast._arrays import output
        e_arr = output(out, n)
        cdef float64_t[::1] e = e_arr
        cdef intp_t L = self._ml.st.levels
        lv_arr = np.empty((n if levels else 0, L), dtype=np.float64)
        cdef float64_t[:, ::1] lv = lv_arr
        cdef bint want = levels
        cdef intp_t i = 0, m
        cdef int status = STATUS_OK
        cdef int64_t tsi = self._ml.st.last_ts
        cdef BookState* b = &self._book.st
        cdef MLOFIState* ml = &self._ml.st
        guard_enter(&self._book.guard)
        with nogil:
            for i in range(n):
                if has_ts:
                    tsi = t[i]
                if has_end and not be[i]:
                    status = bookofi_push_inside(b, ml, tsi, s[i], p[i], z[i])
                    if status != STATUS_OK:
                        break
                    self._pending = True
                    e[i] = 0.0
                    if want:
                        for m in range(L):
                            lv[i, m] = 0.0
                    continue
                if self._pending:
                    status = bookofi_push_full(b, ml, tsi, s[i], p[i], z[i])
                else:
                    status = bookofi_push(b, ml, tsi, s[i], p[i], z[i])
                if status != STATUS_OK:
                    break
                self._pending = False
                e[i] = ml.e[0]
                if want:
                    for m in range(L):
                        lv[i, m] = ml.e[m]
        guard_exit(&self._book.guard)
        if status != STATUS_OK:
            raise_bookofi(status, i)
        return (e_arr, lv_arr) if levels else e_arr

    def load_snapshot(self, bid_px=None, bid_sz=None, ask_px=None, ask_sz=None, ts=None, *,
                      allow_older=False):
        """Replace the book side(s) (see Book.load_snapshot) and restart OFI from it: the
        window is cleared and the snapshot becomes the previous state of the next delta.

        Time order (decision): the snapshot is a point in the event stream, taken at ``ts``
        (``None``: at the time of the last event, no time passes). A ``ts`` older than the
        last event raises TimeOrderError (field ``ts``; nothing changes): a stale snapshot
        applied over newer deltas is almost always a feed-handling bug. ``allow_older=True``
        accepts it (a deliberate resync: the exchange's snapshot time precedes deltas already
        seen); the time order then restarts at ``ts``. Later deltas need ts >= the
        snapshot's time. ``reset()`` forgets the time entirely.
        """
        _wait(&self._book.guard)
        cdef MLOFIState* m = &self._ml.st
        cdef bint has = m.has_last
        cdef int64_t at = m.last_ts
        cdef int64_t t
        if ts is not None:
            t = ts
            if has and t < at and not allow_older:
                raise_status(STATUS_TIME_BACKWARDS, "ts", 0,
                             f"snapshot at {t} is older than the last event ({at}); "
                             "pass allow_older=True to resync to it")
            at = t
            has = True
        self._book.load_snapshot(bid_px, bid_sz, ask_px, ask_sz)   # raises before any change
        self._pending = False
        mlofi_reset(m)
        bookofi_commit(&self._book.st, m, at)
        mlofi_reset_keep_prev(m)
        m.has_last = has
        m.last_ts = at

    @property
    def book(self):
        """The order book (a :class:`Book`; do not apply deltas to it directly)."""
        return self._book

    @property
    def ofi(self):
        """The :class:`MultiLevelOFI` over the book's top levels."""
        return self._ml

    @property
    def n_crossed(self):
        """The book's message ends with best bid > best ask."""
        return self._book.n_crossed

    @property
    def n_locked(self):
        """The book's message ends with best bid == best ask."""
        return self._book.n_locked

    @property
    def n_missing(self):
        """Deletions of levels the book did not hold."""
        return self._book.n_missing

    @property
    def value(self):
        """Best-level OFI over the window."""
        _wait(&self._book.guard)
        return self._ml.st.sum[0] + self._ml.st.comp[0]

    @property
    def values(self):
        """Multi-level OFI over the window, per level."""
        _wait(&self._book.guard)
        return self._ml.values

    def reset(self):
        """Empty the book and forget all events."""
        _wait(&self._book.guard)
        self._pending = False
        self._book.reset()
        mlofi_reset(&self._ml.st)

    def __reduce__(self):
        _wait(&self._book.guard)
        return (_bookofi_restore, (self._book, self._ml, bool(self._pending)))


cdef void mlofi_reset_keep_prev(MLOFIState* m) noexcept nogil:
    """After a snapshot was committed as an event: drop that event from the window and the
    counters but keep it as the previous state (has_prev stays True)."""
    cdef intp_t j
    for j in range(m.width):
        if j < m.levels:          # m.e[levels] keeps the snapshot's depth: the next delta
            m.e[j] = 0.0          # that leaves the top levels unchanged reuses it
        m.sum[j] = 0.0
        m.comp[j] = 0.0
        m.total[j] = 0.0
        m.total_comp[j] = 0.0
    m.head = 0
    m.size = 0
    m.has_last = False
    m.n_events = 0


def _bookofi_restore(Book book, MultiLevelOFI ml, pending=False):
    cdef BookOFI o = BookOFI.__new__(BookOFI, book.st.tick_size, ml.st.levels)
    o._book = book
    o._ml = ml
    o._pending = pending
    return o
