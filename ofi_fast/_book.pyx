"""L2 order book from price-level deltas, in integer ticks.

Feeds (Binance, Kraken, Tardis, LOBSTER at price-level granularity) send the *absolute* size at
a price: ``apply(side, price, size)`` sets it, size 0 deletes the level. Prices are converted to
integer ticks once, ``tick = round(price / tick_size)``; a price more than 1e-6 tick (plus
1e-13 relative, the rounding of the division itself) away from a multiple of ``tick_size`` is
rejected (OFIError, field ``price``). The fast path multiplies by 1 / tick_size instead and
accepts only within a 1 % tighter tolerance; a price near the edge is decided by the division,
so the outcome and the tick never depend on the path. Prices come back as ``tick / (1 /
tick_size)`` when ``1 / tick_size`` is an integer (0.01 -> 100: the double nearest the decimal
price, e.g. 61828.02 and not 61828.020000000004), else ``tick * tick_size``.

Structure (decision, issue 13 item 4): each side works in keys (key = tick for bids, -tick for
asks, so a higher key is a better price on both sides) and is a tick ladder plus a far array:

- the ladder: ``w`` slots (32,768), the level of key k at slot ``k & (w - 1)``, covering the keys
  [lo, lo + w) around the touch, with one occupancy bit per slot. The best level is always in
  it. An update inside the window is an index, a store and a bit flip: no search, no move,
  one branch (``_apply``); deleting the best stays on that path when the next level is in the
  best's 64-slot bitmap word (the next set bit, one ``clz``), else the general code scans the
  bitmap (one ``clz`` per 64 ticks);
- the window follows the touch: an insert above it moves it up so that the new best sits 3/4
  of the way up (the levels that fall below it move to the far array); the best falling into
  its bottom quarter moves it down (far levels inside the new window move back). Slots are
  circular (key & mask), so recentring moves only the levels that change place, each once;
- the far array: the levels below the window, in sorted blocks of at most 32 levels under a
  directory of their highest keys: an update at any depth is two branch-free binary searches
  and a move of at most 31 levels (in C, ofi_far_row, for the fast path and the general code
  alike, unless a block splits, empties or merges); a full block splits (a directory shift
  of 16 bytes per block, at most once per 16 inserts), small neighbours merge. Levels leaving
  the ladder are appended above its highest level, levels entering it are taken from there
  (issue 14: inserts in any order, e.g. always into the middle, stay O(log n) plus a
  bounded move, and an amortised one when the insert widens the ladder, below);
- ``top(n)``, ``imbalance``, ``weighted_mid`` and BookOFI read the ladder directly (a bitmap
  walk from the best, continuing into the far array); BookOFI keeps the keys of its top L and
  updates them by rank (an overwrite, or a shift by one), so the book is not walked per delta;
- memory: the ladder (9 w bytes per side) plus the far blocks (16 bytes per slot, at least
  1/8 full on average), never the price range: a price a billion ticks away costs one far
  slot. w is 32,768; a snapshot deeper than the window widens it (doubling, to at most 16
  slots per level of the snapshot, e.g. 131,072 for 10,000 levels 10 ticks apart: every
  update then an index, not a far-block search), reset restores it. A side built by deltas
  widens too (``side_grow``, after an insert the fast paths decline: a far one, or one that
  moves the window): while more of its levels are far than in the ladder, to the smallest
  doubling of its width whose window reaches the highest far one, if that is within the same
  16 slots per live level (the same 131,072 for those 10,000 levels). A widening re-slots the ladder and takes in the far
  levels it covers: amortised, each width is reached once, so at most 4 times the final width
  moved in all, not a per-insert bound. Decision: no shrink rule; a side that loses most of
  its levels keeps its width (memory bounded by its peak levels, as the far directory's
  slots) until reset or a snapshot of that side.
Measured in bench/bench_book.py (see bench/RESULTS.md, "issue 13: tick ladder").

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
from libc.math cimport NAN, copysign, fabs, round as c_round
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memmove, memset
from libc.stdint cimport INT64_MAX, INT64_MIN, uint64_t
cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
cdef extern from *:
    int __builtin_clzll(unsigned long long x) nogil
    int __builtin_ctzll(unsigned long long x) nogil
cdef extern from *:
    """
    /* BookOFI's rank shifts on one side's keys ks, sizes ps and, unless pp is NULL, prices pp
     * (pp + L == ps), e of the levels that move,
     * two ranks a step with gcc/clang vector extensions (per lane the scalar operations, so
     * the same doubles). down (an insert at rank lo): ranks lo + 1 .. L - 1 <- lo .. L - 2,
     * e = sf * q + 0.0; the last step may also write rank lo from rank lo - 1 (one slot of
     * padding before ks and ps), which the caller writes next. up (a delete at rank lo):
     * ranks lo .. L - 2 <- lo + 1 .. L - 1, e = -sf * q + 0.0 of the old q; the last step
     * may also write rank L - 1 from rank L (e[L - 1] with the same value; one slot of
     * padding after ks and ps), which the caller writes next. With sum (not NULL), e is not
     * written: each e is added to sum at its rank instead (bookofi_step_whole). */
    #if (defined(__GNUC__) || defined(__clang__)) && !defined(OFI_FAST_SCALAR)
    #define BOOKOFI_SHIFT_VECTOR 1
    #else
    #define BOOKOFI_SHIFT_VECTOR 0
    #endif
    static inline __attribute__((always_inline)) void
    bookofi_shift_down(int64_t *ks, double *pp, double *ps, double *e, double sf,
                       Py_ssize_t lo, Py_ssize_t L, double *sum)
    {
        Py_ssize_t j = L - 1;
    #if BOOKOFI_SHIFT_VECTOR
        typedef double v2d __attribute__((vector_size(16)));
        for (; j > lo; j -= 2) {
            int64_t K[2];
            v2d Q, E, P;
            memcpy(K, ks + j - 2, sizeof K); memcpy(&Q, ps + j - 2, sizeof Q);
            E = sf * Q + 0.0;
            if (sum) {
                v2d S;
                memcpy(&S, sum + j - 1, sizeof S); S += E; memcpy(sum + j - 1, &S, sizeof S);
            } else {
                memcpy(e + j - 1, &E, sizeof E);
            }
            memcpy(ks + j - 1, K, sizeof K);
            memcpy(ps + j - 1, &Q, sizeof Q);
            if (pp) {
                memcpy(&P, pp + j - 2, sizeof P); memcpy(pp + j - 1, &P, sizeof P);
            }
        }
    #else
        for (; j > lo; j--) {
            if (sum) sum[j] += sf * ps[j - 1] + 0.0; else e[j] = sf * ps[j - 1] + 0.0;
            ks[j] = ks[j - 1]; ps[j] = ps[j - 1];
            if (pp) pp[j] = pp[j - 1];
        }
    #endif
    }
    static inline __attribute__((always_inline)) void
    bookofi_shift_up(int64_t *ks, double *pp, double *ps, double *e, double sf,
                     Py_ssize_t lo, Py_ssize_t L, double *sum)
    {
        Py_ssize_t j = lo;
    #if BOOKOFI_SHIFT_VECTOR
        typedef double v2d __attribute__((vector_size(16)));
        for (; j < L - 1; j += 2) {
            int64_t K[2];
            v2d Q, Q0, E, P;
            memcpy(K, ks + j + 1, sizeof K); memcpy(&Q, ps + j + 1, sizeof Q);
            memcpy(&Q0, ps + j, sizeof Q0);
            E = -sf * Q0 + 0.0;
            if (sum) {
                v2d S;
                memcpy(&S, sum + j, sizeof S); S += E; memcpy(sum + j, &S, sizeof S);
            } else {
                memcpy(e + j, &E, sizeof E);
            }
            memcpy(ks + j, K, sizeof K);
            memcpy(ps + j, &Q, sizeof Q);
            if (pp) {
                memcpy(&P, pp + j + 1, sizeof P); memcpy(pp + j, &P, sizeof P);
            }
        }
    #else
        for (; j < L - 1; j++) {
            if (sum) sum[j] += -sf * ps[j] + 0.0; else e[j] = -sf * ps[j] + 0.0;
            ks[j] = ks[j + 1]; ps[j] = ps[j + 1];
            if (pp) pp[j] = pp[j + 1];
        }
    #endif
    }
    /* 0 for the bids (side 1), L for the asks (-1): the offset of the side's keys (twice it,
     * of its prices and sizes in prev), by a mask (no jump, no multiply) */
    static inline __attribute__((always_inline)) Py_ssize_t bookofi_side_off(int side,
                                                                              Py_ssize_t L)
    {
        return L & -(Py_ssize_t) (side < 0);
    }
    /* lo = #{j < L: ks[j] > key}: ks descends (absent levels INT64_MIN last), so a binary
     * search. Below 16 levels, unrolled: power-of-two steps h from 8 (from 2 below 4
     * levels; one compare at 1 level, where the two steps cost BookOFI(1) 7 % more time)
     * down to 1, each probe clamped to L (the count stays in [lo, lo + 2 h - 1]
     * before the step of h); which steps run depends on L only (predicted jumps). gcc 12
     * compiles the steps of 8 and 4 to jumps, which the ranks of a feed, mostly near the
     * touch, predict well: BookOFI(10) realistic 28.2 ns a row against 29.0 with all four
     * as conditional moves and 29.5 for the loop below (bench/RESULTS.md, 2026-12-04). From
     * 16 levels the loop, without clamps (its trip count depends on L only). (A 4-lane
     * AVX2 count cost as much at L = 10 on an EPYC; on a Xeon its 32-byte loads of keys
     * just stored by the shifts stalled: 64 ns a row against 30.) */
    #define BOOKOFI_RANK_STEP(h)                                                            \
        { const Py_ssize_t p_ = lo + (h) < L ? lo + (h) : L; lo = k1[p_] > key ? p_ : lo; }
    static inline __attribute__((always_inline)) Py_ssize_t
    bookofi_rank(const int64_t *ks, Py_ssize_t L, int64_t key)
    {
        const int64_t *k1 = ks - 1;              /* k1[p] = ks[p - 1], p in [1, L] */
        Py_ssize_t lo = 0, n = L;
        if (L < 16) {
            if (L >= 4) {
                BOOKOFI_RANK_STEP(8)
                BOOKOFI_RANK_STEP(4)
            } else if (L == 1) {
                return ks[0] > key;
            }
            BOOKOFI_RANK_STEP(2)
            BOOKOFI_RANK_STEP(1)
            return lo;
        }
        while (n > 1) {
            const Py_ssize_t half = n >> 1;
            lo = ks[lo + half] > key ? lo + half : lo;
            n -= half;
        }
        return lo + (ks[lo] > key);
    }
    #undef BOOKOFI_RANK_STEP
    /* The level a delete in the top L brings in at rank L - 1: the best of the side below
     * last, the old L-th key (INT64_MIN: none). Returns its key, *q its size; INT64_MIN and
     * +0.0 when there is none. */
    static inline __attribute__((always_inline)) int64_t
    bookofi_incoming(const BookState *b, int side, int64_t last, double *q)
    {
        int64_t k;
        if (last != INT64_MIN && ofi_side_below(side == 1 ? &b->bid : &b->ask, last, &k, q))
            return k;
        *q = 0.0;
        return INT64_MIN;
    }
    /* BookOFI's event of a delta the book applied (kind, key as ofi_book_fast returns them), on
     * the cached top L: keys (the bids' L, then the asks'; INT64_MIN when absent) and the
     * previous state's sizes (prev + L: bids, prev + 3 L: asks) and, with prices, its prices
     * (prev, prev + 2 L; without, they are left to bookofi_prices). One level of one side
     * changed, so the top L changes at its rank lo (the cached keys better than it) only: an
     * overwrite at lo, an insert shifts ranks lo.. down one, a delete shifts them up one and
     * brings in the level below the old L-th (one book query). e <- e_1..e_L of the event (by
     * CKS eq. 10, bit for bit ofi_l1_event: the other side's level is unchanged, so its part is
     * q - q = +0.0 and e = sf * (this side's part in key order) + 0.0. Keys are distinct within
     * a side and exact in float64 (integers rounded from a float64, |key| < 4e18), so a level
     * taking a better price gets sf * q1 + 0.0, a worse one -sf * q0 + 0.0 (both absent: +0.0),
     * the same price sf * (q1 - q0) + 0.0 (an ask's q0 - q1 is -(q1 - q0), and -(+0.0) + 0.0 =
     * +0.0)). Returns what changed, for the sums: 0 nothing (rank L, a missing delete: e = 0),
     * 1 the size at *lo (e zero but there), 2 ranks *lo.. (every e may be nonzero). */
    static inline __attribute__((always_inline)) int
    bookofi_step(const BookState *b, int64_t *keys, double *prev, double *e, Py_ssize_t L,
                 int side, int kind, int64_t key, double size, Py_ssize_t *lo_out,
                 const int prices)
    {
        const Py_ssize_t off = bookofi_side_off(side, L);
        int64_t *ks = keys + off;
        double *pp = prices ? prev + 2 * off : NULL;
        double *ps = prev + 2 * off + L;
        const double sf = (double) side;
        ofi_zero(e, L);
        Py_ssize_t lo = kind == 3 ? L : bookofi_rank(ks, L, key);  /* 3: BOOK_MISSING */
        *lo_out = lo;
        if (lo >= L)
            return 0;
        if (kind == 0) {                                      /* BOOK_SET */
            e[lo] = sf * (size - ps[lo]) + 0.0;
            ps[lo] = size;
            return 1;
        }
        if (kind == 1) {                 /* BOOK_INSERT: rank lo and the shifted ones better */
            bookofi_shift_down(ks, pp, ps, e, sf, lo, L, NULL);
            e[lo] = sf * size + 0.0;
            ks[lo] = key;
            ps[lo] = size;
            if (prices)
                pp[lo] = (double) (key * side);
            return 2;
        }
        /* BOOK_DELETE (ks[lo] == key): ranks lo.. worse */
        double q;
        const int64_t nk = bookofi_incoming(b, side, ks[L - 1], &q);
        e[L - 1] = -sf * ps[L - 1] + 0.0;
        bookofi_shift_up(ks, pp, ps, e, sf, lo, L, NULL);
        ks[L - 1] = nk;
        ps[L - 1] = q;
        if (prices)
            pp[L - 1] = ks[L - 1] == INT64_MIN ? -sf * INFINITY : (double) (ks[L - 1] * side);
        return 2;
    }
    /* Whole sizes (issue 13). A size q (finite, >= 0) is whole when it is a whole number below
     * 2**31. While every size of the top L (both sides) is whole and L <= 1024, every e is a
     * whole number below 2**31 in magnitude and the depth one below 2**42; while also every
     * sum s[k] is a whole number below 2**53 in magnitude, each addition to it is exact. The
     * TwoSum step (ofi_sums_step1) then gives s + x with both error terms +0.0, and c + 0.0 is
     * c (c is never -0.0: checked); the depth's chain of adds in order is the exact total,
     * so it equals the previous depth plus the one size difference of the event. So
     * bookofi_keep_rows_ takes such rows (without lv) by bookofi_step_whole: e added straight
     * into the sums at the ranks that changed, the depth kept by its difference, same bits.
     * Checked at the start of each block of BOOKOFI_WHOLE_ROWS rows (they add under 2**52 to
     * any sum, so |s| < 2**52 at its start suffices), then per row for the sizes that enter
     * the top L (the row's own, and the one a delete brings in); the first that is not whole
     * ends it for the rest of the block. */
    /* (BOOKOFI_WHOLE_MIN: below 3 levels the checks cost more than the compensated sums they
     * save, as measured on an earlier form of this loop: BookOFI(1) 244.3 instructions a row
     * against 231.5, BookOFI(2) 266.0 against 257.6; below it the loop without them runs) */
    enum { BOOKOFI_WHOLE_ROWS = 1024, BOOKOFI_WHOLE_MIN = 3, BOOKOFI_WHOLE_LEVELS = 1024 };
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #endif
    static inline __attribute__((always_inline)) int bookofi_whole(double q)
    {
    #if defined(__SSE2__)
        /* cvttsd2si: q toward zero as an int32, INT32_MIN when out of range (or NaN) */
        return (double) _mm_cvttsd_si32(_mm_set_sd(q)) == q;
    #else
        return (q < 2147483648.0) & (((q + 6755399441055744.0) - 6755399441055744.0) == q);
    #endif
    }
    /* x when keep (0 or 1), else +0.0: by a bit mask (gcc made the select a branch, which the
     * row's rank mispredicts) */
    static inline __attribute__((always_inline)) double bookofi_keep_if(double x, int keep)
    {
        uint64_t u = ofi_book_bits(x) & ((uint64_t) 0 - (uint64_t) keep);
        memcpy(&x, &u, sizeof x);
        return x;
    }
    /* 1 when a block of whole-size rows may start: L <= 1024, the top L's sizes (prev + L,
     * prev + 3 L) whole, depth their chain sum, each s[k] (k <= L) a whole number below
     * 2**52 in magnitude and each c[k] not -0.0 */
    static inline int bookofi_whole_start(const double *prev, double depth, const double *s,
                                          const double *c, Py_ssize_t L)
    {
        int ok = L <= BOOKOFI_WHOLE_LEVELS;
        for (Py_ssize_t j = 0; ok && j < L; j++)
            ok = bookofi_whole(prev[L + j]) & bookofi_whole(prev[3 * L + j]);
        if (!ok || depth != ofi_pair_sum(prev + L, prev + 3 * L, L))
            return 0;
        for (Py_ssize_t k = 0; k <= L; k++) {
            const double a = fabs(s[k]);
            if (!(a < 4503599627370496.0)
                    || ((a + 6755399441055744.0) - 6755399441055744.0) != a
                    || ofi_book_bits(c[k]) == 0x8000000000000000ull)
                return 0;
        }
        return 1;
    }
    /* bookofi_step's event of a row of whole size (the top L's sizes whole: the caller's),
     * added into the sums s at the ranks that changed instead of written to e (e is left
     * as it was). Returns -1 with nothing changed when a delete would bring in a size that
     * is not whole; else bookofi_step's value and *lo_out, with *elo the event's e at rank
     * lo and *dq the change of this side's top-L size total (when it returns 1 or 2). No
     * prices are kept: the side's last price slot, the pad before its sizes, must hold a
     * whole number (the caller zeroes it), since an insert's last pair step may add e of the
     * rank before lo to s[lo], which is taken back. */
    static inline __attribute__((always_inline)) int
    bookofi_step_whole(const BookState *b, int64_t *keys, double *prev, double *s,
                       Py_ssize_t L, int side, int kind, int64_t key, double size,
                       Py_ssize_t *lo_out, double *elo, double *dq)
    {
        const Py_ssize_t off = bookofi_side_off(side, L);
        int64_t *ks = keys + off;
        double *ps = prev + 2 * off + L;
        const double sf = (double) side;
        const Py_ssize_t lo = kind == 3 ? L : bookofi_rank(ks, L, key);
        *lo_out = lo;
        if (lo >= L)
            return 0;
        if (kind == 0) {                                      /* BOOK_SET */
            const double x = sf * (size - ps[lo]) + 0.0;
            *dq = size - ps[lo];
            *elo = x;
            s[lo] += x;
            ps[lo] = size;
            return 1;
        }
        /* the pair steps' extra rank (BOOKOFI_SHIFT_VECTOR, when L - 1 - lo is odd): lo for
         * an insert, L - 1 for a delete */
        const int extra = BOOKOFI_SHIFT_VECTOR & (int) ((L - 1 - lo) & 1);
        if (kind == 1) {                                      /* BOOK_INSERT */
            *dq = size - ps[L - 1];
            bookofi_shift_down(ks, NULL, ps, NULL, sf, lo, L, s);
            const double x = sf * size + 0.0;
            const double w = bookofi_keep_if(sf * ps[lo] + 0.0, extra);   /* the extra step's */
            s[lo] += x - w;
            *elo = x;
            ks[lo] = key;
            ps[lo] = size;
            return 2;
        }
        /* BOOK_DELETE: the level below the old L-th comes in at rank L - 1 */
        double q;
        const int64_t nk = bookofi_incoming(b, side, ks[L - 1], &q);
        if (!bookofi_whole(q))
            return -1;
        const double gone = ps[lo];
        const double xl = -sf * ps[L - 1] + 0.0;
        bookofi_shift_up(ks, NULL, ps, NULL, sf, lo, L, s);
        s[L - 1] += bookofi_keep_if(xl, extra ^ 1);           /* the extra step added it */
        ks[L - 1] = nk;
        ps[L - 1] = q;
        *dq = q - gone;
        *elo = -sf * gone + 0.0;
        return 2;
    }
    /* e[0 .. L - 1] of the last event that bookofi_step_whole took (side, changed, kind, lo,
     * elo as it had them), from the top L after it: what bookofi_step would have written */
    static inline void bookofi_whole_e(double *e, const double *prev, Py_ssize_t L, int side,
                                       int changed, int kind, Py_ssize_t lo, double elo)
    {
        const double *ps = prev + 2 * bookofi_side_off(side, L) + L;
        const double sf = (double) side;
        ofi_zero(e, L);
        if (changed == 0)
            return;
        e[lo] = elo;
        if (changed == 1)
            return;
        for (Py_ssize_t k = lo + 1; k < L; k++)          /* insert: the new q; delete: the old */
            e[k] = kind == 1 ? sf * ps[k] + 0.0 : -sf * ps[k - 1] + 0.0;
    }
    /* The sums of the event bookofi_step left in e (no window: the stream's L + 1 sums s,
     * compensations c), with the depth e[L] (changed 1 or 2; 0: the previous event's): the
     * same additions as mlofi_push / mlofi_push_depth (adding +0.0 changes no sum). */
    static inline __attribute__((always_inline)) void
    bookofi_sums(double *s, double *c, double *e, const double *prev, Py_ssize_t L,
                 int changed, Py_ssize_t lo)
    {
        if (changed == 2) {
            ofi_sums_add_depth(s, c, e, prev + L, prev + 3 * L, L);
            return;
        }
        if (changed == 1)
            e[L] = ofi_pair_sum(prev + L, prev + 3 * L, L);
        else
            lo = 0;
        ofi_sums_step1(s + lo, c + lo, e[lo]);
        ofi_sums_step1(s + L, c + L, e[L]);
    }
    /* BookOFI.update_many's rows without a window, under policy keep, every row its own
     * event (no batch_end), after a first event (the caller's conditions): rows i.. through
     * the book's fast path (ofi_book_fast, judged as a message end), bookofi_step and
     * bookofi_sums, e_1 to e_out (and e_1..e_L to lv, row-major, unless NULL), until a row
     * that needs the general code (the fast path declines it, or its ts (ts NULL: none) is
     * older than *last_ts when *has_last) or n. Returns the index of that row; the rows
     * before it are applied, with the counters (n_updates, n_missing, *n_events, *last_ts,
     * *has_last) summed and stored once. last_side is left 0 ("no last update known", as
     * Book.apply_many's batch). One C loop so that the row's values stay in registers
     * (issue 13: BookOFI(10) on the realistic stream, bench/RESULTS.md). */
    static inline __attribute__((always_inline)) Py_ssize_t
    bookofi_keep_rows_(BookState *b, int64_t *keys, double *prev, double *e, double *s,
                       double *c, Py_ssize_t L, Py_ssize_t i, Py_ssize_t n, const int64_t *ts,
                       const signed char *side, const double *price, const double *size,
                       double *e_out, double *lv, int64_t *last_ts, int *has_last,
                       int64_t *n_events, const int has_ts, const int has_lv,
                       const int use_whole, const int strict)
    {
        /* use_whole: whole-size rows may be taken, and bookofi_whole_start holds at row i */
        const double mul = b->tick_mul;
        int64_t t = *last_ts, floor = *has_last ? *last_ts : INT64_MIN, missing = 0;
        Py_ssize_t j = i, lo;
        int kind;
        int64_t key;
        /* whole-size rows (bookofi_step_whole), in blocks: into when the last row was one
         * (e[0 .. L] then not written: the depth is dep, and the last event's e is rebuilt at
         * the end from last_*) */
        int into = 0, last_side = 0, last_changed = 0, last_kind = 0;
        Py_ssize_t last_lo = 0;
        double dep = e[L], last_elo = 0.0;
    /* a row's time check and book row (a refused row ends the loop), then its crossing count */
    #define BOOKOFI_KEEP_ROW                                                                 \
            if (has_ts) {                                                                   \
                t = ts[j];                                                                  \
                if (t < floor)                                                              \
                    goto done;                                                              \
            }                                                                               \
            if (!ofi_book_fast(b, mul, side[j], price[j], size[j], strict, &kind, &key))   \
                goto done;                                                                  \
            missing += kind == 3;                                  /* BOOK_MISSING */      \
            ofi_book_judge_at(b, 1);                                                        \
            floor = t;
    /* the row's event by bookofi_step and the compensated sums */
    #define BOOKOFI_KEEP_EVENT                                                               \
            {                                                                               \
                const int changed = bookofi_step(b, keys, prev, e, L, side[j], kind, key,   \
                                                 size[j], &lo, 0);                          \
                bookofi_sums(s, c, e, prev, L, changed, lo);                                \
                e_out[j] = e[0];                                                            \
                if (has_lv)                                                                 \
                    memcpy(lv + j * L, e, (size_t) L * sizeof(double));                     \
            }
        while (j < n) {
            Py_ssize_t end = n;
            if (use_whole) {
                end = n - j > BOOKOFI_WHOLE_ROWS ? j + BOOKOFI_WHOLE_ROWS : n;
                if (!into)
                    dep = e[L];
                /* (at row i the caller has checked it: BOOKOFI_KEEP_T) */
                if (j == i || bookofi_whole_start(prev, dep, s, c, L)) {
                    prev[L - 1] = prev[3 * L - 1] = 0.0;   /* prices: scratch (see the step) */
                    for (; j < end; j++) {
                        BOOKOFI_KEEP_ROW
                        double elo = 0.0, dq = 0.0;
                        const int sd = side[j];
                        const int ch = bookofi_whole(size[j])
                            ? bookofi_step_whole(b, keys, prev, s, L, sd, kind, key, size[j],
                                                 &lo, &elo, &dq)
                            : -1;
                        if (ch < 0)
                            break;            /* the rest of the block by the general step */
                        dep += dq;
                        s[L] += dep;
                        e_out[j] = bookofi_keep_if(elo, lo == 0);
                        last_side = sd; last_changed = ch; last_kind = kind;
                        last_lo = lo; last_elo = elo;
                        into = 1;
                    }
                    if (j == end)
                        continue;
                    /* row j is in the book; its event by the general step */
                    if (into) {
                        e[L] = dep;
                        into = 0;
                    }
                    BOOKOFI_KEEP_EVENT
                    j++;
                } else if (into) {
                    e[L] = dep;
                    into = 0;
                }
            }
            for (; j < end; j++) {
                BOOKOFI_KEEP_ROW
                BOOKOFI_KEEP_EVENT
            }
        }
    done:
    #undef BOOKOFI_KEEP_ROW
    #undef BOOKOFI_KEEP_EVENT
        if (into) {
            bookofi_whole_e(e, prev, L, last_side, last_changed, last_kind, last_lo, last_elo);
            e[L] = dep;
        }
        if (j > i) {
            b->n_updates += j - i;
            b->n_missing += missing;
            b->last_side = 0;
            *n_events += j - i;
            *last_ts = floor;                    /* the last row taken (t may be a refused one) */
            *has_last = 1;
        }
        return j;
    }
    /* BookOFI.update_many's rows inside a message (batch_end given, no time window): rows i..
     * whose batch_end is 0 through the book's fast path only, as _rows' bookofi_push_inside
     * does them (no crossing judgement: the message is one update, judged at its end; no
     * event: their e, and lv rows unless NULL, are 0), until a row that ends its message,
     * that the fast path declines, whose ts (ts NULL: none) is older than floor (the last
     * event's), or n. Returns the index of that row; n_updates and n_missing are summed and
     * stored once, last_side left 0 (as bookofi_keep_rows_). */
    static inline __attribute__((always_inline)) Py_ssize_t
    bookofi_inside_rows_(BookState *b, Py_ssize_t i, Py_ssize_t n, const int64_t *ts,
                         int64_t floor, const signed char *side, const double *price,
                         const double *size, const unsigned char *end, double *e_out,
                         double *lv, Py_ssize_t L, const int has_ts, const int has_lv,
                         const int strict)
    {
        const double mul = b->tick_mul;
        int64_t missing = 0;
        Py_ssize_t j = i;
        int kind;
        int64_t key;
        for (; j < n; j++) {
            if (end[j] || (has_ts && ts[j] < floor))
                break;
            if (!ofi_book_fast(b, mul, side[j], price[j], size[j], strict, &kind, &key))
                break;
            missing += kind == 3;                                  /* BOOK_MISSING */
            e_out[j] = 0.0;
            if (has_lv)
                ofi_zero(lv + j * L, L);
        }
        if (j > i) {
            b->n_updates += j - i;
            b->n_missing += missing;
            b->last_side = 0;
        }
        return j;
    }
    #define BOOKOFI_INSIDE(T, V, S) bookofi_inside_rows_(b, i, n, ts, floor, side, price, size, \
        end, e_out, lv, L, T, V, S)
    OFI_V3_DISPATCH(Py_ssize_t, bookofi_inside_rows,
        (BookState *b, Py_ssize_t i, Py_ssize_t n, const int64_t *ts, int64_t floor,
         const signed char *side, const double *price, const double *size,
         const unsigned char *end, double *e_out, double *lv, Py_ssize_t L),
        (b, i, n, ts, floor, side, price, size, end, e_out, lv, L),
        if (b->strict)
            return ts ? (lv ? BOOKOFI_INSIDE(1, 1, 1) : BOOKOFI_INSIDE(1, 0, 1))
                      : (lv ? BOOKOFI_INSIDE(0, 1, 1) : BOOKOFI_INSIDE(0, 0, 1));
        return ts ? (lv ? BOOKOFI_INSIDE(1, 1, 0) : BOOKOFI_INSIDE(1, 0, 0))
                  : (lv ? BOOKOFI_INSIDE(0, 1, 0) : BOOKOFI_INSIDE(0, 0, 0));)
    #undef BOOKOFI_INSIDE
    /* bookofi_keep_rows_ for each case of ts and lv given or not and strict (fewer values
     * live in the loop), in both builds (OFI_V3_DISPATCH, _book_row.h) */
    #define BOOKOFI_KEEP(T, V, W, S) bookofi_keep_rows_(b, keys, prev, e, s, c, L, i, n, ts, \
        side, price, size, e_out, lv, last_ts, has_last, n_events, T, V, W, S)
    /* with lv; without, with whole-size rows (from BOOKOFI_WHOLE_MIN levels, when the first
     * block may be one: otherwise, as on streams whose sizes are not whole, the loop built
     * without them runs, which gcc compiles 9.5 instructions a row shorter); without either */
    #define BOOKOFI_KEEP_T(T, S) (lv ? BOOKOFI_KEEP(T, 1, 0, S) \
        : L >= BOOKOFI_WHOLE_MIN && bookofi_whole_start(prev, e[L], s, c, L) \
        ? BOOKOFI_KEEP(T, 0, 1, S) : BOOKOFI_KEEP(T, 0, 0, S))
    OFI_V3_DISPATCH(Py_ssize_t, bookofi_keep_rows,
        (BookState *b, int64_t *keys, double *prev, double *e, double *s, double *c,
         Py_ssize_t L, Py_ssize_t i, Py_ssize_t n, const int64_t *ts, const signed char *side,
         const double *price, const double *size, double *e_out, double *lv,
         int64_t *last_ts, int *has_last, int64_t *n_events),
        (b, keys, prev, e, s, c, L, i, n, ts, side, price, size, e_out, lv, last_ts, has_last,
         n_events),
        if (b->strict)
            return ts ? BOOKOFI_KEEP_T(1, 1) : BOOKOFI_KEEP_T(0, 1);
        return ts ? BOOKOFI_KEEP_T(1, 0) : BOOKOFI_KEEP_T(0, 0);)
    #undef BOOKOFI_KEEP_T
    #undef BOOKOFI_KEEP
    """
    int bookofi_step(const BookState* b, int64_t* keys, float64_t* prev, float64_t* e,
                     intp_t L, int side, int kind, int64_t key, float64_t size, intp_t* lo,
                     bint prices) noexcept nogil
    intp_t bookofi_keep_rows(BookState* b, int64_t* keys, float64_t* prev, float64_t* e,
                             float64_t* s, float64_t* c, intp_t L, intp_t i, intp_t n,
                             const int64_t* ts, const signed char* side,
                             const float64_t* price, const float64_t* size,
                             float64_t* e_out, float64_t* lv, int64_t* last_ts,
                             bint* has_last, int64_t* n_events) noexcept nogil
    intp_t bookofi_inside_rows(BookState* b, intp_t i, intp_t n, const int64_t* ts,
                               int64_t floor, const signed char* side, const float64_t* price,
                               const float64_t* size, const unsigned char* end,
                               float64_t* e_out, float64_t* lv, intp_t L) noexcept nogil
cdef extern from "_book_row.h":
    # the fast row and Book.apply_many's batch of them (policy keep), see _apply and the header
    bint ofi_book_fast(BookState* b, float64_t mul, int side, float64_t price, float64_t size,
                       bint strict, int* kind, int64_t* key) nogil
    bint ofi_book_far(BookState* b, float64_t mul, int side, float64_t price, float64_t size,
                      bint strict, int* kind, int64_t* key) nogil
    void ofi_book_applied(BookState* b, int side, int kind, int64_t key) nogil
    void ofi_book_judge(BookState* b) nogil
    bint ofi_book_fast_end(BookState* b, int side, float64_t price, float64_t size,
                           int* kind, int64_t* key) nogil
    # the far directory's and a far block's lower bounds (branch-free)
    intp_t lower_key "ofi_lower_key"(const int64_t* a, intp_t n, int64_t key) nogil
    intp_t block_lower "ofi_block_lower"(const FarBlock* blk, int64_t key) nogil
    # the best level below a key: of the ladder, of the far blocks, of a side
    int64_t lad_below "ofi_lad_below"(const BookSide* s, int64_t key) nogil
    bint far_below "ofi_far_below"(const BookFar* f, int64_t key, int64_t* k,
                                   float64_t* size) nogil
    bint side_below "ofi_side_below"(const BookSide* s, int64_t key, int64_t* k,
                                     float64_t* size) nogil
    # a far row's simple cases by key, and the insert / removal at a block position they use
    bint far_row "ofi_far_row"(BookSide* s, int64_t key, float64_t size, bint strict,
                               int* kind, intp_t* at) nogil
    void far_put "ofi_far_put"(BookSide* s, intp_t bi, intp_t i, int64_t key,
                               float64_t size) nogil
    void far_take "ofi_far_take"(BookSide* s, intp_t bi, intp_t i) nogil
    intp_t ofi_book_keep_rows(BookState* b, intp_t i, intp_t n, const signed char* side,
                              const float64_t* price, const float64_t* size,
                              const unsigned char* end) nogil
    # which build of the row loops runs (OFI_V3_DISPATCH): 1 the x86-64-v3 one
    int ofi_v3_state
    bint ofi_v3_available() nogil


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
# Ladder slots per side of a new Book (a power of two >= 64): 32,768 ticks (266 KB per side),
# so that the window holds the 24,576 ticks below the touch: on the Binance BTCUSDT diffs
# (tick 0.1 USD-M, 0.01 spot) most updates, and a dense 10,000-level book whole (measured
# 4096 .. 65536 in bench/RESULTS.md, "issue 13: tick ladder").
cdef intp_t LADDER_SLOTS = 32768
# A snapshot deeper than the window widens it (side_fit): doubling while some of its levels
# would fall below the window, up to LADDER_PER_LEVEL slots per level of the snapshot (the
# ladder's 9 bytes a slot: at most 144 bytes per level) and LADDER_MAX slots. Inserts widen it
# too (side_grow), within the same bounds, while more of a side's levels are far than in it.
cdef intp_t LADDER_PER_LEVEL = 16
cdef intp_t LADDER_MAX = 1 << 30
cdef bint LADDER_GROWS = True          # inserts may widen the ladders of new Books (tests)


ofi_v3_state = ofi_v3_available()      # the row loops for this CPU, chosen once (_book_row.h)


def _row_loops(name=None):
    """The build of Book.apply_many's and BookOFI.update_many's row loops that runs:
    ``"x86-64-v3"`` (AVX2 and BMI, taken at import when the CPU has them) or ``"baseline"``.
    With ``name``, that one runs from now on (tests and benchmarks compare them: the results
    are the same bits); ``"x86-64-v3"`` only where it is available. Returns the previous
    name."""
    global ofi_v3_state
    old = "x86-64-v3" if ofi_v3_state else "baseline"
    if name is not None:
        if name not in ("baseline", "x86-64-v3"):
            raise OFIError(f"row loops must be 'baseline' or 'x86-64-v3', got {name!r}",
                           field="name")
        if name == "x86-64-v3" and not ofi_v3_available():
            raise OFIError("this build or CPU has no x86-64-v3 row loops", field="name")
        ofi_v3_state = name == "x86-64-v3"
    return old


def _set_ladder_slots(intp_t w, bint grows=True):
    """Tests and benchmarks: the ladder size of Books made from now on (a power of two >= 64)
    and whether inserts may widen it (side_grow; False keeps small test ladders recentring,
    a snapshot still sizes it); returns the previous (w, grows). Results never depend on
    them, only speed and the recentring."""
    global LADDER_SLOTS, LADDER_GROWS
    if w < 64 or (w & (w - 1)) != 0 or w > LADDER_MAX:
        raise OFIError(f"ladder slots must be a power of two in [64, 2**30], got {w}",
                       field="ladder")
    old = (LADDER_SLOTS, LADDER_GROWS)
    LADDER_SLOTS = w
    LADDER_GROWS = grows
    return old


# =============================================================================================
# The far array: levels below the ladder, in sorted blocks of at most FAR_B levels
# =============================================================================================
# A directory of blocks by ascending keys (each block's highest key beside it, for a branch-
# free binary search), each block a sorted array. An insert or delete moves at most FAR_B - 1
# levels inside its block; a full block splits in two (one directory insert: nb entries of 16
# bytes, at most once per FAR_B / 2 inserts), an emptied block is freed and a block that falls
# below FAR_B / 4 levels merges into a neighbour with room, so blocks stay at least about 1/8
# full on average and memory follows the live levels.

cdef int far_init(BookFar* f, intp_t capacity) noexcept nogil:
    cdef intp_t cap = capacity // FAR_B + 4
    f.blk = <FarBlock**> malloc(cap * sizeof(FarBlock*))
    f.last = <int64_t*> malloc(cap * sizeof(int64_t))
    f.nb = 0
    f.cap = cap
    f.n = 0
    if f.blk == NULL or f.last == NULL:
        return STATUS_NO_MEMORY
    return STATUS_OK


cdef void far_clear(BookFar* f) noexcept nogil:
    cdef intp_t i
    for i in range(f.nb):
        free(f.blk[i])
    f.nb = 0
    f.n = 0


cdef void far_free(BookFar* f) noexcept nogil:
    if f.blk != NULL:
        far_clear(f)
    free(f.blk)
    free(f.last)
    f.blk = NULL
    f.last = NULL
    f.cap = 0


cdef int far_dir_room(BookFar* f) noexcept nogil:
    """Room for one more directory entry (doubling)."""
    cdef intp_t cap
    cdef FarBlock** nb_
    cdef int64_t* nl
    if f.nb < f.cap:
        return STATUS_OK
    if f.cap > PY_SSIZE_T_MAX // (4 * <intp_t> sizeof(int64_t)):
        return STATUS_NO_MEMORY
    cap = 2 * f.cap
    nb_ = <FarBlock**> malloc(cap * sizeof(FarBlock*))
    nl = <int64_t*> malloc(cap * sizeof(int64_t))
    if nb_ == NULL or nl == NULL:
        free(nb_)
        free(nl)
        return STATUS_NO_MEMORY
    memcpy(nb_, f.blk, f.nb * sizeof(FarBlock*))
    memcpy(nl, f.last, f.nb * sizeof(int64_t))
    free(f.blk)
    free(f.last)
    f.blk = nb_
    f.last = nl
    f.cap = cap
    return STATUS_OK


cdef inline bint far_find(const BookFar* f, int64_t key, float64_t* size) noexcept nogil:
    cdef intp_t bi = lower_key(f.last, f.nb, key), i
    if bi == f.nb:
        return False
    i = block_lower(f.blk[bi], key)
    if f.blk[bi].lv[i].key != key:         # i < n: the block's last key is >= key
        return False
    size[0] = f.blk[bi].lv[i].size
    return True


cdef inline int64_t far_max(const BookFar* f) noexcept nogil:
    return f.last[f.nb - 1]                 # f.n > 0


cdef int far_new_block(BookFar* f, intp_t at) noexcept nogil:
    """Insert an empty block at directory index `at` (its `last` is set by the caller)."""
    if far_dir_room(f) != STATUS_OK:
        return STATUS_NO_MEMORY
    cdef FarBlock* blk = <FarBlock*> malloc(sizeof(FarBlock))
    if blk == NULL:
        return STATUS_NO_MEMORY
    blk.n = 0
    memmove(&f.blk[at + 1], &f.blk[at], (f.nb - at) * sizeof(FarBlock*))
    memmove(&f.last[at + 1], &f.last[at], (f.nb - at) * sizeof(int64_t))
    f.blk[at] = blk
    f.nb += 1
    return STATUS_OK


cdef void far_drop_block(BookFar* f, intp_t at) noexcept nogil:
    free(f.blk[at])
    memmove(&f.blk[at], &f.blk[at + 1], (f.nb - at - 1) * sizeof(FarBlock*))
    memmove(&f.last[at], &f.last[at + 1], (f.nb - at - 1) * sizeof(int64_t))
    f.nb -= 1


cdef int far_set(BookSide* s, int64_t key, float64_t size, bint* inserted) noexcept nogil:
    """Set the far level at `key` to size > 0 (insert when absent): `far_row` (_book_row.h)
    unless it declines, here the insert that needs a new block (the first far level) or a
    split (a full block). Keeps f.n, s.n and s.n_moved (the insert is `far_put`'s)."""
    cdef int kind
    cdef intp_t at[2]
    if far_row(s, key, size, False, &kind, at):
        inserted[0] = kind == BOOK_INSERT
        return STATUS_OK
    cdef BookFar* f = &s.far
    cdef intp_t bi = 0, i = 0, h
    cdef FarBlock* blk
    cdef FarBlock* nxt
    inserted[0] = True
    if f.nb == 0:
        if far_new_block(f, 0) != STATUS_OK:
            return STATUS_NO_MEMORY
    else:
        # block at[0], key's place at[1] in it, is full: its upper half moves to a new block
        bi = at[0]
        i = at[1]
        blk = f.blk[bi]
        if far_new_block(f, bi + 1) != STATUS_OK:
            return STATUS_NO_MEMORY
        nxt = f.blk[bi + 1]
        h = FAR_B // 2
        memcpy(nxt.lv, &blk.lv[h], (FAR_B - h) * sizeof(BookLevel))
        nxt.n = FAR_B - h
        blk.n = h
        f.last[bi + 1] = nxt.lv[nxt.n - 1].key
        f.last[bi] = blk.lv[h - 1].key
        s.n_moved += FAR_B - h
        if i > h:
            i -= h
            bi += 1
    far_put(s, bi, i, key, size)
    return STATUS_OK


cdef bint far_delete(BookSide* s, int64_t key) noexcept nogil:
    """Delete the far level at `key`; False when there is none. `far_row` (_book_row.h)
    unless it declines, here a delete that leaves its block under FAR_B / 4 levels: an
    emptied block is dropped, a small one merges with a neighbour when both fit in half a
    block. Keeps f.n, s.n and s.n_moved (the removal is `far_take`'s)."""
    cdef int kind
    cdef intp_t at[2]
    if far_row(s, key, 0.0, False, &kind, at):
        return kind == BOOK_DELETE
    cdef BookFar* f = &s.far
    if f.nb == 0:
        return False
    # far_row declined the level at[1] of block at[0]: the block keeps fewer than FAR_B / 4
    cdef intp_t bi = at[0], j
    cdef FarBlock* blk = f.blk[bi]
    cdef FarBlock* other
    far_take(s, bi, at[1])
    if blk.n == 0:
        far_drop_block(f, bi)
        return True
    # the later block's levels are appended to the earlier one's
    if bi + 1 < f.nb and f.blk[bi + 1].n + blk.n <= FAR_B // 2:
        j = bi + 1
    elif bi > 0 and f.blk[bi - 1].n + blk.n <= FAR_B // 2:
        j = bi
        bi -= 1
    else:
        return True
    blk = f.blk[bi]
    other = f.blk[j]
    memcpy(&blk.lv[blk.n], other.lv, other.n * sizeof(BookLevel))
    s.n_moved += other.n
    blk.n += other.n
    f.last[bi] = blk.lv[blk.n - 1].key
    far_drop_block(f, j)
    return True


cdef int far_push_max(BookSide* s, int64_t key, float64_t size) noexcept nogil:
    """Append a level above every far level (recentring up)."""
    cdef BookFar* f = &s.far
    if f.nb == 0 or f.blk[f.nb - 1].n == FAR_B:
        if far_new_block(f, f.nb) != STATUS_OK:
            return STATUS_NO_MEMORY
    cdef FarBlock* blk = f.blk[f.nb - 1]
    blk.lv[blk.n].key = key
    blk.lv[blk.n].size = size
    blk.n += 1
    f.last[f.nb - 1] = key
    f.n += 1
    return STATUS_OK


cdef inline void far_pop_max(BookFar* f, int64_t* key, float64_t* size) noexcept nogil:
    """Take the highest far level out (recentring down); f.n > 0."""
    cdef FarBlock* blk = f.blk[f.nb - 1]
    blk.n -= 1
    key[0] = blk.lv[blk.n].key
    size[0] = blk.lv[blk.n].size
    f.n -= 1
    if blk.n == 0:
        far_drop_block(f, f.nb - 1)
    else:
        f.last[f.nb - 1] = blk.lv[blk.n - 1].key


cdef int far_load(BookSide* s, const int64_t* keys, const float64_t* size,
                  intp_t m) noexcept nogil:
    """Fill an empty far array with m levels of ascending keys, blocks 3/4 full."""
    cdef intp_t q = 0, c, j
    cdef FarBlock* blk
    while q < m:
        if far_new_block(&s.far, s.far.nb) != STATUS_OK:
            return STATUS_NO_MEMORY
        blk = s.far.blk[s.far.nb - 1]
        c = m - q if m - q < (3 * FAR_B) // 4 else (3 * FAR_B) // 4
        for j in range(c):
            blk.lv[j].key = keys[q + j]
            blk.lv[j].size = size[q + j]
        blk.n = c
        q += c
        s.far.last[s.far.nb - 1] = blk.lv[c - 1].key
        s.far.n += c
    return STATUS_OK


# =============================================================================================
# The ladder: keys [lo, lo + w) at slots key & mask, one occupancy bit per slot
# =============================================================================================
cdef inline void lad_put(BookSide* s, int64_t key, float64_t size) noexcept nogil:
    """Store a level in an empty ladder slot (key inside the window)."""
    cdef intp_t slot = key & s.mask
    s.size[slot] = size
    s.occ[slot >> 6] |= (<uint64_t> 1) << (slot & 63)
    s.n_lad += 1


cdef int lad_flush(BookSide* s, int64_t limit) noexcept nogil:
    """Move the ladder levels with keys in [lo, limit) to the far array (ascending, so each
    is appended above its highest level), clearing their slots; limit <= lo + w. When memory
    runs out half-way, lo is raised to the first level not moved: the state stays valid (the
    same levels, each where the invariants want it)."""
    cdef int64_t k = s.lo
    cdef intp_t slot, b, t, span
    cdef uint64_t m
    while k < limit and s.n_lad > 0:
        slot = k & s.mask
        b = slot & 63
        span = 64 - b
        if limit - k < span:
            span = limit - k
        m = (s.occ[slot >> 6] >> b) & ((<uint64_t> -1) >> (64 - span))
        while m:
            t = __builtin_ctzll(m)
            if far_push_max(s, k + t, s.size[slot + t]) != STATUS_OK:
                s.lo = k + t
                return STATUS_NO_MEMORY
            s.size[slot + t] = 0.0
            s.occ[slot >> 6] &= ~((<uint64_t> 1) << (b + t))
            s.n_lad -= 1
            s.n_moved += 1
            m &= m - 1
        k += span
    return STATUS_OK


cdef bint lad_alloc(intp_t w, float64_t** size, uint64_t** occ) noexcept nogil:
    """Zeroed arrays for a w-slot ladder; False (nothing allocated) when memory runs out."""
    size[0] = <float64_t*> calloc(w, sizeof(float64_t))
    occ[0] = <uint64_t*> calloc(w >> 6, sizeof(uint64_t))
    if size[0] == NULL or occ[0] == NULL:
        free(size[0])
        free(occ[0])
        return False
    return True


cdef void lad_swap(BookSide* s, intp_t w, float64_t* size, uint64_t* occ) noexcept nogil:
    """Replace the ladder's arrays by w-slot ones (lad_alloc's), freeing the old (lo is the
    caller's)."""
    free(s.size)
    free(s.occ)
    s.size = size
    s.occ = occ
    s.w = w
    s.mask = w - 1


cdef int side_up(BookSide* s, int64_t key) noexcept nogil:
    """Recentre the window up so that `key` (above it) sits 3/4 of the way up: the levels
    below the new window move to the far array."""
    cdef int64_t lo = key - (s.w - s.w // 4)
    cdef int64_t limit = lo if lo < s.lo + s.w else s.lo + s.w
    if lad_flush(s, limit) != STATUS_OK:
        return STATUS_NO_MEMORY
    s.lo = lo
    return STATUS_OK


cdef void lad_take_far(BookSide* s, int64_t lo) noexcept nogil:
    """Move the far levels with key >= lo into the ladder (a window whose lowest key is now
    lo: side_down, side_widen), from the far array's end, so nothing moves inside it."""
    cdef int64_t k
    cdef float64_t q
    while s.far.n > 0 and far_max(&s.far) >= lo:
        far_pop_max(&s.far, &k, &q)
        lad_put(s, k, q)
        s.n_moved += 1


cdef void side_down(BookSide* s) noexcept nogil:
    """Recentre the window down so that the best (below 1/4 of it, or in the far array when
    the ladder is empty) sits 3/4 of the way up: far levels inside the new window move into
    the ladder (from the far array's end: no move inside it). The slots they take held keys
    above the best, which are empty."""
    cdef int64_t lo = s.best - (s.w - s.w // 4)
    lad_take_far(s, lo)
    s.lo = lo


cdef void side_widen(BookSide* s) noexcept nogil:
    """side_grow's work, after an insert the fast paths declined (a far one, or one that moved the
    window; a snapshot's ladder is sized by side_fit): while more live levels lie below the window
    than in it, widen the ladder to the smallest doubling of its width whose window (the best 3/4
    up, as after side_fit) reaches the highest of them, if that width stays within
    LADDER_PER_LEVEL slots per live level and w_max (LADDER_MAX); a far top out of that reach
    (say a level a billion ticks away) buys no memory. Each widening re-slots the ladder's levels
    (key & the new mask) and takes the far levels the new window covers from the far array's
    end: O(w / 64) words scanned and at most 2 w levels moved (the new window's slots),
    amortised: each width is reached at most once per side (w only grows, until reset or a
    snapshot), so a side's widenings move at most 4 times its final width, itself at most 16
    slots per level at its largest. When the new arrays cannot be allocated the width stays
    (only speed depends on it; the next such insert tries again)."""
    cdef intp_t w, i, t, slot
    cdef intp_t cap = LADDER_PER_LEVEL * s.n
    cdef int64_t lo, k
    cdef uint64_t m
    cdef float64_t* size
    cdef uint64_t* occ
    if cap > s.w_max:
        cap = s.w_max
    while s.far.n > s.n_lad:
        w = 2 * s.w
        while w <= cap and far_max(&s.far) < s.best - (w - w // 4):
            w *= 2
        if w > cap or not lad_alloc(w, &size, &occ):
            return
        lo = s.best - (w - w // 4)
        for i in range(s.w >> 6):
            m = s.occ[i]
            while m:
                t = __builtin_ctzll(m)
                k = s.lo + (((i << 6) + t - s.lo) & s.mask)        # the key of slot 64 i + t
                slot = k & (w - 1)
                size[slot] = s.size[(i << 6) + t]
                occ[slot >> 6] |= (<uint64_t> 1) << (slot & 63)
                m &= m - 1
        s.n_moved += s.n_lad
        lad_swap(s, w, size, occ)
        s.lo = lo
        lad_take_far(s, lo)


cdef inline void side_grow(BookSide* s) noexcept nogil:
    """After an insert the fast paths declined: widen the ladder when due (side_widen; its
    first test inline: on feeds nearly always false, no call)."""
    if s.far.n > s.n_lad:
        side_widen(s)


cdef inline bint side_find(const BookSide* s, int64_t key, float64_t* size) noexcept nogil:
    """Whether the side holds a level at `key` (its size in *size)."""
    if s.n == 0 or key > s.best:
        return False
    if key >= s.lo:
        size[0] = s.size[key & s.mask]
        return size[0] != 0.0
    return far_find(&s.far, key, size)


cdef int side_set(BookSide* s, int64_t key, float64_t size, bint* inserted) noexcept nogil:
    """Set the level at `key` to `size` > 0 (the general path: any key)."""
    cdef intp_t slot
    if s.n == 0:
        s.lo = key - (s.w - s.w // 4)            # an empty side: centre on the new level
    elif key >= s.lo + s.w:
        if side_up(s, key) != STATUS_OK:
            return STATUS_NO_MEMORY
    if key >= s.lo:
        slot = key & s.mask
        inserted[0] = s.size[slot] == 0.0
        if inserted[0]:
            lad_put(s, key, size)
            s.n += 1
        else:
            s.size[slot] = size
        if key > s.best:
            s.best = key
        if inserted[0]:
            side_grow(s)             # (levels may have left the ladder: side_up)
        return STATUS_OK
    if far_set(s, key, size, inserted) != STATUS_OK:       # (it counts s.n)
        return STATUS_NO_MEMORY
    if inserted[0]:
        side_grow(s)
    return STATUS_OK


cdef bint side_delete(BookSide* s, int64_t key) noexcept nogil:
    """Delete the level at `key`; False when there is none (nothing changes). Deleting the
    best finds the next one (a bitmap scan, else the far array's end) and recentres the
    window down when the best has fallen into its bottom quarter."""
    cdef intp_t slot
    cdef int64_t nb
    if s.n == 0 or key > s.best:
        return False
    if key >= s.lo:
        slot = key & s.mask
        if s.size[slot] == 0.0:
            return False
        s.size[slot] = 0.0
        s.occ[slot >> 6] &= ~((<uint64_t> 1) << (slot & 63))
        s.n_lad -= 1
        s.n -= 1
        if key == s.best:
            if s.n == 0:
                s.best = KEY_MIN
                return True
            nb = lad_below(s, key)
            s.best = nb if nb != KEY_MIN else far_max(&s.far)
            if s.best < s.lo + s.w // 4:
                side_down(s)
        return True
    return far_delete(s, key)                   # (it counts s.n)


cdef int side_init(BookSide* s, intp_t capacity, intp_t w) noexcept nogil:
    s.w0 = w
    s.w_max = LADDER_MAX if LADDER_GROWS else w
    s.w = w
    s.mask = w - 1
    s.size = <float64_t*> calloc(w, sizeof(float64_t))
    s.occ = <uint64_t*> calloc(w >> 6, sizeof(uint64_t))
    s.lo = 0
    s.best = KEY_MIN
    s.n = 0
    s.n_lad = 0
    s.n_moved = 0
    if s.size == NULL or s.occ == NULL:
        return STATUS_NO_MEMORY
    return far_init(&s.far, capacity)


cdef void side_free(BookSide* s) noexcept nogil:
    free(s.size)
    free(s.occ)
    s.size = NULL
    s.occ = NULL
    far_free(&s.far)


cdef void side_clear(BookSide* s) noexcept nogil:
    cdef int64_t k
    if s.n_lad > s.w // 16:
        memset(s.size, 0, s.w * sizeof(float64_t))
        memset(s.occ, 0, (s.w >> 6) * sizeof(uint64_t))
    else:                                          # a few levels: clear their slots only
        k = lad_below(s, KEY_MAX)
        while k != KEY_MIN:
            s.size[k & s.mask] = 0.0
            k = lad_below(s, k)
        memset(s.occ, 0, (s.w >> 6) * sizeof(uint64_t))
    s.n = 0
    s.n_lad = 0
    s.best = KEY_MIN
    far_clear(&s.far)


cdef void side_fit(BookSide* s, intp_t m, int64_t span) noexcept nogil:
    """Size the ladder of an empty side for m levels spanning `span` keys: w0 slots, doubled
    while the window's lower 3/4 (the part below a best at the top) is narrower than the span
    and the doubled ladder stays within LADDER_PER_LEVEL slots per level and LADDER_MAX. When
    the new arrays cannot be allocated the ladder keeps its size (only speed depends on it)."""
    cdef intp_t w = s.w0
    while w - w // 4 <= span and w <= LADDER_MAX // 2 and 2 * w <= LADDER_PER_LEVEL * m:
        w *= 2
    if w == s.w:
        return
    cdef float64_t* size
    cdef uint64_t* occ
    if lad_alloc(w, &size, &occ):
        lad_swap(s, w, size, occ)


cdef int side_load(BookSide* s, const int64_t* keys, const float64_t* size,
                   intp_t m) noexcept nogil:
    """Replace the side by m levels of strictly ascending keys (sizes > 0), the ladder sized
    for them (side_fit)."""
    side_clear(s)
    side_fit(s, m, keys[m - 1] - keys[0] if m else 0)
    if m == 0:
        return STATUS_OK
    cdef int64_t lo = keys[m - 1] - (s.w - s.w // 4)
    cdef intp_t j = 0, q
    while j < m and keys[j] < lo:
        j += 1
    if far_load(s, keys, size, j) != STATUS_OK:
        far_clear(&s.far)
        return STATUS_NO_MEMORY
    s.lo = lo
    for q in range(j, m):
        lad_put(s, keys[q], size[q])
    s.n = m
    s.best = keys[m - 1]
    return STATUS_OK


cdef str side_broken(const BookSide* s):
    """Tests (Book._check): the first broken invariant of a side, or "" (O(w + n))."""
    cdef intp_t i, j, n_set = 0, n_far = 0
    cdef int64_t k, prev = KEY_MIN, top = KEY_MIN
    cdef bint bit
    cdef const FarBlock* blk
    if s.w < 64 or (s.w & (s.w - 1)) or s.mask != s.w - 1 or s.w > LADDER_MAX:
        return f"ladder width {s.w}, mask {s.mask}"
    for i in range(s.w):
        bit = (s.occ[i >> 6] >> (i & 63)) & 1
        if bit != (s.size[i] != 0.0) or not (s.size[i] >= 0.0):
            return f"slot {i}: bit {bit}, size {s.size[i]}"
        if bit:
            n_set += 1
            k = s.lo + ((i - s.lo) & s.mask)
            top = k if k > top else top
    if n_set != s.n_lad or s.n != s.n_lad + s.far.n:
        return f"counts: {n_set} slots set, n_lad {s.n_lad}, far {s.far.n}, n {s.n}"
    if s.n == 0:
        return "" if s.best == KEY_MIN and s.far.nb == 0 else f"empty side: best {s.best}"
    if s.n_lad == 0 or s.best != top or s.best < s.lo + s.w // 4:
        return f"best {s.best}: ladder top {top}, window [{s.lo}, {s.lo + s.w})"
    if s.far.nb > s.far.cap:
        return f"far directory {s.far.nb} > {s.far.cap}"
    for i in range(s.far.nb):
        blk = s.far.blk[i]
        if blk.n < 1 or blk.n > FAR_B or s.far.last[i] != blk.lv[blk.n - 1].key:
            return f"far block {i}: n {blk.n}, last {s.far.last[i]}"
        for j in range(blk.n):
            if blk.lv[j].key <= prev or blk.lv[j].key >= s.lo or not (blk.lv[j].size > 0.0):
                return f"far block {i} level {j}: key {blk.lv[j].key} after {prev}, lo {s.lo}"
            prev = blk.lv[j].key
        n_far += blk.n
    if n_far != s.far.n:
        return f"far: {n_far} levels in blocks, n {s.far.n}"
    return ""


# A walk over a side, best first: ladder levels (bitmap scan), then the far blocks backwards.
cdef struct SideWalk:
    intp_t left          # ladder levels not yet visited
    int64_t key          # the last ladder key visited (the next one is below it)
    intp_t bi            # far block of the next far level (descending); -1 when done
    intp_t fi            # its index in that block


cdef inline void walk_init(const BookSide* s, SideWalk* w) noexcept nogil:
    w.left = s.n_lad
    w.key = KEY_MAX
    w.bi = s.far.nb - 1
    w.fi = s.far.blk[w.bi].n - 1 if w.bi >= 0 else -1


cdef inline bint walk_next(const BookSide* s, SideWalk* w, int64_t* key,
                           float64_t* size) noexcept nogil:
    if w.left > 0:
        w.key = s.best if w.left == s.n_lad else lad_below(s, w.key)
        w.left -= 1
        key[0] = w.key
        size[0] = s.size[w.key & s.mask]
        return True
    if w.bi >= 0:
        key[0] = s.far.blk[w.bi].lv[w.fi].key
        size[0] = s.far.blk[w.bi].lv[w.fi].size
        w.fi -= 1
        if w.fi < 0:
            w.bi -= 1
            if w.bi >= 0:
                w.fi = s.far.blk[w.bi].n - 1
        return True
    return False


cdef inline bint side_rank(const BookSide* s, intp_t m, int64_t* key,
                           float64_t* size) noexcept nogil:
    """Level m (0 = best) of a side; False when the side has fewer levels."""
    cdef SideWalk w
    if m >= s.n:
        return False
    if m == 0:
        key[0] = s.best
        size[0] = s.size[s.best & s.mask]
        return True
    walk_init(s, &w)
    while m >= 0:
        walk_next(s, &w, key, size)
        m -= 1
    return True


cdef int book_init(BookState* b, float64_t tick_size, int policy, bint strict,
                   intp_t capacity, intp_t ladder) noexcept nogil:
    b.tick_size = tick_size
    b.tick_mul = 1.0 / tick_size
    cdef float64_t inv = c_round(1.0 / tick_size)
    b.inv_tick = inv if inv >= 1.0 and fabs(1.0 / tick_size - inv) <= 1e-9 * inv else 0.0
    b.policy = policy
    b.strict = strict
    if side_init(&b.bid, capacity, ladder) != STATUS_OK:
        return STATUS_NO_MEMORY
    if side_init(&b.ask, capacity, ladder) != STATUS_OK:
        return STATUS_NO_MEMORY
    book_clear(b)
    return STATUS_OK


cdef void book_free(BookState* b) noexcept nogil:
    side_free(&b.bid)
    side_free(&b.ask)


cdef void book_clear(BookState* b) noexcept nogil:
    side_clear(&b.bid)
    side_clear(&b.ask)
    side_fit(&b.bid, 0, 0)                 # a ladder widened by a snapshot: back to w0
    side_fit(&b.ask, 0, 0)
    b.last_side = 0
    b.last_key = 0
    b.last_kind = BOOK_MISSING
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
    # the nearest integer, ties to even (as the fast path's rint and the reference's
    # round(); a tie is accepted only from 5e12 ticks on, where the tolerance passes 0.5):
    # |x| + 2**52 - 2**52 in the default rounding mode, no libm call; from 2**52 on every
    # double is an integer already (adding 0.5 there would round)
    cdef float64_t r = x
    if fabs(x) < 4503599627370496.0:
        r = copysign((fabs(x) + 4503599627370496.0) - 4503599627370496.0, x)
    cdef int64_t t = <int64_t> r
    # off-grid tolerance: 1e-6 tick, widened by the rounding error of price / tick_size
    # itself for very large tick counts (1e-13 relative, e.g. 56218.3 / 1e-5)
    if fabs(x - <float64_t> t) > 1e-6 + fabs(x) * 1e-13:
        return STATUS_BAD_VALUE
    tick[0] = t
    return STATUS_OK


cdef int _apply_tick(BookState* b, int side, int64_t tick, float64_t size) noexcept nogil:
    """One row, valid except possibly `side` and a strict missing delete; no crossing logic
    (that is judged at the end of the message, in `ofi_book_judge`). The general path: any key."""
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
    cdef bint inserted
    if size == 0.0:
        if side_delete(s, key):
            b.last_kind = BOOK_DELETE
        else:
            if b.strict:
                return STATUS_BAD_VALUE | (1 << 4)
            b.n_missing += 1
            b.last_kind = BOOK_MISSING
    else:
        if side_set(s, key, size, &inserted) != STATUS_OK:
            return STATUS_NO_MEMORY | (1 << 4)
        b.last_kind = BOOK_INSERT if inserted else BOOK_SET
    b.last_side = side
    b.last_key = key
    b.n_updates += 1
    return STATUS_OK


cdef int _apply_checked(BookState* b, int side, float64_t price,
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


cdef int _apply_rest(BookState* b, int side, float64_t price, float64_t size) noexcept nogil:
    """`_apply` once its fast path declined (a called function: rows near the touch do not
    come here): the far row `ofi_book_far`, else `_apply_checked`."""
    cdef int kind = 0
    cdef int64_t key = 0
    if not ofi_book_far(b, b.tick_mul, side, price, size, b.strict, &kind, &key):
        return _apply_checked(b, side, price, size)
    if kind == BOOK_INSERT:
        side_grow(&b.bid if side > 0 else &b.ask)
    ofi_book_applied(b, side, kind, key)
    return STATUS_OK


cdef inline int _apply(BookState* b, int side, float64_t price, float64_t size) noexcept nogil:
    """One delta. Fast path (`ofi_book_fast` in _book_row.h), taken by a valid update whose
    key lies in its side's ladder window (and, when it deletes the best level, whose next
    level sits in the same 64-slot bitmap word and in the upper 3/4 of the window): no
    division, no search, no move and two predictable branches. Validity is one AND of
    comparisons (sizes finite and >= 0, side +-1, price on the grid after multiplying by
    1/tick_size, with a tolerance 1 % tighter than the exact check so that the division
    could not disagree); the level is the slot key & mask, its occupancy bit is set or
    cleared by a mask, and the counts and the best move by arithmetic on (old size == 0, new
    size == 0): a new level above the best becomes it, a deleted best is replaced by the
    highest set bit below it in its word (one clz, computed for every row and used by mask).
    Anything else (a bad value or an off-grid-looking price, a key outside the window, an
    empty side, a deletion of the best whose successor is further away or low in the window,
    a strict missing delete) goes to `_apply_rest` with the state unchanged: a valid row
    below the window to the far row (`ofi_book_far`), the rest to `_apply_checked`: every
    check in order, the exact division, then the general code, so results and errors are
    those of the general code. No crossing logic: see `_apply_end`."""
    cdef int kind = 0
    cdef int64_t key = 0
    if not ofi_book_fast(b, b.tick_mul, side, price, size, b.strict, &kind, &key):    # (predictable on feeds)
        return _apply_rest(b, side, price, size)
    ofi_book_applied(b, side, kind, key)
    return STATUS_OK


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
    cdef float64_t q
    if size == 0.0 and b.strict and not side_find(s, key, &q):
        return STATUS_BAD_VALUE | (1 << 4)
    if o.n > 0:
        # this side's best after the row
        if size > 0.0:
            top = key if s.n == 0 or key > s.best else s.best
        elif s.n == 0 or (s.n == 1 and s.best == key):
            return _apply_tick(b, side, tick, size)          # the side ends up empty
        elif s.best == key:
            side_below(s, key, &top, &q)                     # the best level is deleted
        else:
            top = s.best
        if top + o.best >= 0:
            return STATUS_CROSSED | (1 << 4)
    return _apply_tick(b, side, tick, size)


cdef int _apply_end_rest(BookState* b, int side, float64_t price, float64_t size) noexcept nogil:
    """`_apply_end` once `ofi_book_fast_end` declined (policy raise, or a row the fast path
    does not take); a called function."""
    if b.policy == BOOK_RAISE:
        return _apply_end_raise(b, side, price, size)
    cdef int status = _apply_rest(b, side, price, size)
    if status == STATUS_OK:
        ofi_book_judge(b)
    return status


cdef inline int _apply_end(BookState* b, int side, float64_t price,
                           float64_t size) noexcept nogil:
    """A row that ends a message (or is one): apply it, then judge the resulting state
    (policy keep: count a crossed or locked book, `ofi_book_judge`; raise: see
    `_apply_end_raise`)."""
    cdef int kind
    cdef int64_t key
    if ofi_book_fast_end(b, side, price, size, &kind, &key):
        return STATUS_OK
    return _apply_end_rest(b, side, price, size)


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


cdef int64_t book_bid_tick(const BookState* b, intp_t m) noexcept nogil:
    cdef int64_t k
    cdef float64_t q
    return k if side_rank(&b.bid, m, &k, &q) else INT64_MIN


cdef int64_t book_ask_tick(const BookState* b, intp_t m) noexcept nogil:
    cdef int64_t k
    cdef float64_t q
    return -k if side_rank(&b.ask, m, &k, &q) else INT64_MAX


cdef float64_t book_bid_size(const BookState* b, intp_t m) noexcept nogil:
    cdef int64_t k
    cdef float64_t q
    return q if side_rank(&b.bid, m, &k, &q) else 0.0


cdef float64_t book_ask_size(const BookState* b, intp_t m) noexcept nogil:
    cdef int64_t k
    cdef float64_t q
    return q if side_rank(&b.ask, m, &k, &q) else 0.0


cdef void side_top(const BookState* b, const BookSide* s, intp_t n, int64_t sign,
                   float64_t* px, float64_t* sz) noexcept nogil:
    """px[0 .. n), sz[0 .. n) <- the side's best n levels, best first (price units: the key
    times `sign`: +1 bid, -1 ask), NaN and 0 past its last level. The ladder part walks the
    bitmap word by word from the best (one clz per level, the sizes read straight from their
    slots: no per-level search), then the far blocks backwards."""
    cdef intp_t m = 0, left = s.n_lad, slot, bi, fi
    cdef int64_t wk, k
    cdef uint64_t word
    cdef int hb
    cdef const FarBlock* blk
    if n > 0 and left > 0:
        slot = s.best & s.mask
        wk = s.best - (slot & 63)                   # the key of bit 0 of the best's word
        word = s.occ[slot >> 6] & ((<uint64_t> -1) >> (63 - (slot & 63)))
        while True:
            # (bits 0 .. slot of the best's word hold no key below lo: those slots are keys
            # above the best, so empty)
            while word != 0 and m < n:
                hb = 63 - __builtin_clzll(word)
                k = wk + hb
                px[m] = book_price(b, <float64_t> (k * sign))
                sz[m] = s.size[k & s.mask]
                m += 1
                word ^= (<uint64_t> 1) << hb
                left -= 1
            if m == n or left == 0:
                break
            wk -= 64
            if wk + 64 <= s.lo:                     # (not reached: left counts them)
                break
            word = s.occ[(wk & s.mask) >> 6]
            if wk < s.lo:                           # the word holding lo: its lower bits
                word &= (<uint64_t> -1) << (s.lo - wk)      # are keys at the window's top
    bi = s.far.nb - 1
    while m < n and bi >= 0:
        blk = s.far.blk[bi]
        fi = blk.n - 1
        while m < n and fi >= 0:
            px[m] = book_price(b, <float64_t> (blk.lv[fi].key * sign))
            sz[m] = blk.lv[fi].size
            m += 1
            fi -= 1
        bi -= 1
    while m < n:
        px[m] = NAN
        sz[m] = 0.0
        m += 1


cdef void book_top(const BookState* b, intp_t n, float64_t* bid_px, float64_t* bid_sz,
                   float64_t* ask_px, float64_t* ask_sz) noexcept nogil:
    side_top(b, &b.bid, n, 1, bid_px, bid_sz)
    side_top(b, &b.ask, n, -1, ask_px, ask_sz)


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


cdef int _load_side(BookSide* s, keys, sizes) except -1:
    """Replace a side by levels of strictly ascending keys (int64) with sizes > 0."""
    cdef const int64_t[::1] kv = np.ascontiguousarray(keys, dtype=np.int64)
    cdef const float64_t[::1] zv = np.ascontiguousarray(sizes, dtype=np.float64)
    cdef intp_t m = kv.shape[0]
    if side_load(s, &kv[0] if m else NULL, &zv[0] if m else NULL, m) != STATUS_OK:
        raise MemoryError(f"{m:,} levels could not be allocated")
    return 0


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
    ``capacity`` is the number of far levels per side the block directory is first sized for
    (an integer >= 1; it grows by doubling; the ladder window is sized at snapshots and widened
    by deep builds); a size that overflows is a ValueError naming it, one that cannot be
    allocated a MemoryError. See the module docstring for the structure (tick ladder + far
    blocks) and the crossed-book policies.
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
        nbytes += 2 * LADDER_SLOTS * (sizeof(float64_t) + 1)
        cdef int policy = _policy(crossed)
        self.crossed = crossed
        if book_init(&self.st, ts, policy, bool(strict), cap, LADDER_SLOTS) != STATUS_OK:
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
        try:
            with nogil:
                if b.policy == BOOK_KEEP:
                    # the fast rows in one C loop; each row it stops at (its fast path
                    # declined) goes through the rest of the row code here, then the loop
                    # resumes after it
                    while i < n:
                        i = ofi_book_keep_rows(b, i, n, &s[0], &p[0], &z[0],
                                               &be[0] if has_end else NULL)
                        if i == n:
                            break
                        if not has_end or be[i]:
                            status = _apply_end_rest(b, s[i], p[i], z[i])
                        else:
                            status = _apply_rest(b, s[i], p[i], z[i])
                        if status != STATUS_OK:
                            break
                        i += 1
                elif has_end:
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
        finally:
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
            bb = self.st.bid.best
        if sides[1] is not None:
            if sides[1][0].size:
                aa = sides[1][0][sides[1][0].size - 1]
        elif self.st.ask.n:
            aa = self.st.ask.best
        if bb != KEY_MIN and aa != KEY_MIN and bb + aa >= 0 and self.st.policy == BOOK_RAISE:
            raise_status(STATUS_CROSSED, "bid_px", 0, "snapshot best bid >= best ask")
        for j in range(2):
            if sides[j] is not None:
                _load_side(&self.st.bid if j == 0 else &self.st.ask, sides[j][0], sides[j][1])

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
        return book_price(&self.st, <float64_t> self.st.bid.best)

    @property
    def best_ask(self):
        """Best ask price (NaN when the ask side is empty)."""
        _wait(&self.guard)
        if self.st.ask.n == 0:
            return NAN
        return book_price(&self.st, <float64_t> -self.st.ask.best)

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
        return self.st.bid.best if self.st.bid.n else None

    @property
    def best_ask_tick(self):
        """Best ask in ticks (None when empty)."""
        _wait(&self.guard)
        return -self.st.ask.best if self.st.ask.n else None

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
        cdef float64_t wb = 0.0, wa = 0.0, w = 1.0, q
        cdef intp_t m
        cdef int64_t k
        cdef SideWalk bw, aw
        walk_init(&self.st.bid, &bw)
        walk_init(&self.st.ask, &aw)
        for m in range(L):
            if walk_next(&self.st.bid, &bw, &k, &q):
                wb += w * q
            if walk_next(&self.st.ask, &aw, &k, &q):
                wa += w * q
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
        """Far-array slots allocated per side (bid, ask), beside each side's ladder (w0,
        widened by a deep snapshot or build to at most 16 slots per level): memory follows
        live levels, not prices."""
        _wait(&self.guard)
        return (self.st.bid.far.nb * FAR_B, self.st.ask.far.nb * FAR_B)

    @property
    def _ladder(self):
        """The bid's ladder slots and the ladder windows' lowest keys (bid, ask) (tests)."""
        _wait(&self.guard)
        return self.st.bid.w, self.st.bid.lo, self.st.ask.lo

    @property
    def _moved(self):
        """Levels moved so far by inserts, deletes and recentring, bid + ask (a debug
        counter for the bounded-move tests; not reset by reset())."""
        _wait(&self.guard)
        return self.st.bid.n_moved + self.st.ask.n_moved

    def _check(self):
        """Tests: AssertionError naming the first broken invariant of the structure (ladder
        bits == nonzero slots, counts, the best the ladder's top at least 1/4 up its window,
        far blocks sorted below the window, directory keys); returns the ladder widths."""
        _wait(&self.guard)
        for name, why in (("bid", side_broken(&self.st.bid)), ("ask", side_broken(&self.st.ask))):
            if why:
                raise AssertionError(f"{name}: {why}")
        return self.st.bid.w, self.st.ask.w

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
        cdef int64_t[::1] kv = k
        cdef float64_t[::1] zv = z
        cdef intp_t i = 0
        cdef int64_t key
        cdef float64_t q
        cdef SideWalk w
        walk_init(s, &w)
        while walk_next(s, &w, &key, &q):
            kv[i] = key * side
            zv[i] = q
            i += 1
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
                       max(1, self.st.bid.far.nb * FAR_B, self.st.ask.far.nb * FAR_B)), state)

    def __setstate__(self, d):
        _wait(&self.guard)
        for j, name, sign in ((0, "bid", 1), (1, "ask", -1)):
            k, z = d[name]
            # best first, in ticks -> ascending keys
            _load_side(&self.st.bid if j == 0 else &self.st.ask,
                       (np.asarray(k, dtype=np.int64) * sign)[::-1],
                       np.asarray(z, dtype=np.float64)[::-1])
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
from ofi_fast._guard cimport checked_malloc
from ofi_fast._ofi cimport (
    mlofi_check_ts, mlofi_commit, mlofi_push, mlofi_push_depth, mlofi_reserve, mlofi_reset,
    ofi_pair_sum, ofi_zero,
)
from ofi_fast._ring cimport ring_clear
from ofi_fast._types cimport STATUS_TIME_BACKWARDS

from ofi_fast._ofi import MultiLevelOFI as _MultiLevelOFI

_BOOKOFI_FIELDS = ("side", "price", "size", "ts")


cdef void bookofi_fill(const BookState* b, MLOFIState* m, int64_t* keys) noexcept nogil:
    """m.cur <- the book's top L (ticks as float64, absent levels -inf / +inf with size 0)
    and, unless keys is NULL, keys <- their keys (bids, then asks; KEY_MIN when absent)."""
    cdef intp_t j, L = m.levels
    cdef float64_t* c = m.cur
    cdef SideWalk wb, wa
    cdef int64_t k
    cdef float64_t q
    walk_init(&b.bid, &wb)
    walk_init(&b.ask, &wa)
    for j in range(L):
        if walk_next(&b.bid, &wb, &k, &q):
            c[j] = <float64_t> k
            c[L + j] = q
        else:
            k = KEY_MIN
            c[j] = -INFINITY
            c[L + j] = 0.0
        if keys != NULL:
            keys[j] = k
        if walk_next(&b.ask, &wa, &k, &q):
            c[2 * L + j] = <float64_t> (-k)
            c[3 * L + j] = q
        else:
            k = KEY_MIN
            c[2 * L + j] = INFINITY
            c[3 * L + j] = 0.0
        if keys != NULL:
            keys[L + j] = k


cdef void bookofi_prices(MLOFIState* m, const int64_t* keys) noexcept nogil:
    """m.prev's prices <- those of the cached keys: the C loop (bookofi_keep_rows) keeps only
    the keys and sizes of its rows, so a call of rows that ran it ends with this (between
    calls, and in the general rows, m.prev is current)."""
    cdef intp_t j, L = m.levels
    cdef float64_t* p = m.prev
    cdef int64_t k
    for j in range(L):
        k = keys[j]
        p[j] = -INFINITY if k == KEY_MIN else <float64_t> k
        k = keys[L + j]
        p[2 * L + j] = INFINITY if k == KEY_MIN else <float64_t> (-k)


cdef int bookofi_commit(const BookState* b, MLOFIState* m, int64_t ts) noexcept nogil:
    bookofi_fill(b, m, NULL)
    return mlofi_commit(m, ts)


cdef inline int _commit(const BookState* b, MLOFIState* m, int64_t* keys,
                        int64_t ts) noexcept nogil:
    """A full event: the whole top L read from the book (and its keys cached), diffed against
    the previous state."""
    bookofi_fill(b, m, keys)
    return mlofi_commit(m, ts)


cdef inline int bookofi_push(BookState* b, MLOFIState* m, int64_t* keys, int64_t ts, int side,
                             float64_t price, float64_t size) noexcept nogil:
    """A delta that is its own event: the book, then the event on the cached top L
    (bookofi_step), pushed with its sums (any window)."""
    cdef int status = mlofi_reserve(m, ts)
    if status != STATUS_OK:
        return status | (3 << 4)
    cdef int kind
    cdef int64_t key
    cdef intp_t lo
    if not ofi_book_fast_end(b, side, price, size, &kind, &key):    # `_apply_end`, its
        status = _apply_end_rest(b, side, price, size)              # fast path inline
        if status != STATUS_OK:
            return status
        kind = b.last_kind
        key = b.last_key
    if not m.has_prev:
        return _commit(b, m, keys, ts)       # first event
    cdef int changed = bookofi_step(b, keys, m.prev, m.e, m.levels, side, kind, key, size, &lo,
                                    True)
    if changed == 2:
        mlofi_push_depth(m, ts, m.prev + m.levels, m.prev + 3 * m.levels)   # as mlofi_commit
    else:
        if changed == 1:
            m.e[m.levels] = ofi_pair_sum(m.prev + m.levels, m.prev + 3 * m.levels, m.levels)
        # (0: the top L did not change: e = 0, and the depth m.e[L] is the previous event's)
        mlofi_push(m, ts, lo if changed == 1 else 0)
    return STATUS_OK


cdef inline int bookofi_push_inside(BookState* b, MLOFIState* m, int64_t ts, int side,
                                    float64_t price, float64_t size) noexcept nogil:
    """A delta inside a batch: the book only (time order still checked; no crossing
    judgement: the batch is one message)."""
    cdef int status = mlofi_check_ts(m, ts)
    if status != STATUS_OK:
        return status | (3 << 4)
    return _apply(b, side, price, size)


cdef inline int bookofi_push_full(BookState* b, MLOFIState* m, int64_t* keys, int64_t ts,
                                  int side, float64_t price, float64_t size) noexcept nogil:
    """The delta that ends a batch: crossing judged, then OFI between the whole top L before
    and after."""
    cdef int status = mlofi_reserve(m, ts)
    if status != STATUS_OK:
        return status | (3 << 4)
    status = _apply_end(b, side, price, size)
    if status != STATUS_OK:
        return status
    _commit(b, m, keys, ts)
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
        # two slots of padding before and after (see bookofi_shift_down / _up)
        self._keys = <int64_t*> checked_malloc(2 * self._ml.st.levels + 4, sizeof(int64_t),
                                               "levels")
        memset(self._keys, 0, (2 * self._ml.st.levels + 4) * sizeof(int64_t))
        self._keys += 2
        bookofi_fill(&self._book.st, &self._ml.st, self._keys)    # (m.cur is scratch)

    def __dealloc__(self):
        if self._keys != NULL:
            free(self._keys - 2)

    cdef int push(self, int64_t ts, int side, float64_t price, float64_t size) noexcept nogil:
        # one row of _rows, the general loop (the row code is inlined once, there; a call of
        # one row does not pay the C loop's entry); a side outside -1..1 stays invalid as a
        # signed char
        cdef signed char sc = <signed char> (side if -1 <= side <= 1 else 2)
        cdef float64_t e0
        cdef intp_t at
        return self._rows(1, &ts, &sc, &price, &size, NULL, &e0, NULL, &at)   # (no C loop)

    cdef int rows(self, intp_t n, const int64_t* ts, const signed char* side,
                  const float64_t* price, const float64_t* size,
                  const unsigned char* batch_end, float64_t* e, float64_t* lv,
                  intp_t* at) noexcept nogil:
        # update_many's loop from raw pointers (see _book.pxd). Not guarded. Without a
        # window and batch_end, under policy keep, the rows go through one C loop
        # (bookofi_keep_rows) up to a row that needs the general code (a row the book's fast
        # path declines, the first event, a pending batch's end, an error): that row is done
        # by _rows, then the loop resumes. With batch_end and no time window, the rows inside
        # a message go through another (bookofi_inside_rows, via _message_rows). Otherwise
        # _rows does every row.
        cdef MLOFIState* ml = &self._ml.st
        cdef BookState* b = &self._book.st
        if batch_end != NULL and ml.window_time == 0:
            return self._message_rows(n, ts, side, price, size, batch_end, e, lv, at)
        if (batch_end != NULL or b.policy != BOOK_KEEP or ml.window != 0
                or ml.window_time != 0):
            return self._rows(n, ts, side, price, size, batch_end, e, lv, at)
        cdef intp_t i = 0, L = ml.levels
        cdef int status = STATUS_OK
        cdef bint stale = False
        while i < n:
            if ml.has_prev and not self._pending:
                i = bookofi_keep_rows(b, self._keys, ml.prev, ml.e, ml.sum, ml.comp, L, i, n,
                                      ts, side, price, size, e, lv, &ml.last_ts,
                                      &ml.has_last, &ml.n_events)
                stale = True
                if i == n:
                    break
            status = self._rows(1, ts + i if ts != NULL else NULL, side + i, price + i,
                                size + i, NULL, e + i, lv + i * L if lv != NULL else NULL, at)
            if status != STATUS_OK:
                at[0] += i
                break
            i += 1
        if stale:
            bookofi_prices(ml, self._keys)   # every call ends with m.prev's prices current
        if status == STATUS_OK:
            at[0] = n
        return status

    cdef int _message_rows(self, intp_t n, const int64_t* ts, const signed char* side,
                           const float64_t* price, const float64_t* size,
                           const unsigned char* batch_end, float64_t* e, float64_t* lv,
                           intp_t* at) noexcept nogil:
        # rows with batch_end, no time window (the only window whose check an inside row
        # could fail): the runs of rows inside a message through one C loop
        # (bookofi_inside_rows: the book only), every other row (a message's end, a row the
        # loop declines, an error) by _rows
        cdef MLOFIState* ml = &self._ml.st
        cdef BookState* b = &self._book.st
        cdef intp_t i = 0, j, L = ml.levels
        cdef int status
        while i < n:
            if not batch_end[i]:
                j = bookofi_inside_rows(b, i, n, ts, ml.last_ts if ml.has_last else INT64_MIN,
                                        side, price, size, batch_end, e, lv, L)
                if j > i:
                    self._pending = True
                    i = j
                    if i == n:
                        break
            status = self._rows(1, ts + i if ts != NULL else NULL, side + i, price + i,
                                size + i, batch_end + i, e + i,
                                lv + i * L if lv != NULL else NULL, at)
            if status != STATUS_OK:
                at[0] += i
                return status
            i += 1
        at[0] = n
        return STATUS_OK

    cdef int _rows(self, intp_t n, const int64_t* ts, const signed char* side,
                   const float64_t* price, const float64_t* size,
                   const unsigned char* batch_end, float64_t* e, float64_t* lv,
                   intp_t* at) noexcept nogil:
        # rows' general loop: every row by bookofi_push_inside / _full / bookofi_push
        cdef intp_t i, m
        cdef intp_t L = self._ml.st.levels
        cdef int status = STATUS_OK
        cdef int64_t tsi = self._ml.st.last_ts
        cdef BookState* b = &self._book.st
        cdef MLOFIState* ml = &self._ml.st
        cdef int64_t* keys = self._keys
        for i in range(n):
            if ts != NULL:
                tsi = ts[i]
            if batch_end != NULL and not batch_end[i]:
                status = bookofi_push_inside(b, ml, tsi, side[i], price[i], size[i])
                if status != STATUS_OK:
                    at[0] = i
                    return status
                self._pending = True
                e[i] = 0.0
                if lv != NULL:
                    for m in range(L):
                        lv[i * L + m] = 0.0
                continue
            if self._pending:
                status = bookofi_push_full(b, ml, keys, tsi, side[i], price[i], size[i])
            else:
                status = bookofi_push(b, ml, keys, tsi, side[i], price[i], size[i])
            if status != STATUS_OK:
                at[0] = i
                return status
            self._pending = False
            e[i] = ml.e[0]
            if lv != NULL:
                for m in range(L):
                    lv[i * L + m] = ml.e[m]
        at[0] = n
        return STATUS_OK

    cpdef float64_t update(self, int64_t ts, int side, float64_t price,
                           float64_t size) except? -1.0:
        """Apply one delta at time ``ts``; return the event's best-level e (it ends a pending
        batch, if any)."""
        if self._book.guard.busy:
            guard_wait(&self._book.guard)
        cdef int status = self.push(ts, side, price, size)
        if status != STATUS_OK:
            raise_bookofi(status, 0)
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
        cdef intp_t i = 0
        cdef int status = STATUS_OK
        guard_enter(&self._book.guard)
        try:
            with nogil:
                status = self.rows(n, &t[0] if has_ts and n else NULL, &s[0] if n else NULL,
                                   &p[0] if n else NULL, &z[0] if n else NULL,
                                   &be[0] if has_end and n else NULL, &e[0] if n else NULL,
                                   &lv[0, 0] if want and n else NULL, &i)
        finally:
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
        _commit(&self._book.st, m, self._keys, at)
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
    ring_clear(&m.ring)
    m.has_last = False
    m.n_events = 0


def _bookofi_restore(Book book, MultiLevelOFI ml, pending=False):
    cdef BookOFI o = BookOFI.__new__(BookOFI, book.st.tick_size, ml.st.levels)
    o._book = book
    o._ml = ml
    o._pending = pending
    # the cached top-L keys of the last committed state are the book's top (while a batch is
    # pending they are not used: its end re-reads the whole top L); m.cur is scratch
    bookofi_fill(&book.st, &ml.st, o._keys)
    return o
