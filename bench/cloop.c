/* The C loops the package's kernels are measured against: the same work, no validation,
 * written branch-free (price comparisons as integer masks), so that they are the limit of
 * what the hardware does for this work rather than a loop slowed by mispredicted branches.
 * bench/conftest.py builds this file at -O2 and at -O3; tools/check_branches.py (run by
 * tests/test_tools.py) checks, at -O2 and at -O3, that the inner loops below have no
 * conditional jump but the loop's own. l1_ofi_c_if is the old loop written with ifs, kept as
 * a labelled extra row (and the only function here that branches per event). Every other `if`
 * in this file is outside the loops (the n <= 0 guard, the odd last event after a two-event
 * loop) or tests a compile-time constant (count_rows' `full`, folded in each inlined copy). */
#include <stdint.h>
#include <string.h>

/* x where c is true, +0.0 where it is false: an AND with an all-ones or all-zeros mask. */
static inline double sel(int c, double x)
{
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    b &= -(uint64_t)(c != 0);
    memcpy(&x, &b, sizeof x);
    return x;
}

/* CKS eq. 10 from quotes (b0, q0, a0, r0) -> (b1, q1, a1, r1). */
static inline double event(double b0, double q0, double a0, double r0,
                           double b1, double q1, double a1, double r1)
{
    double bid = sel(b1 >= b0, q1) - sel(b1 <= b0, q0);
    double ask = sel(a1 >= a0, r0) - sel(a1 <= a0, r1);
    return bid + ask;
}

/* e_n per event, e_0 = 0. */
void l1_ofi_c(const double *bp, const double *bs, const double *ap, const double *az,
              double *out, long n)
{
    if (n <= 0) return;
    out[0] = 0.0;
    for (long i = 1; i < n; i++)
        out[i] = event(bp[i - 1], bs[i - 1], ap[i - 1], az[i - 1], bp[i], bs[i], ap[i], az[i]);
}

/* The same with gcc/clang vector extensions, two events per step (SSE2 on x86-64): what the
 * -O2 compiler does not vectorise by itself. */
typedef double v2d __attribute__((vector_size(16)));
typedef int64_t v2i __attribute__((vector_size(16)));
static inline v2d ld2(const double *p) { v2d v; memcpy(&v, p, sizeof v); return v; }
static inline v2d sel2(v2i m, v2d x) { return (v2d)((v2i)x & m); }
/* The two-event step of the loops below: e of rows i and i + 1 (from rows i - 1 .. i + 1),
 * stored to out[i], out[i + 1] and returned. */
static inline __attribute__((always_inline)) v2d e2_step(
    const double *bp, const double *bs, const double *ap, const double *az, double *out, long i)
{
    v2d b0 = ld2(bp + i - 1), b1 = ld2(bp + i), q0 = ld2(bs + i - 1), q1 = ld2(bs + i);
    v2d a0 = ld2(ap + i - 1), a1 = ld2(ap + i), r0 = ld2(az + i - 1), r1 = ld2(az + i);
    v2d e = (sel2(b1 >= b0, q1) - sel2(b1 <= b0, q0))
          + (sel2(a1 >= a0, r0) - sel2(a1 <= a0, r1));
    memcpy(out + i, &e, sizeof e);
    return e;
}

void l1_ofi_c_v2(const double *bp, const double *bs, const double *ap, const double *az,
                 double *out, long n)
{
    if (n <= 0) return;
    out[0] = 0.0;
    long i = 1;
    for (; i + 1 < n; i += 2) {
        e2_step(bp, bs, ap, az, out, i);
    }
    if (i < n)
        out[i] = event(bp[i - 1], bs[i - 1], ap[i - 1], az[i - 1], bp[i], bs[i], ap[i], az[i]);
}

/* e_n and the sum of e over the last `window` events (add the new one, subtract the one that
 * leaves, plain double sum), e into out, the window sum into v. */
void update_many_count_c(const double *bp, const double *bs, const double *ap,
                         const double *az, double *out, double *v, long n, long window)
{
    if (n <= 0) return;
    double s = 0.0;
    out[0] = 0.0;
    v[0] = 0.0;
    long warm = n < window ? n : window;
    for (long i = 1; i < warm; i++) {
        double x = event(bp[i - 1], bs[i - 1], ap[i - 1], az[i - 1], bp[i], bs[i], ap[i], az[i]);
        out[i] = x;
        s += x;
        v[i] = s;
    }
    for (long i = warm; i < n; i++) {
        double x = event(bp[i - 1], bs[i - 1], ap[i - 1], az[i - 1], bp[i], bs[i], ap[i], az[i]);
        out[i] = x;
        s -= out[i - window];
        s += x;
        v[i] = s;
    }
}

