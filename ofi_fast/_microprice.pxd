# Stoikov's (2018) micro-price as a fitted lookup table. C-level API:
#
#   from ofi_fast._microprice cimport Microprice, MPState, mp_adjustment
#
# mp_adjustment is O(1): imbalance bin and spread in ticks -> table entry (NaN outside the
# fitted states: an empty side, spread < 1 or > max_spread ticks).

from ofi_fast._guard cimport Guard
from ofi_fast._types cimport float64_t, int64_t, intp_t

cdef struct MPState:
    intp_t n_imb            # imbalance bins
    intp_t n_spread         # spreads 1 .. n_spread ticks
    float64_t tick_size     # price units per tick
    float64_t inv_tick      # 1 / tick_size
    float64_t* table        # n_spread * n_imb adjustments, row s-1 = spread s ticks
    float64_t* center       # n_spread: the value at equal queues (I = 1/2 exactly)
    # last event
    bint has_last
    int64_t last_ts
    float64_t mid           # mid of the last event (NaN when a side is empty)
    float64_t adj           # its adjustment g(I, S) (NaN outside the fitted states)

# g(I, S) for the best quotes (NaN outside the fitted states); sizes must be >= 0.
cdef float64_t mp_adjustment(const MPState* m, float64_t bid_px, float64_t bid_sz,
                             float64_t ask_px, float64_t ask_sz) noexcept nogil
# One event: checks (status & 15 a Status, status >> 4 the field: 0 ts, 1 bid_sz, 2 ask_sz),
# then stores mid and adjustment. Returns the status; the state is unchanged on failure.
cdef int mp_update(MPState* m, int64_t ts, float64_t bid_px, float64_t bid_sz,
                   float64_t ask_px, float64_t ask_sz) noexcept nogil

cdef class Microprice:
    cdef MPState st
    cdef Guard guard
    cdef readonly dict info       # fit diagnostics (counts, dropped, G per iteration, ...)
    cdef readonly bint symmetric
    cpdef float64_t update(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                           float64_t ask_px, float64_t ask_sz) except? -1.0
