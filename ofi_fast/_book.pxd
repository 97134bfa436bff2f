# L2 order book from price-level deltas, in integer ticks; C-level API.
#
#   from ofi_fast._book cimport Book, BookState, book_apply, book_top
#
# Structure (see _book.pyx docstring for the measurements): each side is a sorted array of
# (key, size) with the BEST level at the END, key = tick for bids and -tick for asks, so both
# sides are "ascending key, best last" and share one code path. Best level: O(1) (the last
# slot). An update among the 8 best slots takes a branch-free fast path (count of the 8 best
# keys; insert/overwrite/delete as one fixed 8-slot move); a deeper update uses a branch-free
# binary search and moves the levels on the shorter side of it (free slots at both ends).
# Memory is proportional to the number of live levels (never to the price range), so prices
# thousands of ticks away cost one slot each.
#
# Messages (decision, issue 12): an exchange message may list several rows (Binance: its bids,
# then its asks), and the book between two of its rows is no state the exchange ever had. So
# crossing is judged only at the end of a message: book_apply_row(..., end=False) applies a row
# inside a message with no crossing logic; a row with end=True (and book_apply, a row that is
# its own message) ends it, and the resulting state is judged by the policy (BOOK_RAISE: the row
# is refused when the state would be crossed or locked; BOOK_KEEP: counted). No policy deletes
# a level the feed still shows (issue 12 item 4).
#
# Status returned by book_apply / Book.push: (status & 15) is a Status of _types.pxd,
# (status >> 4) the field at fault: 0 side, 1 price, 2 size.

from libc.stdint cimport INT64_MAX, INT64_MIN
from ofi_fast._guard cimport Guard
from ofi_fast._types cimport float64_t, int64_t, intp_t

cdef struct BookLevel:
    int64_t key          # tick (bid) or -tick (ask)
    float64_t size       # absolute size at that price; always > 0 (size 0 deletes the level)

cdef struct BookSide:
    BookLevel* base      # the allocation (capacity slots); the levels sit in its middle
    BookLevel* lv        # levels by strictly ascending key, lv[0 .. n); the best is lv[n - 1];
                         # base <= lv and lv + n + 8 <= base + capacity (free slots behind)
    intp_t n             # live levels, 0 <= n <= capacity
    intp_t capacity      # slots allocated; doubles when nearly full

cdef struct BookState:
    BookSide bid         # bid levels, key = tick
    BookSide ask         # ask levels, key = -tick
    float64_t tick_size  # price units per tick (> 0)
    float64_t inv_tick   # 1 / tick_size when that is an integer (0.01 -> 100), else 0: prices
                         # are then ticks / inv_tick, the double nearest the decimal price
    float64_t tick_mul   # 1.0 / tick_size rounded: the fast path's price -> tick multiplier
                         # (a result near the off-grid tolerance is re-checked by division)
    int policy           # crossed-book policy at message ends: 0 raise, 1 keep
    bint strict          # deleting a level that does not exist is an error
    int64_t n_updates    # rows accepted since reset
    int64_t n_crossed    # message ends at which best bid > best ask (policy keep)
    int64_t n_locked     # message ends at which best bid == best ask (policy keep)
    int64_t n_missing    # deletions of levels that did not exist (ignored unless strict)
    int last_side        # side the last update changed (+1 / -1); 0 when both sides changed
    intp_t last_rank     # rank (0 = best) of the level it touched; PY_SSIZE_T_MAX if none
    bint last_shift      # it inserted or deleted a level (every deeper rank shifted)

# Empty-level sentinels in ticks: an absent bid level is INT64_MIN, an absent ask INT64_MAX.
cdef enum:
    BOOK_RAISE = 0
    BOOK_KEEP = 1

cdef int book_init(BookState* b, float64_t tick_size, int policy, bint strict,
                   intp_t capacity) noexcept nogil