/* e_n and the sum of e over the events with ts in (t - window_time, t], by two pointers:
 * one merged loop where each step either removes the oldest event (if it left the window)
 * or adds the next one; the choice is a select, so the number of events leaving per event
 * (0-4 under random arrivals) costs no mispredicted branch. e first (l1_ofi_c), then the sum. */
void update_many_time_c(const int64_t *ts, const double *bp, const double *bs,
                        const double *ap, const double *az, double *out, double *v, long n,
                        int64_t window_time)
{
    l1_ofi_c(bp, bs, ap, az, out, n);
    long i = 0, j = 0;
    double s = 0.0;
    while (i < n) {
        int rm = ts[j] <= ts[i] - window_time;    /* j <= i always; j == i never leaves */
        double x = sel(rm, -out[j]) + sel(!rm, out[i]);
        s += x;
        v[i] = s;          /* the last write to v[i] is the one after adding event i */
        j += rm;
        i += !rm;
    }
}

/* The previous baseline, written with ifs: gcc -O2 compiles them into conditional jumps. */
void l1_ofi_c_if(const double *bp, const double *bs, const double *ap, const double *az,
                 double *out, long n)
{
    if (n <= 0) return;
    out[0] = 0.0;
    for (long i = 1; i < n; i++) {
        double bid = 0.0, ask = 0.0;
        if (bp[i] >= bp[i - 1]) bid = bs[i];
        if (bp[i] <= bp[i - 1]) bid -= bs[i - 1];
        if (ap[i] >= ap[i - 1]) ask = az[i - 1];
        if (ap[i] <= ap[i - 1]) ask -= az[i];
        out[i] = bid + ask;
    }
}

/* ---- trades (bench/bench_trades.py) ------------------------------------------------------- */

/* Neumaier / TwoSum step, as the package's _ring.pxd:neumaier_add: exact sum = s + c. */
static inline void twosum(double *s, double *c, double x)
{
    double t = *s + x, z = t - *s;
    *c += (*s - (t - z)) + (x - z);
    *s = t;
}

/* x where c is true, y where it is false. */
static inline double choose(int c, double x, double y)
{
    return sel(c, x) + sel(!c, y);
}

/* Tick rule: +1 uptick, -1 downtick, the last non-zero change's sign on a zero tick. */
void classify_tick_c(const double *px, int8_t *out, long n)
{
    int sg = 0;
    double last = n > 0 ? px[0] : 0.0;
    for (long i = 0; i < n; i++) {
        double p = px[i];
        int d = (p > last) - (p < last);
        sg = d | (sg & -(d == 0));
        last = p;
        out[i] = (int8_t)sg;
    }
}

/* Lee-Ready: the quote rule against the mid (2p vs a + b), the tick rule at the mid or when
 * the quote is unusable (NaN, locked, crossed). No counters. */
void classify_lee_ready_c(const double *px, const double *bid, const double *ask, int8_t *out,
                          long n)
{
    int sg = 0;
    double last = n > 0 ? px[0] : 0.0;
    for (long i = 0; i < n; i++) {
        double p = px[i], b = bid[i], a = ask[i], m = b + a, tw = p + p;
        int d = (p > last) - (p < last);
        sg = d | (sg & -(d == 0));
        last = p;
        int q = (tw > m) - (tw < m);
        q = q | (sg & -(q == 0));
        int valid = b < a;
        out[i] = (int8_t)(sg ^ ((q ^ sg) & -valid));
    }
}

/* TradeFlow without a window: compensated buy / unknown / sell volume (vol[3], comp[3],
 * index side + 1), trade counts n[3], signed volume per trade into sv. */
void tradeflow_plain_c(const double *sz, const int8_t *sd, double *sv, double *vol,
                       double *comp, int64_t *cnt, long n)
{
    double v[3] = {0, 0, 0}, c[3] = {0, 0, 0};
    int64_t m[3] = {0, 0, 0};
    for (long i = 0; i < n; i++) {
        int s = sd[i];
        double q = sz[i];
        twosum(&v[s + 1], &c[s + 1], q);
        m[s + 1] += 1;
        sv[i] = s * q;
    }
    for (int k = 0; k < 3; k++) { vol[k] = v[k]; comp[k] = c[k]; cnt[k] = m[k]; }
}

