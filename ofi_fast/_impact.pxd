# Bars, the online price-impact regression (RollingOLS) and the impact fit. C-level API.
#
#   from ofi_fast._impact cimport RollingOLS, OLSState, ols_update, ols_solve
#
# Status returned by ols_update / RollingOLS.push: (status & 15) is a Status of _types.pxd,
# (status >> 4) the field at fault: 0 ts, 1 x, 2 y.

from ofi_fast._guard cimport Guard
from ofi_fast._ring cimport Ring
from ofi_fast._types cimport float64_t, int64_t, intp_t

# Floor division for int64 (C truncates toward zero; bars need floor for negative ts).
cdef inline int64_t floor_div(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q

# Clock bars over sorted ts: per-bar sum/count/first/last of `values` into nb bars starting at
# bar number k0 (bars pre-filled by the caller: sum 0, count 0, first/last NaN). `shift` is 0
# for left-closed bars [k*every, (k+1)*every) and 1 for right-closed ones (k*every, (k+1)*every]
# (an integer ts t lies in the right-closed bar k iff t - 1 lies in the left-closed bar k).
# Returns the index of the first bad event (status in *status), or -1.
cdef intp_t bars_clock_kernel(const int64_t* ts, const float64_t* values, intp_t n,
                              int64_t every, int64_t k0, intp_t nb, int64_t shift,
                              float64_t* bsum, int64_t* bcount,
                              float64_t* bfirst, float64_t* blast, int* status) noexcept nogil


# Rolling least squares with intercept over a count window, a time window or the whole stream.
# Moments are centred (Welford add/remove, THEORY-DETAIL 9.2) and recomputed exactly from the
# ring buffer after every max(size, 1024) removals, so rounding cannot accumulate.
cdef struct OLSState:
    intp_t p               # regressors (>= 1)
    int64_t window         # count window (pairs); 0 = none
    float64_t inv_window   # 1 / window (0 without a count window)
    int64_t window_time    # time window (ts units): the pairs with ts in (t - window_time, t]
    bint grow              # time window: double the ring when full instead of STATUS_CAPACITY
    float64_t ridge        # lambda >= 0 added to the diagonal of Cxx before solving
    # the pairs in the window (_ring.pxd): slot j holds ts[j] and the row of width p + 1
    # x_1..x_p, y; size == n with a window; no buffers, capacity 0, without a window
    Ring ring
    # centred moments of the pairs in the window (the whole stream without a window)
    int64_t n              # pairs in the window
    float64_t* mx          # p means of x
    float64_t my           # mean of y
    float64_t* cxx         # p*p: sum (x - mx)(x - mx)^T, full symmetric matrix, >= 0 definite
    float64_t* cxy         # p: sum (x - mx)(y - my)
    float64_t cyy          # sum (y - my)^2 >= 0
    float64_t* dx          # p scratch: x - mx before an update
    float64_t* xin         # p scratch: the Python edge converts one x into it
    float64_t* chol        # p*p scratch: Cholesky factor of cxx + ridge I (lower)
    float64_t* beta        # p: slopes of the last solve (valid when not dirty)
    float64_t alpha        # intercept of the last solve
    bint dirty             # moments changed since the last solve
    bint singular          # the last solve found cxx + ridge I singular (beta = NaN)
    int64_t removed        # removals since the last exact recompute
    bint cancelled         # a removal cancelled a centred sum to rounding noise: recompute now
    bint has_last          # a pair has been pushed since the last reset
    int64_t last_ts        # its timestamp
    int64_t n_updates      # pairs accepted since reset
    int64_t poison_until   # number (1-based, of n_updates) of the last pair with |x| or |y| >
                           # 1e100; once it has left the window the moments are recomputed
                           # exactly from the ring (0: none pending)

cdef int ols_init(OLSState* st, intp_t p, int64_t window, int64_t window_time,
                  intp_t capacity, bint grow, float64_t ridge) noexcept nogil
cdef void ols_free(OLSState* st) noexcept nogil
cdef void ols_reset(OLSState* st) noexcept nogil
# Add one pair (x has p values). Validates first; on failure the state is unchanged and the
# return value says which status and field.
cdef int ols_update(OLSState* st, int64_t ts, const float64_t* x, float64_t y) noexcept nogil
# Recompute the moments exactly (two-pass, centred) from the ring buffer.
cdef void ols_recompute(OLSState* st) noexcept nogil
# Solve for beta/alpha if the moments changed; returns False when singular (beta NaN).
cdef bint ols_solve(OLSState* st) noexcept nogil
# alpha + beta . x with the current fit (NaN when there is no fit).
cdef float64_t ols_predict(OLSState* st, const float64_t* x) noexcept nogil
cdef float64_t ols_r2(OLSState* st) noexcept nogil


cdef class RollingOLS:
    cdef OLSState st
    cdef Guard guard            # serialises calls from several threads (see _guard.pxd)
    cdef readonly object window
    cdef readonly object window_time
    # C-level update for cimporting code: see the status layout above.
    cdef int push(self, int64_t ts, const float64_t* x, float64_t y) noexcept nogil
    cdef int _load_x(self, object x) except -1
    cdef int64_t _ts(self, int64_t ts) except? -1
    cpdef int64_t update(self, object x, float64_t y, int64_t ts=*) except -1


cdef class _EmptyOLSCall:
    cpdef int64_t update(self, object x, float64_t y, int64_t ts=*) except -1