cdef void book_free(BookState* b) noexcept nogil
cdef void book_clear(BookState* b) noexcept nogil
# Price -> integer tick; returns 0, or STATUS_BAD_VALUE / STATUS_NON_FINITE when the price is
# not finite or not within 1e-6 tick of a multiple of tick_size.
cdef int book_tick(const BookState* b, float64_t price, int64_t* tick) noexcept nogil
# One delta that is its own message: absolute size at (side, price); size 0 deletes; then the
# crossing policy. State unchanged on failure.
cdef int book_apply(BookState* b, int side, float64_t price, float64_t size) noexcept nogil
# One row of a message: end=False applies it with no crossing logic; end=True as book_apply.
cdef int book_apply_row(BookState* b, int side, float64_t price, float64_t size,
                        bint end) noexcept nogil
cdef int book_apply_tick(BookState* b, int side, int64_t tick, float64_t size) noexcept nogil
# Insert/overwrite one level without crossing checks (snapshots). size > 0.
cdef int book_side_set(BookSide* s, int64_t key, float64_t size) noexcept nogil

# A price in ticks (any real number of ticks) -> price units.
cdef inline float64_t book_price(const BookState* b, float64_t ticks) noexcept nogil:
    if b.inv_tick > 0.0:
        return ticks / b.inv_tick
    return ticks * b.tick_size

# Level m (0 = best) of a side, in ticks; absent levels give the sentinel and size 0.
cdef inline int64_t book_bid_tick(const BookState* b, intp_t m) noexcept nogil:
    if m < b.bid.n:
        return b.bid.lv[b.bid.n - 1 - m].key
    return INT64_MIN

cdef inline int64_t book_ask_tick(const BookState* b, intp_t m) noexcept nogil:
    if m < b.ask.n:
        return -b.ask.lv[b.ask.n - 1 - m].key
    return INT64_MAX

cdef inline float64_t book_bid_size(const BookState* b, intp_t m) noexcept nogil:
    if m < b.bid.n:
        return b.bid.lv[b.bid.n - 1 - m].size
    return 0.0

cdef inline float64_t book_ask_size(const BookState* b, intp_t m) noexcept nogil:
    if m < b.ask.n:
        return b.ask.lv[b.ask.n - 1 - m].size
    return 0.0

# Top n levels, best first, prices in price units (NaN when absent, size 0).
cdef void book_top(const BookState* b, intp_t n, float64_t* bid_px, float64_t* bid_sz,
                   float64_t* ask_px, float64_t* ask_sz) noexcept nogil


cdef class Book:
    cdef BookState st
    cdef Guard guard           # serialises threads (see _guard.pxd); BookOFI uses its book's
    cdef readonly str crossed
    cdef int push(self, int side, float64_t price, float64_t size) noexcept nogil
    cpdef int apply(self, int side, float64_t price, float64_t size,
                    bint batch_end=*) except -1


# Book + multi-level OFI fed by deltas. Status layout of BookOFI.push: (status & 15) a Status,
# (status >> 4) the field: 0 side, 1 price, 2 size, 3 ts.
from ofi_fast._ofi cimport MLOFIState, MultiLevelOFI

# Copy the book's top L (prices in ticks as float64, absent levels -inf / +inf with size 0)
# into m.cur, then commit the event at ts (book_apply must have succeeded).
cdef int bookofi_commit(const BookState* b, MLOFIState* m, int64_t ts) noexcept nogil

cdef class BookOFI:
    cdef Book _book            # the order book (read-only view through .book)
    cdef MultiLevelOFI _ml     # the multi-level OFI over its top `levels` (through .ofi)
    cdef bint _pending         # deltas of an unfinished batch were applied (batch_end False)
    cdef int push(self, int64_t ts, int side, float64_t price, float64_t size) noexcept nogil
    cpdef float64_t update(self, int64_t ts, int side, float64_t price,
                           float64_t size) except? -1.0