/* The same over the last `window` trades: a ring of (ts, size, side) of `window` slots; once
 * full, the oldest trade leaves (its side's sums and count go down) and the new one takes its
 * slot. Two loops (fill, full). */
void tradeflow_count_c(const int64_t *ts, const double *sz, const int8_t *sd, double *sv,
                       double *vol, double *comp, int64_t *cnt, long n, long window,
                       int64_t *rts, double *rsz, int8_t *rsd)
{
    double v[3] = {0, 0, 0}, c[3] = {0, 0, 0};
    int64_t m[3] = {0, 0, 0};
    long warm = n < window ? n : window, head = 0;
    for (long i = 0; i < warm; i++) {
        int s = sd[i];
        double q = sz[i];
        rts[i] = ts[i]; rsz[i] = q; rsd[i] = (int8_t)s;
        twosum(&v[s + 1], &c[s + 1], q);
        m[s + 1] += 1;
        sv[i] = s * q;
    }
    for (long i = warm; i < n; i++) {
        int s = sd[i], ko = rsd[head] + 1;
        double q = sz[i];
        twosum(&v[ko], &c[ko], -rsz[head]);
        m[ko] -= 1;
        int empty = m[ko] == 0;
        v[ko] = sel(!empty, v[ko]);
        c[ko] = sel(!empty, c[ko]);
        rts[head] = ts[i]; rsz[head] = q; rsd[head] = (int8_t)s;
        head += 1;
        head -= window & -(long)(head >= window);
        twosum(&v[s + 1], &c[s + 1], q);
        m[s + 1] += 1;
        sv[i] = s * q;
    }
    for (int k = 0; k < 3; k++) { vol[k] = v[k]; comp[k] = c[k]; cnt[k] = m[k]; }
}

/* The same over the trades with ts in (t - window_time, t], by two pointers merged into one
 * loop (each step evicts the oldest trade or pushes the next, chosen by selects) on a ring of
 * `cap` slots that never overflows (cap >= the most trades in a window + 1). */
void tradeflow_time_c(const int64_t *ts, const double *sz, const int8_t *sd, double *sv,
                      double *vol, double *comp, int64_t *cnt, long n, int64_t window_time,
                      int64_t *rts, double *rsz, int8_t *rsd, long cap)
{
    double v[3] = {0, 0, 0}, c[3] = {0, 0, 0};
    int64_t m[3] = {0, 0, 0};
    long i = 0, head = 0, count = 0;
    while (i < n) {
        int64_t t = ts[i];
        double q = sz[i];
        int s = sd[i];
        long tail = head + count;
        tail -= cap & -(long)(tail >= cap);
        rts[tail] = t; rsz[tail] = q; rsd[tail] = (int8_t)s;
        int out = (count != 0) & (rts[head] <= t - window_time);
        int kn = s + 1, k = kn ^ (((rsd[head] + 1) ^ kn) & -out);
        twosum(&v[k], &c[k], choose(out, -rsz[head], q));
        m[k] += 1 - 2 * out;
        int empty = out & (m[k] == 0);
        v[k] = sel(!empty, v[k]);
        c[k] = sel(!empty, c[k]);
        head += out;
        head -= cap & -(long)(head >= cap);
        count += 1 - 2 * out;
        sv[i] = s * q;
        i += 1 - out;
    }
    for (int k = 0; k < 3; k++) { vol[k] = v[k]; comp[k] = c[k]; cnt[k] = m[k]; }
}

/* ---- OFI.update_many's own work (bench/bench_ofi.py, "same work" rows) -------------- */

/* What OFI.update_many keeps besides e, with no validation: the crossed (bid > ask) and locked
 * (bid == ask) counts and the stream's total of e by TwoSum (as _ring.pxd:neumaier_add);
 * e two events per step as l1_ofi_c_v2, the counts as vector masks, the total one event at a
 * time (its order is the stream's). total[2] = (sum, compensation), counts[2]. */
