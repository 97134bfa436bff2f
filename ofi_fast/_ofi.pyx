"""Best-level order flow imbalance (Cont, Kukanov & Stoikov 2014, eq. 10 and 12).

For consecutive best quotes (P^b, q^b, P^a, q^a)::

    e_n = 1{P^b_n >= P^b_{n-1}} q^b_n - 1{P^b_n <= P^b_{n-1}} q^b_{n-1}
        - 1{P^a_n <= P^a_{n-1}} q^a_n + 1{P^a_n >= P^a_{n-1}} q^a_{n-1}

and OFI over an interval is the sum of e_n over its events.

Conventions (see README "Conventions"):

- The first event of a stream (and the first after ``reset()``) has no predecessor: e = 0.
- Prices are compared exactly; pass integer ticks, or prices that are exact multiples of
  the tick as floats.
- An empty side is size 0 with price NaN (or -inf for the bid, +inf for the ask): it compares
  as -inf / +inf, so a bid that empties gives -q^b_{n-1}, one that appears +q^b_n. A NaN price
  with a positive size is an error, as is any NaN/inf size or a negative size.
- Crossed (bid > ask) and locked (bid == ask) quotes are computed normally and counted in
  ``n_crossed`` / ``n_locked``.
"""

cimport cython
from libc.math cimport INFINITY
from libc.string cimport memcpy as c_memcpy

import numpy as np

from ofi_fast._types cimport (
    STATUS_NON_FINITE, STATUS_OK, STATUS_TIME_BACKWARDS, float64_t, int64_t, intp_t,
)
from ofi_fast._ring cimport (
    Ring, RollingSumState, neumaier_add, ring_clear, ring_copy_in, ring_copy_out, ring_free,
    ring_grow, ring_init_rows, ring_pop_slot, ring_push_slot, ring_row,
)
from ofi_fast._select cimport f64_choose
from ofi_fast._ring cimport (
    raise_rolling, rolling_free, rolling_getstate, rolling_init, rolling_reset, rolling_setstate,
    rolling_value,
)
from ofi_fast._guard cimport guard_enter, guard_exit, guard_free, guard_init, guard_wait
from ofi_fast._arrays import column, integer, output
from ofi_fast._ring import alloc_error, check_window
from ofi_fast.errors import OFIError, raise_status

_FIELDS = ("ts", "bid_px", "bid_sz", "ask_px", "ask_sz")


cdef int ofi_init(OFIState* st, int64_t window, int64_t window_time, intp_t capacity,
                  bint grow) noexcept nogil:
    ofi_reset(st)
    return rolling_init(&st.roll, window, window_time, capacity, grow)


cdef void ofi_free(OFIState* st) noexcept nogil:
    rolling_free(&st.roll)


cdef void ofi_reset(OFIState* st) noexcept nogil:
    st.bid_px = -INFINITY
    st.bid_sz = 0.0
    st.ask_px = INFINITY
    st.ask_sz = 0.0
    st.has_prev = False
    st.n_events = 0
    st.n_crossed = 0
    st.n_locked = 0
    st.total = 0.0
    st.total_comp = 0.0
    if st.roll.ring.ts != NULL:
        rolling_reset(&st.roll)


# ---------------------------------------------------------------------------------------------
# Batch kernels. A batch runs in blocks of events; each block takes one or two passes over its
# rows, each a loop without a data-dependent branch (tools/check_branches.py checks them):
#   1. one vector pass (OFI_PAIRS_IMPL, 4 or 2 events per step): e_n of every row, one validity flag accumulated
#      over the block (values and time order); for OFI.update_many also the crossed / locked
#      counts, the stream's Neumaier total and, with a count window at least as long as the
#      block, the window sum (ofi_um_plain / ofi_um_fill / ofi_um_full; l1_ofi calls
#      ofi_l1_pairs: e_n and validity only). Only when the flag says a row is bad does the
#      caller look for the first bad row (ofi_first_bad), so errors name field and index;
#   2. ofi_time_block (a time window) or ofi_count_block (a count window shorter than the
#      block, whose events leave within the block): the window sum.
# Each pass does the float operations of the one-event path (ofi_update, rolling_push) in the
# same order, so batch and streaming results agree bit for bit.
# ---------------------------------------------------------------------------------------------

cdef enum:
    OFI_MAX_BLOCK = 1024        # events per block (the scratch buffers below)

cdef intp_t ofi_block = OFI_MAX_BLOCK   # changed only by tests, to exercise block boundaries


def _set_block(intp_t n):
    """Testing hook: run the batch kernels in blocks of ``n`` events (1..1024); returns the
    previous size."""
    global ofi_block
    if not 1 <= n <= OFI_MAX_BLOCK:
        raise OFIError(f"block must be in 1..{OFI_MAX_BLOCK}", field="block")
    old = ofi_block
    ofi_block = n
    return old


def _set_lanes(int n):
    """Testing hook: run the vector pass with 2 lanes (n = 2) or the widest the CPU has (n = 4:
    4 lanes where it has AVX2); returns the lanes the pass used before (1: the scalar build)."""
    global ofi_force_w2
    if n not in (2, 4):
        raise OFIError("lanes must be 2 or 4", field="lanes")
    old = ofi_lanes()
    ofi_force_w2 = n == 2
    return old


cdef inline intp_t wrap_next(intp_t j, intp_t cap) noexcept nogil:
    """j + 1, or 0 when that is cap: without a branch."""
    j += 1
    return j & -<intp_t>(j != cap)


