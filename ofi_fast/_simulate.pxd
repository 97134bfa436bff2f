# The simulator's compiled engine (see _simulate.pyx; the public API is ofi_fast.simulate).
# Declared here so that the module, like every compiled module of the package, ships a .pxd:
# pairwise_sum is numpy's pairwise summation, operation for operation, usable from nogil code.

from ofi_fast._guard cimport Guard
from ofi_fast._types cimport float64_t, int64_t, intp_t

# numpy's bit generator struct and its distribution functions (numpy/random/lib/libnpyrandom.a,
# linked by setup.py), declared here rather than cimported from numpy.random, whose pxd pulls
# in numpy's own array declarations
cdef extern from "numpy/random/bitgen.h":
    ctypedef struct bitgen_t:
        pass

cdef extern from "numpy/random/distributions.h":
    void random_standard_uniform_fill(bitgen_t* bitgen_state, intp_t cnt, double* out) nogil
    void random_standard_exponential_fill(bitgen_t* bitgen_state, intp_t cnt,
                                          double* out) nogil
    int64_t random_geometric(bitgen_t* bitgen_state, double p) nogil
    int64_t random_poisson(bitgen_t* bitgen_state, double lam) nogil


cdef float64_t pairwise_sum(const float64_t* a, intp_t n) noexcept nogil


cdef void geometric_sizes(bitgen_t* bg, float64_t* o, intp_t n, float64_t p,
                          float64_t lot) noexcept nogil


cdef class SimEngine:
    cdef Guard guard
    cdef intp_t K, W, C, pool_size
    cdef float64_t lot, cancel_c, market_rate, inside_rate, depth_lam, geo_p
    cdef object rng                    # the numpy Generator (keeps its bit generator alive)
    cdef object lock                   # its bit generator's lock, held while run() draws
    cdef bitgen_t* bitgen              # its bit generator's C struct: every draw comes from it
    cdef object _keep                  # the numpy arrays the pointers below point into
    cdef float64_t* limit              # K: limit-order rate per level
    cdef int64_t* col                  # C: channel -> column
    cdef float64_t* sgn                # C: +1 add, -1 cancel / execute, 0 inside
    cdef signed char* etype            # C: LOBSTER event type
    cdef signed char* side             # C: book side changed
    cdef float64_t* prow               # 2K: the block's level prices, bid then ask, touch first
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
    cdef float64_t* pu                 # pool_size + W each: the pools of uniforms,
    cdef float64_t* psz                #    order sizes (lot * geometric)
    cdef float64_t* pex                #    and standard exponentials
    cdef intp_t used, pool_len         # draws consumed, draws in the pools

    cdef void _refill(self) noexcept nogil
    cdef void _begin_block(self) noexcept nogil
    cdef float64_t _depth(self) noexcept nogil
    cdef inline void _emit(self, intp_t pos, float64_t tick, int64_t t, int et, int sd,
                           int64_t tk, float64_t size, int64_t* o_ts, signed char* o_et,
                           signed char* o_sd, float64_t* o_px, float64_t* o_sz,
                           float64_t* o_bp, float64_t* o_bq, float64_t* o_ap,
                           float64_t* o_aq) noexcept nogil
    cdef void _run(self, intp_t n, float64_t tick, int64_t* o_ts, signed char* o_et,
                   signed char* o_sd, float64_t* o_px, float64_t* o_sz, float64_t* o_bp,
                   float64_t* o_bq, float64_t* o_ap, float64_t* o_aq) noexcept nogil
