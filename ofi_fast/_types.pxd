# Shared fixed-width types and the status codes that nogil code returns.
# Every ofi_fast module cimports its widths from here so they all agree.
# The status values are mirrored in ofi_fast/errors.py (a test checks they match).

from libc.stdint cimport int8_t, int64_t

# float64_t: prices, sizes, OFI values, sums (IEEE double).
ctypedef double float64_t
# int64_t: timestamps (any unit, ns in the feeds), counters, integer ticks.
# int8_t: sides (+1 bid / buyer-initiated, -1 ask / seller-initiated, 0 unknown).
# intp_t: indices and lengths of buffers (Py_ssize_t).
ctypedef Py_ssize_t intp_t

# Status codes: 0 is success; a kernel that fails returns one of these and leaves its
# state as it was before the failing event. Python code turns (status, field, index)
# into an exception with ofi_fast.errors.raise_status.
cdef enum Status:
    STATUS_OK = 0
    STATUS_CAPACITY = 1        # a time window needs more slots than the buffer has
    STATUS_NON_FINITE = 2      # NaN or inf where a finite number is required
    STATUS_NEGATIVE = 3        # a size or volume below zero
    STATUS_TIME_BACKWARDS = 4  # timestamp smaller than the previous one
    STATUS_CROSSED = 5         # best bid >= best ask where the policy is to raise
    STATUS_SEQUENCE_GAP = 6    # a feed's update ids do not chain
    STATUS_BAD_VALUE = 7       # a value outside its domain (a side not in {-1, 0, +1}, ...)
    STATUS_NO_MEMORY = 8       # malloc/realloc failed
