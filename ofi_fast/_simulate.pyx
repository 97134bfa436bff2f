"""The event loop of :mod:`ofi_fast.simulate`, compiled (issue 13 item 6).

The model, its parameters and its output are described in ``ofi_fast/simulate.py``, which stays
the Python API. This module replaces the numpy block engine that drew ``block`` events at the
current rates, found the first *break* (an event that empties a queue or improves the spread)
by cumulative sums over the whole block, and handled the break in Python. Here the same block
is walked one event at a time, with the same draws consumed in the same order and the same
floating-point operations in the same order, so a seed gives bit-identical results:

- the draws: pools of ``pool_size`` (simulate.POOL_SIZE, or block if larger: 4,096 in stream
  version 2, 65,536 in version 1) uniforms, order sizes and standard exponentials, drawn in the
  old engine's order (all uniforms, then all sizes, then all exponentials) from the
  Generator's bit generator in C (its ``bitgen_t``, from the ``capsule`` of
  ``rng.bit_generator``) by numpy's own distribution functions, the ones ``rng.random(N)``,
  ``rng.geometric(p, N)`` and ``rng.standard_exponential(N)`` call
  (``random_standard_uniform_fill``, ``random_geometric``, whose search for p >= 1/3 is
  inlined, ``random_standard_exponential_fill``: numpy/random/lib/libnpyrandom.a, linked in);
  a block takes the next ``block`` draws and consumes them only up to its break (the rest
  move to the front of the pools for the next block); the depth of a level uncovered at the
  back is one ``random_poisson`` draw, as ``rng.poisson`` made it. No Python call per draw,
  refill or event: ``run`` holds the bit generator's lock (so another thread using the same
  Generator waits instead of interleaving its draws) and releases the GIL. The distribution
  code is the numpy the module was built against (numpy >= 2.0), the bit generator the one at
  run time (the same functions when both are one numpy); should the two differ in one of
  these functions, the tests that hold the streams against the Generator's own calls
  (tests/sim_numpy_oracle.py) fail;
- the rates: fixed for a block; their total is numpy's pairwise sum (``pairwise_sum`` below,
  step for step what ``ndarray.sum`` computes), the channel of an event the count of
  cumulative rates <= u * total (``np.searchsorted(..., side="right")``), its time step
  ``ceil(exponential * (1e9 / total))`` ns;
- the queue sizes: the old engine computed a column's size after event r as (its cumulative
  signed sizes in the block) + (its size at the block start), then added each shrink
  adjustment in turn; ``SimEngine`` keeps those three terms per column and adds them in that
  order (sizes are whole lots, so any order would agree for the default lot; this order
  agrees for every lot).

Cost (bench/RESULTS.md, issue 13 sim5): about 320 instructions per event (the loop 173, the
draws 145); one fresh 1e6-event chunk also pays the first touch of its 186 MB of output (the
kernel zeroing new pages, ~30-45 ns an event), which chunks written into reused buffers skip.
"""

cimport cython
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.string cimport memmove
import numpy as np

cdef extern from "numpy/arrayobject.h":
    void* PyArray_DATA(object arr)
    int _import_array() except -1

from ofi_fast._guard cimport guard_enter, guard_exit, guard_free, guard_init
from ofi_fast._types cimport float64_t, int64_t, intp_t

_import_array()

cdef extern from *:
    """
    #include <string.h>
    /* One row of the book after an event: the level prices and the sizes, bid then ask.
       A copy loop over a run-time K becomes four memmove calls (gcc's loop distribution);
       for K <= 8 the switch gives each case copies of a constant size, which the compiler
       emits as a few vector moves. */
    #define SIM_BOOK_ROW(KK) case KK:                                                  \
        memcpy(bp, prow, KK * sizeof(double)); memcpy(bq, q, KK * sizeof(double));    \
        memcpy(ap, prow + KK, KK * sizeof(double)); memcpy(aq, q + KK, KK * sizeof(double)); \
        return;
    static inline void sim_book_row(double *bp, double *bq, double *ap, double *aq,
                                    const double *prow, const double *q, Py_ssize_t K) {
        switch (K) {
        SIM_BOOK_ROW(1) SIM_BOOK_ROW(2) SIM_BOOK_ROW(3) SIM_BOOK_ROW(4)
        SIM_BOOK_ROW(5) SIM_BOOK_ROW(6) SIM_BOOK_ROW(7) SIM_BOOK_ROW(8)
        default:
            memcpy(bp, prow, K * sizeof(double));
            memcpy(bq, q, K * sizeof(double));
            memcpy(ap, prow + K, K * sizeof(double));
            memcpy(aq, q + K, K * sizeof(double));
        }
    }
    """
    void sim_book_row(float64_t* bp, float64_t* bq, float64_t* ap, float64_t* aq,
                      const float64_t* prow, const float64_t* q, intp_t K) noexcept nogil


