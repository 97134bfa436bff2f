# Best-level order flow imbalance (Cont, Kukanov & Stoikov 2014), C-level API.
#
#   from ofi_fast._ofi cimport OFI, OFIState, ofi_l1_event, ofi_update
#
# Status returned by ofi_update / OFI.push: (status & 15) is a Status of _types.pxd,
# (status >> 4) the field at fault: 0 ts, 1 bid_px, 2 bid_sz, 3 ask_px, 4 ask_sz.

from ofi_fast._guard cimport Guard
from ofi_fast._types cimport float64_t, int64_t, intp_t
from libc.math cimport INFINITY

from ofi_fast._types cimport STATUS_OK
from ofi_fast._ring cimport (
    Ring, RollingSumState, neumaier_add, rolling_push, window_check, window_reserve,
)
from ofi_fast._select cimport f64_choose, f64_keep

cdef struct OFIState:
    float64_t bid_px     # previous event's best bid price (-inf when the bid side was empty)
    float64_t bid_sz     # previous event's best bid size (>= 0)
    float64_t ask_px     # previous event's best ask price (+inf when the ask side was empty)
    float64_t ask_sz     # previous event's best ask size (>= 0)
    bint has_prev        # False before the first event (its e is 0 by convention)
    int64_t n_events     # events accepted since reset
    int64_t n_crossed    # events whose quotes were crossed (bid > ask, both present)
    int64_t n_locked     # events whose quotes were locked (bid == ask)
    float64_t total      # Neumaier sum of e over the whole stream ...
    float64_t total_comp # ... and its compensation term
    RollingSumState roll # e over the window (count, time, or none)


# e_n of CKS eq. (10) from the previous (0) and current (1) best quotes.
cdef inline float64_t ofi_l1_event(float64_t bid_px0, float64_t bid_sz0,
                                   float64_t ask_px0, float64_t ask_sz0,
                                   float64_t bid_px1, float64_t bid_sz1,
                                   float64_t ask_px1, float64_t ask_sz1) noexcept nogil:
    # Bid part and ask part are summed separately, then added: the same float operations as
    # the case table (bid same: q1 - q0; ask same: q0 - q1), so results are reproducible. The
    # indicators are masks (f64_keep), not branches: a price moves up or down at random.
    cdef float64_t bid = (f64_keep(bid_px1 >= bid_px0, bid_sz1)
                          - f64_keep(bid_px1 <= bid_px0, bid_sz0))
    cdef float64_t ask = (f64_keep(ask_px1 >= ask_px0, ask_sz0)
                          - f64_keep(ask_px1 <= ask_px0, ask_sz1))
    return bid + ask


# Validate one side's (price, size); empty (size 0 with NaN price) becomes `empty_px`.
# Returns 0, or a Status with the field offset (1 price, 2 size) in bits 4+.
cdef inline int ofi_check_side(float64_t* px, float64_t sz, float64_t empty_px,
                               int field) noexcept nogil:
    if not (sz - sz == 0.0):
        return 2 | ((field + 1) << 4)          # STATUS_NON_FINITE, size
    if sz < 0.0:
        return 3 | ((field + 1) << 4)          # STATUS_NEGATIVE, size
    if px[0] - px[0] == 0.0:
        return 0
    if sz == 0.0 and (px[0] != px[0] or px[0] == empty_px):
        px[0] = empty_px
        return 0
    return 2 | (field << 4)                    # STATUS_NON_FINITE, price


# Validate one row of best quotes (both sides): 0, or the Status of the first bad field.
# The common case (four finite values, sizes >= 0) is one test: x - x is 0 for finite x only.
cdef inline int ofi_check_row(float64_t* bid_px, float64_t bid_sz, float64_t* ask_px,
                              float64_t ask_sz) noexcept nogil:
    if (((bid_px[0] - bid_px[0]) + (ask_px[0] - ask_px[0]) + (bid_sz - bid_sz)
            + (ask_sz - ask_sz) == 0.0) & (bid_sz >= 0.0) & (ask_sz >= 0.0)):
        return 0
    cdef int status = ofi_check_side(bid_px, bid_sz, -INFINITY, 1)
    if status:
        return status
    return ofi_check_side(ask_px, ask_sz, INFINITY, 3)


cdef int ofi_init(OFIState* st, int64_t window, int64_t window_time, intp_t capacity,
                  bint grow) noexcept nogil