cdef extern from *:
    """
    /* e_n of CKS eq. 10 four (AVX2) or two (SSE2 on x86-64, NEON on arm64) events at a time,
     * with gcc/clang vector extensions (other targets get scalar code). Cython has no
     * vector types, so this one loop is C. Per lane it performs exactly the operations of
     * ofi_l1_event (_ofi.pxd), so e_n is equal bit for bit, and accepts exactly the rows
     * ofi_check_row accepts (tests/test_ofi.py checks both). Other compilers (or
     * -DOFI_FAST_SCALAR) get the scalar loop at the end, the same operations one row at a time. */
    #include <stdint.h>
    #include <string.h>
    #include <math.h>
    /* neumaier_add of _ring.pxd (TwoSum), the same operations in the same order. */
    /* neumaier_add(&S, &C, x_) (TwoSum); t and z are the caller's scratch doubles. */
    #define OFI_TS(S, C, x_) \
        do { double x__ = (x_); t = (S) + x__; z = t - (S); (C) += ((S) - (t - z)) + (x__ - z); (S) = t; } while (0)
    #define OFI_TWOSUM(x_) OFI_TS(s, c, x_)
    #if (defined(__GNUC__) || defined(__clang__)) && !defined(OFI_FAST_SCALAR)
    /* The vector pass is written once, for W lanes (W events per step): OFI_PAIRS_IMPL(NAME,
     * W, ATTR) defines it for one width. W = 4 (256-bit vectors) runs where the CPU has AVX2
     * (x86-64 Linux, chosen at run time, see OFI_KERNEL below); W = 2 (128-bit: SSE2 on
     * x86-64, NEON on arm64) everywhere else. 256-bit generic vectors on plain SSE2 are no
     * option: gcc 12 splits their comparisons into scalar code with branches. */
    #define OFI_CAT_(a, b) a##b
    #define OFI_CAT(a, b) OFI_CAT_(a, b)
    #define OFI_SPLAT_2(x) {x, x}
    #define OFI_SPLAT_4(x) {x, x, x, x}
    /* OFI_V_PAIR(W, lo, hi): (lo's last lane, hi's lanes 0 .. W-2), i.e. rows i - 1 ..
     * i + W - 2 when lo holds rows up to i - 1 and hi rows i .. i + W - 1 */
    #define OFI_PAIRIDX_2 1, 2
    #define OFI_PAIRIDX_4 3, 4, 5, 6
    #if defined(__clang__)
    #define OFI_V_PAIR(W, lo, hi) __builtin_shufflevector(lo, hi, OFI_CAT(OFI_PAIRIDX_, W))
    #else
    #define OFI_V_PAIR(W, lo, hi) __builtin_shuffle(lo, hi, (vi){OFI_CAT(OFI_PAIRIDX_, W)})
    #endif
    #define OFI_HSUM_2(v) ((v)[0] + (v)[1])
    #define OFI_HSUM_4(v) (((v)[0] + (v)[1]) + ((v)[2] + (v)[3]))
    #define OFI_V_KEEP(m, x) ((vd)((vi)(x) & (m)))
    #define OFI_V_ABS(x) ((vd)((vi)(x) & absmask))
    #define OFI_V_CHOOSE(m, x, y) ((vd)(((vi)(x) & (m)) | ((vi)(y) & ~(m))))
    /* One step: rows (i - 1 .. i + W - 2) in the lanes of (b0 .. r0), (i .. i + W - 1) in
     * (b1 .. r1), empty prices already -inf / +inf. Validity is summed into `bad`, a sum of
     * terms that are 0 for a valid row and negative, -inf or NaN otherwise (so they cannot
     * cancel): a size q gives q - |q| (0 for finite q >= 0, -0.0 included); a price counts
     * only where its size is > 0 (then p - p is NaN for an infinite p); a +inf bid or a -inf
     * ask makes bid - ask +inf or NaN, caught by one comparison. Each mask comes from a single
     * comparison: gcc 12 turns masks combined with & or | into scalar code. */
    #define OFI_V_STEP(x)                                                                 \
        do {                                                                              \
            vd bk = OFI_V_KEEP(q1 > zero, b1), ak = OFI_V_KEEP(r1 > zero, a1);            \
            vd d = b1 - a1;                                                               \
            bad += ((q1 - OFI_V_ABS(q1)) + (r1 - OFI_V_ABS(r1)))                          \
                 + (((bk - bk) + (ak - ak)) + OFI_V_KEEP(~(d < inf), nan));               \
            x = (OFI_V_KEEP(b1 >= b0, q1) - OFI_V_KEEP(b1 <= b0, q0))                    \
              + (OFI_V_KEEP(a1 >= a0, r0) - OFI_V_KEEP(a1 <= a0, r1));                    \
        } while (0)
    /* one row's total, window and rolling value (x_: its e, k_: its v slot) */
    #define OFI_ROW(x_, k_)                                                               \
        do {                                                                              \
            double xr = (x_);                                                             \
            OFI_TS(s, c, xr);                                                             \
            if (mode == 0) {                                                              \
                v[k_] = s + c;                                                            \
            } else if (mode != 3) {                                                       \
                if (mode == 2) {                                                          \
                    OFI_TS(ws, wc, -rval[h]);                                             \
                    h += 1;                                                               \
                    h &= -(Py_ssize_t)(h != cap);                                         \
                }                                                                         \
                OFI_TS(ws, wc, xr);                                                       \
                v[k_] = ws + wc;                                                          \
            }                                                                             \
        } while (0)
    #define OFI_V_LOAD(p) ({ vd v_; memcpy(&v_, (p), sizeof v_); v_; })
    /* Rows lo..hi-1: e[i] from row i-1 -> row i. prev (4 values) is row lo-1 on entry, empty
     * prices already -inf / +inf (the caller's state, or the row before from the array), and
     * row hi-1 on exit, likewise. Returns 1 when every row lo..hi-1 is valid: a finite size
     * >= 0 on each side, and a finite price or an empty side (size 0 with price NaN, -inf
     * bid or +inf ask); the same test as ofi_check_row. The other arguments are constants at
     * each call site below (so each variant is its own loop, with no test inside):
     * - count: counts[0] / counts[1] get the crossed (bid > ask) / locked (bid == ask) rows,
     *   as float sums of ones (exact below 2**53), and total the Neumaier total of e;
     * - check_ts: the rows are also valid only if ts[i * ts_step] is non-decreasing from
     *   prev_ts on (ts_step 0: ts points to W equal values, always in order);
     * - mode 0: v[i - lo] = the total after row i (OFI without a window: its rolling value);
     *   mode 3: the same without v (v unused: nobody asked for the rolling values);
     *   mode 1 / 2: a count window's sum (win[0] + win[1], Neumaier) gets e of each row; in
     *   mode 2 (the ring is full) the oldest value, rval[h] from h = head on (wrapping at cap),
     *   leaves first; v[i - lo] = the window sum after row i. The ring itself is not written:
     *   the caller copies the block's e into it once the block is known to be valid, so a bad
     *   row leaves the window as it was (which needs hi - lo <= cap: no row of the block
     *   evicts another). The operations are rolling_push's, in its order. */
    #define OFI_PAIRS_IMPL(NAME, W, ATTR)                                                                  \
    static inline __attribute__((always_inline)) ATTR int NAME(                                            \
        const double *bp, const double *bs, const double *ap, const double *az,                            \
        Py_ssize_t lo, Py_ssize_t hi, double *prev, double *e, const int count,                            \
        int64_t *counts, double *total, double *v, const int check_ts, const int64_t *ts,                  \
        Py_ssize_t ts_step, int64_t prev_ts, const int mode, double *win, const double *rval,              \
        Py_ssize_t h, Py_ssize_t cap)                                                                      \
    {                                                                                                      \
        typedef double vd __attribute__((vector_size(8 * W)));                                             \
        typedef int64_t vi __attribute__((vector_size(8 * W)));                                            \
        const vi absmask = OFI_CAT(OFI_SPLAT_, W)(INT64_MAX);                                              \
        const vd zero = OFI_CAT(OFI_SPLAT_, W)(0.0), inf = OFI_CAT(OFI_SPLAT_, W)(INFINITY), ninf = -inf;  \
        const vd nan = OFI_CAT(OFI_SPLAT_, W)(NAN), one = OFI_CAT(OFI_SPLAT_, W)(1.0);                     \
        const vd first = {1.0};   /* 1 in lane 0, 0 elsewhere */                                           \
        vd bad = zero, crossed = zero, locked = zero;                                                      \
        double s = count ? total[0] : 0.0, c = count ? total[1] : 0.0, t, z;                               \
        const int win_on = mode == 1 || mode == 2;   /* a count window's sum */                            \
        double ws = win_on ? win[0] : 0.0, wc = win_on ? win[1] : 0.0;                                     \
        vd b0, q0, a0, r0, b1, q1, a1, r1, x;                                                              \
        vi t0, t1, pt = OFI_CAT(OFI_SPLAT_, W)(prev_ts);                                                   \
        /* the lanes' last lane carries row i - 1 from one step to the next */                             \
        vd pb = OFI_CAT(OFI_SPLAT_, W)(prev[0]), pq = OFI_CAT(OFI_SPLAT_, W)(prev[1]);                     \
        vd pa = OFI_CAT(OFI_SPLAT_, W)(prev[2]), pr = OFI_CAT(OFI_SPLAT_, W)(prev[3]);                     \
        Py_ssize_t i = lo;                                                                                 \
        for (; i + W - 1 < hi; i += W) {                                                                   \
            b1 = OFI_V_LOAD(bp + i); q1 = OFI_V_LOAD(bs + i);                                              \
            a1 = OFI_V_LOAD(ap + i); r1 = OFI_V_LOAD(az + i);                                              \
            b1 = OFI_V_CHOOSE(b1 != b1, ninf, b1);                                                         \
            a1 = OFI_V_CHOOSE(a1 != a1, inf, a1);                                                          \
            b0 = OFI_V_PAIR(W, pb, b1); q0 = OFI_V_PAIR(W, pq, q1);                                        \
            a0 = OFI_V_PAIR(W, pa, a1); r0 = OFI_V_PAIR(W, pr, r1);                                        \
            OFI_V_STEP(x);                                                                                 \
            if (check_ts) {                                                                                \
                memcpy(&t1, ts + i * ts_step, sizeof t1);                                                  \
                t0 = OFI_V_PAIR(W, pt, t1);                                                                \
                bad += OFI_V_KEEP(t1 < t0, nan);                                                           \
                pt = t1;                                                                                   \
            }                                                                                              \
            memcpy(e + i, &x, sizeof x);                                                                   \
            if (count) {                                                                                   \
                crossed += OFI_V_KEEP(b1 > a1, one);                                                       \
                locked += OFI_V_KEEP(b1 == a1, one);                                                       \
                _Pragma("GCC unroll 4")                                                                    \
                for (int k = 0; k < W; k++)                                                                \
                    OFI_ROW(x[k], i - lo + k);                                                             \
            }                                                                                              \
            pb = b1; pq = q1; pa = a1; pr = r1;                                                            \
        }                                                                                                  \
        for (; i < hi; i++) {   /* the last rows alone: all lanes the same event, counted once */          \
            b0 = (vd)OFI_CAT(OFI_SPLAT_, W)(pb[W - 1]); q0 = (vd)OFI_CAT(OFI_SPLAT_, W)(pq[W - 1]);        \
            a0 = (vd)OFI_CAT(OFI_SPLAT_, W)(pa[W - 1]); r0 = (vd)OFI_CAT(OFI_SPLAT_, W)(pr[W - 1]);        \
            b1 = (vd)OFI_CAT(OFI_SPLAT_, W)(bp[i]); q1 = (vd)OFI_CAT(OFI_SPLAT_, W)(bs[i]);                \
            a1 = (vd)OFI_CAT(OFI_SPLAT_, W)(ap[i]); r1 = (vd)OFI_CAT(OFI_SPLAT_, W)(az[i]);                \
            b1 = OFI_V_CHOOSE(b1 != b1, ninf, b1);                                                         \
            a1 = OFI_V_CHOOSE(a1 != a1, inf, a1);                                                          \
            OFI_V_STEP(x);                                                                                 \
            if (check_ts) {                                                                                \
                t1 = (vi)OFI_CAT(OFI_SPLAT_, W)(ts[i * ts_step]);                                          \
                t0 = (vi)OFI_CAT(OFI_SPLAT_, W)(pt[W - 1]);                                                \
                bad += OFI_V_KEEP(t1 < t0, nan);                                                           \
                pt = t1;                                                                                   \
            }                                                                                              \
            e[i] = x[0];                                                                                   \
            if (count) {                                                                                   \
                crossed += OFI_V_KEEP(b1 > a1, first);                                                     \
                locked += OFI_V_KEEP(b1 == a1, first);                                                     \
                OFI_ROW(x[0], i - lo);                                                                     \
            }                                                                                              \
            pb = b1; pq = q1; pa = a1; pr = r1;                                                            \
        }                                                                                                  \
        prev[0] = pb[W - 1]; prev[1] = pq[W - 1];                                                          \
        prev[2] = pa[W - 1]; prev[3] = pr[W - 1];                                                          \
        if (count) {                                                                                       \
            counts[0] += (int64_t)OFI_CAT(OFI_HSUM_, W)(crossed);                                          \
            counts[1] += (int64_t)OFI_CAT(OFI_HSUM_, W)(locked);                                           \
            total[0] = s;                                                                                  \
            total[1] = c;                                                                                  \
        }                                                                                                  \
        if (win_on) {                                                                                      \
            win[0] = ws;                                                                                   \
            win[1] = wc;                                                                                   \
        }                                                                                                  \
        return OFI_CAT(OFI_HSUM_, W)(bad) == 0.0;   /* NaN compares false */                               \
    }
    OFI_PAIRS_IMPL(ofi_pairs_w2, 2, )
    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
    /* 4 lanes where the CPU has AVX2, 2 lanes otherwise or when a test asks for them
     * (_set_lanes: the tests run both widths on a machine with AVX2) */
    #define OFI_HAVE_W4 1
    OFI_PAIRS_IMPL(ofi_pairs_w4, 4, __attribute__((target("avx2"))))
    static int ofi_force_w2 = 0;
    static inline int ofi_use_w4(void) { return !ofi_force_w2 && __builtin_cpu_supports("avx2"); }
    #define OFI_KERNEL(NAME, PARAMS, FWD, ARGS)                                               \
        static int NAME##_w2 PARAMS { return ofi_pairs_w2 ARGS; }                             \
        __attribute__((target("avx2"))) static int NAME##_w4 PARAMS { return ofi_pairs_w4 ARGS; } \
        static int NAME PARAMS { return ofi_use_w4() ? NAME##_w4 FWD : NAME##_w2 FWD; }
    #else
    #define OFI_HAVE_W4 0
    static int ofi_force_w2 = 0;
    #define OFI_KERNEL(NAME, PARAMS, FWD, ARGS)                                               \
        static int NAME##_w2 PARAMS { return ofi_pairs_w2 ARGS; }                             \
        static int NAME PARAMS { return NAME##_w2 FWD; }
    #endif
    static int ofi_lanes(void) { return OFI_HAVE_W4 && ofi_use_w4() ? 4 : 2; }
    /* l1_ofi's pass: e and validity only */
    OFI_KERNEL(ofi_l1_pairs,
               (const double *bp, const double *bs, const double *ap, const double *az,
                Py_ssize_t lo, Py_ssize_t hi, double *prev, double *e),
               (bp, bs, ap, az, lo, hi, prev, e),
               (bp, bs, ap, az, lo, hi, prev, e, 0, NULL, NULL, NULL,
                0, NULL, 0, 0, 0, NULL, NULL, 0, 0))
    /* The same for OFI.update_many, also counting crossed and locked rows and adding e to
     * the stream's total (total[0] + total[1], Neumaier, as neumaier_add of _ring.pxd),
     * v[i - lo] the total after event i. */
    OFI_KERNEL(ofi_l1_pairs_counted,
               (const double *bp, const double *bs, const double *ap, const double *az,
                Py_ssize_t lo, Py_ssize_t hi, double *prev, double *e, int64_t *counts,
                double *total, double *v),
               (bp, bs, ap, az, lo, hi, prev, e, counts, total, v),
               (bp, bs, ap, az, lo, hi, prev, e, 1, counts, total, v,
                0, NULL, 0, 0, 0, NULL, NULL, 0, 0))
    /* ofi_l1_pairs_counted without v (no window and no rolling values wanted) */
    OFI_KERNEL(ofi_l1_pairs_total,
               (const double *bp, const double *bs, const double *ap, const double *az,
                Py_ssize_t lo, Py_ssize_t hi, double *prev, double *e, int64_t *counts,
                double *total),
               (bp, bs, ap, az, lo, hi, prev, e, counts, total),
               (bp, bs, ap, az, lo, hi, prev, e, 1, counts, total, NULL,
                0, NULL, 0, 0, 3, NULL, NULL, 0, 0))
    /* OFI.update_many's one pass per block: ofi_l1_pairs_counted with the time order checked
     * (ofi_um_plain: without a window, or before a time window's own loop), and with a count
     * window's sum while the ring fills (ofi_um_fill) or once it is full (ofi_um_full). */
    OFI_KERNEL(ofi_um_plain,
               (const double *bp, const double *bs, const double *ap, const double *az,
                Py_ssize_t lo, Py_ssize_t hi, double *prev, double *e, int64_t *counts,
                double *total, double *v, const int64_t *ts, Py_ssize_t ts_step,
                int64_t prev_ts),
               (bp, bs, ap, az, lo, hi, prev, e, counts, total, v, ts, ts_step, prev_ts),
               (bp, bs, ap, az, lo, hi, prev, e, 1, counts, total, v,
                1, ts, ts_step, prev_ts, 0, NULL, NULL, 0, 0))
    /* ofi_um_plain without v */
    OFI_KERNEL(ofi_um_total,
               (const double *bp, const double *bs, const double *ap, const double *az,
                Py_ssize_t lo, Py_ssize_t hi, double *prev, double *e, int64_t *counts,
                double *total, const int64_t *ts, Py_ssize_t ts_step, int64_t prev_ts),
               (bp, bs, ap, az, lo, hi, prev, e, counts, total, ts, ts_step, prev_ts),
               (bp, bs, ap, az, lo, hi, prev, e, 1, counts, total, NULL,
                1, ts, ts_step, prev_ts, 3, NULL, NULL, 0, 0))
    OFI_KERNEL(ofi_um_fill,
               (const double *bp, const double *bs, const double *ap, const double *az,
                Py_ssize_t lo, Py_ssize_t hi, double *prev, double *e, int64_t *counts,
                double *total, double *v, const int64_t *ts, Py_ssize_t ts_step,
                int64_t prev_ts, double *win, const double *rval, Py_ssize_t head,
                Py_ssize_t cap),
               (bp, bs, ap, az, lo, hi, prev, e, counts, total, v, ts, ts_step, prev_ts,
                win, rval, head, cap),
               (bp, bs, ap, az, lo, hi, prev, e, 1, counts, total, v,
                1, ts, ts_step, prev_ts, 1, win, rval, head, cap))
    OFI_KERNEL(ofi_um_full,
               (const double *bp, const double *bs, const double *ap, const double *az,
                Py_ssize_t lo, Py_ssize_t hi, double *prev, double *e, int64_t *counts,
                double *total, double *v, const int64_t *ts, Py_ssize_t ts_step,
                int64_t prev_ts, double *win, const double *rval, Py_ssize_t head,
                Py_ssize_t cap),
               (bp, bs, ap, az, lo, hi, prev, e, counts, total, v, ts, ts_step, prev_ts,
                win, rval, head, cap),
               (bp, bs, ap, az, lo, hi, prev, e, 1, counts, total, v,
                1, ts, ts_step, prev_ts, 2, win, rval, head, cap))
    #else
    static double ofi_keep(int c, double x) {
        uint64_t b; memcpy(&b, &x, 8); b &= -(uint64_t)(c != 0); memcpy(&x, &b, 8); return x;
    }
    /* OFI_PAIRS_IMPL above, one row at a time (same arguments, same operations) */
    static int ofi_force_w2 = 0;
    static int ofi_lanes(void) { return 1; }
    static int ofi_scalar_impl(const double *bp, const double *bs, const double *ap,
                               const double *az, Py_ssize_t lo, Py_ssize_t hi, double *prev,
                               double *e, int64_t *counts, double *total, double *v,
                               const int64_t *ts, Py_ssize_t ts_step, int64_t prev_ts,
                               int mode, double *win, const double *rval, Py_ssize_t h,
                               Py_ssize_t cap)
    {
        double b0 = prev[0], q0 = prev[1], a0 = prev[2], r0 = prev[3], bad = 0.0;
        double s = total ? total[0] : 0.0, c = total ? total[1] : 0.0, t, z;
        const int win_on = mode == 1 || mode == 2;
        double ws = win_on ? win[0] : 0.0, wc = win_on ? win[1] : 0.0;
        for (Py_ssize_t i = lo; i < hi; i++) {
            double b1 = bp[i], q1 = bs[i], a1 = ap[i], r1 = az[i];
            b1 = b1 != b1 ? -INFINITY : b1;
            a1 = a1 != a1 ? INFINITY : a1;
            double bk = ofi_keep(q1 > 0.0, b1), ak = ofi_keep(r1 > 0.0, a1), d = b1 - a1;
            bad += ((q1 - fabs(q1)) + (r1 - fabs(r1))) + (((bk - bk) + (ak - ak))
                   + ofi_keep(!(d < INFINITY), NAN));
            if (ts) {
                bad += ofi_keep(ts[i * ts_step] < prev_ts, NAN);
                prev_ts = ts[i * ts_step];
            }
            double x = (ofi_keep(b1 >= b0, q1) - ofi_keep(b1 <= b0, q0))
                     + (ofi_keep(a1 >= a0, r0) - ofi_keep(a1 <= a0, r1));
            e[i] = x;
            if (counts) {
                counts[0] += b1 > a1;
                counts[1] += b1 == a1;
                OFI_TWOSUM(x);
                if (mode == 0) {
                    v[i - lo] = s + c;
                } else if (mode != 3) {
                    if (mode == 2) {
                        OFI_TS(ws, wc, -rval[h]);
                        h = h + 1 == cap ? 0 : h + 1;
                    }
                    OFI_TS(ws, wc, x);
                    v[i - lo] = ws + wc;
                }
            }
            b0 = b1; q0 = q1; a0 = a1; r0 = r1;
        }
        prev[0] = b0; prev[1] = q0; prev[2] = a0; prev[3] = r0;
        if (total) { total[0] = s; total[1] = c; }
        if (win_on) { win[0] = ws; win[1] = wc; }
        return bad == 0.0;
    }
    static int ofi_l1_pairs_counted(const double *bp, const double *bs, const double *ap,
                                    const double *az, Py_ssize_t lo, Py_ssize_t hi,
                                    double *prev, double *e, int64_t *counts, double *total,
                                    double *v)
    {
        return ofi_scalar_impl(bp, bs, ap, az, lo, hi, prev, e, counts, total, v,
                               NULL, 0, 0, 0, NULL, NULL, 0, 0);
    }
    static int ofi_l1_pairs_total(const double *bp, const double *bs, const double *ap,
                                  const double *az, Py_ssize_t lo, Py_ssize_t hi,
                                  double *prev, double *e, int64_t *counts, double *total)
    {
        return ofi_scalar_impl(bp, bs, ap, az, lo, hi, prev, e, counts, total, NULL,
                               NULL, 0, 0, 3, NULL, NULL, 0, 0);
    }
    static int ofi_um_total(const double *bp, const double *bs, const double *ap,
                            const double *az, Py_ssize_t lo, Py_ssize_t hi, double *prev,
                            double *e, int64_t *counts, double *total,
                            const int64_t *ts, Py_ssize_t ts_step, int64_t prev_ts)
    {
        return ofi_scalar_impl(bp, bs, ap, az, lo, hi, prev, e, counts, total, NULL,
                               ts, ts_step, prev_ts, 3, NULL, NULL, 0, 0);
    }
    static int ofi_l1_pairs(const double *bp, const double *bs, const double *ap,
                            const double *az, Py_ssize_t lo, Py_ssize_t hi, double *prev,
                            double *e)
    {
        return ofi_l1_pairs_counted(bp, bs, ap, az, lo, hi, prev, e, NULL, NULL, NULL);
    }
    static int ofi_um_plain(const double *bp, const double *bs, const double *ap,
                            const double *az, Py_ssize_t lo, Py_ssize_t hi, double *prev,
                            double *e, int64_t *counts, double *total, double *v,
                            const int64_t *ts, Py_ssize_t ts_step, int64_t prev_ts)
    {
        return ofi_scalar_impl(bp, bs, ap, az, lo, hi, prev, e, counts, total, v,
                               ts, ts_step, prev_ts, 0, NULL, NULL, 0, 0);
    }
    static int ofi_um_fill(const double *bp, const double *bs, const double *ap,
                           const double *az, Py_ssize_t lo, Py_ssize_t hi, double *prev,
                           double *e, int64_t *counts, double *total, double *v,
                           const int64_t *ts, Py_ssize_t ts_step, int64_t prev_ts,
                           double *win, const double *rval, Py_ssize_t head, Py_ssize_t cap)
    {
        return ofi_scalar_impl(bp, bs, ap, az, lo, hi, prev, e, counts, total, v,
                               ts, ts_step, prev_ts, 1, win, rval, head, cap);
    }
    static int ofi_um_full(const double *bp, const double *bs, const double *ap,
                           const double *az, Py_ssize_t lo, Py_ssize_t hi, double *prev,
                           double *e, int64_t *counts, double *total, double *v,
                           const int64_t *ts, Py_ssize_t ts_step, int64_t prev_ts,
                           double *win, const double *rval, Py_ssize_t head, Py_ssize_t cap)
    {
        return ofi_scalar_impl(bp, bs, ap, az, lo, hi, prev, e, counts, total, v,
                               ts, ts_step, prev_ts, 2, win, rval, head, cap);
    }
    #endif
    """
    int ofi_force_w2
    int ofi_lanes() noexcept nogil
    bint ofi_l1_pairs(const float64_t* bp, const float64_t* bs, const float64_t* ap,
                      const float64_t* az, intp_t lo, intp_t hi, float64_t* prev,
                      float64_t* e) noexcept nogil
    bint ofi_l1_pairs_counted(const float64_t* bp, const float64_t* bs, const float64_t* ap,
                              const float64_t* az, intp_t lo, intp_t hi, float64_t* prev,
                              float64_t* e, int64_t* counts, float64_t* total,
                              float64_t* v) noexcept nogil
    bint ofi_l1_pairs_total(const float64_t* bp, const float64_t* bs, const float64_t* ap,
                            const float64_t* az, intp_t lo, intp_t hi, float64_t* prev,
                            float64_t* e, int64_t* counts, float64_t* total) noexcept nogil
    bint ofi_um_total(const float64_t* bp, const float64_t* bs, const float64_t* ap,
                      const float64_t* az, intp_t lo, intp_t hi, float64_t* prev,
                      float64_t* e, int64_t* counts, float64_t* total, const int64_t* ts,
                      intp_t ts_step, int64_t prev_ts) noexcept nogil
    bint ofi_um_plain(const float64_t* bp, const float64_t* bs, const float64_t* ap,
                      const float64_t* az, intp_t lo, intp_t hi, float64_t* prev,
                      float64_t* e, int64_t* counts, float64_t* total, float64_t* v,
                      const int64_t* ts, intp_t ts_step, int64_t prev_ts) noexcept nogil
    bint ofi_um_fill(const float64_t* bp, const float64_t* bs, const float64_t* ap,
                     const float64_t* az, intp_t lo, intp_t hi, float64_t* prev,
                     float64_t* e, int64_t* counts, float64_t* total, float64_t* v,
                     const int64_t* ts, intp_t ts_step, int64_t prev_ts, float64_t* win,
                     const float64_t* rval, intp_t head, intp_t cap) noexcept nogil
    bint ofi_um_full(const float64_t* bp, const float64_t* bs, const float64_t* ap,
                     const float64_t* az, intp_t lo, intp_t hi, float64_t* prev,
                     float64_t* e, int64_t* counts, float64_t* total, float64_t* v,
                     const int64_t* ts, intp_t ts_step, int64_t prev_ts, float64_t* win,
                     const float64_t* rval, intp_t head, intp_t cap) noexcept nogil