cdef enum:
    ADD = 1
    CANCEL = 3
    EXECUTE = 4


cdef float64_t pairwise_sum(const float64_t* a, intp_t n) noexcept nogil:
    """numpy's pairwise summation of n contiguous doubles, operation for operation (blocks of
    at most 128 summed with 8 accumulators, halves otherwise), so the result is the double that
    ``ndarray.sum()`` returns."""
    cdef intp_t i, j, n2
    cdef float64_t r[8]
    cdef float64_t res = 0.0
    if n < 8:
        for i in range(n):
            res += a[i]
        return res
    if n <= 128:
        for j in range(8):
            r[j] = a[j]
        i = 8
        while i < n - (n % 8):
            for j in range(8):
                r[j] += a[i + j]
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            res += a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2)


# numpy's random_geometric(p) (what Generator.geometric calls per draw) for p >= 1/3 (this
# double, as numpy's C literal rounds) is a sequential search over one uniform per draw
# (random_geometric_search in numpy's distributions.c); below it, inversion of an exponential.
cdef float64_t GEOMETRIC_SEARCH = 0.333333333333333333333333


cdef void geometric_sizes(bitgen_t* bg, float64_t* o, intp_t n, float64_t p,
                          float64_t lot) noexcept nogil:
    """o[0..n) = lot * (n draws of numpy's random_geometric(bg, p)): the same draws from the
    same bit generator, for p >= 1/3 its search inlined (the n uniforms drawn first by
    random_standard_uniform_fill, one double per draw as the search takes them, then searched
    in place, step for step)."""
    cdef intp_t i
    cdef int64_t x
    cdef float64_t s, prod, q = 1.0 - p, v
    if p < GEOMETRIC_SEARCH:
        for i in range(n):
            o[i] = lot * <float64_t> random_geometric(bg, p)
        return
    random_standard_uniform_fill(bg, n, o)
    for i in range(n):
        v = o[i]
        x = 1
        s = p
        prod = p
        while v > s:
            prod *= q
            s += prod
            x += 1
        o[i] = lot * <float64_t> x


def _pairwise_sum(a):
    """``pairwise_sum`` over a float64 array (for the test that holds it against numpy)."""
    cdef const float64_t[::1] v = np.ascontiguousarray(a, dtype=np.float64)
    if v.shape[0] == 0:
        return 0.0
    return pairwise_sum(&v[0], v.shape[0])