cdef void ofi_free(OFIState* st) noexcept nogil
cdef void ofi_reset(OFIState* st) noexcept nogil
# One event: validates, then updates the state and writes e_n to *e. On failure the state
# is unchanged and the return value says which status and field. Inline: it is the hot path.
cdef inline int ofi_update(OFIState* st, int64_t ts, float64_t bid_px, float64_t bid_sz,
                    float64_t ask_px, float64_t ask_sz, float64_t* e) noexcept nogil:
    cdef int status = ofi_check_row(&bid_px, bid_sz, &ask_px, ask_sz)
    if status:
        return status
    cdef float64_t x = 0.0
    if st.has_prev:
        x = ofi_l1_event(st.bid_px, st.bid_sz, st.ask_px, st.ask_sz,
                         bid_px, bid_sz, ask_px, ask_sz)
    status = rolling_push(&st.roll, ts, x)   # checks time order and capacity first
    if status:
        return status                          # field 0: ts
    neumaier_add(&st.total, &st.total_comp, x)
    if bid_px > ask_px:
        st.n_crossed += 1
    elif bid_px == ask_px:
        st.n_locked += 1
    st.bid_px = bid_px
    st.bid_sz = bid_sz
    st.ask_px = ask_px
    st.ask_sz = ask_sz
    st.has_prev = True
    st.n_events += 1
    e[0] = x
    return STATUS_OK


cdef class OFI:
    cdef OFIState st
    cdef Guard guard            # serialises calls from several threads (see _guard.pxd)
    cdef readonly object window
    cdef readonly object window_time
    # C-level update for cimporting code: see the status layout above.
    cdef int push(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                  float64_t ask_px, float64_t ask_sz, float64_t* e) noexcept nogil
    cdef float64_t value_c(self) noexcept nogil
    cpdef float64_t update(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                           float64_t ask_px, float64_t ask_sz) except? -1.0


cdef class _EmptyCall:
    cpdef float64_t update(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                           float64_t ask_px, float64_t ask_sz) except? -1.0


# ---------------------------------------------------------------------------------------------
# Multi-level OFI (Xu, Gould & Howison 2018), depth-normalised and integrated OFI (Cont,
# Cucuringu & Zhang 2023). C-level API:
#
#   from ofi_fast._ofi cimport MultiLevelOFI, MLOFIState, mlofi_check, mlofi_commit
#
# One event = the top-L state (bid_px[L], bid_sz[L], ask_px[L], ask_sz[L]); levels by rank.
# mlofi_check validates into st.cur (state otherwise unchanged); mlofi_commit computes e_m for
# every level from st.prev -> st.cur and pushes them into the window. Code that builds st.cur
# itself (BookOFI) calls mlofi_commit directly. Status layout: (status & 15) a Status,
# (status >> 4) & 15 the field (0 ts, 1 bid_px, 2 bid_sz, 3 ask_px, 4 ask_sz), status >> 8 the
# level (0 = best).
# ---------------------------------------------------------------------------------------------

cdef struct MLOFIState:
    intp_t levels         # L >= 1
    intp_t width          # L + 1 values per event: e_1..e_L, then the event's depth d_n
    float64_t* prev       # 4L: previous state bid_px[L], bid_sz[L], ask_px[L], ask_sz[L]
                          #     (absent bid level -inf / ask +inf, size 0)
    float64_t* cur        # 4L: the event being applied (filled by mlofi_check or the caller)
    float64_t* e          # width: the last event's e_1..e_L and d_n = sum_m (qb_m + qa_m)
    float64_t* sum        # width: Neumaier sums over the window (whole stream if no window)
    float64_t* comp       # width: their compensation terms
    float64_t* total      # width: Neumaier sums over the whole stream since reset
    float64_t* total_comp # width: their compensation terms
    Ring ring             # the events in the window: ts and a row of `width` values each
                          # (_ring.pxd); capacity = window for a count window, 1 (unused)
                          # without a window; size = events in the window (0 without one)
    int64_t window        # count window (events); 0 = none
    int64_t window_time   # time window, ts units, (t - window_time, t]; 0 = none
    bint grow             # time window: double the ring instead of failing when it is full
    bint has_prev         # a state has been seen since reset (else e = 0)
    bint has_last         # a timestamp has been pushed since reset
    int64_t last_ts       # last timestamp pushed
    int64_t n_events      # events accepted since reset
    float64_t* weights    # L: integrated-OFI weights, ||w||_1 = 1, sum(w) > 0
    bint has_weights      # weights have been set (fit or given)


cdef int mlofi_init(MLOFIState* st, intp_t levels, int64_t window, int64_t window_time,
                    intp_t capacity, bint grow) noexcept nogil
cdef void mlofi_free(MLOFIState* st) noexcept nogil
cdef void mlofi_reset(MLOFIState* st) noexcept nogil
# Validate one event's top-L arrays (each with `stride` between levels) into st.cur.
cdef int mlofi_check(MLOFIState* st, const float64_t* bid_px, const float64_t* bid_sz,
                     const float64_t* ask_px, const float64_t* ask_sz,
                     intp_t stride) noexcept nogil
