/* The plain C loop the l1_ofi target is measured against: CKS eq. 10 over arrays, no
 * validation, compiled with -O2 at bench time (bench/conftest.py). */
void l1_ofi_c(const double *bp, const double *bs, const double *ap, const double *az,
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