@cython.final
cdef class SimEngine:
    """The simulator's state and its event loop (built by ``LOBSimulator``; not public).

    Columns 0..K-1 are the bid levels behind the touch (0 = the touch), K..2K-1 the ask
    levels. Channels 0..4K+3, as in simulate.py: limit orders per column, cancellations per
    column, market buy, market sell, inside bid, inside ask. ``pool_size``: draws of each kind
    per refill (``simulate.POOL_SIZE``, part of the stream), at least ``block``. Its fields are
    declared in _simulate.pxd."""

    def __cinit__(self, rng, intp_t levels, intp_t block, float64_t lot, float64_t cancel_c,
                  float64_t market_rate, float64_t inside_rate, float64_t depth_lam,
                  float64_t geo_p, limit, qb, qa, int64_t ts, int64_t bid_tick,
                  intp_t pool_size):
        guard_init(&self.guard)
        if pool_size < block:
            # a block takes its draws from one refill: reading past the pools otherwise
            raise ValueError(f"pool_size must be >= block, got {pool_size} < {block}")
        K = levels
        C = 4 * K + 4
        self.K, self.W, self.C, self.pool_size = K, block, C, pool_size
        self.lot, self.cancel_c, self.market_rate = lot, cancel_c, market_rate
        self.inside_rate, self.depth_lam, self.geo_p = inside_rate, depth_lam, geo_p
        # the draws come straight from the Generator's bit generator (its C struct, through
        # the capsule numpy exposes for this), under its lock while a run() draws
        self.rng = rng
        bits = rng.bit_generator
        self.lock = bits.lock
        self.bitgen = <bitgen_t*> PyCapsule_GetPointer(bits.capsule, "BitGenerator")
        j = np.arange(K)
        col = np.zeros(C, np.int64)
        sgn = np.zeros(C, np.float64)
        etype = np.zeros(C, np.int8)
        side = np.zeros(C, np.int8)
        col[0:K], col[K:2 * K], col[2 * K:3 * K], col[3 * K:4 * K] = j, K + j, j, K + j
        sgn[0:2 * K], sgn[2 * K:4 * K] = 1.0, -1.0
        etype[0:2 * K], etype[2 * K:4 * K] = ADD, CANCEL
        side[0:K], side[K:2 * K], side[2 * K:3 * K], side[3 * K:4 * K] = 1, -1, 1, -1
        col[4 * K], sgn[4 * K], etype[4 * K], side[4 * K] = K, -1.0, EXECUTE, -1
        col[4 * K + 1], sgn[4 * K + 1], etype[4 * K + 1], side[4 * K + 1] = 0, -1.0, EXECUTE, 1
        etype[4 * K + 2], side[4 * K + 2] = ADD, 1
        etype[4 * K + 3], side[4 * K + 3] = ADD, -1
        lim = np.ascontiguousarray(limit, dtype=np.float64).copy()
        q = np.concatenate([np.asarray(qb, np.float64), np.asarray(qa, np.float64)])
        # cum: the cumulative rates, padded with +inf to twice the search's first step (the
        # largest power of two <= C), so the search below reads no further than its end
        step = 1
        while 2 * step <= C:
            step *= 2
        self.search_step = step
        cum = np.full(2 * step, np.inf)
        bufs = [np.zeros(2 * K), np.zeros(2 * K), np.zeros(C), cum,
                np.zeros(block, np.intp), np.zeros(block),
                np.empty(pool_size + block), np.empty(pool_size + block),
                np.empty(pool_size + block), np.zeros(2 * K)]
        self._keep = [col, sgn, etype, side, lim, q] + bufs
        self.col = <int64_t*> PyArray_DATA(col)
        self.sgn = <float64_t*> PyArray_DATA(sgn)
        self.etype = <signed char*> PyArray_DATA(etype)
        self.side = <signed char*> PyArray_DATA(side)
        self.limit = <float64_t*> PyArray_DATA(lim)
        self.q = <float64_t*> PyArray_DATA(q)
        self.q0 = <float64_t*> PyArray_DATA(bufs[0])
        self.dsum = <float64_t*> PyArray_DATA(bufs[1])
        self.rates = <float64_t*> PyArray_DATA(bufs[2])
        self.cum = <float64_t*> PyArray_DATA(bufs[3])
        self.adj_col = <intp_t*> PyArray_DATA(bufs[4])
        self.adj_val = <float64_t*> PyArray_DATA(bufs[5])
        self.pu = <float64_t*> PyArray_DATA(bufs[6])
        self.psz = <float64_t*> PyArray_DATA(bufs[7])
        self.pex = <float64_t*> PyArray_DATA(bufs[8])
        self.prow = <float64_t*> PyArray_DATA(bufs[9])
        self.ts = ts
        self.bid_tick = bid_tick
        self.ask_tick = bid_tick + 1
        self.active = False
        self.pool_len = self.used = 0

    def __dealloc__(self):
        guard_free(&self.guard)

    @property
    def qb(self):
        """Bid sizes now, touch first (a copy)."""
        return np.array(<float64_t[:self.K]> self.q)

    @property
    def qa(self):
        """Ask sizes now, touch first (a copy)."""
        return np.array(<float64_t[:self.K]> (self.q + self.K))

    cdef void _refill(self) noexcept nogil:
        """Keep the unused draws (moved to the front) and append pool_size of each kind, drawn
        in the old engine's order: uniforms, order sizes, standard exponentials (numpy's
        random_standard_uniform_fill, random_geometric, random_standard_exponential_fill: what
        rng.random(N), rng.geometric(p, N), rng.standard_exponential(N) call)."""
        cdef intp_t N = self.pool_size, rest = self.pool_len - self.used
        memmove(self.pu, self.pu + self.used, rest * sizeof(float64_t))
        memmove(self.psz, self.psz + self.used, rest * sizeof(float64_t))
        memmove(self.pex, self.pex + self.used, rest * sizeof(float64_t))
        random_standard_uniform_fill(self.bitgen, N, self.pu + rest)
        geometric_sizes(self.bitgen, self.psz + rest, N, self.geo_p, self.lot)
        random_standard_exponential_fill(self.bitgen, N, self.pex + rest)
        self.pool_len = rest + N
        self.used = 0

    cdef void _begin_block(self) noexcept nogil:
        cdef intp_t i, K = self.K, C = self.C
        cdef float64_t acc = 0.0, inside
        if self.used + self.W > self.pool_len:
            self._refill()
        self.base = self.used
        for i in range(K):
            self.rates[i] = self.limit[i]
            self.rates[K + i] = self.limit[i]
            self.rates[2 * K + i] = self.cancel_c * self.q[i]
            self.rates[3 * K + i] = self.cancel_c * self.q[K + i]
        self.rates[4 * K] = self.market_rate
        self.rates[4 * K + 1] = self.market_rate
        inside = self.inside_rate if self.ask_tick - self.bid_tick > 1 else 0.0
        self.rates[4 * K + 2] = inside
        self.rates[4 * K + 3] = inside
        self.total = pairwise_sum(self.rates, C)
        for i in range(C):
            acc += self.rates[i]
            self.cum[i] = acc
        self.scale = 1e9 / self.total
        self.t_prev = self.ts
        for i in range(2 * K):
            self.q0[i] = self.q[i]
            self.dsum[i] = 0.0
        self.nadj = 0
        self.r = 0
        self.active = True

    cdef float64_t _depth(self) noexcept nogil:
        """Size of a level uncovered at the back: lot * (1 + Poisson(depth_lam)), numpy's
        random_poisson (what rng.poisson(depth_lam) calls)."""
        return self.lot * (1.0 + <float64_t> random_poisson(self.bitgen, self.depth_lam))

    def run(self, intp_t n, float64_t tick_size, out=None):
        """The next n events: ts, event_type, side, price, size (n) and bid_px, bid_sz,
        ask_px, ask_sz (n, K); a price is its tick times tick_size. ``out``: those nine arrays
        to write into instead of new ones (C-contiguous, these dtypes and shapes: a chunk's
        buffers reused, so the pages are not faulted in again), returned."""
        cdef intp_t K = self.K
        if out is None:
            ts_a = np.empty(n, np.int64)
            et_a = np.empty(n, np.int8)
            sd_a = np.empty(n, np.int8)
            px_a = np.empty(n, np.float64)
            sz_a = np.empty(n, np.float64)
            bp_a = np.empty((n, K), np.float64)
            bq_a = np.empty((n, K), np.float64)
            ap_a = np.empty((n, K), np.float64)
            aq_a = np.empty((n, K), np.float64)
        else:
            ts_a, et_a, sd_a, px_a, sz_a, bp_a, bq_a, ap_a, aq_a = out
            for name, a, dt, shape in (
                    ("ts", ts_a, np.int64, (n,)), ("event_type", et_a, np.int8, (n,)),
                    ("side", sd_a, np.int8, (n,)), ("price", px_a, np.float64, (n,)),
                    ("size", sz_a, np.float64, (n,)), ("bid_px", bp_a, np.float64, (n, K)),
                    ("bid_sz", bq_a, np.float64, (n, K)), ("ask_px", ap_a, np.float64, (n, K)),
                    ("ask_sz", aq_a, np.float64, (n, K))):
                if not (isinstance(a, np.ndarray) and a.dtype == dt and a.shape == shape
                        and a.flags.c_contiguous and a.flags.writeable):
                    raise ValueError(f"out: {name} must be a writeable C-contiguous "
                                     f"{np.dtype(dt).name} array of shape {shape}")
        cdef int64_t* o_ts = <int64_t*> PyArray_DATA(ts_a)
        cdef signed char* o_et = <signed char*> PyArray_DATA(et_a)
        cdef signed char* o_sd = <signed char*> PyArray_DATA(sd_a)
        cdef float64_t* o_px = <float64_t*> PyArray_DATA(px_a)
        cdef float64_t* o_sz = <float64_t*> PyArray_DATA(sz_a)
        cdef float64_t* o_bp = <float64_t*> PyArray_DATA(bp_a)
        cdef float64_t* o_bq = <float64_t*> PyArray_DATA(bq_a)
        cdef float64_t* o_ap = <float64_t*> PyArray_DATA(ap_a)
        cdef float64_t* o_aq = <float64_t*> PyArray_DATA(aq_a)
        if n:
            guard_enter(&self.guard)
            try:
                # the bit generator's lock: no other user of the Generator draws meanwhile
                with self.lock:
                    with nogil:
                        self._run(n, tick_size, o_ts, o_et, o_sd, o_px, o_sz, o_bp, o_bq,
                                  o_ap, o_aq)
            finally:
                guard_exit(&self.guard)
        return ts_a, et_a, sd_a, px_a, sz_a, bp_a, bq_a, ap_a, aq_a

    cdef inline void _emit(self, intp_t pos, float64_t tick, int64_t t, int et, int sd,
                           int64_t tk, float64_t size, int64_t* o_ts, signed char* o_et,
                           signed char* o_sd, float64_t* o_px, float64_t* o_sz,
                           float64_t* o_bp, float64_t* o_bq, float64_t* o_ap,
                           float64_t* o_aq) noexcept nogil:
        """Row pos: the event and the book after it (prices as the old engine computed them:
        the tick as a double, times tick_size)."""
        cdef intp_t a, K = self.K
        cdef int64_t bt = self.bid_tick, at = self.ask_tick
        cdef float64_t* q = self.q
        o_ts[pos] = t
        o_et[pos] = et
        o_sd[pos] = sd
        o_px[pos] = (<float64_t> tk) * tick
        o_sz[pos] = size
        o_bp += pos * K
        o_bq += pos * K
        o_ap += pos * K
        o_aq += pos * K
        for a in range(K):
            o_bp[a] = (<float64_t> (bt - a)) * tick
            o_bq[a] = q[a]
            o_ap[a] = (<float64_t> (at + a)) * tick
            o_aq[a] = q[K + a]

    cdef void _run(self, intp_t n, float64_t tick, int64_t* o_ts, signed char* o_et,
                   signed char* o_sd, float64_t* o_px, float64_t* o_sz, float64_t* o_bp,
                   float64_t* o_bq, float64_t* o_ap, float64_t* o_aq) noexcept nogil:
        # The block's constants and the loop's state live in locals (the compiler cannot
        # keep object fields in registers across the stores into the outputs); they are
        # written back at every block end and on return.
        cdef intp_t K = self.K, C = self.C, W = self.W, pos = 0, i, a, j, ch, lvl
        cdef intp_t r = 0, base = 0, nadj = 0, ncut = 4 * K + 2
        cdef intp_t search_step = self.search_step
        cdef float64_t u, sz, x, m, c, total = 0.0, scale = 0.0, lot = self.lot
        cdef int64_t t, tk, t_prev = 0, bt = self.bid_tick, at = self.ask_tick
        cdef int et, sd
        cdef bint bad, emit
        cdef float64_t* q = self.q
        cdef float64_t* q0 = self.q0
        cdef float64_t* dsum = self.dsum
        cdef const float64_t* cum = self.cum
        cdef const int64_t* col = self.col
        cdef const float64_t* sgn = self.sgn
        cdef const signed char* etype = self.etype
        cdef const signed char* side = self.side
        cdef float64_t* prow = self.prow
        cdef intp_t* adj_col = self.adj_col
        cdef float64_t* adj_val = self.adj_val
        cdef const float64_t* pu = NULL
        cdef const float64_t* psz = NULL
        cdef const float64_t* pex = NULL
        cdef bint loaded = False
        while pos < n:
            if not self.active:
                self.bid_tick = bt
                self.ask_tick = at
                self._begin_block()
                loaded = False
            if not loaded:
                r, base, nadj = self.r, self.base, self.nadj
                total, scale, t_prev = self.total, self.scale, self.t_prev
                pu, psz, pex = self.pu, self.psz, self.pex
                # the touch does not move inside a block: the row of level prices (as the old
                # engine computed them, the tick as a double times tick_size) is the block's
                for a in range(K):
                    prow[a] = (<float64_t> (bt - a)) * tick
                    prow[K + a] = (<float64_t> (at + a)) * tick
                loaded = True
            i = base + r
            u = pu[i]
            sz = psz[i]
            # channel: how many cumulative rates are <= u * total (searchsorted, right), by
            # a binary search without branches: the largest count k with cum[k - 1] <= x,
            # built bit by bit from the highest (cum is non-decreasing: the rates are >= 0;
            # the +inf padding is never <= x), log2(C) steps instead of C comparisons
            x = u * total
            ch = 0
            a = search_step
            while a:
                ch += a & -<intp_t>(cum[ch + a - 1] <= x)
                a >>= 1
            if ch > C - 1:
                ch = C - 1
            # ceil of a non-negative double: truncate, add one if something was cut off
            x = pex[i] * scale
            t = <int64_t> x
            t = t_prev + t + ((<float64_t> t) < x)
            j = col[ch]
            dsum[j] += sgn[ch] * sz
            m = dsum[j] + q0[j]
            for a in range(nadj):
                if adj_col[a] == j:
                    m += adj_val[a]
            bad = (m <= 0.0) | (ch >= ncut)
            if bad and 2 * K < ch < 4 * K and j != K:
                # a cancellation would empty level j behind the touch: it leaves one lot
                c = q[j] - lot
                if c > 0:
                    adj_col[nadj] = j
                    adj_val[nadj] = sz - c
                    nadj += 1
                    m += sz - c
                    sz = c
                    bad = False
            if not bad:
                q[j] = m
                o_ts[pos] = t
                o_et[pos] = etype[ch]
                o_sd[pos] = side[ch]
                o_px[pos] = prow[j]                          # column j's price
                o_sz[pos] = sz
                sim_book_row(o_bp + pos * K, o_bq + pos * K, o_ap + pos * K, o_aq + pos * K,
                             prow, q, K)
                pos += 1
                t_prev = t
                r += 1
                if r == W:
                    self.used += W
                    self.ts = t
                    self.active = False
                continue
            # the break: the block ends here; apply the event to the book
            self.used += r + 1
            self.ts = t
            self.active = False
            emit = True
            if ch == 4 * K + 2:                              # bid inside the spread
                bt += 1
                for a in range(K - 1, 0, -1):
                    q[a] = q[a - 1]
                q[0] = sz
                et, sd, tk, c = ADD, 1, bt, sz
            elif ch == 4 * K + 3:                            # ask inside the spread
                at -= 1
                for a in range(K - 1, 0, -1):
                    q[K + a] = q[K + a - 1]
                q[K] = sz
                et, sd, tk, c = ADD, -1, at, sz
            else:
                et = etype[ch]
                sd = 1 if j < K else -1
                lvl = j if j < K else j - K
                if lvl > 0:                                  # never empty a level behind
                    c = q[j] - lot
                    if c <= 0:
                        emit = False                         # a single lot: dropped
                    else:
                        q[j] -= c
                        tk = bt - lvl if j < K else at + lvl
                else:
                    # the touch empties: the next level becomes the touch, a new level
                    # appears at the back
                    c = q[j]
                    tk = bt if j < K else at
                    for a in range(j, j + K - 1):
                        q[a] = q[a + 1]
                    q[j + K - 1] = self._depth()
                    if j < K:
                        bt -= 1
                    else:
                        at += 1
            if emit:
                self.bid_tick = bt
                self.ask_tick = at
                self._emit(pos, tick, t, et, sd, tk, c, o_ts, o_et, o_sd, o_px, o_sz, o_bp,
                           o_bq, o_ap, o_aq)
                pos += 1
        self.bid_tick = bt
        self.ask_tick = at
        if self.active:                                      # stopped inside a block
            self.r, self.nadj, self.t_prev = r, nadj, t_prev