# Neumaier sums of n values at once: s[j] + c[j] accumulates x[j] (-x[j] with neg) by the
# TwoSum of neumaier_add (_ring.pxd), the same operations per value, so every sum is equal to
# n neumaier_add calls bit for bit. Two values per step with gcc/clang vector extensions
# (SSE2 on x86-64, NEON on arm64; other compilers or -DOFI_FAST_SCALAR: one at a time); no
# branch but the loop's own, whose trip count is n. s, c and x must not overlap.
# ofi_pair_sum(a, b, n): the depth sum_j (a[j] + b[j]) in mlofi_commit's order, likewise;
# ofi_sums_add_depth(s, c, x, a, b, n): x[n] = that depth, then the n + 1 sums of x, in one loop.
# ofi_zero(x, n): x[0 .. n - 1] = +0.0 without a memset call.
cdef extern from *:
    """
    #include <string.h>
    #if (defined(__GNUC__) || defined(__clang__)) && !defined(OFI_FAST_SCALAR)
    #define OFI_SUMS_VECTOR 1
    #define OFI_SUMS_INLINE static inline __attribute__((always_inline))
    #else
    #define OFI_SUMS_VECTOR 0
    #define OFI_SUMS_INLINE static inline
    #endif
    #if OFI_SUMS_VECTOR
    typedef double ofi_v2d __attribute__((vector_size(16)));
    /* the TwoSum step of the two sums s[0], s[1] (compensations c[0], c[1]) taking X */
    OFI_SUMS_INLINE void ofi_sums_step2(double *s, double *c, ofi_v2d X)
    {
        ofi_v2d S, C, T, Z;
        memcpy(&S, s, sizeof S); memcpy(&C, c, sizeof C);
        T = S + X; Z = T - S; C += (S - (T - Z)) + (X - Z);
        memcpy(s, &T, sizeof T); memcpy(c, &C, sizeof C);
    }
    /* d + (a[0] + b[0]) + (a[1] + b[1]), the two adds in that order */
    OFI_SUMS_INLINE double ofi_pair_step2(double d, const double *a, const double *b)
    {
        ofi_v2d A, B, P;
        memcpy(&A, a, sizeof A); memcpy(&B, b, sizeof B);
        P = A + B;
        d += P[0];
        d += P[1];
        return d;
    }
    #endif
    /* the same step for one sum */
    OFI_SUMS_INLINE void ofi_sums_step1(double *s, double *c, double X)
    {
        double t = *s + X, z = t - *s;
        *c += (*s - (t - z)) + (X - z);
        *s = t;
    }
    OFI_SUMS_INLINE void ofi_sums_add(double *s, double *c, const double *x, Py_ssize_t n,
                                      const int neg)
    {
        Py_ssize_t j = 0;
    #if OFI_SUMS_VECTOR
        for (; j + 1 < n; j += 2) {
            ofi_v2d X;
            memcpy(&X, x + j, sizeof X);
            if (neg) X = -X;
            ofi_sums_step2(s + j, c + j, X);
        }
    #endif
        for (; j < n; j++)
            ofi_sums_step1(s + j, c + j, neg ? -x[j] : x[j]);
    }
    /* d = 0.0, then d += a[j] + b[j] for j = 0 .. n - 1 (MultiLevelOFI's depth: a, b the bid
     * and ask sizes), bit for bit: the pair sums two at a time, the chain of n adds in order. */
    OFI_SUMS_INLINE double ofi_pair_sum(const double *a, const double *b, Py_ssize_t n)
    {
        double d = 0.0;
        Py_ssize_t j = 0;
    #if OFI_SUMS_VECTOR
        for (; j + 1 < n; j += 2)
            d = ofi_pair_step2(d, a + j, b + j);
    #endif
        for (; j < n; j++)
            d += a[j] + b[j];
        return d;
    }
    /* x[n] = ofi_pair_sum(a, b, n), then ofi_sums_add(s, c, x, n + 1, 0), bit for bit (each
     * sum and the depth take the same operations in the same order): the depth's pairs in
     * the sums' loop, one loop instead of two. a and b must not overlap x. */
    OFI_SUMS_INLINE void ofi_sums_add_depth(double *s, double *c, double *x, const double *a,
                                            const double *b, Py_ssize_t n)
    {
        double d = 0.0;
        Py_ssize_t j = 0;
    #if OFI_SUMS_VECTOR
        for (; j + 1 < n; j += 2) {
            ofi_v2d X;
            d = ofi_pair_step2(d, a + j, b + j);
            memcpy(&X, x + j, sizeof X);
            ofi_sums_step2(s + j, c + j, X);
        }
    #endif
        for (; j < n; j++) {
            d += a[j] + b[j];
            ofi_sums_step1(s + j, c + j, x[j]);
        }
        x[n] = d;
        ofi_sums_step1(s + n, c + n, d);
    }
    /* x[0 .. n - 1] = +0.0 by stores inline (four a step with the vector extensions): for the
     * few values of a row, a memset call costs more than the stores. The empty asm hides j
     * from gcc, which would otherwise turn the loop back into that call. */
    OFI_SUMS_INLINE void ofi_zero(double *x, Py_ssize_t n)
    {
        Py_ssize_t j = 0;
    #if OFI_SUMS_VECTOR
        typedef double v2d __attribute__((vector_size(16)));
        const v2d Z = {0.0, 0.0};
        for (; j + 3 < n; j += 4) {
            memcpy(x + j, &Z, sizeof Z);
            memcpy(x + j + 2, &Z, sizeof Z);
            __asm__("" : "+r"(j));
        }
        if (j + 1 < n) {
            memcpy(x + j, &Z, sizeof Z);
            j += 2;
        }
        if (j < n)
            x[j] = 0.0;
    #else
        for (; j < n; j++)
            x[j] = 0.0;
    #endif
    }
    """
    void ofi_sums_add(float64_t* s, float64_t* c, const float64_t* x, intp_t n,
                      int neg) noexcept nogil
    float64_t ofi_pair_sum(const float64_t* a, const float64_t* b, intp_t n) noexcept nogil
    void ofi_sums_add_depth(float64_t* s, float64_t* c, float64_t* x, const float64_t* a,
                            const float64_t* b, intp_t n) noexcept nogil
    void ofi_zero(float64_t* x, intp_t n) noexcept nogil