cdef int ofi_first_bad(const int64_t* ts, const float64_t* bp, const float64_t* bs,
                       const float64_t* ap, const float64_t* az, intp_t lo, intp_t hi,
                       bint has_last, int64_t last, intp_t* bad) noexcept nogil:
    """The status of the first bad row in lo..hi-1 (its index in bad[0]), as ofi_update
    would report it: the row's values first, then its time order; STATUS_OK if none."""
    cdef intp_t i
    cdef float64_t b, a
    cdef int status
    for i in range(lo, hi):
        b = bp[i]
        a = ap[i]
        status = ofi_check_row(&b, bs[i], &a, az[i])
        if status == STATUS_OK and ts != NULL and has_last and ts[i] < last:
            status = STATUS_TIME_BACKWARDS
        if status != STATUS_OK:
            bad[0] = i
            return status
        if ts != NULL:
            last = ts[i]
            has_last = True
    bad[0] = hi
    return STATUS_OK


cdef void ofi_count_block(RollingSumState* r, const int64_t* ts, intp_t ts_step,
                          const float64_t* e, intp_t lo, intp_t hi, float64_t* v) noexcept nogil:
    """rolling_push of e[lo..hi-1] into a count window: while the ring fills, add; once it is
    full, evict the oldest and add (two loops: which one runs is known before the block
    starts). ts[i * ts_step] is event i's timestamp (ts_step 0: one timestamp for all)."""
    cdef float64_t s = r.sum, c = r.comp, x
    cdef int64_t* rts = r.ring.ts
    cdef float64_t* rval = r.ring.val
    cdef intp_t cap = r.ring.capacity, head = r.ring.head, size = r.ring.size
    cdef intp_t i, tail, fill = cap - size
    if fill > hi - lo:
        fill = hi - lo
    for i in range(lo, lo + fill):
        x = e[i]
        tail = head + size
        tail -= cap & -<intp_t>(tail >= cap)
        rts[tail] = ts[i * ts_step]
        rval[tail] = x
        size += 1
        neumaier_add(&s, &c, x)
        v[i - lo] = s + c
    for i in range(lo + fill, hi):     # size == cap: the new event takes the oldest's slot
        x = e[i]
        neumaier_add(&s, &c, -rval[head])
        rts[head] = ts[i * ts_step]
        rval[head] = x
        head = wrap_next(head, cap)
        neumaier_add(&s, &c, x)
        v[i - lo] = s + c
    r.sum = s
    r.comp = c
    r.ring.head = head
    r.ring.size = size


