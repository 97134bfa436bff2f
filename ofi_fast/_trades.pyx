"""Trade flow imbalance, trade-sign classification and VPIN.

Trade flow (Cont, Kukanov & Stoikov 2014, eq. 13): over the trades in a window, with
B the buyer-initiated volume, S the seller-initiated volume and U the volume of unknown side,
``net = B - S`` and ``imbalance = (B - S) / (B + S)`` (0 when B + S = 0). Unknown-side volume
is kept apart in U (never dropped, never in B or S) unless a classifier infers the side.

Trade-sign rules (each gives +1 buyer-initiated, -1 seller-initiated, 0 undetermined):

- ``"tick"``: Lee & Ready (1991), J. Finance 46(2): +1 if p_j > p_{j-1}, -1 if below; on a zero
  tick the sign of the last non-zero change (zero-uptick buy, zero-downtick sell); 0 before the
  first non-zero change.
- ``"quote"``: +1 above the prevailing mid (a + b) / 2, -1 below, 0 at the mid.
- ``"lee_ready"``: Lee & Ready (1991): the quote rule against the quote prevailing at the trade
  (optionally ``quote_lag`` time units earlier; they used 5 s for 1980s NYSE, modern feeds use 0),
  the tick rule at the mid.
- ``"emo"``: Ellis, Michaely & O'Hara (2000), JFQA 35(4): +1 at the ask, -1 at the bid, the tick
  rule for every other trade (inside the spread or outside the quotes).

Quote-based rules fall back to the tick rule when the quote is missing (NaN), locked
(bid == ask) or crossed (bid > ask); such trades are counted. Prices are compared exactly:
pass integer ticks, prices that are exact multiples of the tick, or ``tick_size=`` to have them
rounded to integer ticks first. The mid comparison is done as ``2p`` vs ``a + b`` (no division).
"""

cimport cython
from libc.math cimport INFINITY, NAN, erfc, fabs, floor, sqrt
from libc.stdint cimport INT64_MIN, SIZE_MAX, int8_t, uint8_t
from libc.stdlib cimport free, malloc

from ofi_fast._results import BVCBars, VPINBuckets

import numpy as np

from ofi_fast._types cimport (
    STATUS_BAD_VALUE, STATUS_CAPACITY, STATUS_NEGATIVE, STATUS_NO_MEMORY, STATUS_NON_FINITE,
    STATUS_OK, STATUS_TIME_BACKWARDS, float64_t, int64_t, intp_t,
)
from ofi_fast._guard cimport (
    checked_nbytes, guard_enter, guard_exit, guard_free, guard_init, guard_wait,
)
from ofi_fast._ring cimport neumaier_add, ring_free, ring_grow, ring_init_rows, window_room
from ofi_fast._select cimport F64Bits, f64_choose, f64_keep
from ofi_fast._arrays import column, integer, output
from ofi_fast._ring import alloc_error, check_window
from ofi_fast.errors import CapacityError, OFIError, raise_status

_FIELDS = ("ts", "price", "size", "side", "bid_px", "ask_px")
_METHODS = {"tick": METHOD_TICK, "quote": METHOD_QUOTE, "lee_ready": METHOD_LEE_READY,
            "emo": METHOD_EMO}


def _method_code(method, allow_none=False):
    if method is None and allow_none:
        return METHOD_NONE
    try:
        return _METHODS[method]
    except (KeyError, TypeError):
        allowed = ", ".join(repr(m) for m in _METHODS)
        raise OFIError(f"method must be one of {allowed}"
                       + (" or None" if allow_none else "") + f", got {method!r}",
                       field="method") from None


cdef void classifier_reset(ClassifierState* c) noexcept nogil:
    c.tick.last_px = 0.0
    c.tick.last_sign = 0
    c.tick.has_last = False
    c.n_trades = 0
    c.n_no_quote = 0
    c.n_crossed = 0
    c.n_unclassified = 0


cdef dict classifier_getstate(ClassifierState* c):
    return {"tick": (c.tick.last_px, int(c.tick.last_sign), bool(c.tick.has_last)),
            "counts": (c.n_trades, c.n_no_quote, c.n_crossed, c.n_unclassified)}


cdef void classifier_setstate(ClassifierState* c, dict d):
    c.tick.last_px, c.tick.last_sign, c.tick.has_last = d["tick"]
    c.n_trades, c.n_no_quote, c.n_crossed, c.n_unclassified = d["counts"]


cdef intp_t _first_nonfinite(const float64_t[::1] x) noexcept nogil:
    cdef intp_t i
    for i in range(x.shape[0]):
        if not (x[i] - x[i] == 0.0):
            return i
    return -1


cdef intp_t _first_backwards(const int64_t[::1] t) noexcept nogil:
    cdef intp_t i
    for i in range(1, t.shape[0]):
        if t[i] < t[i - 1]:
            return i
    return -1


cdef inline intp_t _classify_body(ClassifierState* c, const float64_t* px, const float64_t* bid,
                                  const float64_t* ask, intp_t n, int8_t* out, int method,
                                  intp_t* n_inf) noexcept nogil:
    """Batch form of classify_one for quotes aligned with the trades, written branch-free
    (compare results and conditional moves: trade-vs-quote positions are unpredictable, so
    branches would mispredict about half the time) with the state in locals (the int8
    stores to `out` may alias anything, which would force the state to memory each trade).
    ``method`` is a constant at each call site (one loop per method, see below), so its tests
    are resolved at compile time. Returns the number of non-finite prices and adds the
    number of infinite quotes to *n_inf (both counted in the same pass: the caller raises,
    naming the first). n >= 1."""
    cdef float64_t last = c.tick.last_px if c.tick.has_last else px[0]
    cdef int sg = c.tick.last_sign
    cdef int64_t n_no_quote = 0, n_crossed = 0, n_uncl = 0
    cdef intp_t i, n_bad = 0, n_qinf = 0
    cdef float64_t p, b, a, twice, m
    cdef int d, q, r, valid
    for i in range(n):
        p = px[i]
        n_bad += not (p - p == 0.0)
        d = (p > last) - (p < last)
        sg = d | (sg & -(d == 0))      # integer masks: gcc keeps ternaries as jumps here
        last = p
        r = sg
        if method != METHOD_TICK:
            b = bid[i]
            a = ask[i]
            valid = b < a
            n_qinf += (fabs(b) == INFINITY) + (fabs(a) == INFINITY)
            if method == METHOD_EMO:
                q = (p == a) - (p == b)
                q = q | (sg & -(q == 0))
            else:
                twice = p + p
                m = b + a
                q = (twice > m) - (twice < m)
                if method == METHOD_LEE_READY:
                    q = q | (sg & -(q == 0))
            r = sg ^ ((q ^ sg) & -valid)
            n_no_quote += 1 - valid
            n_crossed += b > a
        n_uncl += r == 0
        out[i] = <int8_t> r
    c.tick.last_px = last
    c.tick.last_sign = <int8_t> sg
    c.tick.has_last = True
    c.n_trades += n
    c.n_no_quote += n_no_quote
    c.n_crossed += n_crossed
    c.n_unclassified += n_uncl
    n_inf[0] += n_qinf
    return n_bad


# One loop per method (the method test hoisted out of the loop; tools/check_branches.py checks
# that each loop has no conditional jump but its own).
cdef intp_t _classify_tick(ClassifierState* c, const float64_t* px, intp_t n,
                           int8_t* out, intp_t* n_inf) noexcept nogil:
    return _classify_body(c, px, NULL, NULL, n, out, METHOD_TICK, n_inf)


cdef intp_t _classify_quote(ClassifierState* c, const float64_t* px, const float64_t* bid,
                            const float64_t* ask, intp_t n, int8_t* out,
                            intp_t* n_inf) noexcept nogil:
    return _classify_body(c, px, bid, ask, n, out, METHOD_QUOTE, n_inf)


cdef extern from *:
    """
    /* classify_trades(method="lee_ready")'s kernel (issue 13: <= 3 ns/trade): Cython has no
     * vector types, so this one loop is C (SSE2 intrinsics on x86-64, an AVX2 clone picked at
     * load time; other targets, or -DOFI_FAST_SCALAR, run the scalar step for every trade).
     * tests/test_trades.py checks it against the reference, with special values at every lane
     * position of a 16-trade step. */
    #include <stdint.h>
    #include <math.h>
    #if defined(__SSE2__) && !defined(OFI_FAST_SCALAR)
    #include <emmintrin.h>
    #endif
    /* Lee-Ready signs of trades lo..hi-1; *last / *sg: the tick rule's state (last price, sign
     * of the last nonzero price change), updated. Per trade exactly the scalar step below:
     * d = sign(p - last) (0 when either is NaN); sg = d if d != 0; q = sign(2p - (bid + ask));
     * out = q if bid < ask and q != 0, else sg. Returns nonzero when a price is not finite;
     * *inf |= 1 when a quote is infinite (both flags only: the caller locates the first). */
    #define TRD_LR_STEP(i) do { \
        double p_ = px[i], b_ = bid[i], a_ = ask[i], tw_ = p_ + p_, m_ = b_ + a_; \
        int d_ = (p_ > L) - (p_ < L), q_; \
        bad |= !(p_ - p_ == 0.0); \
        qinf |= (fabs(b_) == INFINITY) | (fabs(a_) == INFINITY); \
        sg = d_ | (sg & -(d_ == 0)); \
        L = p_; \
        q_ = ((tw_ > m_) - (tw_ < m_)) & -(b_ < a_); \
        out[i] = (int8_t)(q_ | (sg & -(q_ == 0))); \
    } while (0)
    #if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
    #define TRD_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define TRD_CLONES
    #endif
    #if defined(__SSE2__) && !defined(OFI_FAST_SCALAR)
    /* int64 lanes of -1 / 0 / 1 (a, b: two each) -> their low int32 halves, four lanes */
    #define TRD_LO32(a, b) _mm_castps_si128(_mm_shuffle_ps(_mm_castsi128_ps(a), \
                                            _mm_castsi128_ps(b), _MM_SHUFFLE(2, 0, 2, 0)))
    /* trades j, j + 1 (j = i + 2k): d = sign(p - previous p), q = sign(2p - (bid + ask)) where
     * bid < ask, else 0 (int64 lanes); the non-finite price flag, the quotes' extremes */
    #define TRD_PAIR(k, d, q) do { \
        __m128d p = _mm_loadu_pd(px + i + 2 * (k)), l = _mm_loadu_pd(px + i + 2 * (k) - 1); \
        __m128d b = _mm_loadu_pd(bid + i + 2 * (k)), a = _mm_loadu_pd(ask + i + 2 * (k)); \
        __m128d tw = _mm_add_pd(p, p), m = _mm_add_pd(b, a); \
        d = _mm_sub_epi64(_mm_castpd_si128(_mm_cmplt_pd(p, l)), \
                          _mm_castpd_si128(_mm_cmpgt_pd(p, l))); \
        q = _mm_and_si128(_mm_sub_epi64(_mm_castpd_si128(_mm_cmplt_pd(tw, m)), \
                                        _mm_castpd_si128(_mm_cmpgt_pd(tw, m))), \
                          _mm_castpd_si128(_mm_cmplt_pd(b, a))); \
        vbad = _mm_or_pd(vbad, _mm_sub_pd(p, p)); \
        /* maxpd / minpd return the second operand when one is NaN: NaN quotes pass */ \
        hib = _mm_max_pd(b, hib); lob = _mm_min_pd(b, lob); \
        hia = _mm_max_pd(a, hia); loa = _mm_min_pd(a, loa); \
    } while (0)
    /* trades i + 4g .. i + 4g + 3: d and q as int32 lanes */
    #define TRD_QUAD(g, d32, q32) do { \
        __m128i d0_, q0_, d1_, q1_; \
        TRD_PAIR(2 * (g), d0_, q0_); \
        TRD_PAIR(2 * (g) + 1, d1_, q1_); \
        d32 = TRD_LO32(d0_, d1_); \
        q32 = TRD_LO32(q0_, q1_); \
    } while (0)
    #endif
    TRD_CLONES static int trd_lee_ready(const double *px, const double *bid, const double *ask,
                                        Py_ssize_t n, int8_t *out, double *last, int *sg_io,
                                        int *inf)
    {
        double L = *last;
        int sg = *sg_io, bad = 0, qinf = 0;
        Py_ssize_t i = 0;
        if (n <= 0)
            return 0;
        TRD_LR_STEP(0);
        i = 1;
    #if defined(__SSE2__) && !defined(OFI_FAST_SCALAR)
        {
        /* 16 trades a step: the signs of the price changes (d) and the quote rule's sign where
         * the quote is valid (q, else 0) in vector lanes, packed to bytes; then the tick rule's
         * carry as a prefix "last nonzero" over the 16 bytes (four shift-and-fill steps) plus
         * the previous step's sign, all without a branch. */
        const __m128i zero = _mm_setzero_si128();
        __m128i sgv = _mm_set1_epi8((char)sg);
        __m128d vbad = _mm_setzero_pd(), hib = vbad, lob = vbad, hia = vbad, loa = vbad;
        for (; i + 16 <= n; i += 16) {
            __m128i d0, d1, q0, q1, dw, qw, d, q;
            TRD_QUAD(0, d0, q0);
            TRD_QUAD(1, d1, q1);
            dw = _mm_packs_epi32(d0, d1);       /* packed as they come: fewer live registers */
            qw = _mm_packs_epi32(q0, q1);
            TRD_QUAD(2, d0, q0);
            TRD_QUAD(3, d1, q1);
            d = _mm_packs_epi16(dw, _mm_packs_epi32(d0, d1));
            q = _mm_packs_epi16(qw, _mm_packs_epi32(q0, q1));
            d = _mm_or_si128(d, _mm_and_si128(_mm_slli_si128(d, 1), _mm_cmpeq_epi8(d, zero)));
            d = _mm_or_si128(d, _mm_and_si128(_mm_slli_si128(d, 2), _mm_cmpeq_epi8(d, zero)));
            d = _mm_or_si128(d, _mm_and_si128(_mm_slli_si128(d, 4), _mm_cmpeq_epi8(d, zero)));
            d = _mm_or_si128(d, _mm_and_si128(_mm_slli_si128(d, 8), _mm_cmpeq_epi8(d, zero)));
            d = _mm_or_si128(d, _mm_and_si128(sgv, _mm_cmpeq_epi8(d, zero)));
            _mm_storeu_si128((__m128i *)(out + i),
                             _mm_or_si128(q, _mm_and_si128(d, _mm_cmpeq_epi8(q, zero))));
            /* byte 15 of d into every byte */
            sgv = _mm_unpackhi_epi8(d, d);
            sgv = _mm_shufflehi_epi16(sgv, 0xFF);
            sgv = _mm_shuffle_epi32(sgv, 0xFF);
        }
        sg = (int8_t)_mm_cvtsi128_si32(sgv);
        L = px[i - 1];
        bad |= _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_castpd_si128(vbad), zero)) != 0xFFFF;
        qinf |= _mm_movemask_pd(_mm_or_pd(
                    _mm_cmpeq_pd(_mm_max_pd(hib, hia), _mm_set1_pd(INFINITY)),
                    _mm_cmpeq_pd(_mm_min_pd(lob, loa), _mm_set1_pd(-INFINITY)))) != 0;
        }
    #endif
        for (; i < n; i++)
            TRD_LR_STEP(i);
        *last = L;
        *sg_io = sg;
        *inf |= qinf;
        return bad;
    }
    """
    int trd_lee_ready(const float64_t* px, const float64_t* bid, const float64_t* ask,
                      intp_t n, int8_t* out, float64_t* last, int* sg, int* inf) nogil