# The window's part of mlofi_push (evictions, the ring, the totals, the window sums).
cdef void mlofi_push_window(MLOFIState* st, int64_t ts) noexcept nogil


# The status mlofi_commit(ts) would return for time order / capacity, changing nothing.
cdef inline int mlofi_check_ts(const MLOFIState* st, int64_t ts) noexcept nogil:
    return window_check(&st.ring, st.has_last, st.last_ts, ts, st.window_time, st.grow)


# Everything that can fail for an event at ts (time order, window capacity, growing the ring
# to twice its slots), done before any state changes; mlofi_push cannot fail afterwards.
cdef inline int mlofi_reserve(MLOFIState* st, int64_t ts) noexcept nogil:
    return window_reserve(&st.ring, st.has_last, st.last_ts, ts, st.window_time, st.grow)


# The bookkeeping of an event pushed at ts.
cdef inline void mlofi_count(MLOFIState* st, int64_t ts) noexcept nogil:
    st.has_last = True
    st.last_ts = ts
    st.n_events += 1


# Push st.e (all `width` values, already computed) as the event at ts; after mlofi_reserve(ts).
# st.e is zero but at level `only` (>= 0) and the depth, so without a window just those two
# sums take it (adding +0.0 changes no sum). Inline: BookOFI's row loop calls it for every
# event.
cdef inline void mlofi_push(MLOFIState* st, int64_t ts, intp_t only) noexcept nogil:
    if st.window > 0 or st.window_time > 0:
        mlofi_push_window(st, ts)
    else:
        neumaier_add(&st.sum[only], &st.comp[only], st.e[only])
        neumaier_add(&st.sum[st.levels], &st.comp[st.levels], st.e[st.levels])
    mlofi_count(st, ts)


# Push st.e as the event at ts, e_1..e_L already computed and the depth st.e[L] computed here
# from the sizes qb, qa (ofi_pair_sum(qb, qa, L)); after mlofi_reserve(ts). Without a window
# the depth rides in the loop of the L + 1 sums (ofi_sums_add_depth).
cdef inline void mlofi_push_depth(MLOFIState* st, int64_t ts, const float64_t* qb,
                                  const float64_t* qa) noexcept nogil:
    if st.window > 0 or st.window_time > 0:
        st.e[st.levels] = ofi_pair_sum(qb, qa, st.levels)
        mlofi_push_window(st, ts)
    else:
        ofi_sums_add_depth(st.sum, st.comp, st.e, qb, qa, st.levels)
    mlofi_count(st, ts)


# Apply st.cur at time ts: per-level e into st.e, window sums updated, prev <- cur.
cdef int mlofi_commit(MLOFIState* st, int64_t ts) noexcept nogil
# Depth scale Q of CCZ eq. 3 over the window: mean over events and levels of (qb + qa) / 2.
cdef float64_t mlofi_depth(const MLOFIState* st) noexcept nogil


cdef class MultiLevelOFI:
    cdef MLOFIState st
    cdef Guard guard            # serialises calls from several threads (see _guard.pxd)
    cdef readonly object window
    cdef readonly object window_time
    cdef public object explained_variance_ratio
    cdef int push(self, int64_t ts, const float64_t* bid_px, const float64_t* bid_sz,
                  const float64_t* ask_px, const float64_t* ask_sz) noexcept nogil
    cdef int check_ts(self, int64_t ts) noexcept nogil