cdef void ofi_time_block(RollingSumState* r, const int64_t* ts, const float64_t* e,
                         intp_t lo, intp_t hi, float64_t* v) noexcept nogil:
    """rolling_push of e[lo..hi-1] into a time window by two pointers merged into one loop:
    each step either evicts the oldest event (its ts <= t - window_time) or adds the next one,
    chosen by a select, so the 0-4 events leaving per event under random arrivals cost no
    mispredicted branch. The caller guarantees size + (hi - lo) <= capacity (no overflow).
    The new event is written to the tail slot at every step: evicting does not move the tail,
    so the write is repeated until the add, and lands in a free slot."""
    cdef float64_t s = r.sum, c = r.comp, x
    cdef int64_t* rts = r.ring.ts
    cdef float64_t* rval = r.ring.val
    cdef int64_t window_time = r.window_time, t
    cdef intp_t cap = r.ring.capacity, head = r.ring.head, size = r.ring.size
    cdef intp_t i = lo, tail
    cdef bint out, empty
    while i < hi:
        t = ts[i]
        x = e[i]
        out = (size != 0) & (rts[head] <= t - window_time)
        tail = head + size
        tail -= cap & -<intp_t>(tail >= cap)
        rts[tail] = t
        rval[tail] = x
        neumaier_add(&s, &c, f64_choose(out, -rval[head], x))
        size += 1 - 2 * out
        empty = out & (size == 0)
        s = f64_choose(empty, 0.0, s)       # an empty window sums to exactly zero
        c = f64_choose(empty, 0.0, c)
        head += out
        head &= -<intp_t>(head != cap)
        v[i - lo] = s + c                   # the last write for event i is after its add
        i += 1 - out
    r.sum = s
    r.comp = c
    r.ring.head = head
    r.ring.size = size


cdef bint ofi_count_fused(OFIState* st, const int64_t* ts, intp_t ts_step, const float64_t* bp,
                          const float64_t* bs, const float64_t* ap, const float64_t* az,
                          intp_t lo, intp_t hi, float64_t* prev, float64_t* e,
                          int64_t* counts, float64_t* total, float64_t* vb, int64_t prev_ts,
                          float64_t* win) noexcept nogil:
    """Pass 1 with a count window (hi - lo <= capacity): rows lo..lo+fill-1 while the ring
    fills, the rest once it is full; the window sum goes to win, the ring is not written
    (ofi_count_commit does that once the block is valid). ts[i * ts_step] is row i's ts."""
    cdef RollingSumState* r = &st.roll
    cdef intp_t fill = r.ring.capacity - r.ring.size
    cdef bint ok = True
    if fill > hi - lo:
        fill = hi - lo
    if fill > 0:
        ok = ofi_um_fill(bp, bs, ap, az, lo, lo + fill, prev, e, counts, total, vb, ts, ts_step,
                         prev_ts, win, r.ring.val, r.ring.head, r.ring.capacity)
        prev_ts = ts[(lo + fill - 1) * ts_step]
    if lo + fill < hi:
        ok = ok & ofi_um_full(bp, bs, ap, az, lo + fill, hi, prev, e, counts, total, vb + fill,
                              ts, ts_step, prev_ts, win, r.ring.val, r.ring.head,
                              r.ring.capacity)
    return ok


