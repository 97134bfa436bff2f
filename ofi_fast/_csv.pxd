# Typed CSV tokenizer of the feed readers (see _csv.pyx for the grammar of each kind).

from ofi_fast._types cimport float64_t, int64_t, intp_t

# Column kinds: what a field must look like and where its value goes.
cdef enum ColKind:
    K_SKIP = 0        # any bytes up to the next comma, ignored
    K_INT = 1         # [+-]?digits -> int64 (v * mult + offset), lo <= v <= hi
    K_INT8 = 2        # [+-]?digits -> int8, lo <= v <= hi (within -128..127)
    K_SCALED = 3      # [+-]?digits[.digits] -> int64 in units of 10**-digits (+ offset), exact
    K_FLOAT = 4       # [+-]?digits[.digits][e[+-]digits] -> float64, correctly rounded
    K_INT_F64 = 5     # [+-]?digits -> float64 (v / divisor); v == sentinel -> NaN
    K_BOOL = 6        # true / false -> int8 1 / 0
    K_SIDE_BOOK = 7   # bid / ask -> int8 +1 / -1
    K_SIDE_TRADE = 8  # buy / sell / unknown -> int8 +1 / -1 / 0
    K_ID = 9          # an int64 integer, anything else -> -1 (counted in bad_ids)
    K_MATCH = 10      # bytes equal to `token`; another value: the line is not this key's (below)

# Column flags (bit set).
cdef enum ColFlag:
    F_POSITIVE = 1        # K_FLOAT: value > 0
    F_NONNEG = 2          # K_FLOAT: value >= 0
    F_EMPTY_OK = 4        # K_FLOAT: an empty field gives `empty`
    F_SENTINEL = 8        # K_INT_F64: `sentinel` -> NaN
    F_ZERO_AFTER_SENT = 16  # K_INT_F64: 0.0 when the previous column hit its sentinel
    F_NONZERO = 32        # K_INT / K_INT8: value != 0
    F_STRICT = 64         # K_MATCH: another value is an error (P_BAD_TOKEN), not a skipped line

# Parse statuses (0 = success). The Python edge turns them into ParseError with line + field.
cdef enum ParseStatus:
    P_OK = 0
    P_BAD_NUMBER = 1     # characters that do not form a number of the column's kind
    P_OUT_OF_RANGE = 2   # a number outside the column's bounds
    P_OVERFLOW = 3       # does not fit in int64 / float64
    P_TOO_FEW = 4        # fewer fields than columns
    P_TOO_MANY = 5       # more fields than columns
    P_BAD_TOKEN = 6      # a word not in the column's set (true/false, bid/ask, ...)
    P_EMPTY_FIELD = 7    # an empty field where a value is required
    P_EMPTY_LINE = 8     # an empty line (when blank lines are not skipped)
    P_TOO_LONG = 9       # a float field longer than the strtod copy buffer
    P_OTHER = 10         # internal to parse_block: a K_MATCH field of another value (the line
                         # is consumed, no row written, counted in ParseResult.other)

cdef struct ColSpec:
    int kind            # ColKind
    int flags           # ColFlag bits
    int digits          # K_SCALED: decimals kept (0..18); more are rounded half away from 0
    int64_t lo          # bounds (inclusive) of the parsed integer / scaled value
    int64_t hi
    int64_t mult        # K_INT: multiplier (>= 1)
    int64_t mult_lim    # INT64_MAX // mult (overflow test without a division per field)
    int64_t offset      # K_INT / K_SCALED: added last (overflow-checked)
    float64_t divisor   # K_INT_F64: value = v / divisor
    int64_t sentinel    # K_INT_F64 with F_SENTINEL: this integer -> NaN
    float64_t empty     # K_FLOAT with F_EMPTY_OK: value of an empty field
    const char* token   # K_MATCH: the bytes a field must equal (held by the Tokenizer)
    intp_t token_len
    char* out           # destination of row 0 (NULL for K_SKIP / K_MATCH)
    intp_t stride       # bytes between rows in `out`

cdef struct ParseResult:
    int status          # ParseStatus
    intp_t pos          # byte offset where parsing stopped (start of the first line not consumed)
    intp_t lines        # lines consumed (rows written + blank lines skipped)
    intp_t rows         # rows written (at row0, row0 + 1, ...)
    int field           # on error: 0-based column of the bad field (ncols for "too many")
    intp_t fstart       # on error: byte range of the bad field
    intp_t fend
    intp_t next         # on error: start of the line after the bad one
    int64_t bad_ids     # K_ID fields that were not integers (rows written only)
    int64_t other       # lines skipped because a K_MATCH field held another value

cdef int parse_block(const ColSpec* cols, int ncols, const char* buf, intp_t start, intp_t end,
                     intp_t max_lines, bint final, bint skip_blank, intp_t row0,
                     int64_t* line_out, int64_t line0, ParseResult* res) noexcept nogil