void update_many_plain_c(const double *bp, const double *bs, const double *ap,
                         const double *az, double *out, long n, double *total,
                         int64_t *counts)
{
    const v2d one = {1.0, 1.0};
    v2d crossed = {0.0, 0.0}, locked = {0.0, 0.0};
    double s = 0.0, c = 0.0;
    if (n <= 0) return;
    out[0] = 0.0;
    crossed[0] += bp[0] > ap[0];
    locked[0] += bp[0] == ap[0];
    long i = 1;
    for (; i + 1 < n; i += 2) {
        v2d e = e2_step(bp, bs, ap, az, out, i), b1 = ld2(bp + i), a1 = ld2(ap + i);
        crossed += sel2(b1 > a1, one);
        locked += sel2(b1 == a1, one);
        twosum(&s, &c, e[0]);
        twosum(&s, &c, e[1]);
    }
    if (i < n) {   /* the last event alone */
        double e = event(bp[i - 1], bs[i - 1], ap[i - 1], az[i - 1], bp[i], bs[i], ap[i], az[i]);
        out[i] = e;
        crossed[0] += bp[i] > ap[i];
        locked[0] += bp[i] == ap[i];
        twosum(&s, &c, e);
    }
    total[0] = s;
    total[1] = c;
    counts[0] = (int64_t)(crossed[0] + crossed[1]);
    counts[1] = (int64_t)(locked[0] + locked[1]);
}

/* The same with a count window: a ring of (ts, e) of `window` slots, the window's sum by
 * TwoSum (the oldest leaves, then the new one enters, as rolling_push), its value after each
 * event into v; the fill and the full phase are two loops (the same pair loop, `full` a
 * constant in each). The running state is in cnt_state. */
struct cnt_state {
    double s, c, ws, wc;
    v2d crossed, locked;
    long head, size;
};

static inline __attribute__((always_inline)) void count_rows(
    const int64_t *ts, const double *bp, const double *bs, const double *ap, const double *az,
    double *out, double *v, long lo, long hi, long window, int64_t *rts, double *rval,
    struct cnt_state *st, const int full)
{
    const v2d one = {1.0, 1.0};
    double s = st->s, c = st->c, ws = st->ws, wc = st->wc;
    v2d crossed = st->crossed, locked = st->locked;
    long head = st->head, tail = st->size;
    long i = lo;
#define CNT_ROW(x_, k_)                                                                   \
    do {                                                                                  \
        double xr = (x_);                                                                  \
        twosum(&s, &c, xr);                                                                \
        if (full) {                                                                       \
            twosum(&ws, &wc, -rval[head]);                                                \
            rts[head] = ts[k_]; rval[head] = xr;                                           \
            head += 1;                                                                    \
            head -= window & -(long)(head >= window);                                     \
        } else {                                                                          \
            rts[tail] = ts[k_]; rval[tail] = xr; tail += 1;                                \
        }                                                                                 \
        twosum(&ws, &wc, xr);                                                              \
        v[k_] = ws + wc;                                                                  \
    } while (0)
    for (; i + 1 < hi; i += 2) {
        v2d e = e2_step(bp, bs, ap, az, out, i), b1 = ld2(bp + i), a1 = ld2(ap + i);
        crossed += sel2(b1 > a1, one);
        locked += sel2(b1 == a1, one);
        CNT_ROW(e[0], i);
        CNT_ROW(e[1], i + 1);
    }
    if (i < hi) {
        double x = event(bp[i - 1], bs[i - 1], ap[i - 1], az[i - 1], bp[i], bs[i], ap[i], az[i]);
        out[i] = x;
        crossed[0] += bp[i] > ap[i];
        locked[0] += bp[i] == ap[i];
        CNT_ROW(x, i);
    }
#undef CNT_ROW
    st->s = s; st->c = c; st->ws = ws; st->wc = wc;
    st->crossed = crossed; st->locked = locked;
    st->head = head; st->size = full ? window : tail;
}

void update_many_count_same_c(const int64_t *ts, const double *bp, const double *bs,
                              const double *ap, const double *az, double *out, double *v,
                              long n, long window, int64_t *rts, double *rval, double *total,
                              int64_t *counts)
{
    struct cnt_state st = {0.0, 0.0, 0.0, 0.0, {0.0, 0.0}, {0.0, 0.0}, 0, 1};
    if (n <= 0 || window < 1) return;
    out[0] = 0.0;
    v[0] = 0.0;
    rts[0] = ts[0];
    rval[0] = 0.0;
    st.crossed[0] += bp[0] > ap[0];
    st.locked[0] += bp[0] == ap[0];
    long warm = n < window ? n : window;
    count_rows(ts, bp, bs, ap, az, out, v, 1, warm, window, rts, rval, &st, 0);
    count_rows(ts, bp, bs, ap, az, out, v, warm, n, window, rts, rval, &st, 1);
    total[0] = st.s;
    total[1] = st.c;
    counts[0] = (int64_t)(st.crossed[0] + st.crossed[1]);
    counts[1] = (int64_t)(st.locked[0] + st.locked[1]);
}
