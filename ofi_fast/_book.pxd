# L2 order book from price-level deltas, in integer ticks; C-level API.
#
#   from ofi_fast._book cimport Book, BookState, book_apply, book_top
#
# Structure (issue 13 item 4; see _book.pyx docstring and bench/RESULTS.md): each side works in
# "keys", key = tick for bids and -tick for asks, so on both sides a higher key is a better
# price and one code path serves both. A side is
#   - a tick LADDER: `w` slots (a power of two) indexed by key & (w - 1), covering the keys
#     [lo, lo + w) around the touch, with one occupancy bit per slot. The best level is always
#     in it (when the side is not empty), about 3/4 up the window; an update inside the window
#     is an index and a bit flip, no search and no move. The window is recentred when the
#     touch leaves it (an insert above it, or the best falling into its bottom quarter): the
#     levels that leave or enter move between ladder and far array, each once. It widens
#     (doubling, side_grow: amortised, each width once) while more levels are far than in it;
#   - a FAR array: the levels worse than the window (key < lo), sorted blocks of at most FAR_B
#     levels under a directory of their highest keys: an insert or delete at any depth is two
#     binary searches plus a move of at most FAR_B levels (and, once per FAR_B / 2 inserts, a
#     split that shifts the directory: nb entries of 16 bytes).
# Memory: the ladder's 9 w bytes (w0, or after a deep snapshot or a deep build by deltas at
# most 16 slots per level of it when it widened) plus 16 bytes per far level slot, blocks at
# least 1/8 full on average (never the price range).
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

from libc.stdint cimport INT64_MAX, INT64_MIN, uint64_t
from ofi_fast._guard cimport Guard
from ofi_fast._types cimport float64_t, int64_t, intp_t

# The structs are defined in C (_book_row.h, beside the fast row that reads them) and declared
# here field by field.
cdef extern from "_book_row.h":
    ctypedef struct BookLevel:
        int64_t key          # tick (bid) or -tick (ask)
        float64_t size       # absolute size at that price; always > 0 (size 0 deletes the level)

    enum: FAR_B          # levels per far block (32)

    ctypedef struct FarBlock:
        intp_t n             # levels in the block, 1 <= n <= FAR_B (blocks are never empty)
        BookLevel lv[32]    # FAR_B levels by strictly ascending key, lv[0 .. n)

    ctypedef struct BookFar:
        FarBlock** blk       # the blocks by ascending keys, blk[0 .. nb); every key of blk[i] is
                             # above every key of blk[i - 1]
        int64_t* last        # last[i]: the highest key of blk[i] (the directory searched)
        intp_t nb            # blocks
        intp_t cap           # directory slots allocated (doubles when full)
        intp_t n             # levels in all blocks

    ctypedef struct BookSide:
        float64_t* size      # ladder: w sizes, the level of key k at slot k & mask (0.0: none)
        uint64_t* occ        # ladder: w / 64 words, bit (k & mask) set iff that slot holds a level
        int64_t lo           # the ladder covers keys [lo, lo + w)
        int64_t best         # best (highest) key; INT64_MIN when the side is empty
        intp_t n             # live levels (ladder + far)
        intp_t n_lad         # of which in the ladder; n > 0 implies n_lad > 0 (best in the ladder)
        intp_t w             # ladder slots, a power of two >= 64
        intp_t mask          # w - 1
        intp_t w0            # the ladder slots of an empty side; a snapshot deeper than the
                             # window widens w (at most 16 slots per level), so do inserts
                             # while more levels are far than in the ladder (side_grow, the
                             # same bound, up to w_max); reset restores w0
        intp_t w_max         # the widest ladder side_grow makes (2**30; tests: w0, none)
        BookFar far          # levels with key < lo (every level with key >= lo is in the ladder)
        int64_t n_moved      # levels moved by inserts, deletes and recentring (a debug counter
                             # for the bounded-move tests; not reset by book_clear)

    ctypedef struct BookState:
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
        int last_side        # side the last update changed (+1 / -1); 0 before any and after
                             # a batch of Book.apply_many (BookOFI, their reader, never batches)
        int64_t last_key     # its key
        int last_kind        # BOOK_SET, BOOK_INSERT, BOOK_DELETE or BOOK_MISSING