cdef void ofi_count_commit(RollingSumState* r, const int64_t* ts, intp_t ts_step,
                           const float64_t* e, intp_t lo, intp_t hi,
                           const float64_t* win) noexcept nogil:
    """The ring after ofi_count_fused's rows lo..hi-1 (hi - lo <= capacity): their (ts, e)
    fill the slots from the tail on, wrapping (the slots of the oldest events once the ring
    is full), the head moves past the events that left, and the sum is the fused pass's."""
    cdef intp_t cap = r.ring.capacity, n = hi - lo, k, m
    cdef intp_t tail = r.ring.head + r.ring.size
    cdef intp_t left = r.ring.size + n - cap        # events that left the window
    if tail >= cap:
        tail -= cap
    m = cap - tail                                  # slots before the wrap
    if m > n:
        m = n
    c_memcpy(r.ring.val + tail, e + lo, m * sizeof(float64_t))
    c_memcpy(r.ring.val, e + lo + m, (n - m) * sizeof(float64_t))
    if ts_step:
        c_memcpy(r.ring.ts + tail, ts + lo, m * sizeof(int64_t))
        c_memcpy(r.ring.ts, ts + lo + m, (n - m) * sizeof(int64_t))
    else:
        for k in range(m):
            r.ring.ts[tail + k] = ts[0]
        for k in range(n - m):
            r.ring.ts[k] = ts[0]
    if left > 0:
        r.ring.head += left
        if r.ring.head >= cap:
            r.ring.head -= cap
        r.ring.size = cap
    else:
        r.ring.size += n
    r.sum = win[0]
    r.comp = win[1]


cdef int ofi_run(OFIState* st, const int64_t* ts, const float64_t* bp, const float64_t* bs,
                 const float64_t* ap, const float64_t* az, intp_t n, float64_t* e,
                 float64_t* v, intp_t* bad) noexcept nogil:
    """update_many's kernel: events 0..n-1 in blocks (see above), e into ``e`` and, when ``v``
    is not NULL, the rolling value after each event into ``v``. ``ts`` is NULL only without a
    time window (the order is then not checked and the last timestamp is kept).

    Stops at the first bad event with its status, bad[0] = its index and the events before
    it applied. A time-window block that could overflow the ring goes through ofi_update one
    event at a time (exact CapacityError index; the ring grows there with grow=True)."""
    cdef float64_t scratch[OFI_MAX_BLOCK]
    cdef float64_t prev[4]
    cdef int64_t counts[2]
    cdef float64_t total[2]
    cdef float64_t win[2]
    cdef int64_t same_ts[4]       # W equal values (the vector pass reads W at a time)
    cdef float64_t* vb
    cdef RollingSumState* r = &st.roll
    cdef intp_t lo = 0, hi, k, block = ofi_block, ts_step = 1
    cdef const int64_t* tsp = ts
    cdef int64_t prev_ts
    cdef int status = STATUS_OK
    cdef bint ok, fused
    if ts == NULL:      # no timestamps: every event has the last one (a count window's ring
        # keeps it), always in order
        same_ts[0] = same_ts[1] = same_ts[2] = same_ts[3] = r.last_ts
        tsp = same_ts
        ts_step = 0
    bad[0] = n
    while lo < n:
        hi = lo + block
        if hi > n:
            hi = n
        vb = &v[lo] if v != NULL else scratch
        if r.window_time > 0 and r.ring.size + (hi - lo) > r.ring.capacity:
            for k in range(lo, hi):             # the ring may fill up: one event at a time
                status = ofi_update(st, ts[k], bp[k], bs[k], ap[k], az[k], &e[k])
                if status != STATUS_OK:
                    bad[0] = k
                    return status
                vb[k - lo] = rolling_value(r)
            lo = hi
            continue
        # pass 1: e, validity and time order, totals and counters, and a count window's sum
        # (from the state's last quotes: a first event is compared with itself, e = (q - q) +
        # (q - q) = +0.0 exactly, as ofi_update's 0.0)
        if st.has_prev:
            prev[0], prev[1], prev[2], prev[3] = st.bid_px, st.bid_sz, st.ask_px, st.ask_sz
        else:
            prev[0] = f64_choose(bp[lo] != bp[lo], -INFINITY, bp[lo])
            prev[1] = bs[lo]
            prev[2] = f64_choose(ap[lo] != ap[lo], INFINITY, ap[lo])
            prev[3] = az[lo]
        counts[0] = counts[1] = 0
        total[0] = st.total
        total[1] = st.total_comp
        prev_ts = r.last_ts if r.has_last else tsp[lo * ts_step]
        # a count window at least as long as the block: its sum in the same pass (no event
        # of the block evicts another, so the ring is written only once the block is valid)
        fused = r.window > 0 and hi - lo <= r.ring.capacity
        if fused:
            win[0] = r.sum
            win[1] = r.comp
            ok = ofi_count_fused(st, tsp, ts_step, bp, bs, ap, az, lo, hi, prev, e, counts,
                                 total, vb, prev_ts, win)
        elif v != NULL and r.window == 0 and r.window_time == 0:  # rolling values = totals
            if ts != NULL:
                ok = ofi_um_plain(bp, bs, ap, az, lo, hi, prev, e, counts, total, vb, ts, 1,
                                  prev_ts)
            else:
                ok = ofi_l1_pairs_counted(bp, bs, ap, az, lo, hi, prev, e, counts, total, vb)
        elif ts != NULL:    # pass 2 writes vb, or nobody reads it: not stored per event here
            ok = ofi_um_total(bp, bs, ap, az, lo, hi, prev, e, counts, total, ts, 1, prev_ts)
        else:
            ok = ofi_l1_pairs_total(bp, bs, ap, az, lo, hi, prev, e, counts, total)
        if not ok:
            fused = False                        # the window goes through ofi_count_block
            status = ofi_first_bad(ts, bp, bs, ap, az, lo, hi, r.has_last, r.last_ts, &hi)
            bad[0] = hi
            counts[0] = counts[1] = 0            # redo counts and total up to the bad row
            total[0] = st.total
            total[1] = st.total_comp
            for k in range(lo, hi):
                counts[0] += bp[k] > ap[k]       # NaN (empty) compares false, like -inf / +inf
                counts[1] += bp[k] == ap[k]
                neumaier_add(&total[0], &total[1], e[k])
                vb[k - lo] = total[0] + total[1]
        if hi > lo:
            # pass 2 (a time window, or a count window shorter than the block), then commit
            st.total = total[0]
            st.total_comp = total[1]
            if fused:
                ofi_count_commit(r, tsp, ts_step, e, lo, hi, win)
            elif r.window > 0:
                ofi_count_block(r, tsp, ts_step, e, lo, hi, vb)
            elif r.window_time > 0:
                ofi_time_block(r, ts, e, lo, hi, vb)
            else:
                r.sum = st.total                  # without a window the rolling sum is the total
                r.comp = st.total_comp
            st.n_crossed += counts[0]
            st.n_locked += counts[1]
            st.bid_px = f64_choose(bp[hi - 1] != bp[hi - 1], -INFINITY, bp[hi - 1])
            st.bid_sz = bs[hi - 1]
            st.ask_px = f64_choose(ap[hi - 1] != ap[hi - 1], INFINITY, ap[hi - 1])
            st.ask_sz = az[hi - 1]
            st.has_prev = True
            st.n_events += hi - lo
            r.n_pushed += hi - lo
            if ts != NULL:
                r.last_ts = ts[hi - 1]
            r.has_last = True
        if status != STATUS_OK:
            return status
        lo = hi
    return STATUS_OK


cdef int raise_ofi(int status, OFIState* st, intp_t index) except -1:
    field = _FIELDS[status >> 4]
    if (status & 15) != STATUS_OK and field == "ts":
        raise_rolling(status & 15, &st.roll, field, index)
    raise_status(status & 15, field, index)
    return 0


