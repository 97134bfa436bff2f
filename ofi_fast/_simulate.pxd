# The simulator's compiled engine (see _simulate.pyx; the public API is ofi_fast.simulate).
# Declared here so that the module, like every compiled module of the package, ships a .pxd:
# pairwise_sum is numpy's pairwise summation, operation for operation, usable from nogil code.

from ofi_fast._guard cimport Guard
from ofi_fast._types cimport float64_t, int64_t, intp_t


cdef float64_t pairwise_sum(const float64_t* a, intp_t n) noexcept nogil


cdef class SimEngine:
    cdef Guard guard
    cdef intp_t K, W, C, pool_size
    cdef float64_t lot, cancel_c, market_rate, inside_rate, depth_lam, geo_p
    cdef object rng
    cdef object _keep                  # the numpy arrays the pointers below point into
    cdef float64_t* limit              # K: limit-order rate per level
    cdef int64_t* col                  # C: channel -> column
    cdef float64_t* sgn                # C: +1 add, -1 cancel / execute, 0 inside
    cdef signed char* etype            # C: LOBSTER event type
    cdef signed char* side             # C: book side changed
    cdef int64_t* offset               # 2K: tick offset of a column from its touch
    cdef float64_t* q                  # 2K: sizes now (after the last event)
    cdef float64_t* q0                 # 2K: sizes at the block's start
    cdef float64_t* dsum               # 2K: signed sizes of the block's events so far
    cdef float64_t* rates              # C: the block's rates
    cdef float64_t* cum                # C: their cumulative sums (then +inf up to 2 * search_step)
    cdef intp_t search_step            # the largest power of two <= C
    cdef intp_t* adj_col               # W: shrink adjustments of the block: column
    cdef float64_t* adj_val            #    and amount, in order
    cdef readonly int64_t ts           # ns: time of the last block's end (its break or last draw)
    cdef readonly int64_t bid_tick, ask_tick
    cdef bint active                   # a block is being walked
    cdef intp_t r, base, nadj          # its next row, its first draw, its adjustments
    cdef float64_t total, scale        # its total rate, 1e9 / total
    cdef int64_t t_prev                # time of its previous row (ts at the start)
    cdef object pool_u, pool_sz, pool_ex
    cdef const float64_t* pu
    cdef const float64_t* psz
    cdef const float64_t* pex
    cdef intp_t used, pool_len         # draws consumed, draws in the pools

    cdef int _pools(self) except -1
    cdef int _refill(self) except -1
    cdef int _begin_block(self) except -1
    cdef float64_t _depth(self) except? -1.0
    cdef inline void _emit(self, intp_t pos, float64_t tick, int64_t t, int et, int sd,
                           int64_t tk, float64_t size, int64_t* o_ts, signed char* o_et,
                           signed char* o_sd, float64_t* o_px, float64_t* o_sz,
                           float64_t* o_bp, float64_t* o_bq, float64_t* o_ap,
                           float64_t* o_aq) noexcept
    cdef int _run(self, intp_t n, float64_t tick, int64_t* o_ts, signed char* o_et,
                  signed char* o_sd, float64_t* o_px, float64_t* o_sz, float64_t* o_bp,
                  float64_t* o_bq, float64_t* o_ap, float64_t* o_aq) except -1