cdef intp_t _classify_lee_ready(ClassifierState* c, const float64_t* px, const float64_t* bid,
                                const float64_t* ask, intp_t n, int8_t* out,
                                intp_t* n_inf) noexcept nogil:
    """Lee-Ready by trd_lee_ready: the same signs and tick state as _classify_body, but only
    flags (a non-finite price -> 1, an infinite quote -> *n_inf += 1) and none of the counters
    but n_trades (its one caller, classify_trades, keeps a local state it discards; a
    Classifier counts through classify_one)."""
    cdef float64_t last = c.tick.last_px if c.tick.has_last else px[0]
    cdef int sg = c.tick.last_sign, inf = 0
    cdef intp_t bad = trd_lee_ready(px, bid, ask, n, out, &last, &sg, &inf)
    c.tick.last_px = last
    c.tick.last_sign = <int8_t> sg
    c.tick.has_last = True
    c.n_trades += n
    n_inf[0] += inf
    return bad



cdef intp_t _classify_emo(ClassifierState* c, const float64_t* px, const float64_t* bid,
                          const float64_t* ask, intp_t n, int8_t* out,
                          intp_t* n_inf) noexcept nogil:
    return _classify_body(c, px, bid, ask, n, out, METHOD_EMO, n_inf)


cdef intp_t _classify_aligned(ClassifierState* c, const float64_t* px, const float64_t* bid,
                              const float64_t* ask, intp_t n, int8_t* out,
                              intp_t* n_inf) noexcept nogil:
    """Dispatch to the loop of c.method (bid/ask unused, may be NULL, for the tick rule)."""
    if n == 0:
        return 0
    if c.method == METHOD_TICK:
        return _classify_tick(c, px, n, out, n_inf)
    if c.method == METHOD_QUOTE:
        return _classify_quote(c, px, bid, ask, n, out, n_inf)
    if c.method == METHOD_LEE_READY:
        return _classify_lee_ready(c, px, bid, ask, n, out, n_inf)
    return _classify_emo(c, px, bid, ask, n, out, n_inf)


cdef void _classify_lagged(ClassifierState* c, const float64_t* px, const int64_t* ts,
                           intp_t n, const int64_t* qts, const float64_t* qbid,
                           const float64_t* qask, intp_t m, int64_t lag,
                           int8_t* out) noexcept nogil:
    """Each trade i uses the last quote j with qts[j] <= ts[i] - lag (none: NaN quote)."""
    cdef intp_t i, j = 0
    cdef float64_t b = NAN, a = NAN
    for i in range(n):
        while j < m and qts[j] <= ts[i] - lag:
            b = qbid[j]
            a = qask[j]
            j += 1
        out[i] = classify_one(c, px[i], b, a)