@cython.final
cdef class OFI:
    """Streaming best-level OFI (Cont, Kukanov & Stoikov 2014, eq. 10) with an optional window.

    ``OFI(window=None, window_time=None, capacity=None, grow=False)``

    - ``window``: ``value`` sums e over the last ``window`` events;
    - ``window_time``: over events with ts in ``(t - window_time, t]`` (ts units); the ring
      buffer has ``capacity`` slots (default 65536) and raises CapacityError when the window
      needs more, unless ``grow=True``;
    - neither: ``value`` is the sum over the whole stream.

    ``update(ts, bid_px, bid_sz, ask_px, ask_sz)`` returns the event's e_n;
    ``update_many(ts, bid_px, bid_sz, ask_px, ask_sz)`` does the same for arrays with the GIL
    released. Timestamps must be non-decreasing. A bad event raises an OFIError subclass naming
    the field and index and leaves the state as it was before that event.
    """

    def __cinit__(self, window=None, window_time=None, capacity=None, grow=False):
        w, wt, cap = check_window(window, window_time, capacity)
        guard_init(&self.guard)
        self.window = window
        self.window_time = window_time
        if ofi_init(&self.st, w, wt, cap, bool(grow)) != STATUS_OK:
            raise alloc_error("window" if w else "capacity", cap, 16 * cap)

    def __dealloc__(self):
        ofi_free(&self.st)
        guard_free(&self.guard)

    cdef int push(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                  float64_t ask_px, float64_t ask_sz, float64_t* e) noexcept nogil:
        return ofi_update(&self.st, ts, bid_px, bid_sz, ask_px, ask_sz, e)

    cdef float64_t value_c(self) noexcept nogil:
        return rolling_value(&self.st.roll)

    cpdef float64_t update(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                           float64_t ask_px, float64_t ask_sz) except? -1.0:
        """Feed one best-quote state at time ``ts``; return its e_n (0 for the first event)."""
        cdef float64_t e
        if self.guard.busy:
            guard_wait(&self.guard)
        cdef int status = ofi_update(&self.st, ts, bid_px, bid_sz, ask_px, ask_sz, &e)
        if status != STATUS_OK:
            raise_ofi(status, &self.st, 0)
        return e

    def update_many(self, ts, bid_px, bid_sz, ask_px, ask_sz, *, out=None, rolling=False,
                    rolling_out=None):
        """Feed arrays of best quotes; return e_n per event (float64).

        ``ts`` may be None when there is no time window (the events are then taken as
        simultaneous). With ``rolling=True`` return ``(e, value)``, ``value[i]`` the windowed
        OFI after event i. On a bad event at index i, events 0..i-1 are applied and the error
        names field and index i.
        """
        cdef const float64_t[::1] bp = column(bid_px, np.float64, "bid_px")
        cdef intp_t n = bp.shape[0]
        cdef const float64_t[::1] bs = column(bid_sz, np.float64, "bid_sz", n)
        cdef const float64_t[::1] ap = column(ask_px, np.float64, "ask_px", n)
        cdef const float64_t[::1] az = column(ask_sz, np.float64, "ask_sz", n)
        cdef const int64_t[::1] t
        cdef bint has_ts = ts is not None
        if has_ts:
            t = column(ts, np.int64, "ts", n)
        elif self.st.roll.window_time > 0:
            raise OFIError("a time window needs ts", field="ts")
        e_arr = output(out, n)
        cdef float64_t[::1] e = e_arr
        cdef float64_t[::1] v
        v_arr = None
        if rolling:
            v_arr = output(rolling_out, n, "rolling_out")
            v = v_arr
        cdef bint want_v = rolling
        cdef intp_t i = 0
        cdef int status = STATUS_OK
        guard_enter(&self.guard)
        try:
            with nogil:
                if n > 0:
                    status = ofi_run(&self.st, &t[0] if has_ts else NULL, &bp[0], &bs[0], &ap[0],
                                     &az[0], n, &e[0], &v[0] if want_v else NULL, &i)
        finally:
            guard_exit(&self.guard)
        if status != STATUS_OK:
            raise_ofi(status, &self.st, i)
        return (e_arr, v_arr) if rolling else e_arr

    @property
    def value(self):
        """OFI summed over the current window (over the whole stream without a window)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return rolling_value(&self.st.roll)

    @property
    def total(self):
        """OFI summed over every event since the last reset, whatever the window."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.total + self.st.total_comp

    @property
    def count(self):
        """Events in the current window (all events since reset when there is no window)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        if self.st.roll.window or self.st.roll.window_time:
            return self.st.roll.ring.size
        return self.st.n_events

    @property
    def n_events(self):
        """Events accepted since the last reset."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n_events

    @property
    def n_crossed(self):
        """Events whose quotes were crossed (best bid > best ask)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n_crossed

    @property
    def n_locked(self):
        """Events whose quotes were locked (best bid == best ask)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n_locked

    @property
    def capacity(self):
        """Slots in the window's ring buffer."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.roll.ring.capacity

    def reset(self):
        """Forget all events: the next event is again a first event (e = 0)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        ofi_reset(&self.st)

    def __reduce__(self):
        if self.guard.busy:
            guard_wait(&self.guard)
        st = {
            "prev": (self.st.bid_px, self.st.bid_sz, self.st.ask_px, self.st.ask_sz),
            "has_prev": bool(self.st.has_prev),
            "counts": (self.st.n_events, self.st.n_crossed, self.st.n_locked),
            "total": (self.st.total, self.st.total_comp),
            "roll": rolling_getstate(&self.st.roll),
        }
        return (OFI, (self.window, self.window_time, self.st.roll.ring.capacity,
                      bool(self.st.roll.grow)), st)

    def __setstate__(self, d):
        guard_enter(&self.guard)   # Python code runs in here: hold the lock throughout
        try:
            self.st.bid_px, self.st.bid_sz, self.st.ask_px, self.st.ask_sz = d["prev"]
            self.st.has_prev = d["has_prev"]
            self.st.n_events, self.st.n_crossed, self.st.n_locked = d["counts"]
            self.st.total, self.st.total_comp = d["total"]
            rolling_setstate(&self.st.roll, d["roll"])
        finally:
            guard_exit(&self.guard)


def l1_ofi(bid_px, bid_sz, ask_px, ask_sz, *, out=None):
    """e_n of Cont, Kukanov & Stoikov (2014, eq. 10) for each row of best quotes.

    Arrays of equal length (any float-convertible dtype); returns float64 e_n with e_0 = 0
    (written into ``out``, a C-contiguous float64 array of the same length, when given: no
    allocation). Empty sides are size 0 with NaN price. The same e_n as
    ``OFI().update_many(None, ...)``, without the totals and counters an OFI object keeps
    (nothing here could observe them). A bad row raises an OFIError naming the field and
    index; ``out`` then holds unspecified values.
    """
    cdef const float64_t[::1] bp = column(bid_px, np.float64, "bid_px")
    cdef intp_t n = bp.shape[0]
    cdef const float64_t[::1] bs = column(bid_sz, np.float64, "bid_sz", n)
    cdef const float64_t[::1] ap = column(ask_px, np.float64, "ask_px", n)
    cdef const float64_t[::1] az = column(ask_sz, np.float64, "ask_sz", n)
    e_arr = output(out, n)
    cdef float64_t[::1] e = e_arr
    cdef float64_t prev[4]
    cdef intp_t bad = 0
    cdef int status = STATUS_OK
    if n == 0:
        return e_arr
    with nogil:
        # one pass (row 0 against itself: e_0 = +0.0, see ofi_run); only when it reports a
        # bad row, look for the first one
        prev[0] = f64_choose(bp[0] != bp[0], -INFINITY, bp[0])
        prev[1] = bs[0]
        prev[2] = f64_choose(ap[0] != ap[0], INFINITY, ap[0])
        prev[3] = az[0]
        if not ofi_l1_pairs(&bp[0], &bs[0], &ap[0], &az[0], 0, n, prev, &e[0]):
            status = ofi_first_bad(NULL, &bp[0], &bs[0], &ap[0], &az[0], 0, n, False, 0, &bad)
    if status != STATUS_OK:
        raise_status(status & 15, _FIELDS[status >> 4], bad)
    return e_arr


@cython.final
cdef class _EmptyCall:
    """An empty cpdef method with OFI.update's signature: the call-overhead floor in benchmarks."""

    cpdef float64_t update(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                           float64_t ask_px, float64_t ask_sz) except? -1.0:
        return 0.0


# =============================================================================================
# Multi-level OFI (Xu, Gould & Howison 2018), depth-normalised and integrated OFI
# (Cont, Cucuringu & Zhang 2023)
# =============================================================================================
#
# For level m (1 = best, levels by rank of occupied price levels, as in LOBSTER):
#     e_{m,n} = qb_{m,n} 1{Pb_{m,n} >= Pb_{m,n-1}} - qb_{m,n-1} 1{Pb_{m,n} <= Pb_{m,n-1}}
#             - qa_{m,n} 1{Pa_{m,n} <= Pa_{m,n-1}} + qa_{m,n-1} 1{Pa_{m,n} >= Pa_{m,n-1}}
# (CKS eq. 10 with level-m inputs; XGH 2018 sec. 3; CCZ 2023 eq. 1-2). Empty level: price
# -inf (bid) / +inf (ask), size 0, so a level that empties gives -q (bid) / +q (ask), one that
# appears +q / -q, and one that stays empty 0 (THEORY-DETAIL 2.2); LOBSTER's +-9999999999
# dummies with size 0 behave the same. When a new best level is inserted every deeper level
# shifts one rank and produces flow at every rank: that is the rank-based definition.

from libc.stdlib cimport calloc as c_calloc, free as c_free, malloc as c_malloc

from ofi_fast._types cimport STATUS_CAPACITY, STATUS_NO_MEMORY, STATUS_TIME_BACKWARDS

#: Most levels a MultiLevelOFI (or BookOFI) tracks: a sane bound far beyond any real book's
#: depth of interest (the state is 9 doubles per level, rewritten on every event).
cdef enum:
    MLOFI_MAX_LEVELS = 1 << 20
MAX_LEVELS = MLOFI_MAX_LEVELS

_ML_FIELDS = ("ts", "bid_px", "bid_sz", "ask_px", "ask_sz")


cdef int mlofi_init(MLOFIState* st, intp_t levels, int64_t window, int64_t window_time,
                    intp_t capacity, bint grow) noexcept nogil:
    cdef intp_t w = levels + 1
    st.levels = levels
    st.width = w
    st.window = window
    st.window_time = window_time
    st.grow = grow
    if window > 0:
        capacity = window
    if window == 0 and window_time == 0:
        capacity = 1
    if capacity < 1:
        capacity = 1
    st.prev = st.cur = st.e = st.sum = st.comp = st.total = st.total_comp = NULL
    st.weights = NULL
    # the Python edge has checked these sizes (MultiLevelOFI.__cinit__); ring_init_rows
    # refuses an overflow anyway (and leaves an empty ring that ring_free accepts)
    if (ring_init_rows(&st.ring, capacity, w, False) != STATUS_OK
            or levels < 1 or levels > MLOFI_MAX_LEVELS):
        return STATUS_NO_MEMORY
    # prev and cur: two slots of padding before and after (BookOFI's rank shifts, two ranks
    # a step, read one slot past their side; two keep the arrays 16-byte aligned)
    st.prev = <float64_t*> c_calloc(4 * levels + 4, sizeof(float64_t))
    st.cur = <float64_t*> c_calloc(4 * levels + 4, sizeof(float64_t))
    if st.prev != NULL:
        st.prev += 2
    if st.cur != NULL:
        st.cur += 2
    st.e = <float64_t*> c_malloc(w * sizeof(float64_t))
    st.sum = <float64_t*> c_malloc(w * sizeof(float64_t))
    st.comp = <float64_t*> c_malloc(w * sizeof(float64_t))
    st.total = <float64_t*> c_malloc(w * sizeof(float64_t))
    st.total_comp = <float64_t*> c_malloc(w * sizeof(float64_t))
    st.weights = <float64_t*> c_malloc(levels * sizeof(float64_t))
    st.has_weights = False
    if (st.prev == NULL or st.cur == NULL or st.e == NULL or st.sum == NULL or st.comp == NULL
            or st.total == NULL or st.total_comp == NULL or st.weights == NULL):
        return STATUS_NO_MEMORY
    mlofi_reset(st)
    return STATUS_OK


cdef void mlofi_free(MLOFIState* st) noexcept nogil:
    if st.prev != NULL:
        c_free(st.prev - 2)
    if st.cur != NULL:
        c_free(st.cur - 2)
    c_free(st.e)
    c_free(st.sum)
    c_free(st.comp)
    c_free(st.total)
    c_free(st.total_comp)
    c_free(st.weights)
    ring_free(&st.ring)
    st.prev = st.cur = st.e = st.sum = st.comp = st.total = st.total_comp = NULL
    st.weights = NULL


