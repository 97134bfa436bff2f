/* The C loops the package's kernels are measured against: the same work, no validation,
 * written branch-free (price comparisons as integer masks), so that they are the limit of
 * what the hardware does for this work rather than a loop slowed by mispredicted branches.
 * bench/conftest.py builds this file at -O2 and at -O3; tools/check_branches.py (run by
 * tests/test_tools.py) checks that the inner loops below have no conditional jump but the
 * loop's own. l1_ofi_c_if is the old loop written with ifs, kept as a labelled extra row. */
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

void l1_ofi_c_v2(const double *bp, const double *bs, const double *ap, const double *az,
                 double *out, long n)
{
    if (n <= 0) return;
    out[0] = 0.0;
    long i = 1;
    for (; i + 1 < n; i += 2) {
        v2d b0 = ld2(bp + i - 1), b1 = ld2(bp + i), q0 = ld2(bs + i - 1), q1 = ld2(bs + i);
        v2d a0 = ld2(ap + i - 1), a1 = ld2(ap + i), r0 = ld2(az + i - 1), r1 = ld2(az + i);
        v2d e = (sel2(b1 >= b0, q1) - sel2(b1 <= b0, q0))
              + (sel2(a1 >= a0, r0) - sel2(a1 <= a0, r1));
        memcpy(out + i, &e, sizeof e);
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
