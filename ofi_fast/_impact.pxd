# Bars and (later) the online price-impact model. C-level API.

from ofi_fast._types cimport float64_t, int64_t, intp_t

# Floor division for int64 (C truncates toward zero; bars need floor for negative ts).
cdef inline int64_t floor_div(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q

# Clock bars: for sorted ts, write per-bar sum/count/first/last (bars pre-filled by the caller:
# sum 0, count 0, first/last NaN). Returns the index of the first bad event, or -1.
cdef intp_t bars_clock_kernel(const int64_t* ts, const float64_t* values, intp_t n,
                              int64_t every, int64_t k0, float64_t* bsum, int64_t* bcount,
                              float64_t* bfirst, float64_t* blast, int* status) noexcept nogil