cdef void mlofi_reset(MLOFIState* st) noexcept nogil:
    cdef intp_t j, L = st.levels
    for j in range(st.width):
        st.e[j] = 0.0
        st.sum[j] = 0.0
        st.comp[j] = 0.0
        st.total[j] = 0.0
        st.total_comp[j] = 0.0
    for j in range(L):
        st.prev[j] = -INFINITY
        st.prev[L + j] = 0.0
        st.prev[2 * L + j] = INFINITY
        st.prev[3 * L + j] = 0.0
    ring_clear(&st.ring)
    st.has_prev = False
    st.has_last = False
    st.last_ts = 0
    st.n_events = 0


cdef int mlofi_check(MLOFIState* st, const float64_t* bid_px, const float64_t* bid_sz,
                     const float64_t* ask_px, const float64_t* ask_sz,
                     intp_t stride) noexcept nogil:
    cdef intp_t m, L = st.levels
    cdef float64_t* c = st.cur
    cdef int status
    for m in range(L):
        c[m] = bid_px[m * stride]
        c[L + m] = bid_sz[m * stride]
        c[2 * L + m] = ask_px[m * stride]
        c[3 * L + m] = ask_sz[m * stride]
        status = ofi_check_side(&c[m], c[L + m], -INFINITY, 1)
        if status == STATUS_OK:
            status = ofi_check_side(&c[2 * L + m], c[3 * L + m], INFINITY, 3)
        if status != STATUS_OK:
            return status | (m << 8)
    return STATUS_OK


cdef inline void mlofi_evict(MLOFIState* st) noexcept nogil:
    ofi_sums_add(st.sum, st.comp, ring_row(&st.ring, ring_pop_slot(&st.ring)), st.width, 1)


cdef void mlofi_push_window(MLOFIState* st, int64_t ts) noexcept nogil:
    cdef intp_t j, tail, w = st.width
    cdef Ring* r = &st.ring
    cdef int64_t cutoff
    if st.window_time > 0:
        cutoff = ts - st.window_time
        while r.size > 0 and r.ts[r.head] <= cutoff:
            mlofi_evict(st)
        if r.size == 0:
            for j in range(w):
                st.sum[j] = 0.0
                st.comp[j] = 0.0
    elif r.size == r.capacity:
        mlofi_evict(st)
    tail = ring_push_slot(r)
    r.ts[tail] = ts
    c_memcpy(ring_row(r, tail), st.e, w * sizeof(float64_t))
    ofi_sums_add(st.total, st.total_comp, st.e, w, 0)
    ofi_sums_add(st.sum, st.comp, st.e, w, 0)


cdef int mlofi_commit(MLOFIState* st, int64_t ts) noexcept nogil:
    cdef int status = mlofi_reserve(st, ts)
    if status != STATUS_OK:
        return status
    cdef intp_t m, L = st.levels
    cdef float64_t* p = st.prev
    cdef float64_t* c = st.cur
    cdef float64_t* e = st.e
    if st.has_prev:
        for m in range(L):
            e[m] = ofi_l1_event(p[m], p[L + m], p[2 * L + m], p[3 * L + m],
                                c[m], c[L + m], c[2 * L + m], c[3 * L + m])
    else:
        for m in range(L):
            e[m] = 0.0
    st.prev = c
    st.cur = p
    st.has_prev = True
    mlofi_push_depth(st, ts, c + L, c + 3 * L)     # the depth e[L]: sum of (qb_m + qa_m)
    return STATUS_OK


cdef float64_t mlofi_depth(const MLOFIState* st) noexcept nogil:
    cdef intp_t dn = st.ring.size if (st.window > 0 or st.window_time > 0) else st.n_events
    if dn == 0:
        return 0.0
    return (st.sum[st.levels] + st.comp[st.levels]) / (2.0 * dn * st.levels)


cdef int raise_mlofi(int status, intp_t index) except -1:
    cdef int code = status & 15
    field = _ML_FIELDS[(status >> 4) & 15]
    if code == STATUS_CAPACITY:
        from ofi_fast.errors import CapacityError
        raise CapacityError(f"{field}[{index}]: the time window needs more slots than the "
                            f"buffer holds; pass a larger capacity= or grow=True",
                            field=field, index=index)
    raise_status(code, field, index, f"level {status >> 8}" if field != "ts" else "")
    return 0