cdef int stream_classifier_quote(StreamClassifierState* st, int64_t ts, float64_t bid_px,
                                 float64_t ask_px) noexcept nogil:
    cdef QuoteQueue* q = &st.pending
    cdef QuoteQueue g
    cdef intp_t i, j, cap
    if st.has_quote_ts and ts < st.last_quote_ts:
        return STATUS_TIME_BACKWARDS
    # NaN is a missing side; an infinite quote is an error (it would sign every trade)
    if bid_px == INFINITY or bid_px == -INFINITY:
        return STATUS_NON_FINITE | (4 << 4)
    if ask_px == INFINITY or ask_px == -INFINITY:
        return STATUS_NON_FINITE | (5 << 4)
    st.has_quote_ts = True
    st.last_quote_ts = ts
    if st.quote_lag == 0:
        st.bid_px = bid_px
        st.ask_px = ask_px
        return STATUS_OK
    if q.count == q.capacity:
        if <size_t> q.capacity > (SIZE_MAX // 4) // (3 * sizeof(float64_t)):
            return STATUS_NO_MEMORY
        cap = 2 * q.capacity if q.capacity else 64
        g.ts = <int64_t*> malloc(cap * sizeof(int64_t))
        g.bid = <float64_t*> malloc(cap * sizeof(float64_t))
        g.ask = <float64_t*> malloc(cap * sizeof(float64_t))
        if g.ts == NULL or g.bid == NULL or g.ask == NULL:
            free(g.ts)
            free(g.bid)
            free(g.ask)
            return STATUS_NO_MEMORY
        for i in range(q.count):
            j = (q.head + i) % q.capacity
            g.ts[i] = q.ts[j]
            g.bid[i] = q.bid[j]
            g.ask[i] = q.ask[j]
        free(q.ts)
        free(q.bid)
        free(q.ask)
        g.capacity = cap
        g.head = 0
        g.count = q.count
        q[0] = g
    j = q.head + q.count
    if j >= q.capacity:
        j -= q.capacity
    q.ts[j] = ts
    q.bid[j] = bid_px
    q.ask[j] = ask_px
    q.count += 1
    return STATUS_OK


cdef int stream_classifier_trade(StreamClassifierState* st, int64_t ts, float64_t price,
                                 int8_t* sign) noexcept nogil:
    cdef QuoteQueue* q = &st.pending
    if st.has_last and ts < st.last_ts:
        return STATUS_TIME_BACKWARDS
    if not (price - price == 0.0):
        return STATUS_NON_FINITE | (1 << 4)
    while q.count > 0 and q.ts[q.head] <= ts - st.quote_lag:
        st.bid_px = q.bid[q.head]
        st.ask_px = q.ask[q.head]
        q.head += 1
        if q.head == q.capacity:
            q.head = 0
        q.count -= 1
    st.has_last = True
    st.last_ts = ts
    sign[0] = classify_one(&st.cls, price, st.bid_px, st.ask_px)
    return STATUS_OK


@cython.final
cdef class Classifier:
    """Streaming trade-sign classifier (rules and sources in the module docstring).

    ``Classifier(method="lee_ready", quote_lag=0)``: ``update_quote(ts, bid_px, ask_px)``
    records a quote (NaN for a missing side); ``update(ts, price)`` returns the trade's sign
    (+1, -1, 0) against the last quote with quote ts <= ``ts - quote_lag`` (Lee & Ready's quote
    delay; with lag 0 the latest quote). Trades and quotes must each be in time order, and a
    quote counts as prevailing for trades fed after it. With a lag, quotes not yet in effect
    wait in a ring that doubles when full (no allocation otherwise).
    """

    def __cinit__(self, method="lee_ready", quote_lag=0):
        self.st.cls.method = _method_code(method)
        self.method = method
        self.st.quote_lag = integer(quote_lag, "quote_lag", 0, 2**63 - 1)
        guard_init(&self.guard)
        self.st.pending.ts = NULL
        self.st.pending.bid = NULL
        self.st.pending.ask = NULL
        self.st.pending.capacity = 0
        self.reset()

    def __dealloc__(self):
        free(self.st.pending.ts)
        free(self.st.pending.bid)
        free(self.st.pending.ask)
        guard_free(&self.guard)

    @property
    def quote_lag(self):
        """Quote delay in ts units."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.quote_lag

    def reset(self):
        """Forget all trades and quotes."""
        if self.guard.busy:
            guard_wait(&self.guard)
        classifier_reset(&self.st.cls)
        self.st.bid_px = NAN
        self.st.ask_px = NAN
        self.st.pending.head = 0
        self.st.pending.count = 0
        self.st.has_last = False
        self.st.last_ts = 0
        self.st.has_quote_ts = False
        self.st.last_quote_ts = 0

    def update_quote(self, int64_t ts, float64_t bid_px, float64_t ask_px):
        """Record the best quote at time ``ts`` (NaN for a missing side; infinity is an error)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        cdef int status = stream_classifier_quote(&self.st, ts, bid_px, ask_px)
        if status == STATUS_NO_MEMORY:
            raise MemoryError("the pending-quote ring could not grow")
        raise_status(status & 15, _FIELDS[status >> 4], 0)

    cdef int push(self, int64_t ts, float64_t price, int8_t* sign) noexcept nogil:
        return stream_classifier_trade(&self.st, ts, price, sign)

    cpdef int update(self, int64_t ts, float64_t price) except? -2:
        """Classify one trade; return +1, -1 or 0."""
        cdef int8_t s
        if self.guard.busy:
            guard_wait(&self.guard)
        cdef int status = stream_classifier_trade(&self.st, ts, price, &s)
        if status != STATUS_OK:
            raise_status(status & 15, _FIELDS[status >> 4], 0)
        return s

    def update_many(self, ts, price, bid_px=None, ask_px=None, *, out=None):
        """Classify arrays of trades with the GIL released -> int8 signs.

        ``bid_px``/``ask_px`` (optional): the quote at each trade, recorded with
        ``update_quote(ts[i], ...)`` just before trade i (so with ``quote_lag`` > 0 trade i sees
        an earlier row's quote); without them the quotes given so far apply. ``ts`` may be None
        (all trades at the last trade's time). On a bad trade at index i, trades 0..i-1 are
        applied and the error names field and index i.
        """
        cdef const float64_t[::1] px = column(price, np.float64, "price")
        cdef intp_t n = px.shape[0], i = 0
        cdef const int64_t[::1] t
        cdef const float64_t[::1] bq
        cdef const float64_t[::1] aq
        cdef bint has_ts = ts is not None, has_q = bid_px is not None or ask_px is not None
        if has_ts:
            t = column(ts, np.int64, "ts", n)
        if has_q:
            if bid_px is None or ask_px is None:
                raise OFIError("give both bid_px and ask_px",
                               field="bid_px" if bid_px is None else "ask_px")
            bq = column(bid_px, np.float64, "bid_px", n)
            aq = column(ask_px, np.float64, "ask_px", n)
        out_arr = output(out, n, dtype=np.int8)
        cdef int8_t[::1] o = out_arr
        cdef int status = STATUS_OK
        cdef int64_t tsi
        cdef bint quote_failed = False
        guard_enter(&self.guard)
        try:
            tsi = self.st.last_ts
            with nogil:
                for i in range(n):
                    if has_ts:
                        tsi = t[i]
                    # validate the trade before recording its quote, so a bad row changes nothing
                    if self.st.has_last and tsi < self.st.last_ts:
                        status = STATUS_TIME_BACKWARDS
                        break
                    if not (px[i] - px[i] == 0.0):
                        status = STATUS_NON_FINITE | (1 << 4)
                        break
                    if has_q:
                        status = stream_classifier_quote(&self.st, tsi, bq[i], aq[i])
                        if status != STATUS_OK:
                            quote_failed = True
                            break
                    status = stream_classifier_trade(&self.st, tsi, px[i], &o[i])
                    if status != STATUS_OK:
                        break
        finally:
            guard_exit(&self.guard)
        if status == STATUS_NO_MEMORY:
            raise MemoryError("the pending-quote ring could not grow")
        if status != STATUS_OK:
            raise_status(status & 15, "ts" if quote_failed and not (status >> 4)
                         else _FIELDS[status >> 4], i)
        return out_arr

    @property
    def n_trades(self):
        """Trades classified since reset."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.cls.n_trades

    @property
    def n_no_quote(self):
        """Trades a quote-based rule sent to the tick rule (no, locked or crossed quote)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.cls.n_no_quote

    @property
    def n_crossed(self):
        """Trades whose prevailing quote was crossed (bid > ask)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.cls.n_crossed

    @property
    def n_unclassified(self):
        """Trades that came out 0."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.cls.n_unclassified

    def __reduce__(self):
        cdef QuoteQueue* q = &self.st.pending
        cdef intp_t i, j
        if self.guard.busy:
            guard_wait(&self.guard)
        pending = []
        for i in range(q.count):
            j = (q.head + i) % q.capacity
            pending.append((q.ts[j], q.bid[j], q.ask[j]))
        return (Classifier, (self.method, self.st.quote_lag),
                {"cls": classifier_getstate(&self.st.cls),
                 "quote": (self.st.bid_px, self.st.ask_px), "pending": pending,
                 "last": (bool(self.st.has_last), self.st.last_ts),
                 "last_quote": (bool(self.st.has_quote_ts), self.st.last_quote_ts)})

    def __setstate__(self, d):
        guard_enter(&self.guard)   # Python code runs in here: hold the lock throughout
        try:
            classifier_setstate(&self.st.cls, d["cls"])
            self.st.has_quote_ts = False
            for ts, b, a in d["pending"]:
                if stream_classifier_quote(&self.st, ts, b, a) != STATUS_OK:
                    raise MemoryError("the pending-quote ring could not grow")
            self.st.bid_px, self.st.ask_px = d["quote"]
            self.st.has_last, self.st.last_ts = d["last"]
            self.st.has_quote_ts, self.st.last_quote_ts = d["last_quote"]
        finally:
            guard_exit(&self.guard)


def _first_infinite(x):
    """Index of the first +-inf in ``x`` (NaN is a missing side, not an error), or -1."""
    bad = np.flatnonzero(np.isinf(x))
    return int(bad[0]) if bad.shape[0] else -1


def _check_quotes(bid, ask):
    for name, q in (("bid_px", bid), ("ask_px", ask)):
        i = _first_infinite(q)
        if i >= 0:
            raise_status(STATUS_NON_FINITE, name, i, "an infinite quote; NaN marks a missing side")


def _ticks(x, tick_size):
    return x if tick_size is None else np.round(x / tick_size)


def classify_trades(price, size=None, *, method, bid_px=None, ask_px=None, ts=None,
                    quote_ts=None, quote_lag=0, tick_size=None, **bvc_options):
    """Trade signs by the tick, quote, Lee-Ready or EMO rule -> int8 array of +1 / -1 / 0.

    ``method``: ``"tick"``, ``"quote"``, ``"lee_ready"``, ``"emo"`` (rules and sources in the
    module docstring), or ``"bvc"`` (bulk volume classification: returns buy fractions per bar,
    see :func:`bvc`; ``size`` and ``ts`` are then required and ``bvc_options`` are passed on).

    Quotes, two layouts:

    - ``bid_px``/``ask_px`` of the trades' length: the quote prevailing at each trade;
    - with ``quote_ts``: a quote stream of its own length (``quote_ts`` non-decreasing), and
      ``ts`` the trades' timestamps; trade i uses the last quote with
      ``quote_ts <= ts[i] - quote_lag`` (Lee & Ready's quote delay; lag 0 by default: a quote
      stamped at the trade's own time counts as prevailing).

    A trade with no quote (NaN, or before the first quote), or a locked or crossed quote, is
    signed by the tick rule. ``tick_size``: round prices and quotes to integer ticks first.
    ``size`` is unused by the sign rules (accepted for a uniform signature).
    """
    if method == "bvc":
        if size is None or ts is None:
            raise OFIError("method 'bvc' needs size and ts", field="size" if size is None else "ts")
        return bvc(ts, price, size, **bvc_options).buy_fraction
    if bvc_options:
        raise OFIError(f"unexpected options for method {method!r}: {sorted(bvc_options)}",
                       field="method")
    cdef ClassifierState c
    classifier_reset(&c)
    c.method = _method_code(method)
    px_arr = _ticks(column(price, np.float64, "price"), tick_size)
    cdef const float64_t[::1] px = px_arr
    cdef intp_t n = px.shape[0], m, bad, n_inf = 0
    cdef const float64_t[::1] bid
    cdef const float64_t[::1] ask
    cdef const int64_t[::1] t
    cdef const int64_t[::1] qt
    cdef int64_t lag = quote_lag
    out_arr = np.empty(n, dtype=np.int8)
    cdef int8_t[::1] out = out_arr
    if n == 0:
        return out_arr
    if c.method == METHOD_TICK:
        with nogil:
            bad = _classify_aligned(&c, &px[0], NULL, NULL, n, &out[0], &n_inf)
        if bad:      # non-finite prices were counted in the pass; name the first
            raise_status(STATUS_NON_FINITE, "price", _first_nonfinite(px))
        return out_arr
    bad = _first_nonfinite(px) if (quote_ts is not None) else -1
    if bad >= 0:
        raise_status(STATUS_NON_FINITE, "price", bad)
    if bid_px is None or ask_px is None:
        raise OFIError(f"method {method!r} needs bid_px and ask_px",
                       field="bid_px" if bid_px is None else "ask_px")
    if lag < 0:
        raise OFIError(f"quote_lag must be >= 0, got {quote_lag!r}", field="quote_lag")
    if quote_ts is None:
        if lag:
            raise OFIError("quote_lag needs the quote stream's quote_ts (and the trades' ts)",
                           field="quote_ts")
        bid = _ticks(column(bid_px, np.float64, "bid_px", n), tick_size)
        ask = _ticks(column(ask_px, np.float64, "ask_px", n), tick_size)
        with nogil:
            bad = _classify_aligned(&c, &px[0], &bid[0], &ask[0], n, &out[0], &n_inf)
        if n_inf:    # infinite quotes were counted in the pass; name the first (before prices)
            _check_quotes(bid, ask)
        if bad:
            raise_status(STATUS_NON_FINITE, "price", _first_nonfinite(px))
        return out_arr
    if ts is None:
        raise OFIError("quote_ts needs the trades' ts", field="ts")
    qt = column(quote_ts, np.int64, "quote_ts")
    m = qt.shape[0]
    bid = _ticks(column(bid_px, np.float64, "bid_px", m), tick_size)
    ask = _ticks(column(ask_px, np.float64, "ask_px", m), tick_size)
    _check_quotes(bid, ask)
    t = column(ts, np.int64, "ts", n)
    bad = _first_backwards(t)
    if bad >= 0:
        raise_status(STATUS_TIME_BACKWARDS, "ts", bad)
    bad = _first_backwards(qt)
    if bad >= 0:
        raise_status(STATUS_TIME_BACKWARDS, "quote_ts", bad)
    if m == 0:
        bid = np.full(1, np.nan)
        ask = bid
        qt = np.zeros(1, dtype=np.int64)
    with nogil:
        _classify_lagged(&c, &px[0], &t[0], n, &qt[0], &bid[0], &ask[0], m, lag, &out[0])
    return out_arr


# ---------------------------------------------------------------------------------------------
# Trade flow imbalance
# ---------------------------------------------------------------------------------------------
# The window's ring is the shared strided Ring of _ring.pxd: width 1 (the trade size) and a tag
# column (the final side).
cdef inline int trade_ring_init(TradeRing* r, intp_t capacity) noexcept nogil:
    return ring_init_rows(r, capacity, 1, True)


cdef int tradeflow_init(TradeFlowState* st, int method, int64_t window, int64_t window_time,
                        intp_t capacity, bint grow) noexcept nogil:
    st.cls.method = method
    st.window = window
    st.window_time = window_time
    st.window_volume = 0.0
    st.grow = grow
    st.ring.ts = NULL
    st.ring.val = NULL
    st.ring.tag = NULL
    tradeflow_reset(st)
    if window or window_time:
        return trade_ring_init(&st.ring, capacity)
    return STATUS_OK


cdef void tradeflow_free(TradeFlowState* st) noexcept nogil:
    ring_free(&st.ring)


cdef void tradeflow_reset(TradeFlowState* st) noexcept nogil:
    cdef int k
    classifier_reset(&st.cls)
    st.bid_px = NAN
    st.ask_px = NAN
    for k in range(3):
        st.vol[k] = 0.0
        st.comp[k] = 0.0
        st.n[k] = 0
    st.ring.head = 0
    st.ring.size = 0
    st.n_events = 0
    st.n_classified = 0
    st.has_last = False
    st.last_ts = 0


cdef inline void _evict_oldest(TradeFlowState* st) noexcept nogil:
    cdef TradeRing* r = &st.ring
    cdef int k = r.tag[r.head] + 1
    neumaier_add(&st.vol[k], &st.comp[k], -r.val[r.head])
    st.n[k] -= 1
    r.head += 1
    if r.head == r.capacity:
        r.head = 0
    r.size -= 1
    if st.n[k] == 0:             # window empty on that side: drop accumulated rounding
        st.vol[k] = 0.0
        st.comp[k] = 0.0


cdef inline float64_t _window_total(const TradeFlowState* st) noexcept nogil:
    return (st.vol[0] + st.vol[1] + st.vol[2]) + (st.comp[0] + st.comp[1] + st.comp[2])


cdef void _trim_to_volume(TradeFlowState* st) noexcept nogil:
    """Volume window: evict the oldest trades while the others still hold >= window_volume,
    then count only the newest part of the oldest one so the window holds exactly that
    volume (all trades while the stream has less)."""
    cdef TradeRing* r = &st.ring
    cdef float64_t tot = _window_total(st), excess
    cdef int k
    while r.size > 1 and tot - r.val[r.head] >= st.window_volume:
        tot -= r.val[r.head]
        _evict_oldest(st)
    excess = tot - st.window_volume
    if excess > 0.0:
        k = r.tag[r.head] + 1
        neumaier_add(&st.vol[k], &st.comp[k], -excess)
        r.val[r.head] -= excess


cdef int tradeflow_update(TradeFlowState* st, int64_t ts, float64_t price, float64_t size,
                          int side, float64_t bid_px, float64_t ask_px,
                          float64_t* signed) noexcept nogil:
    return _tradeflow_step(st, ts, price, size, side, bid_px, ask_px, signed)


cdef inline int _trade_check(const TradeFlowState* st, int64_t ts, float64_t price,
                             float64_t size, int side) noexcept nogil:
    # One trade's validity, field by field (0 ts, 1 price, 2 size, 3 side in bits 4+).
    if st.has_last and ts < st.last_ts:
        return STATUS_TIME_BACKWARDS
    if not (price - price == 0.0):
        return STATUS_NON_FINITE | (1 << 4)
    if not (size - size == 0.0):
        return STATUS_NON_FINITE | (2 << 4)
    if size < 0.0:
        return STATUS_NEGATIVE | (2 << 4)
    if side < -1 or side > 1:
        return STATUS_BAD_VALUE | (3 << 4)
    return STATUS_OK


cdef inline int _tradeflow_step(TradeFlowState* st, int64_t ts, float64_t price,
                                float64_t size, int side, float64_t bid_px, float64_t ask_px,
                                float64_t* signed) noexcept nogil:
    cdef TradeRing* r = &st.ring
    cdef float64_t tot
    cdef intp_t keep, j
    cdef int k, status
    cdef int8_t s
    # Validate everything before touching the state.
    status = _trade_check(st, ts, price, size, side)
    if status:
        return status
    if st.window_time:
        # room for the trades that stay in (ts - window_time, ts] plus this one (from the
        # oldest alone), then one pass evicts the rest
        status = window_room(r, ts, st.window_time, st.grow)
        if status != STATUS_OK:
            return status
        while r.size > 0 and r.ts[r.head] <= ts - st.window_time:
            _evict_oldest(st)
    elif st.window:
        if r.size == st.window:
            _evict_oldest(st)
    elif st.window_volume > 0.0:
        # trades that will stay: drop the oldest while the rest still hold >= window_volume
        tot = _window_total(st) + size
        keep = r.size
        j = r.head
        while keep > 0 and tot - r.val[j] >= st.window_volume:
            tot -= r.val[j]
            keep -= 1
            j += 1
            if j == r.capacity:
                j = 0
        if keep >= r.capacity:
            if not st.grow:
                return STATUS_CAPACITY
            if ring_grow(r, 2 * r.capacity) != STATUS_OK:
                return STATUS_NO_MEMORY
        while r.size > keep:          # free their slots before the push (trim comes after)
            _evict_oldest(st)
    # Sign.
    s = <int8_t> side
    if st.cls.method != METHOD_NONE:
        if s == 0:
            s = classify_one(&st.cls, price, bid_px, ask_px)
            if s != 0:
                st.n_classified += 1
        else:
            tick_sign(&st.cls.tick, price)
    k = s + 1
    neumaier_add(&st.vol[k], &st.comp[k], size)
    st.n[k] += 1
    if st.window or st.window_time or st.window_volume > 0.0:
        j = r.head + r.size
        if j >= r.capacity:
            j -= r.capacity
        r.ts[j] = ts
        r.val[j] = size
        r.tag[j] = s
        r.size += 1
        if st.window_volume > 0.0:
            _trim_to_volume(st)
    st.n_events += 1
    st.has_last = True
    st.last_ts = ts
    signed[0] = s * size
    return STATUS_OK


# --- branch-free batch kernels of TradeFlow.update_many ----------------------------------------
# update_many runs in blocks of TF_BLOCK trades: _tf_validate checks a block in one pass (the
# checks of _trade_check, accumulated as a mask); a clean block goes to the kernel of the
# object's window kind (no check, no data-dependent branch: sides index the sums, evictions are
# selects), a block with a bad row (or a time-window block that could overflow the ring) goes
# through the per-trade step, which applies the rows before the bad one and names it. Every
# kernel does the same floating-point operations in the same order as _tradeflow_step, so the
# results are identical bit for bit.
cdef enum:
    TF_BLOCK = 1024

cdef struct TFBlock:
    const int64_t* ts        # ts of trade i at ts[i * ts_step] (step 0: one ts for all)
    intp_t ts_step
    const float64_t* px
    const float64_t* sz
    const int8_t* sd         # side of trade i at sd[i * sd_step] (step 0: all the same)
    intp_t sd_step
    float64_t* sv            # out: signed volume per trade
    float64_t* v             # out: window imbalance after each trade (rolling kernels only)


cdef extern from *:
    """
    /* TradeFlow.update_many's block check (issue 13, helper edge5): _trade_check's tests on
     * trades 0..n-1 as OR-ed lane masks in 4-lane GCC vector types (one AVX2 register in the
     * avx2 clone, two SSE2 registers in the default one; other compilers get the scalar
     * loops), four trades a step, sixteen for side. Only operations SSE2 has on every lane
     * (a 64-bit compare would be lowered to branches there). Per trade: price and size finite
     * by the sticky NaN of fin += (p - p) + (q - q); size < 0 but not -0.0 as the sign bit of
     * u & (u - 1), u its bits (+0.0: 0 & -1; -0.0: 0x8000.. & 0x7fff..); time backwards,
     * ts[i] < ts[i - 1] (ts[0] < prev), as the sign bit of the overflow-safe signed
     * difference d ^ ((t ^ u) & (d ^ t)), d = t - u; side outside {-1, 0, 1}. ts NULL: every trade has the time prev (no test);
     * sd NULL: every side is 0. Returns 1 when a trade fails (only a flag: the per-trade
     * step finds and names the first). */
    #include <stdint.h>
    #include <string.h>
    #if defined(__GNUC__)
    typedef double trd_vd __attribute__((vector_size(32)));
    typedef uint64_t trd_vu __attribute__((vector_size(32)));
    typedef uint8_t trd_vb __attribute__((vector_size(16)));
    #endif
    TRD_CLONES static int trd_tf_validate(const int64_t *ts, const double *px,
                                          const double *sz, const int8_t *sd, Py_ssize_t n,
                                          int64_t prev)
    {
        Py_ssize_t i = 0, j = 0, ns;
        double fin = 0.0;
        int bad = 0;
    #if defined(__GNUC__)
        trd_vd vfin = {0.0, 0.0, 0.0, 0.0};
        trd_vu vneg = {0, 0, 0, 0}, vlt = vneg;
        for (; i + 4 <= n; i += 4) {
            trd_vd p, q;
            trd_vu u;
            memcpy(&p, px + i, sizeof p);
            memcpy(&q, sz + i, sizeof q);
            memcpy(&u, sz + i, sizeof u);
            vfin += (p - p) + (q - q);
            vneg |= u & (u - 1);
        }
        if (ts != NULL && n > 0) {
            bad |= ts[0] < prev;
            for (j = 1; j + 4 <= n; j += 4) {
                trd_vu t, u, d;
                memcpy(&t, ts + j, sizeof t);
                memcpy(&u, ts + j - 1, sizeof u);
                d = t - u;
                vlt |= d ^ ((t ^ u) & (d ^ t));
            }
        }
        vneg |= vlt;
        fin = (vfin[0] + vfin[1]) + (vfin[2] + vfin[3]);
        bad |= (int)((vneg[0] | vneg[1] | vneg[2] | vneg[3]) >> 63);
    #endif
        for (; i < n; i++) {
            fin += (px[i] - px[i]) + (sz[i] - sz[i]);
            bad |= sz[i] < 0.0;
        }
        if (ts != NULL) {
            if (j == 0 && n > 0) {
                bad |= ts[0] < prev;
                j = 1;
            }
            for (; j < n; j++)
                bad |= ts[j] < ts[j - 1];
        }
        /* sd NULL as a loop bound of 0, not an if block (gcc put that block after the epilogue,
         * a backward jump that check_branches reads as a loop with a branch) */
        ns = sd != NULL ? n : 0;
        j = 0;
    #if defined(__GNUC__)
        {
            const trd_vb two = {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2};
            trd_vb vs = {0}, b;
            for (; j + 16 <= ns; j += 16) {
                memcpy(&b, sd + j, sizeof b);
                vs |= (trd_vb)((trd_vb)(b + 1) > two);
            }
            for (int k = 0; k < 16; k++)
                bad |= vs[k] != 0;
        }
    #endif
        for (; j < ns; j++)
            bad |= (uint8_t)(sd[j] + 1) > 2;
        return bad | !(fin == 0.0);
    }
    """
    int trd_tf_validate(const int64_t* ts, const float64_t* px, const float64_t* sz,
                        const int8_t* sd, intp_t n, int64_t prev) nogil


cdef int _tf_validate(const TFBlock* b, intp_t lo, intp_t hi, bint has_last,
                      int64_t last_ts) noexcept nogil:
    """1 when a row of [lo, hi) fails _trade_check's tests, else 0 (trd_tf_validate: lane
    masks, no branch per trade). A ts or side of step 0 is one value for every row: the ts is
    the state's last ts (never backwards), the side 0."""
    return trd_tf_validate(b.ts + lo if b.ts_step else NULL, b.px + lo, b.sz + lo,
                           b.sd + lo if b.sd_step else NULL, hi - lo,
                           last_ts if has_last else INT64_MIN)


cdef inline float64_t _imbalance3(const float64_t* vol, const float64_t* comp) noexcept nogil:
    # (B - S) / (B + S), +0.0 when B + S <= 0: a select, not a branch (a side may stay empty)
    cdef float64_t b = vol[2] + comp[2], s = vol[0] + comp[0], tot = b + s
    cdef bint pos = tot > 0.0
    return f64_keep(pos, (b - s) / f64_choose(pos, tot, 1.0))


cdef inline void _tf_load(const TradeFlowState* st, float64_t* vol, float64_t* comp,
                          int64_t* cnt) noexcept nogil:
    cdef int k
    for k in range(3):
        vol[k] = st.vol[k]
        comp[k] = st.comp[k]
        cnt[k] = st.n[k]


cdef inline void _tf_store(TradeFlowState* st, const TFBlock* b, intp_t lo, intp_t hi,
                           const float64_t* vol, const float64_t* comp,
                           const int64_t* cnt) noexcept nogil:
    cdef int k
    for k in range(3):
        st.vol[k] = vol[k]
        st.comp[k] = comp[k]
        st.n[k] = cnt[k]
    st.n_events += hi - lo
    st.has_last = True
    st.last_ts = b.ts[(hi - 1) * b.ts_step]


cdef inline void _tf_add(float64_t* vol, float64_t* comp, int64_t* cnt, int k, int s,
                         float64_t q, float64_t* sv) noexcept nogil:
    # one trade of side s into the sums of index k (s + 1); its signed volume into *sv
    neumaier_add(&vol[k], &comp[k], q)
    cnt[k] += 1
    sv[0] = s * q


cdef int _tf_plain(TradeFlowState* st, const TFBlock* b, intp_t lo, intp_t hi) noexcept nogil:
    """No window, no classifier, hi > lo: returns 1 (state and sv unchanged) when a row of
    [lo, hi) is bad, else applies the block and returns 0. Two passes: _tf_validate's lane
    masks, then the sums with no check (the fused loop spilled its pointers to the stack).
    The same operations as _tradeflow_step: Neumaier sums, signed volume (double) side * size
    (the side's double from a table). b.v NULL: no rolling output. The step is _tf_add's,
    written out on purpose: through _tf_add (with the table as an argument, or in static
    memory, or the side converted) gcc addresses the sums by pointer registers and the loop
    runs 34-36 instructions a trade against 31 (callgrind, 300,000 trades, 2026-12-02)."""
    cdef float64_t vol[3]
    cdef float64_t comp[3]
    cdef int64_t cnt[3]
    cdef float64_t sign[3]
    cdef const float64_t* sz = b.sz
    cdef const int8_t* sd = b.sd
    cdef float64_t* sv = b.sv
    cdef float64_t* v = b.v
    cdef intp_t sstep = b.sd_step, i
    cdef float64_t q
    cdef int k
    if _tf_validate(b, lo, hi, st.has_last, st.last_ts):
        return 1
    _tf_load(st, vol, comp, cnt)
    sign[0] = -1.0
    sign[1] = 0.0
    sign[2] = 1.0
    if v == NULL:
        for i in range(lo, hi):
            k = sd[i * sstep] + 1
            q = sz[i]
            neumaier_add(&vol[k], &comp[k], q)
            cnt[k] += 1
            sv[i] = sign[k] * q
    else:
        for i in range(lo, hi):
            k = sd[i * sstep] + 1
            q = sz[i]
            neumaier_add(&vol[k], &comp[k], q)
            cnt[k] += 1
            sv[i] = sign[k] * q
            v[i] = _imbalance3(vol, comp)
    _tf_store(st, b, lo, hi, vol, comp, cnt)
    return 0


cdef inline void _tf_push(int64_t* rts, float64_t* rsz, int8_t* rsd, intp_t slot, int64_t t,
                          float64_t q, int s) noexcept nogil:
    rts[slot] = t
    rsz[slot] = q
    rsd[slot] = <int8_t> s


cdef inline void _tf_evict(float64_t* vol, float64_t* comp, int64_t* cnt, int k,
                           float64_t q) noexcept nogil:
    # _evict_oldest's sums: the oldest trade (side index k, size q) leaves; a side whose
    # window is empty is reset to an exact zero (by a select)
    cdef bint empty
    neumaier_add(&vol[k], &comp[k], -q)
    cnt[k] -= 1
    empty = cnt[k] == 0
    vol[k] = f64_keep(not empty, vol[k])
    comp[k] = f64_keep(not empty, comp[k])


cdef void _tf_count(TradeFlowState* st, const TFBlock* b, intp_t lo, intp_t hi) noexcept nogil:
    """Count window of st.window == capacity trades, no classifier: [lo, hi) validated,
    hi > lo. While the ring fills, push; once it is full, evict the oldest and reuse its slot
    (separate loops: which one runs is known before the block; b.v NULL: no rolling output)."""
    cdef float64_t vol[3]
    cdef float64_t comp[3]
    cdef int64_t cnt[3]
    cdef const int64_t* ts = b.ts
    cdef const float64_t* sz = b.sz
    cdef const int8_t* sd = b.sd
    cdef float64_t* sv = b.sv
    cdef float64_t* v = b.v
    cdef intp_t tstep = b.ts_step, sstep = b.sd_step, i, fill, tail
    cdef int64_t* rts = st.ring.ts
    cdef float64_t* rsz = st.ring.val
    cdef int8_t* rsd = st.ring.tag
    cdef intp_t cap = st.ring.capacity, head = st.ring.head, count = st.ring.size
    _tf_load(st, vol, comp, cnt)
    fill = cap - count
    if fill > hi - lo:
        fill = hi - lo
    if v == NULL:
        for i in range(lo, lo + fill):
            tail = head + count
            tail -= cap & -<intp_t> (tail >= cap)
            _tf_push(rts, rsz, rsd, tail, ts[i * tstep], sz[i], sd[i * sstep])
            count += 1
            _tf_add(vol, comp, cnt, sd[i * sstep] + 1, sd[i * sstep], sz[i], &sv[i])
    else:
        for i in range(lo, lo + fill):
            tail = head + count
            tail -= cap & -<intp_t> (tail >= cap)
            _tf_push(rts, rsz, rsd, tail, ts[i * tstep], sz[i], sd[i * sstep])
            count += 1
            _tf_add(vol, comp, cnt, sd[i * sstep] + 1, sd[i * sstep], sz[i], &sv[i])
            v[i] = _imbalance3(vol, comp)
    if v == NULL:
        for i in range(lo + fill, hi):
            _tf_evict(vol, comp, cnt, rsd[head] + 1, rsz[head])
            _tf_push(rts, rsz, rsd, head, ts[i * tstep], sz[i], sd[i * sstep])
            head += 1
            head -= cap & -<intp_t> (head >= cap)
            _tf_add(vol, comp, cnt, sd[i * sstep] + 1, sd[i * sstep], sz[i], &sv[i])
    else:
        for i in range(lo + fill, hi):
            _tf_evict(vol, comp, cnt, rsd[head] + 1, rsz[head])
            _tf_push(rts, rsz, rsd, head, ts[i * tstep], sz[i], sd[i * sstep])
            head += 1
            head -= cap & -<intp_t> (head >= cap)
            _tf_add(vol, comp, cnt, sd[i * sstep] + 1, sd[i * sstep], sz[i], &sv[i])
            v[i] = _imbalance3(vol, comp)
    st.ring.head = head
    st.ring.size = count
    _tf_store(st, b, lo, hi, vol, comp, cnt)


cdef inline intp_t _tf_time_step(float64_t* vol, float64_t* comp, int64_t* cnt, int64_t* rts,
                                 float64_t* rsz, int8_t* rsd, intp_t cap, intp_t* head,
                                 intp_t* count, int64_t wt, int64_t t, float64_t q, int s,
                                 float64_t* sv) noexcept nogil:
    # One step of the merged two pointers: evict the oldest trade if it left the window
    # (ts <= t - wt), else push (t, q, s); returns 1 on a push, 0 on an eviction. Selects
    # only. The trade is written to the tail slot either way (evicting does not move the
    # tail; tail != head while evicting since count < capacity), before the oldest slot is
    # read, so no uninitialised slot is ever read.
    cdef intp_t h = head[0], c = count[0], tail = h + c
    cdef int out, kn, k
    cdef bint empty
    tail -= cap & -<intp_t> (tail >= cap)
    _tf_push(rts, rsz, rsd, tail, t, q, s)
    out = (c != 0) & (rts[h] <= t - wt)
    kn = s + 1
    k = kn ^ (((rsd[h] + 1) ^ kn) & -out)
    neumaier_add(&vol[k], &comp[k], f64_choose(out, -rsz[h], q))
    cnt[k] += 1 - 2 * out
    empty = out & (cnt[k] == 0)
    vol[k] = f64_keep(not empty, vol[k])
    comp[k] = f64_keep(not empty, comp[k])
    h += out
    h -= cap & -<intp_t> (h >= cap)
    head[0] = h
    count[0] = c + 1 - 2 * out
    sv[0] = s * q                        # the last write to a row is the one after its push
    return 1 - out


cdef void _tf_time(TradeFlowState* st, const TFBlock* b, intp_t lo, intp_t hi) noexcept nogil:
    """Time window, no classifier: [lo, hi) validated, hi > lo, count + hi - lo <= capacity.
    The two pointers are merged into one loop: each step evicts the oldest trade or pushes
    the next one, chosen by selects (0-4 trades leave per trade under random arrivals: a
    branch would mispredict). b.v NULL: no rolling output."""
    cdef float64_t vol[3]
    cdef float64_t comp[3]
    cdef int64_t cnt[3]
    cdef const int64_t* ts = b.ts
    cdef const float64_t* sz = b.sz
    cdef const int8_t* sd = b.sd
    cdef float64_t* sv = b.sv
    cdef float64_t* v = b.v
    cdef intp_t sstep = b.sd_step, i = lo
    cdef int64_t* rts = st.ring.ts
    cdef float64_t* rsz = st.ring.val
    cdef int8_t* rsd = st.ring.tag
    cdef intp_t cap = st.ring.capacity, head = st.ring.head, count = st.ring.size
    cdef int64_t wt = st.window_time
    cdef intp_t d
    _tf_load(st, vol, comp, cnt)
    if v == NULL:
        while i < hi:
            i += _tf_time_step(vol, comp, cnt, rts, rsz, rsd, cap, &head, &count, wt, ts[i],
                               sz[i], sd[i * sstep], &sv[i])
    else:
        while i < hi:
            d = _tf_time_step(vol, comp, cnt, rts, rsz, rsd, cap, &head, &count, wt, ts[i],
                              sz[i], sd[i * sstep], &sv[i])
            v[i] = _imbalance3(vol, comp)    # the last write to row i is after its push
            i += d
    st.ring.head = head
    st.ring.size = count
    _tf_store(st, b, lo, hi, vol, comp, cnt)


cdef inline float64_t _vol(const TradeFlowState* st, int k) noexcept nogil:
    return st.vol[k] + st.comp[k]


cdef inline float64_t _imbalance(const TradeFlowState* st) noexcept nogil:
    return _imbalance3(st.vol, st.comp)


cdef int raise_tradeflow(int status, TradeFlowState* st, intp_t index) except -1:
    field = _FIELDS[status >> 4]
    if (status & 15) == STATUS_CAPACITY:
        raise CapacityError(
            f"ts[{index}]: the time window needs more than the {st.ring.capacity} slots of its "
            f"buffer; pass a larger capacity= or grow=True",
            field="ts", index=index, needed=st.ring.capacity + 1)
    detail = "side must be -1, 0 or +1" if field == "side" else ""
    raise_status(status & 15, field, index, detail)
    return 0


@cython.final
cdef class TradeFlow:
    """Streaming trade flow imbalance over a count window, a time window or the whole stream.

    ``TradeFlow(window=None, window_time=None, classify=None, capacity=None, grow=False,
    window_volume=None)``

    Over the trades in the window (CKS 2014 eq. 13): ``buy_volume`` B, ``sell_volume`` S,
    ``net`` = B - S, ``imbalance`` = (B - S) / (B + S), 0 when B + S = 0 (``empty`` says so);
    ``unknown_volume`` U is the volume of side-0 trades, never in B or S.

    - ``window``: the last ``window`` trades; ``window_time``: trades with ts in
      ``(t - window_time, t]`` (ring of ``capacity`` slots, default 65536, CapacityError when a
      window needs more unless ``grow=True``); ``window_volume``: the shortest run of latest
      trades holding at least that volume, the oldest one counted only in part so the window
      holds exactly ``window_volume`` (the volume clock; all trades while the stream has less;
      same ``capacity``/``grow`` rule); none: the whole stream.
    - ``classify``: None (side-0 trades stay unknown and are counted in U / ``n_unknown``) or
      ``"tick"``, ``"quote"``, ``"lee_ready"``, ``"emo"``: side-0 trades are signed by that rule
      against the quote given by ``update_quote`` (or the per-trade quotes passed to
      ``update_many``); the tick rule's history is every trade, signed or not. A trade the rule
      leaves at 0 stays unknown.

    ``update(ts, price, size, side=0)`` returns the trade's signed volume ``side * size`` (after
    classification). Bad input (time backwards, NaN/inf price or size, negative size, side not
    in {-1, 0, +1}) raises an OFIError subclass naming field and index; the state is unchanged.
    Sizes are summed with Neumaier compensation (exact on integer sizes).
    """

    def __cinit__(self, window=None, window_time=None, classify=None, capacity=None,
                  grow=False, window_volume=None):
        cdef float64_t wv = 0.0
        if window_volume is not None:
            if window is not None or window_time is not None:
                raise OFIError("give one of window, window_time, window_volume",
                               field="window_volume")
            wv = float(window_volume)
            if not (wv > 0.0 and wv - wv == 0.0):
                raise OFIError(f"window_volume must be > 0 and finite, got {window_volume!r}",
                               field="window_volume")
            w, wt, cap = check_window(None, 1, capacity, 17)
            wt = 0
        else:
            w, wt, cap = check_window(window, window_time, capacity, 17)
        self.window = window
        self.window_time = window_time
        self.window_volume = window_volume
        self.classify = classify
        guard_init(&self.guard)
        if tradeflow_init(&self.st, _method_code(classify, True), w, wt, cap,
                          bool(grow)) != STATUS_OK:
            raise alloc_error("window" if w else "capacity", cap, 17 * cap)
        if wv > 0.0:
            self.st.window_volume = wv
            if trade_ring_init(&self.st.ring, cap) != STATUS_OK:
                raise alloc_error("capacity", cap, 17 * cap)

    def __dealloc__(self):
        tradeflow_free(&self.st)
        guard_free(&self.guard)

    cdef int push(self, int64_t ts, float64_t price, float64_t size, int side,
                  float64_t* signed) noexcept nogil:
        return tradeflow_update(&self.st, ts, price, size, side, self.st.bid_px,
                                self.st.ask_px, signed)

    cpdef float64_t update(self, int64_t ts, float64_t price, float64_t size,
                           int side=0) except? -1.0:
        """Feed one trade; return its signed volume (+size buy, -size sell, 0 unknown)."""
        cdef float64_t v
        if self.guard.busy:
            guard_wait(&self.guard)
        cdef int status = tradeflow_update(&self.st, ts, price, size, side, self.st.bid_px,
                                           self.st.ask_px, &v)
        if status != STATUS_OK:
            raise_tradeflow(status, &self.st, 0)
        return v

    def update_quote(self, int64_t ts, float64_t bid_px, float64_t ask_px):
        """Record the prevailing best quote used to classify later side-0 trades (NaN: none).

        ``ts`` is accepted for a uniform signature; the quote applies to the next trades
        (for a quote delay use :class:`Classifier` or :func:`classify_trades`). NaN marks a
        missing side; an infinite quote is an error.
        """
        if bid_px == INFINITY or bid_px == -INFINITY:
            raise_status(STATUS_NON_FINITE, "bid_px", 0, "an infinite quote")
        if ask_px == INFINITY or ask_px == -INFINITY:
            raise_status(STATUS_NON_FINITE, "ask_px", 0, "an infinite quote")
        if self.guard.busy:
            guard_wait(&self.guard)
        self.st.bid_px = bid_px
        self.st.ask_px = ask_px

    def update_many(self, ts, price, size, side=None, *, bid_px=None, ask_px=None, out=None,
                    rolling=False, rolling_out=None):
        """Feed arrays of trades; return the signed volume per trade (float64).

        ``side`` None means all unknown (0). ``bid_px``/``ask_px``: the quote prevailing at
        each trade (for ``classify``); without them the quote of ``update_quote`` is used, and
        with them the last row's quote becomes the prevailing one. ``ts`` may be None without
        a time window. With ``rolling=True`` return ``(signed, imbalance)``, ``imbalance[i]``
        the window's imbalance after trade i. On a bad trade at index i, trades 0..i-1 are
        applied and the error names field and index i; rows 0..i-1 of ``out`` /
        ``rolling_out`` hold their values and rows from i on are unspecified (the kernels work
        in blocks of 1,024 trades and write a block before judging it).
        """
        cdef const float64_t[::1] px = column(price, np.float64, "price")
        cdef intp_t n = px.shape[0]
        cdef const float64_t[::1] sz = column(size, np.float64, "size", n)
        cdef const int8_t[::1] sd
        cdef const int64_t[::1] t
        cdef const float64_t[::1] bq
        cdef const float64_t[::1] aq
        cdef bint has_side = side is not None, has_ts = ts is not None
        cdef bint has_q = bid_px is not None or ask_px is not None
        cdef intp_t n_run
        bad_q = -1
        bad_field = None
        if has_side:
            side_arr = np.asarray(side)
            if side_arr.dtype != np.int8:
                # values that int8 cannot hold exactly become 2, which the kernel rejects at
                # their index (so trades before it are applied, as for any bad field)
                with np.errstate(invalid="ignore"):
                    ok = (side_arr >= -1) & (side_arr <= 1) & (side_arr == np.round(side_arr))
                side_arr = np.where(ok, side_arr, 2).astype(np.int8)
            sd = column(side_arr, np.int8, "side", n)
        if has_ts:
            t = column(ts, np.int64, "ts", n)
        elif self.st.window_time > 0:
            raise OFIError("a time window needs ts", field="ts")
        if has_q:
            if bid_px is None or ask_px is None:
                raise OFIError("give both bid_px and ask_px",
                               field="bid_px" if bid_px is None else "ask_px")
            bq = column(bid_px, np.float64, "bid_px", n)
            aq = column(ask_px, np.float64, "ask_px", n)
            # an infinite quote is an error at its row: the rows before it are applied
            bad_q, bad_field = min([(j, f) for j, f in ((_first_infinite(bq), "bid_px"),
                                                         (_first_infinite(aq), "ask_px"))
                                    if j >= 0], default=(-1, None))
        sv_arr = output(out, n)
        cdef float64_t[::1] sv = sv_arr
        cdef float64_t[::1] v
        v_arr = None
        if rolling:
            v_arr = output(rolling_out, n, "rolling_out")
            v = v_arr
        cdef bint want_v = rolling
        cdef intp_t i = 0
        cdef int status = STATUS_OK
        cdef int64_t tsi = self.st.last_ts
        cdef int si = 0
        cdef float64_t b, a
        cdef TradeFlowState loc
        n_run = n if bad_q < 0 else bad_q
        cdef int kind
        cdef intp_t lo, hi
        cdef int8_t zero_side = 0
        cdef TFBlock blk
        guard_enter(&self.guard)
        try:
            b = self.st.bid_px
            a = self.st.ask_px
            # the loop runs on a local copy of the state (stores to the output arrays could alias
            # the object's fields and force them to memory every trade); copied back after it
            loc = self.st
            # the batch kernel of this window kind (0: none, the per-trade step for everything)
            kind = 0
            if loc.cls.method == METHOD_NONE and loc.window_volume == 0.0:
                kind = 3 if loc.window_time else (2 if loc.window else 1)
            if n_run > 0:
                blk.ts = &t[0] if has_ts else &tsi
                blk.ts_step = 1 if has_ts else 0
                blk.px = &px[0]
                blk.sz = &sz[0]
                blk.sd = &sd[0] if has_side else &zero_side
                blk.sd_step = 1 if has_side else 0
                blk.sv = &sv[0]
                blk.v = &v[0] if want_v else NULL
            with nogil:
                lo = 0
                while lo < n_run:
                    hi = lo + TF_BLOCK if n_run - lo > TF_BLOCK else n_run
                    if kind == 1 and not _tf_plain(&loc, &blk, lo, hi):
                        lo = hi
                        continue
                    if (kind >= 2 and not _tf_validate(&blk, lo, hi, loc.has_last, loc.last_ts)
                            and (kind != 3 or loc.ring.size + (hi - lo) <= loc.ring.capacity)):
                        if kind == 2:
                            _tf_count(&loc, &blk, lo, hi)
                        else:
                            _tf_time(&loc, &blk, lo, hi)
                        lo = hi
                        continue
                    # the per-trade step: a block with a bad row (it stops there and names it),
                    # a classifier or a volume window, a time window that may need to grow
                    for i in range(lo, hi):
                        if has_ts:
                            tsi = t[i]
                        if has_side:
                            si = sd[i]
                        if has_q:
                            b = bq[i]
                            a = aq[i]
                        status = _tradeflow_step(&loc, tsi, px[i], sz[i], si, b, a, &sv[i])
                        if status != STATUS_OK:
                            break
                        if want_v:
                            v[i] = _imbalance(&loc)
                    if status != STATUS_OK:
                        break
                    lo = hi
                if has_q and status == STATUS_OK and n_run > 0:
                    loc.bid_px = bq[n_run - 1]
                    loc.ask_px = aq[n_run - 1]
                self.st = loc
        finally:
            guard_exit(&self.guard)
        if status != STATUS_OK:
            raise_tradeflow(status, &self.st, i)
        if bad_q >= 0:
            raise_status(STATUS_NON_FINITE, bad_field, bad_q,
                         "an infinite quote; NaN marks a missing side")
        return (sv_arr, v_arr) if rolling else sv_arr

    @property
    def buy_volume(self):
        """B: buyer-initiated volume in the window."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return _vol(&self.st, 2)

    @property
    def sell_volume(self):
        """S: seller-initiated volume in the window."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return _vol(&self.st, 0)

    @property
    def unknown_volume(self):
        """U: volume of trades of unknown side in the window (in neither B nor S)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return _vol(&self.st, 1)

    @property
    def net(self):
        """B - S (CKS 2014 eq. 13's TI)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return (self.st.vol[2] - self.st.vol[0]) + (self.st.comp[2] - self.st.comp[0])

    @property
    def imbalance(self):
        """(B - S) / (B + S) in [-1, 1]; 0 when B + S = 0 (see ``empty``)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return _imbalance(&self.st)

    @property
    def empty(self):
        """True when B + S = 0 (the imbalance is then 0 by convention)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return not (_vol(&self.st, 2) + _vol(&self.st, 0) > 0.0)

    @property
    def n_buy(self):
        """Buyer-initiated trades in the window."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n[2]

    @property
    def n_sell(self):
        """Seller-initiated trades in the window."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n[0]

    @property
    def n_unknown(self):
        """Trades of unknown side in the window."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n[1]

    @property
    def count(self):
        """Trades in the window (all trades since reset without a window)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n[0] + self.st.n[1] + self.st.n[2]

    @property
    def n_events(self):
        """Trades accepted since the last reset."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n_events

    @property
    def n_classified(self):
        """Side-0 trades whose side the classifier inferred (since reset)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n_classified

    @property
    def n_no_quote(self):
        """Side-0 trades a quote-based rule signed by the tick rule (no/locked/crossed quote)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.cls.n_no_quote

    @property
    def capacity(self):
        """Slots in the window's ring buffer (0 without a window)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.ring.capacity

    def reset(self):
        """Forget all trades and the quote."""
        if self.guard.busy:
            guard_wait(&self.guard)
        tradeflow_reset(&self.st)

    def __reduce__(self):
        cdef TradeRing* r = &self.st.ring
        cdef intp_t i, j
        if self.guard.busy:
            guard_wait(&self.guard)
        n = r.size
        ts = np.empty(n, dtype=np.int64)
        size = np.empty(n, dtype=np.float64)
        side = np.empty(n, dtype=np.int8)
        for i in range(n):
            j = (r.head + i) % r.capacity
            ts[i] = r.ts[j]
            size[i] = r.val[j]
            side[i] = r.tag[j]
        st = {"cls": classifier_getstate(&self.st.cls),
              "quote": (self.st.bid_px, self.st.ask_px),
              "vol": [self.st.vol[k] for k in range(3)],
              "comp": [self.st.comp[k] for k in range(3)],
              "n": [self.st.n[k] for k in range(3)],
              "counts": (self.st.n_events, self.st.n_classified),
              "last": (bool(self.st.has_last), self.st.last_ts),
              "ring": (ts, size, side)}
        return (TradeFlow, (self.window, self.window_time, self.classify,
                            r.capacity if r.capacity else None, bool(self.st.grow),
                            self.window_volume), st)

    def __setstate__(self, d):
        guard_enter(&self.guard)   # Python code runs in here: hold the lock throughout
        try:
            self._setstate(d)
        finally:
            guard_exit(&self.guard)

    def _setstate(self, d):
        cdef intp_t i, n
        classifier_setstate(&self.st.cls, d["cls"])
        self.st.bid_px, self.st.ask_px = d["quote"]
        for k in range(3):
            self.st.vol[k] = d["vol"][k]
            self.st.comp[k] = d["comp"][k]
            self.st.n[k] = d["n"][k]
        self.st.n_events, self.st.n_classified = d["counts"]
        self.st.has_last, self.st.last_ts = d["last"]
        ts, size, side = d["ring"]
        n = len(ts)
        if n > self.st.ring.capacity:
            if ring_grow(&self.st.ring, n) != STATUS_OK:
                raise MemoryError()
        self.st.ring.head = 0
        for i in range(n):
            self.st.ring.ts[i] = ts[i]
            self.st.ring.val[i] = size[i]
            self.st.ring.tag[i] = side[i]
        self.st.ring.size = n


def trade_flow(ts, price, size, side=None, *, window=None, window_time=None, classify=None,
               bid_px=None, ask_px=None, rolling=False, capacity=None, grow=False,
               window_volume=None):
    """Signed volume per trade (+size buy, -size sell, 0 unknown) from a fresh TradeFlow.

    With ``rolling=True`` return ``(signed, imbalance)``, the imbalance (B - S) / (B + S) of the
    window ending at each trade. Arguments as :class:`TradeFlow` and its ``update_many``.
    """
    return TradeFlow(window, window_time, classify, capacity, grow, window_volume).update_many(
        ts, price, size, side, bid_px=bid_px, ask_px=ask_px, rolling=rolling)


@cython.final
cdef class _EmptyTradeCall:
    """An empty cpdef method with TradeFlow.update's signature: the call-overhead floor."""

    cpdef float64_t update(self, int64_t ts, float64_t price, float64_t size,
                           int side=0) except? -1.0:
        return 0.0


# ---------------------------------------------------------------------------------------------
# Bulk volume classification (Easley, Lopez de Prado & O'Hara 2012)
# ---------------------------------------------------------------------------------------------
# BVCBars: a NamedTuple of ofi_fast._results (module-level, so it pickles)


cdef inline float64_t normal_cdf(float64_t x) noexcept nogil:
    """Standard normal CDF via libm's erfc (accurate in both tails)."""
    return 0.5 * erfc(-x * 0.7071067811865476)


cdef inline int64_t _floor_div(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef void bvc_kernel(const float64_t* dp, intp_t nb, intp_t window, float64_t fixed_sigma,
                     float64_t* sigma, float64_t* frac) noexcept nogil:
    """sigma_i = std (ddof 1) of the defined dP of bars i-window..i-1 (or fixed_sigma when it
    is > 0); frac_i = Z(dP_i / sigma_i), 0.5 where dP_i or sigma_i is undefined or sigma 0."""
    cdef intp_t i, j, lo, cnt
    cdef float64_t mean, ss, d, sg
    for i in range(nb):
        if fixed_sigma > 0.0:
            sg = fixed_sigma
        else:
            lo = i - window
            if lo < 0:
                lo = 0
            cnt = 0
            mean = 0.0
            for j in range(lo, i):
                if dp[j] == dp[j]:
                    cnt += 1
                    mean += dp[j]
            sg = NAN
            if cnt >= 2:
                mean /= cnt
                ss = 0.0
                for j in range(lo, i):
                    if dp[j] == dp[j]:
                        d = dp[j] - mean
                        ss += d * d
                sg = sqrt(ss / (cnt - 1))
        sigma[i] = sg
        if sg > 0.0 and dp[i] == dp[i]:
            frac[i] = normal_cdf(dp[i] / sg)
        else:
            frac[i] = 0.5


def bvc(ts, price, size, *, every, window=50, sigma=None, max_bars=50_000_000):
    """Bulk volume classification of Easley, Lopez de Prado & O'Hara (2012, RFS 25(5)).

    Trades are aggregated into clock bars of ``every`` ts units (bar k holds
    ``k*every <= ts < (k+1)*every``, empty bars included, as :func:`ofi_fast.bars`). For bar i
    with volume V_i and price change dP_i = P_i - P_{i-1} (last prices; an empty bar repeats
    the previous last price, so its dP is 0)::

        V^B_i = V_i * Z(dP_i / sigma),   V^S_i = V_i - V^B_i

    Z the standard normal CDF (libm erfc, no SciPy). ``sigma=None`` (default): the standard
    deviation (ddof 1) of the dP of the ``window`` bars before bar i, no look-ahead; a float:
    that fixed sigma (the paper's full-sample sigma is this with a look-ahead value). Where sigma
    is undefined (fewer than 2 past dP, or 0) or dP is (first bar), the fraction is Z(0) = 0.5.
    Returns :class:`BVCBars`.
    """
    cdef const int64_t[::1] t = column(ts, np.int64, "ts")
    cdef intp_t n = t.shape[0], i, bad
    cdef const float64_t[::1] px = column(price, np.float64, "price", n)
    cdef const float64_t[::1] sz = column(size, np.float64, "size", n)
    cdef int64_t ev = int(every)
    cdef intp_t w = int(window)
    cdef float64_t fixed = 0.0 if sigma is None else float(sigma)
    if ev <= 0:
        raise OFIError(f"every must be > 0 ts units, got {every!r}", field="every")
    if w < 2 and sigma is None:
        raise OFIError(f"window must be >= 2 bars, got {window!r}", field="window")
    if sigma is not None and not fixed > 0.0:
        raise OFIError(f"sigma must be > 0, got {sigma!r}", field="sigma")
    bad = _first_backwards(t)
    if bad >= 0:
        raise_status(STATUS_TIME_BACKWARDS, "ts", bad)
    bad = _first_nonfinite(px)
    if bad >= 0:
        raise_status(STATUS_NON_FINITE, "price", bad)
    bad = _first_nonfinite(sz)
    if bad >= 0:
        raise_status(STATUS_NON_FINITE, "size", bad)
    if n and np.min(sz) < 0:
        raise_status(STATUS_NEGATIVE, "size", int(np.flatnonzero(np.asarray(sz) < 0)[0]))
    if n == 0:
        e = np.empty(0)
        return BVCBars(np.empty(0, dtype=np.int64), e, e, e, e, e, e, e)
    cdef int64_t k0 = _floor_div(t[0], ev), k1 = _floor_div(t[n - 1], ev)
    nb_ = k1 - k0 + 1
    if nb_ > max_bars:
        raise OFIError(f"{nb_} bars needed (max_bars={max_bars}); check the units of ts and "
                       "every", field="every")
    cdef intp_t nb = nb_, k
    start = np.arange(k0, k1 + 1, dtype=np.int64) * ev
    vol_a = np.zeros(nb)
    last_a = np.full(nb, np.nan)
    dp_a = np.full(nb, np.nan)
    sig_a = np.empty(nb)
    frac_a = np.empty(nb)
    cdef float64_t[::1] vol = vol_a, last = last_a, dp = dp_a, sig = sig_a, frac = frac_a
    with nogil:
        for i in range(n):
            k = <intp_t> (_floor_div(t[i], ev) - k0)
            vol[k] += sz[i]
            last[k] = px[i]
        for k in range(1, nb):
            if last[k] != last[k]:
                last[k] = last[k - 1]
            dp[k] = last[k] - last[k - 1]
        bvc_kernel(&dp[0], nb, w, fixed, &sig[0], &frac[0])
    buy = vol_a * frac_a
    return BVCBars(start, vol_a, last_a, dp_a, sig_a, frac_a, buy, vol_a - buy)


# ---------------------------------------------------------------------------------------------
# VPIN (Easley, Lopez de Prado & O'Hara 2012)
# ---------------------------------------------------------------------------------------------
# VPINBuckets: a NamedTuple of ofi_fast._results (module-level, so it pickles)


#: Most buckets one trade may close (2**53: beyond it the count is not exact in float64). A trade
#: that would close more is an error (field "size"), raised before the state changes.
cdef float64_t VPIN_MAX_CLOSES = 9007199254740992.0
MAX_CLOSES_PER_TRADE = 2**53
#: Default bound on the buckets one ``update_many`` call may return (the rows it allocates).
DEFAULT_MAX_BUCKETS = 50_000_000


cdef int vpin_init(VPINState* st, float64_t bucket_volume, intp_t n_buckets) noexcept nogil:
    st.bucket_volume = bucket_volume
    st.n_buckets = n_buckets
    st.imb = NULL
    if n_buckets < 1 or <size_t> n_buckets > (SIZE_MAX // 2) // sizeof(float64_t):
        return STATUS_NO_MEMORY
    st.imb = <float64_t*> malloc(n_buckets * sizeof(float64_t))
    if st.imb == NULL:
        return STATUS_NO_MEMORY
    vpin_reset(st)
    return STATUS_OK


cdef void vpin_free(VPINState* st) noexcept nogil:
    free(st.imb)
    st.imb = NULL


cdef void vpin_reset(VPINState* st) noexcept nogil:
    st.fill = 0.0
    st.buy = 0.0
    st.head = 0
    st.n_closed = 0
    st.sum = 0.0
    st.comp = 0.0
    st.has_last = False
    st.last_ts = 0


cdef float64_t vpin_value(const VPINState* st) noexcept nogil:
    if st.n_closed < st.n_buckets:
        return NAN
    return (st.sum + st.comp) / (st.n_buckets * st.bucket_volume)


cdef inline void _vpin_close(VPINState* st, float64_t x) noexcept nogil:
    # Close a bucket whose |V_S - V_B| is x (the bookkeeping of the loop in vpin_update).
    if st.n_closed >= st.n_buckets:
        neumaier_add(&st.sum, &st.comp, -st.imb[st.head])
    neumaier_add(&st.sum, &st.comp, x)
    st.imb[st.head] = x
    st.head += 1
    if st.head == st.n_buckets:
        st.head = 0
    st.n_closed += 1


cdef float64_t _vpin_skip(VPINState* st, float64_t size, float64_t f) noexcept nogil:
    # A trade closing more than n_buckets + 4 buckets, nothing to write out: close the open
    # bucket, then the run of full buckets in closed form (all alike, |V - 2 V f|; only the
    # last n_buckets of them stay in the ring, so the work is O(n_buckets) however large the
    # trade), leaving the last two or three buckets' worth to the loop. Returns the size left.
    cdef float64_t V = st.bucket_volume, room = V - st.fill, b, x, m
    cdef intp_t k, j, head0
    b = st.buy + room * f
    x = V - 2.0 * b
    _vpin_close(st, -x if x < 0.0 else x)
    st.fill = 0.0
    st.buy = 0.0
    size -= room
    m = floor(size / V) - 2.0
    if m < 1.0:
        return size
    b = 0.0 + V * f
    x = V - 2.0 * b
    if x < 0.0:
        x = -x
    head0 = st.head
    k = <intp_t> m if m < <float64_t> st.n_buckets else st.n_buckets
    for j in range(k):
        _vpin_close(st, x)
    st.n_closed += <intp_t> m - k
    st.head = <intp_t> ((head0 + <int64_t> m) % st.n_buckets)
    if k == st.n_buckets:       # every slot is x: re-sum exactly
        st.sum = 0.0
        st.comp = 0.0
        for j in range(st.n_buckets):
            neumaier_add(&st.sum, &st.comp, x)
    size -= m * V
    return size if size > 0.0 else 0.0


cdef int vpin_update(VPINState* st, int64_t ts, float64_t size, float64_t buy_fraction,
                     VPINOut* out) noexcept nogil:
    cdef float64_t room, take, b, x, closes
    if st.has_last and ts < st.last_ts:
        return STATUS_TIME_BACKWARDS
    if not (size - size == 0.0):
        return STATUS_NON_FINITE | (1 << 4)
    if size < 0.0:
        return STATUS_NEGATIVE | (1 << 4)
    if not (buy_fraction >= 0.0 and buy_fraction <= 1.0):
        return STATUS_BAD_VALUE | (2 << 4)
    closes = (st.fill + size) / st.bucket_volume
    if not (closes <= VPIN_MAX_CLOSES):
        return STATUS_BAD_VALUE | (1 << 4)
    if out != NULL and out.n + <intp_t> closes > out.capacity:
        return STATUS_CAPACITY
    st.has_last = True
    st.last_ts = ts
    if out == NULL and closes > <float64_t> st.n_buckets + 4.0:
        size = _vpin_skip(st, size, buy_fraction)
    while size > 0.0:
        room = st.bucket_volume - st.fill
        if size < room:
            st.fill += size
            st.buy += size * buy_fraction
            break
        # this piece completes the bucket (same buy share as the whole trade)
        b = st.buy + room * buy_fraction
        size -= room
        x = st.bucket_volume - 2.0 * b          # |V_S - V_B| with V_S = V - V_B
        if x < 0.0:
            x = -x
        if st.n_closed >= st.n_buckets:
            neumaier_add(&st.sum, &st.comp, -st.imb[st.head])
        neumaier_add(&st.sum, &st.comp, x)
        st.imb[st.head] = x
        st.head += 1
        if st.head == st.n_buckets:
            st.head = 0
        st.n_closed += 1
        st.fill = 0.0
        st.buy = 0.0
        if out != NULL:
            out.ts[out.n] = ts
            out.vpin[out.n] = vpin_value(st)
            out.buy[out.n] = b
            out.sell[out.n] = st.bucket_volume - b
            out.n += 1
    return STATUS_OK


cdef int raise_vpin(int status, VPINState* st, intp_t index) except -1:
    field = ("ts", "size", "side")[status >> 4]
    detail = "buy fraction must be in [0, 1]" if field == "side" else ""
    if field == "size" and (status & 15) == STATUS_BAD_VALUE:
        detail = (f"the trade would close more than 2**53 buckets of {st.bucket_volume!r}: "
                  "check the units of size and bucket_volume")
    raise_status(status & 15, field, index, detail)
    return 0


# --- the batch kernel of VPIN.update_many -------------------------------------------------------
# Most trades close no bucket (V is many trades' volume): for them vpin_update does
# fill += size; buy += size * f after its checks. ofi_vpin_fill runs those trades in one loop on
# local fill / buy with no data-dependent branch but the loop's single exit test (the next trade
# closes a bucket, or is the last one); that trade goes through vpin_update (out of line, about
# once per V / mean size trades), so every float operation is vpin_update's, in its order, and
# batch == streaming bit for bit. The checks cost next to nothing in the loop: a
# non-finite size or buy share (a side outside {-1, 0, 1} reads a NaN share) leaves fill or buy
# non-finite; sizes below zero and shares outside [0, 1] are caught by a running min / max; time
# by an integer mask. When they say a row was bad the kernel stores nothing and the per-trade
# step redoes the rows from the kernel's start: it applies the good ones and names the first
# bad one, as before.
cdef enum:
    VPIN_HALF = 0       # no side, no fraction: every trade's buy share is 0.5
    VPIN_SIDE = 1       # buy share 0.5 * (side + 1) of an int8 side in {-1, 0, 1}
    VPIN_FRAC = 2       # buy share given per trade, in [0, 1]

cdef extern from *:
    """
    /* The loop of VPIN.update_many's kernel (see _trades.pyx), in C so that gcc keeps fill and
     * buy in two scalar registers (at -O2 it packs the two sums of the Cython version into one
     * vector add plus shuffles, 29 instructions a trade instead of 25).
     * mode 0: buy share 0.5; 1: share[(uint8) side]; 2: the fraction fr[i]. */
    static inline long ofi_vpin_fill(int mode, double V, double *pfill, double *pbuy,
                                     int *phas, int64_t *plast, const int64_t *ts,
                                     const double *sz, const int8_t *sd, const double *fr,
                                     const double *share, long lo, long hi, int *bad)
    {
        const double tiny = 5e-324;  /* q >= max(room, tiny): q > 0 and not q < room */
        double fill = *pfill, buy = *pbuy, q, f = 0.5, room, qmin = 0.0, fmin = 0.0, fmax = 0.0;
        int64_t prev = *phas ? *plast : INT64_MIN, t;
        long i = lo, left = hi - 1 - lo, close;
        int back = 0;
        for (;;) {
            t = ts[i];
            q = sz[i];
            if (mode == 1) f = share[(uint8_t) sd[i]];
            else if (mode == 2) f = fr[i];
            room = V - fill;
            close = q >= (room > tiny ? room : tiny);
            if (((left - 1) | -close) < 0)      /* the last trade, or one that closes */
                break;
            back |= t < prev;
            qmin = qmin < q ? qmin : q;
            if (mode == 2) {
                fmin = fmin < f ? fmin : f;
                fmax = fmax > f ? fmax : f;
            }
            fill += q;
            buy += q * f;
            prev = t;
            i++;
            left--;
        }
        /* fill and buy finite <=> every size and share was (fill + q stays below about V) */
        *bad = back | !(fill - fill == 0.0) | !(buy - buy == 0.0) | (qmin < 0.0)
               | (fmin < 0.0) | (fmax > 1.0);
        if (!*bad && i > lo) {
            *pfill = fill;
            *pbuy = buy;
            *phas = 1;
            *plast = ts[i - 1];
        }
        return i;
    }
    static long ofi_vpin_fill_half(double V, double *pfill, double *pbuy, int *phas,
                                   int64_t *plast, const int64_t *ts, const double *sz,
                                   long lo, long hi, int *bad)
    {
        return ofi_vpin_fill(0, V, pfill, pbuy, phas, plast, ts, sz, 0, 0, 0, lo, hi, bad);
    }
    static long ofi_vpin_fill_side(double V, double *pfill, double *pbuy, int *phas,
                                   int64_t *plast, const int64_t *ts, const double *sz,
                                   const int8_t *sd, const double *share, long lo, long hi,
                                   int *bad)
    {
        return ofi_vpin_fill(1, V, pfill, pbuy, phas, plast, ts, sz, sd, 0, share, lo, hi,
                             bad);
    }
    static long ofi_vpin_fill_frac(double V, double *pfill, double *pbuy, int *phas,
                                   int64_t *plast, const int64_t *ts, const double *sz,
                                   const double *fr, long lo, long hi, int *bad)
    {
        return ofi_vpin_fill(2, V, pfill, pbuy, phas, plast, ts, sz, 0, fr, 0, lo, hi, bad);
    }
    """
    # Apply trades lo.. (hi > lo) up to the first that closes a bucket or the last (returned,
    # not applied); *bad = 1: a row failed a check, nothing was stored.
    intp_t ofi_vpin_fill_half(float64_t V, float64_t* fill, float64_t* buy, bint* has_last,
                              int64_t* last_ts, const int64_t* ts, const float64_t* sz,
                              intp_t lo, intp_t hi, int* bad) noexcept nogil
    intp_t ofi_vpin_fill_side(float64_t V, float64_t* fill, float64_t* buy, bint* has_last,
                              int64_t* last_ts, const int64_t* ts, const float64_t* sz,
                              const int8_t* sd, const float64_t* share, intp_t lo, intp_t hi,
                              int* bad) noexcept nogil
    intp_t ofi_vpin_fill_frac(float64_t V, float64_t* fill, float64_t* buy, bint* has_last,
                              int64_t* last_ts, const int64_t* ts, const float64_t* sz,
                              const float64_t* fr, intp_t lo, intp_t hi, int* bad) noexcept nogil

# buy share by the side's byte: 0.5 * (side + 1) for -1, 0, 1, NaN for any other side
cdef float64_t _SIDE_SHARE[256]
for _k in range(256):
    _SIDE_SHARE[_k] = NAN
_SIDE_SHARE[255] = 0.0
_SIDE_SHARE[0] = 0.5
_SIDE_SHARE[1] = 1.0


cdef inline int _vpin_row(int mode, VPINState* st, const int64_t* ts, const float64_t* sz,
                          const int8_t* sd, const float64_t* fr, intp_t i,
                          VPINOut* out) noexcept nogil:
    # the per-trade step of update_many: the side check, then vpin_update
    cdef int si
    cdef float64_t f = 0.5
    if mode == VPIN_SIDE:
        si = sd[i]
        if si < -1 or si > 1:
            return STATUS_BAD_VALUE | (2 << 4)
        f = 0.5 * (si + 1)
    elif mode == VPIN_FRAC:
        f = fr[i]
    return vpin_update(st, ts[i], sz[i], f, out)


cdef int _vpin_many(int mode, VPINState* st, const int64_t* ts, const float64_t* sz,
                    const int8_t* sd, const float64_t* fr, intp_t lo, intp_t n, VPINOut* out,
                    intp_t* at) noexcept nogil:
    """Trades lo..n-1 of update_many: the kernel up to each bucket close, the closing trade by
    the per-trade step. Returns a status; *at = the index it refers to (n when all applied)."""
    cdef intp_t i = lo, j
    cdef int bad = 0, status
    while i < n:
        if mode == VPIN_SIDE:
            j = ofi_vpin_fill_side(st.bucket_volume, &st.fill, &st.buy, &st.has_last,
                                   &st.last_ts, ts, sz, sd, _SIDE_SHARE, i, n, &bad)
        elif mode == VPIN_FRAC:
            j = ofi_vpin_fill_frac(st.bucket_volume, &st.fill, &st.buy, &st.has_last,
                                   &st.last_ts, ts, sz, fr, i, n, &bad)
        else:
            j = ofi_vpin_fill_half(st.bucket_volume, &st.fill, &st.buy, &st.has_last,
                                   &st.last_ts, ts, sz, i, n, &bad)
        if bad:
            # a bad row in [i, j): the per-trade step applies the rows before it and names it
            while i < n:
                status = _vpin_row(mode, st, ts, sz, sd, fr, i, out)
                if status != STATUS_OK:
                    at[0] = i
                    return status
                i += 1
            break
        i = j                                       # closes a bucket, or is the last
        if i < n:
            status = _vpin_row(mode, st, ts, sz, sd, fr, i, out)
            if status != STATUS_OK:
                at[0] = i
                return status
            i += 1
    at[0] = n
    return STATUS_OK


@cython.final
cdef class VPIN:
    """Streaming VPIN of Easley, Lopez de Prado & O'Hara (2012, RFS 25(5)).

    ``VPIN(bucket_volume, n_buckets)``: trades fill equal-volume buckets of ``bucket_volume``
    in trade order; a trade that overflows the open bucket is split, the part that completes
    it stays there with the trade's buy share and the rest opens the next bucket(s) (a trade
    larger than V fills several). At each bucket close::

        VPIN = sum over the last n buckets of |V^S - V^B| / (n V)

    (NaN until n buckets are complete; the open bucket never enters it). The buy share of a
    trade is 1 for side +1, 0 for side -1, 0.5 for side 0 (unknown volume is split evenly so
    the volume clock stays exact), or an explicit ``buy_fraction`` (e.g. BVC's per bar: feed
    :func:`bvc` bars as trades). Volume in the ts units of the trades; no allocation per trade.
    """

    def __cinit__(self, bucket_volume, n_buckets):
        if isinstance(bucket_volume, (bool, np.bool_, str, bytes)):
            raise OFIError(f"bucket_volume must be a number, got {bucket_volume!r:.80}",
                           field="bucket_volume")
        cdef float64_t v = float(bucket_volume)
        if not (v > 0.0 and v - v == 0.0):
            raise OFIError(f"bucket_volume must be > 0 and finite, got {bucket_volume!r}",
                           field="bucket_volume")
        nb = integer(n_buckets, "n_buckets", 1, 2**62)
        checked_nbytes(nb, sizeof(float64_t), "n_buckets")
        guard_init(&self.guard)
        if vpin_init(&self.st, v, nb) != STATUS_OK:
            raise alloc_error("n_buckets", nb, 8 * nb)

    def __dealloc__(self):
        vpin_free(&self.st)
        guard_free(&self.guard)

    cdef int push(self, int64_t ts, float64_t size, float64_t buy_fraction) noexcept nogil:
        return vpin_update(&self.st, ts, size, buy_fraction, NULL)

    cpdef int64_t update(self, int64_t ts, float64_t size, int side=0) except -1:
        """Feed one trade (side +1 / -1 / 0); return the number of buckets it closed.

        Work is O(n_buckets) however many buckets the trade closes (the run of full buckets
        is filled in closed form); a trade closing more than 2**53 buckets is an OFIError.
        """
        if side < -1 or side > 1:
            raise_status(STATUS_BAD_VALUE, "side", 0, "side must be -1, 0 or +1")
        if self.guard.busy:
            guard_wait(&self.guard)
        cdef intp_t before = self.st.n_closed
        cdef int status = vpin_update(&self.st, ts, size, 0.5 * (side + 1), NULL)
        if status != STATUS_OK:
            raise_vpin(status, &self.st, 0)
        return self.st.n_closed - before

    def update_fraction(self, int64_t ts, float64_t size, float64_t buy_fraction):
        """Feed one trade (or bar) with an explicit buy share in [0, 1]; return buckets closed."""
        if self.guard.busy:
            guard_wait(&self.guard)
        cdef intp_t before = self.st.n_closed
        cdef int status = vpin_update(&self.st, ts, size, buy_fraction, NULL)
        if status != STATUS_OK:
            raise_vpin(status, &self.st, 0)
        return self.st.n_closed - before

    def update_many(self, ts, size, side=None, *, buy_fraction=None,
                    max_buckets=DEFAULT_MAX_BUCKETS):
        """Feed arrays of trades; return :class:`VPINBuckets` for the buckets closed.

        Give ``side`` (+1 / -1 / 0) or ``buy_fraction`` (in [0, 1]), not both (neither: all
        unknown, split evenly). On a bad trade at index i, trades 0..i-1 are applied and the
        error names field and index i. ``max_buckets`` bounds the rows returned (32 bytes
        each): trades whose volume would close more buckets raise OFIError (field
        ``bucket_volume``) before anything is allocated or applied.
        """
        mb = integer(max_buckets, "max_buckets", 0)
        cdef const float64_t[::1] sz = column(size, np.float64, "size")
        cdef intp_t n = sz.shape[0], i = 0, start = 0
        cdef const int64_t[::1] t = column(ts, np.int64, "ts", n)
        cdef const float64_t[::1] fr
        cdef const int8_t[::1] sd
        cdef bint use_frac = buy_fraction is not None, use_side = side is not None
        if use_side and use_frac:
            raise OFIError("give side or buy_fraction, not both", field="buy_fraction")
        if use_frac:
            fr = column(buy_fraction, np.float64, "buy_fraction", n)
        elif use_side:
            side_arr = np.asarray(side)
            if side_arr.dtype != np.int8:
                # values int8 cannot hold exactly become 2, rejected by the loop at their index
                with np.errstate(invalid="ignore"):
                    ok = (side_arr >= -1) & (side_arr <= 1) & (side_arr == np.round(side_arr))
                side_arr = np.where(ok, side_arr, 2).astype(np.int8)
            sd = column(side_arr, np.int8, "side", n)
        # output rows: a first guess from the total volume, doubled if a trade needs more
        total = float(np.sum(sz)) if n else 0.0
        if self.guard.busy:
            guard_wait(&self.guard)
        expect = (self.st.fill + total) / self.st.bucket_volume
        if total - total == 0.0 and total >= 0 and expect > mb:
            raise OFIError(f"these trades would close about {expect:.4g} buckets of volume "
                           f"{self.st.bucket_volume!r} (max_buckets={mb:,}): check the units of "
                           "size and bucket_volume", field="bucket_volume")
        cdef intp_t cap = 16 + (int(expect) if total - total == 0.0 and total >= 0 else n)
        res_ts = np.empty(cap, dtype=np.int64)
        res_v = np.empty(cap)
        res_b = np.empty(cap)
        res_s = np.empty(cap)
        cdef int64_t[::1] ots
        cdef float64_t[::1] ov, ob, osl
        cdef VPINOut out
        out.n = 0
        cdef int status = STATUS_OK
        cdef int mode = VPIN_FRAC if use_frac else (VPIN_SIDE if use_side else VPIN_HALF)
        cdef const int64_t* pts = &t[0] if n else NULL
        cdef const float64_t* psz = &sz[0] if n else NULL
        cdef const int8_t* psd = &sd[0] if n and use_side else NULL
        cdef const float64_t* pfr = &fr[0] if n and use_frac else NULL
        while True:
            ots = res_ts
            ov = res_v
            ob = res_b
            osl = res_s
            out.ts = &ots[0]
            out.vpin = &ov[0]
            out.buy = &ob[0]
            out.sell = &osl[0]
            out.capacity = res_ts.shape[0]
            guard_enter(&self.guard)
            try:
                with nogil:
                    status = _vpin_many(mode, &self.st, pts, psz, psd, pfr, start, n, &out, &i)
            finally:
                guard_exit(&self.guard)
            if status != STATUS_CAPACITY:
                break
            # one trade closes more buckets than there are rows left: grow and resume at it
            start = i
            status = STATUS_OK
            grow = max(2 * res_ts.shape[0],
                       out.n + int((self.st.fill + sz[i]) / self.st.bucket_volume) + 16)
            res_ts = np.resize(res_ts, grow)
            res_v = np.resize(res_v, grow)
            res_b = np.resize(res_b, grow)
            res_s = np.resize(res_s, grow)
        if status != STATUS_OK:
            if (status >> 4) == 2 and use_frac:
                raise_status(status & 15, "buy_fraction", i, "must be in [0, 1]")
            raise_vpin(status, &self.st, i)
        k = out.n
        return VPINBuckets(res_ts[:k].copy(), res_v[:k].copy(), res_b[:k].copy(),
                           res_s[:k].copy())

    @property
    def value(self):
        """VPIN at the last bucket close (NaN until n_buckets buckets are complete)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return vpin_value(&self.st)

    @property
    def bucket_volume(self):
        return self.st.bucket_volume

    @property
    def n_buckets(self):
        return self.st.n_buckets

    @property
    def n_closed(self):
        """Buckets completed since reset."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n_closed

    @property
    def open_volume(self):
        """Volume in the open (partial) bucket."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.fill

    @property
    def open_buy(self):
        """Buy volume in the open bucket."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.buy

    def reset(self):
        """Forget all trades and buckets."""
        if self.guard.busy:
            guard_wait(&self.guard)
        vpin_reset(&self.st)

    def __reduce__(self):
        cdef intp_t i
        if self.guard.busy:
            guard_wait(&self.guard)
        imb = [self.st.imb[i] for i in range(self.st.n_buckets)]
        return (VPIN, (self.st.bucket_volume, self.st.n_buckets),
                {"open": (self.st.fill, self.st.buy), "imb": imb, "head": self.st.head,
                 "n_closed": self.st.n_closed, "sum": (self.st.sum, self.st.comp),
                 "last": (bool(self.st.has_last), self.st.last_ts)})

    def __setstate__(self, d):
        guard_enter(&self.guard)   # Python code runs in here: hold the lock throughout
        try:
            self._setstate(d)
        finally:
            guard_exit(&self.guard)

    def _setstate(self, d):
        cdef intp_t i
        self.st.fill, self.st.buy = d["open"]
        for i in range(self.st.n_buckets):
            self.st.imb[i] = d["imb"][i]
        self.st.head = d["head"]
        self.st.n_closed = d["n_closed"]
        self.st.sum, self.st.comp = d["sum"]
        self.st.has_last, self.st.last_ts = d["last"]


def vpin(ts, size, side=None, *, buy_fraction=None, bucket_volume, n_buckets,
         max_buckets=DEFAULT_MAX_BUCKETS):
    """VPIN at each bucket close from a fresh :class:`VPIN` -> :class:`VPINBuckets`.

    ``max_buckets`` bounds the buckets (rows) returned; see :meth:`VPIN.update_many`.
    """
    return VPIN(bucket_volume, n_buckets).update_many(ts, size, side, buy_fraction=buy_fraction,
                                                      max_buckets=max_buckets)