cdef enum:
    BOOK_RAISE = 0
    BOOK_KEEP = 1

# What the last update did to its level.
cdef enum:
    BOOK_SET = 0         # changed the size of an existing level
    BOOK_INSERT = 1      # created a level
    BOOK_DELETE = 2      # deleted a level
    BOOK_MISSING = 3     # deleted a level that did not exist (nothing changed)

# capacity: initial far-array slots per side; ladder: ladder slots per side (power of two >= 64).
cdef int book_init(BookState* b, float64_t tick_size, int policy, bint strict,
                   intp_t capacity, intp_t ladder) noexcept nogil
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

# A price in ticks (any real number of ticks) -> price units.
cdef inline float64_t book_price(const BookState* b, float64_t ticks) noexcept nogil:
    if b.inv_tick > 0.0:
        return ticks / b.inv_tick
    return ticks * b.tick_size

# Level m (0 = best) of a side, in ticks; absent levels give the sentinel (bid INT64_MIN, ask
# INT64_MAX) and size 0. O(1) for m = 0, a walk of m levels otherwise (use book_top for many).
cdef int64_t book_bid_tick(const BookState* b, intp_t m) noexcept nogil
cdef int64_t book_ask_tick(const BookState* b, intp_t m) noexcept nogil
cdef float64_t book_bid_size(const BookState* b, intp_t m) noexcept nogil
cdef float64_t book_ask_size(const BookState* b, intp_t m) noexcept nogil

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

# Raise the error of a BookOFI status (push / rows) at row `index`, naming the field.
cdef int raise_bookofi(int status, intp_t index) except -1

cdef class BookOFI:
    cdef Book _book            # the order book (read-only view through .book)
    cdef MultiLevelOFI _ml     # the multi-level OFI over its top `levels` (through .ofi)
    cdef bint _pending         # deltas of an unfinished batch were applied (batch_end False)
    cdef int64_t* _keys        # 2L: the keys of the top L bids, then asks, of the last
                               # committed state (INT64_MIN when absent); valid unless pending;
                               # two zeroed slots of padding before and after (the rank shifts)
    cdef int push(self, int64_t ts, int side, float64_t price, float64_t size) noexcept nogil
    # The C API of update_many: apply n deltas from raw pointers. ts (NULL: no time, as
    # ts=None), batch_end (NULL: every row ends its batch) and lv (NULL: no per-level e;
    # else n x levels, row-major) may be NULL; e (n values, e_1 per row) may not. Returns
    # STATUS_OK with at[0] = n, or the first bad row's status (layout as push) with at[0] its
    # index: rows before it are applied, as update_many. Not guarded (see _guard.pxd);
    # raise_bookofi(status, at[0]) raises update_many's error with the GIL held.
    cdef int rows(self, intp_t n, const int64_t* ts, const signed char* side,
                  const float64_t* price, const float64_t* size,
                  const unsigned char* batch_end, float64_t* e, float64_t* lv,
                  intp_t* at) noexcept nogil
    cdef int _message_rows(self, intp_t n, const int64_t* ts, const signed char* side,
                           const float64_t* price, const float64_t* size,
                           const unsigned char* batch_end, float64_t* e, float64_t* lv,
                           intp_t* at) noexcept nogil
    cdef int _rows(self, intp_t n, const int64_t* ts, const signed char* side,
                   const float64_t* price, const float64_t* size,
                   const unsigned char* batch_end, float64_t* e, float64_t* lv,
                   intp_t* at) noexcept nogil
    cpdef float64_t update(self, int64_t ts, int side, float64_t price,
                           float64_t size) except? -1.0