def integrated_weights(sample):
    """Integrated-OFI weights (Cont, Cucuringu & Zhang 2023, eq. 4) from a fitting sample.

    ``sample``: (n, L) multi-level OFIs (e.g. depth-normalised OFI per interval), past data
    only when the result feeds a prediction. w_1 = the eigenvector of the largest eigenvalue
    of the centred sample covariance (as sklearn's PCA), scaled to unit L1 norm, sign fixed so
    that sum(w) > 0 (a tie sum(w) == 0 is broken by making the largest-magnitude loading
    positive). Returns ``(weights, explained_variance_ratio)``. Needs n >= 2 and a non-zero
    variance.
    """
    x = np.asarray(sample, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise OFIError(f"sample must be (n >= 2, L >= 1), got shape {x.shape}", field="sample")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise_status(STATUS_NON_FINITE, "sample", bad)
    cov = np.atleast_2d(np.cov(x, rowvar=False, ddof=1))
    vals, vecs = np.linalg.eigh(cov)
    tot = vals.sum()
    if not tot > 0:
        raise OFIError("sample has zero variance: no principal component", field="sample")
    top = vals.shape[0] - 1   # eigh sorts eigenvalues ascending
    w = vecs[:, top].copy()
    w /= np.abs(w).sum()
    s = w.sum()
    if s < 0 or (s == 0 and w[np.argmax(np.abs(w))] < 0):
        w = -w
    return w, float(vals[top] / tot)


@cython.final
cdef class MultiLevelOFI:
    """Streaming multi-level OFI (Xu, Gould & Howison 2018) with depth-normalised and
    integrated OFI (Cont, Cucuringu & Zhang 2023, eq. 3-4).

    ``MultiLevelOFI(levels, window=None, window_time=None, capacity=None, grow=False,
    weights=None)``

    - ``update(ts, bid_px, bid_sz, ask_px, ask_sz)``: one event, each argument the L values of
      levels 1..L (best first); returns e_m (array of L) for that event (zeros for the first).
      Absent levels: NaN (or -inf bid / +inf ask, or LOBSTER's dummy) price with size 0.
    - ``update_many(ts, bid_px, bid_sz, ask_px, ask_sz)``: (n, L) arrays, GIL released;
      returns (n, L) e (and the windowed values per event with ``rolling=True``).
    - ``values``: OFI per level over the window (whole stream without one); ``total``.
    - ``depth``: Q of CCZ eq. 3 over the window, (1/L) sum_m sum_n (qb_{m,n} + qa_{m,n}) /
      (2 dN), post-event sizes, empty levels count as 0 (they lower Q).
    - ``normalized``: ``values / depth`` (zeros when the window is empty or Q = 0).
    - ``integrated``: sum_m w_m normalized_m with weights from ``fit(sample)`` or
      ``weights=`` (L1-normalised, sum > 0); NaN until weights are set. CCZ fit the weights on
      past data only: fit them on a training sample, then apply online.
    """

    def __cinit__(self, levels, window=None, window_time=None, capacity=None, grow=False,
                  weights=None):
        L = integer(levels, "levels", 1, MLOFI_MAX_LEVELS)
        w, wt, cap = check_window(window, window_time, capacity, 8 + 8 * (L + 1))
        if not (w or wt):
            cap = 1
        guard_init(&self.guard)
        self.window = window
        self.window_time = window_time
        self.explained_variance_ratio = None
        if mlofi_init(&self.st, L, w, wt, cap, bool(grow)) != STATUS_OK:
            mlofi_free(&self.st)
            raise alloc_error("window" if w else ("capacity" if wt else "levels"),
                              cap if (w or wt) else L, (8 + 8 * (L + 1)) * cap + 72 * L)
        if weights is not None:
            self.weights = weights

    def __dealloc__(self):
        mlofi_free(&self.st)
        guard_free(&self.guard)

    cdef int push(self, int64_t ts, const float64_t* bid_px, const float64_t* bid_sz,
                  const float64_t* ask_px, const float64_t* ask_sz) noexcept nogil:
        cdef int status = mlofi_check(&self.st, bid_px, bid_sz, ask_px, ask_sz, 1)
        if status != STATUS_OK:
            return status
        return mlofi_commit(&self.st, ts)

    cdef int check_ts(self, int64_t ts) noexcept nogil:
        return mlofi_check_ts(&self.st, ts)

    @property
    def levels(self):
        return self.st.levels

    def update(self, int64_t ts, bid_px, bid_sz, ask_px, ask_sz):
        """Feed one top-L state at time ``ts``; return its e_m per level (array of L)."""
        cdef intp_t L = self.st.levels
        cdef const float64_t[::1] bp = column(bid_px, np.float64, "bid_px", L)
        cdef const float64_t[::1] bs = column(bid_sz, np.float64, "bid_sz", L)
        cdef const float64_t[::1] ap = column(ask_px, np.float64, "ask_px", L)
        cdef const float64_t[::1] az = column(ask_sz, np.float64, "ask_sz", L)
        out = np.empty(L, dtype=np.float64)
        if self.guard.busy:
            guard_wait(&self.guard)
        cdef int status = self.push(ts, &bp[0], &bs[0], &ap[0], &az[0])
        if status != STATUS_OK:
            raise_mlofi(status, 0)
        cdef float64_t[::1] o = out
        c_memcpy(&o[0], self.st.e, L * sizeof(float64_t))
        return out

    def update_many(self, ts, bid_px, bid_sz, ask_px, ask_sz, *, out=None, rolling=False):
        """Feed (n, L) arrays of top-L states; return (n, L) e per event and level.

        ``ts`` may be None without a time window. ``rolling=True`` returns ``(e, values)``,
        ``values[i]`` the windowed OFI per level after event i. On a bad event at index i,
        events 0..i-1 are applied and the error names the field, index i and the level.
        """
        cdef intp_t L = self.st.levels
        arrs = []
        for name, a in (("bid_px", bid_px), ("bid_sz", bid_sz), ("ask_px", ask_px),
                        ("ask_sz", ask_sz)):
            x = np.ascontiguousarray(a, dtype=np.float64)
            if x.ndim == 1 and L == 1:
                x = x.reshape(-1, 1)
            if x.ndim != 2 or x.shape[1] != L or (arrs and x.shape[0] != arrs[0].shape[0]):
                raise OFIError(f"{name} must have shape (n, {L}), got {x.shape}", field=name)
            arrs.append(x)
        cdef const float64_t[:, ::1] bp = arrs[0]
        cdef const float64_t[:, ::1] bs = arrs[1]
        cdef const float64_t[:, ::1] ap = arrs[2]
        cdef const float64_t[:, ::1] az = arrs[3]
        cdef intp_t n = bp.shape[0]
        cdef const int64_t[::1] t
        cdef bint has_ts = ts is not None
        if has_ts:
            t = column(ts, np.int64, "ts", n)
        elif self.st.window_time > 0:
            raise OFIError("a time window needs ts", field="ts")
        if out is None:
            e_arr = np.empty((n, L), dtype=np.float64)
        else:
            e_arr = out
            if not isinstance(out, np.ndarray) or out.dtype != np.float64 \
                    or out.shape != (n, L) or not out.flags.c_contiguous:
                raise OFIError(f"out must be a contiguous float64 array of shape ({n}, {L})",
                               field="out")
        cdef float64_t[:, ::1] e = e_arr
        v_arr = np.empty((n, L), dtype=np.float64) if rolling else np.empty((0, L))
        cdef float64_t[:, ::1] v = v_arr
        cdef bint want_v = rolling
        cdef intp_t i = 0, m
        cdef int status = STATUS_OK
        cdef int64_t tsi
        if n == 0:
            return (e_arr, v_arr) if rolling else e_arr
        guard_enter(&self.guard)
        try:
            tsi = self.st.last_ts
            with nogil:
                for i in range(n):
                    if has_ts:
                        tsi = t[i]
                    status = mlofi_check(&self.st, &bp[i, 0], &bs[i, 0], &ap[i, 0], &az[i, 0], 1)
                    if status == STATUS_OK:
                        status = mlofi_commit(&self.st, tsi)
                    if status != STATUS_OK:
                        break
                    for m in range(L):
                        e[i, m] = self.st.e[m]
                    if want_v:
                        for m in range(L):
                            v[i, m] = self.st.sum[m] + self.st.comp[m]
        finally:
            guard_exit(&self.guard)
        if status != STATUS_OK:
            raise_mlofi(status, i)
        return (e_arr, v_arr) if rolling else e_arr

    def _vec(self, bint total=False):
        cdef intp_t m, L = self.st.levels
        out = np.empty(L, dtype=np.float64)
        if self.guard.busy:
            guard_wait(&self.guard)
        cdef float64_t[::1] o = out
        cdef bint windowed = self.st.window > 0 or self.st.window_time > 0
        for m in range(L):
            if total and windowed:
                o[m] = self.st.total[m] + self.st.total_comp[m]
            else:
                o[m] = self.st.sum[m] + self.st.comp[m]
        return out

    @property
    def values(self):
        """Multi-level OFI over the window, per level (array of L)."""
        return self._vec()

    @property
    def total(self):
        """Multi-level OFI per level over every event since reset."""
        return self._vec(True)

    @property
    def last(self):
        """The last event's e_m per level."""
        out = np.empty(self.st.levels, dtype=np.float64)
        if self.guard.busy:
            guard_wait(&self.guard)
        for m in range(self.st.levels):
            out[m] = self.st.e[m]
        return out

    @property
    def depth(self):
        """Depth scale Q (CCZ eq. 3) over the window; 0 when the window is empty."""
        if self.guard.busy:
            guard_wait(&self.guard)
        return mlofi_depth(&self.st)

    @property
    def normalized(self):
        """values / depth (CCZ eq. 3); zeros when the window is empty or Q = 0."""
        if self.guard.busy:
            guard_wait(&self.guard)
        q = mlofi_depth(&self.st)
        v = self._vec()
        return v / q if q > 0 else np.zeros_like(v)

    @property
    def integrated(self):
        """Integrated OFI (CCZ eq. 4): weights . normalized; NaN until weights are set."""
        if not self.st.has_weights:
            return float("nan")
        return float(np.dot(self.weights, self.normalized))

    @property
    def weights(self):
        """Integrated-OFI weights (None until fitted or given)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        if not self.st.has_weights:
            return None
        return np.array([self.st.weights[m] for m in range(self.st.levels)])

    @weights.setter
    def weights(self, w):
        """Set weights; they are L1-normalised and their sign fixed so that sum(w) > 0."""
        if w is None:
            if self.guard.busy:
                guard_wait(&self.guard)
            self.st.has_weights = False
            return
        a = column(w, np.float64, "weights", self.st.levels)
        if not np.isfinite(a).all() or not np.abs(a).sum() > 0:
            raise OFIError("weights must be finite and not all zero", field="weights")
        a = a / np.abs(a).sum()
        if a.sum() < 0:
            a = -a
        if self.guard.busy:
            guard_wait(&self.guard)
        for m in range(self.st.levels):
            self.st.weights[m] = a[m]
        self.st.has_weights = True

    def fit(self, sample):
        """Fit the integrated-OFI weights on ``sample`` ((n, L) normalised multi-level OFIs
        over past intervals) with :func:`integrated_weights`; returns the weights."""
        w, ratio = integrated_weights(sample)
        if w.shape[0] != self.st.levels:
            raise OFIError(f"sample must have {self.st.levels} columns", field="sample")
        self.weights = w
        self.explained_variance_ratio = ratio
        return self.weights

    @property
    def count(self):
        """Events in the window (all events since reset without a window)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        if self.st.window > 0 or self.st.window_time > 0:
            return self.st.ring.size
        return self.st.n_events

    @property
    def n_events(self):
        if self.guard.busy:
            guard_wait(&self.guard)
        return self.st.n_events

    def reset(self):
        """Forget all events (weights are kept): the next event is a first event (e = 0)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        mlofi_reset(&self.st)

    def __reduce__(self):
        cdef intp_t L = self.st.levels, w = self.st.width
        cdef int64_t[::1] tv
        cdef float64_t[:, ::1] vv
        if self.guard.busy:
            guard_wait(&self.guard)
        ring_ts = np.empty(self.st.ring.size, dtype=np.int64)
        ring_val = np.empty((self.st.ring.size, w), dtype=np.float64)
        if self.st.ring.size > 0:
            tv = ring_ts
            vv = ring_val
            ring_copy_out(&self.st.ring, &tv[0], &vv[0, 0], NULL)
        st = {
            "prev": [self.st.prev[k] for k in range(4 * L)],
            "e": [self.st.e[k] for k in range(w)],
            "sum": [self.st.sum[k] for k in range(w)],
            "comp": [self.st.comp[k] for k in range(w)],
            "total": [self.st.total[k] for k in range(w)],
            "total_comp": [self.st.total_comp[k] for k in range(w)],
            "ring_ts": ring_ts, "ring_val": ring_val,
            "flags": (bool(self.st.has_prev), bool(self.st.has_last), self.st.last_ts,
                      self.st.n_events),
            "weights": self.weights, "ratio": self.explained_variance_ratio,
        }
        return (MultiLevelOFI, (L, self.window, self.window_time, self.st.ring.capacity,
                                bool(self.st.grow)), st)

    def __setstate__(self, d):
        guard_enter(&self.guard)   # Python code runs in here: hold the lock throughout
        try:
            self._setstate(d)
        finally:
            guard_exit(&self.guard)

    def _setstate(self, d):
        cdef intp_t L = self.st.levels, w = self.st.width, n, k
        cdef const int64_t[::1] tv
        cdef const float64_t[:, ::1] vv
        tv = np.ascontiguousarray(d["ring_ts"], dtype=np.int64)
        rv = np.ascontiguousarray(d["ring_val"], dtype=np.float64)
        n = tv.shape[0]
        if rv.shape != (n, w):
            raise OFIError(f"pickled MultiLevelOFI state: ring_val has shape {rv.shape}, "
                           f"expected {(n, w)}", field="state")
        vv = rv
        for k in range(4 * L):
            self.st.prev[k] = d["prev"][k]
        for k in range(w):
            self.st.e[k] = d["e"][k]
            self.st.sum[k] = d["sum"][k]
            self.st.comp[k] = d["comp"][k]
            self.st.total[k] = d["total"][k]
            self.st.total_comp[k] = d["total_comp"][k]
        while self.st.ring.capacity < n:
            if ring_grow(&self.st.ring, 2 * self.st.ring.capacity) != STATUS_OK:
                raise MemoryError()
        ring_clear(&self.st.ring)
        if n > 0:
            ring_copy_in(&self.st.ring, &tv[0], &vv[0, 0], NULL, n)
        hp, hl, self.st.last_ts, self.st.n_events = d["flags"]
        self.st.has_prev = hp
        self.st.has_last = hl
        wts = d["weights"]
        self.st.has_weights = wts is not None
        if wts is not None:    # stored already normalised: copy bit for bit
            for k in range(L):
                self.st.weights[k] = wts[k]
        self.explained_variance_ratio = d["ratio"]


def mlofi(bid_px, bid_sz, ask_px, ask_sz):
    """Multi-level OFI e_{m,n} (Xu, Gould & Howison 2018) for (n, L) arrays of top-L states,
    best level first; returns (n, L) float64 with row 0 all zeros (first event).

    Absent levels: NaN / -inf bid, NaN / +inf ask (or LOBSTER's dummies) with size 0.
    Same as ``MultiLevelOFI(L).update_many(None, ...)``.
    """
    b = np.asarray(bid_px)
    L = b.shape[1] if b.ndim == 2 else 1
    return MultiLevelOFI(L).update_many(None, bid_px, bid_sz, ask_px, ask_sz)
