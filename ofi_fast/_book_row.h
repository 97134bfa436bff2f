/* The Book's state and its fast row, in C (issue 13; helper book5).
 *
 * The structs are the ones _book.pxd documents field by field (it declares them from here);
 * they are C so that the fast path below is one C function, inlined into Book._apply (one
 * row) and into Book.apply_many's batch loop (the rows of a policy-keep batch, with the
 * counters summed per batch): about 126 instructions per row in that loop on the realistic
 * stream against 194 for the Cython row before (bench/RESULTS.md, "Issue 13: the Book row,
 * again (helper book5)"). Plain C99 plus __builtin_clzll / __builtin_expect (gcc, clang). */
#ifndef OFI_BOOK_ROW_H
#define OFI_BOOK_ROW_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <math.h>

enum { FAR_B = 32 };                  /* levels per far block (a power of two) */

typedef struct BookLevel { int64_t key; double size; } BookLevel;
typedef struct FarBlock { Py_ssize_t n; BookLevel lv[FAR_B]; } FarBlock;
typedef struct BookFar {
    FarBlock** blk; int64_t* last; Py_ssize_t nb; Py_ssize_t cap; Py_ssize_t n;
} BookFar;
typedef struct BookSide {
    double* size; uint64_t* occ; int64_t lo; int64_t best; Py_ssize_t n; Py_ssize_t n_lad;
    Py_ssize_t w; Py_ssize_t mask; Py_ssize_t w0; Py_ssize_t w_max; BookFar far;
    int64_t n_moved;
} BookSide;
typedef struct BookState {
    BookSide bid; BookSide ask;
    double tick_size; double inv_tick; double tick_mul;
    int policy; int strict;
    int64_t n_updates; int64_t n_crossed; int64_t n_locked; int64_t n_missing;
    int last_side; int64_t last_key; int last_kind;
} BookState;

/* The row loops (Book.apply_many's ofi_book_keep_rows, BookOFI.update_many's
 * bookofi_keep_rows and bookofi_inside_rows in _book.pyx) are compiled twice on x86-64 with gcc or clang: for the
 * baseline (SSE2) and for AVX2 + BMI1/2 + LZCNT + POPCNT (x86-64-v3 without FMA), and a call
 * takes the second when the CPU has those (ofi_v3_state: asked once, when _book is imported;
 * _book._row_loops() tells and, for tests, switches).
 * Both are the same C, so the same IEEE operations in the same order on every value: the
 * second gains VEX three-operand forms (fewer register copies) and BMI's shifts and bit
 * counts, not other arithmetic (without FMA nothing can be contracted into a fused
 * multiply-add). Issue 13, bench/RESULTS.md: BookOFI(10) 444 -> 407 instructions a row.
 * OFI_FAST_SCALAR (the portable build) or OFI_FAST_NO_V3 keep the baseline only. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && defined(__linux__) \
    && !defined(OFI_FAST_SCALAR) && !defined(OFI_FAST_NO_V3)
#define OFI_V3 1
#define OFI_V3_TARGET __attribute__((target("avx2,bmi,bmi2,lzcnt,popcnt")))
#else
#define OFI_V3 0
#endif
/* the loops taken: 1 the x86-64-v3 build (each module including this has its own: 0 but in
 * _book, which sets it) */
static int ofi_v3_state __attribute__((unused)) = 0;

/* 1 when this build has the second loops and the CPU runs them */
static inline int ofi_v3_available(void)
{
#if OFI_V3
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi")
        && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("lzcnt")
        && __builtin_cpu_supports("popcnt");
#else
    return 0;
#endif
}

/* BODY (a return statement on the arguments ARGS names) compiled as NAME_base and, with
 * OFI_V3, NAME_v3, and NAME(ARGS) calling the one ofi_v3_state selects */
#if OFI_V3
#define OFI_V3_DISPATCH(ret, name, params, args, body) \
    static inline ret name##_base params { body } \
    OFI_V3_TARGET static inline ret name##_v3 params { body } \
    static inline ret name params { return ofi_v3_state ? name##_v3 args : name##_base args; }
#else
#define OFI_V3_DISPATCH(ret, name, params, args, body) \
    static inline ret name params { body }
#endif

/* the IEEE-754 bits of a double (a size is finite and >= 0 iff its bits are <= DBL_MAX's,
 * and +0.0 iff they are 0: one integer compare each) */
static inline uint64_t ofi_book_bits(double x) { uint64_t u; memcpy(&u, &x, 8); return u; }

/* The fast paths' validity test of a row, as masks: 1 when side is 1 or -1, the size's bits
 * zb are those of a finite double >= +0.0 (-0.0 and NaN fail), and price * mul (mul:
 * b->tick_mul, hoisted by loops) is within |x| < 2**40 ticks of which the off-grid tolerance
 * (1 % tighter than the exact check, 1e-6 + 1e-13 |x|) keeps the nearest integer *r
 * unambiguous (rint by 1.5 * 2**52). 0 sends the row to the general code. */
static inline __attribute__((always_inline)) int
ofi_book_row_ok(double mul, int side, double price, uint64_t zb, double* r_out)
{
    const double x = price * mul;
    const double r = (x + 6755399441055744.0) - 6755399441055744.0;
    const double ax = fabs(x);
    *r_out = r;
    return ((((unsigned) side + 1u) & ~2u) == 0u) & (zb <= 0x7FEFFFFFFFFFFFFFull)
           & (ax < 1099511627776.0) & (fabs(x - r) <= 1e-6 + 0.99e-13 * ax);
}

/* The fast path of one row of a message (no crossing logic), as documented on _book.pyx's
 * `_apply`. Returns 1 when the row was applied, with *kind its BOOK_SET (0) / INSERT (1) /
 * DELETE (2) / MISSING (3) and *key its key; 0 when it must go to the general code, with
 * the state untouched (a bad or off-grid-looking value, a key outside its side's window,
 * an empty side, a strict missing delete, a deleted best whose successor is not in its
 * 64-slot bitmap word or lies in the window's bottom quarter). Two branches: validity
 * (feeds are valid) and that gate; the rest is masks. The counters of BookState are the
 * caller's. */
static inline __attribute__((always_inline)) int
ofi_book_fast(BookState* b, double mul, int side, double price, double size, int strict,
              int* kind, int64_t* key_out)
{
    double r;
    const uint64_t zb = ofi_book_bits(size);     /* -0.0 and NaN fail (general path) */
    const int ok = ofi_book_row_ok(mul, side, price, zb, &r);
    if (__builtin_expect(!ok, 0))
        return 0;
    BookSide* s = side > 0 ? &b->bid : &b->ask;
    const int64_t key = (int64_t) r * side;
    const int64_t lo = s->lo, best = s->best;
    const uint64_t w = (uint64_t) s->w;
    const uint64_t slot = (uint64_t) key & (uint64_t) s->mask;
    uint64_t* word = &s->occ[slot >> 6];
    const uint64_t w0 = *word;
    const uint64_t bit = (uint64_t) 1 << (slot & 63);
    const uint64_t below = w0 & (bit - 1);       /* the levels below key in its word */
    /* the highest of them (unused when there is none) */
    const int64_t cand = (int64_t) (((uint64_t) key & ~(uint64_t) 63)
                                    + (uint64_t) (63 ^ __builtin_clzll(below | 1)));
    /* by shifts, not compares (fewer flag-to-register moves; zb < 2**63 once ok holds) */
    const uint64_t zero = (zb - 1) >> 63;
    const uint64_t was = (w0 >> (slot & 63)) & 1;
    const uint64_t delbest = zero & (uint64_t) (key == best);
    /* the new word, count delta and best, before the gate (fewer values live across it) */
    const uint64_t nw = (w0 & ~bit) | (bit & (zero - 1));   /* set unless zero */
    const Py_ssize_t d = (Py_ssize_t) (1 - was - zero);     /* +1 insert, -1 delete */
    /* a new level above the best is the new best (a missing delete above it is not); a
     * deleted best is replaced by cand: both by masks (a select here became a jump) */
    const uint64_t up = (uint64_t) 0 - ((uint64_t) (key > best) & (zero ^ 1));
    const uint64_t dn = (uint64_t) 0 - delbest;
    uint64_t nb = (uint64_t) best;
    nb ^= (nb ^ (uint64_t) key) & up;
    nb ^= (nb ^ (uint64_t) cand) & dn;
    uint64_t general = ((uint64_t) key - (uint64_t) lo >= w) | (uint64_t) (s->n == 0)
        | (delbest & ((uint64_t) (below == 0) | (uint64_t) (cand < lo + (int64_t) (w >> 2))));
    if (strict)
        general |= zero & (was ^ 1);
    if (__builtin_expect(general != 0, 0))
        return 0;
    s->size[slot] = size;
    *word = nw;
    s->n_lad += d;
    s->n += d;
    s->best = (int64_t) nb;
    *kind = (int) (2 * zero + (was ^ 1));
    *key_out = key;
    return 1;
}

/* The bookkeeping of a row that the fast or the far path applied, kind and key as those
 * return them (`_apply`'s, and `ofi_book_fast_end`'s). */
static inline void ofi_book_applied(BookState* b, int side, int kind, int64_t key)
{
    b->last_side = side;
    b->last_key = key;
    b->last_kind = kind;
    b->n_missing += kind == 3;                   /* BOOK_MISSING */
    b->n_updates += 1;
}

/* The judgement of a row, policy keep, when end (nonzero: the row ends its message): a crossed
 * (best bid > best ask) or locked (equal) book is counted; nothing is removed. Bid tick t and
 * ask tick a: t - a = bid key + ask key. One predictable branch: that sum (in wrapping
 * arithmetic) >= 0 is rare on feeds (a crossed or locked book, or one empty side, which
 * wraps the sum: both persist, so the branch stays predictable while they do), and then the
 * exact test counts. */
static inline __attribute__((always_inline)) void ofi_book_judge_at(BookState* b, int end)
{
    const int64_t x = (int64_t) ((uint64_t) b->bid.best + (uint64_t) b->ask.best);
    if (__builtin_expect((x >= 0) & end, 0)) {
        if ((b->bid.n > 0) & (b->ask.n > 0)) {
            b->n_locked += x == 0;
            b->n_crossed += x > 0;
        }
    }
}

/* The judgement of a row that ends its message. */
static inline void ofi_book_judge(BookState* b) { ofi_book_judge_at(b, 1); }

/* The fast path of a row that ends a message (`_apply_end`): under policy keep (1), a row
 * that ofi_book_fast takes is applied, counted and judged, with *kind / *key as there;
 * 0 with the state untouched otherwise (policy raise, or the fast path declined: the caller
 * then calls `_apply_end_rest`). Inlined into BookOFI's row loop, so that its common row
 * pays no call and the kind and key stay in registers. */
static inline __attribute__((always_inline)) int
ofi_book_fast_end(BookState* b, int side, double price, double size, int* kind,
                  int64_t* key)
{
    if (b->policy != 1
            || !ofi_book_fast(b, b->tick_mul, side, price, size, b->strict, kind, key))
        return 0;
    ofi_book_applied(b, side, *kind, *key);
    ofi_book_judge(b);
    return 1;
}

/* First i in [0, n] with a[i] >= key (a ascending): Khuong & Morin's branch-free lower bound
 * (conditional moves, no data-dependent jumps). The far directory's search. */
static inline Py_ssize_t ofi_lower_key(const int64_t* a, Py_ssize_t n, int64_t key)
{
    if (n == 0 || a[n - 1] < key)
        return n;
    const int64_t* base = a;
    Py_ssize_t m = n - 1;                       /* the answer lies in [0, m]: a[m] >= key */
    while (m > 1) {
        const Py_ssize_t half = m >> 1;
        base = base[half] < key ? base + half : base;
        m -= half;
    }
    return (base - a) + (base[0] < key);
}

/* First i in [0, blk->n] with blk->lv[i].key >= key (the same search over a block). */
static inline Py_ssize_t ofi_block_lower(const FarBlock* blk, int64_t key)
{
    const Py_ssize_t n = blk->n;
    if (n == 0 || blk->lv[n - 1].key < key)
        return n;
    const BookLevel* base = blk->lv;
    Py_ssize_t m = n - 1;
    while (m > 1) {
        const Py_ssize_t half = m >> 1;
        base = base[half].key < key ? base + half : base;
        m -= half;
    }
    return (base - blk->lv) + (base[0].key < key);
}

/* The highest key < key that holds a ladder level, or INT64_MIN: one word of the bitmap per
 * 64 keys scanned (clz), downwards from min(key, lo + w) - 1 to lo. */
static inline __attribute__((always_inline)) int64_t ofi_lad_below(const BookSide* s,
                                                                  int64_t key)
{
    int64_t k = key - 1;
    const int64_t top = s->lo + s->w - 1;
    if (k > top)
        k = top;
    while (k >= s->lo) {
        const Py_ssize_t slot = (Py_ssize_t) (k & s->mask), b = slot & 63;
        const uint64_t m = s->occ[slot >> 6] & (~(uint64_t) 0 >> (63 - b));   /* bits 0 .. b */
        if (m) {
            k -= b - (63 - __builtin_clzll(m));
            return k >= s->lo ? k : INT64_MIN;
        }
        k -= b + 1;
    }
    return INT64_MIN;
}

/* The highest far level with a key < key (0 when there is none). Out of line: rarer than
 * the ladder's answer, and it keeps ofi_side_below small where it is inlined. */
static __attribute__((noinline, unused)) int
ofi_far_below(const BookFar* f, int64_t key, int64_t* k, double* size)
{
    const Py_ssize_t bi = ofi_lower_key(f->last, f->nb, key);
    if (bi < f->nb) {
        const Py_ssize_t i = ofi_block_lower(f->blk[bi], key);
        if (i > 0) {
            *k = f->blk[bi]->lv[i - 1].key;
            *size = f->blk[bi]->lv[i - 1].size;
            return 1;
        }
    }
    if (bi == 0)
        return 0;
    const FarBlock* blk = f->blk[bi - 1];
    *k = blk->lv[blk->n - 1].key;
    *size = blk->lv[blk->n - 1].size;
    return 1;
}

/* The best level of a side strictly worse than key (0 when there is none). Always inlined:
 * BookOFI's row loop asks it for about a third of its rows (the level a delete brings into
 * the top L), and a call there spilled about 15 of the loop's values around it (issue 13:
 * BookOFI(10) 297.7 -> 292.8 instructions a row, bench/RESULTS.md, 2026-12-04). */
static inline __attribute__((always_inline)) int
ofi_side_below(const BookSide* s, int64_t key, int64_t* k, double* size)
{
    if (s->n == 0)
        return 0;
    if (key > s->lo) {
        const int64_t x = ofi_lad_below(s, key);
        if (x != INT64_MIN) {
            *k = x;
            *size = s->size[x & s->mask];
            return 1;
        }
    }
    return ofi_far_below(&s->far, key, k, size);      /* every far key is below lo */
}

/* Insert the level (key, size) at position i of far block bi, which has room (i: its lower
 * bound of key, key absent): the levels above it move up one (counted in s->n_moved), the
 * block's directory key, f->n and s->n follow. */
static inline void ofi_far_put(BookSide* s, Py_ssize_t bi, Py_ssize_t i, int64_t key,
                               double size)
{
    BookFar* f = &s->far;
    FarBlock* blk = f->blk[bi];
    const Py_ssize_t n = blk->n;
    memmove(&blk->lv[i + 1], &blk->lv[i], (size_t) (n - i) * sizeof(BookLevel));
    s->n_moved += n - i;
    blk->lv[i].key = key;
    blk->lv[i].size = size;
    blk->n = n + 1;
    f->last[bi] = blk->lv[n].key;
    f->n += 1;
    s->n += 1;
}

/* Remove level i of far block bi: the levels above it move down one (counted in
 * s->n_moved), f->n and s->n follow, and the block's directory key unless the block is left
 * empty (the caller then drops it). */
static inline void ofi_far_take(BookSide* s, Py_ssize_t bi, Py_ssize_t i)
{
    BookFar* f = &s->far;
    FarBlock* blk = f->blk[bi];
    const Py_ssize_t n = blk->n;
    memmove(&blk->lv[i], &blk->lv[i + 1], (size_t) (n - i - 1) * sizeof(BookLevel));
    s->n_moved += n - i - 1;
    blk->n = n - 1;
    if (n > 1)
        f->last[bi] = blk->lv[n - 2].key;
    f->n -= 1;
    s->n -= 1;
}

/* One far row by key: set the far level at key to size (size > 0, inserted when absent) or
 * delete it (size +0.0), key below the side's window, when it needs no block split, drop or
 * merge: a size change, an insert into a block with room, a delete that leaves its block at
 * least FAR_B / 4 levels, a missing delete unless strict. Returns 1 with *kind its BOOK_SET
 * (0) / INSERT (1) / DELETE (2) / MISSING (3); 0 with the state untouched otherwise (no far
 * blocks, a full block, a delete leaving fewer than FAR_B / 4, a strict missing delete), and
 * then, but for no far blocks, at[0] / at[1] the block it searched and key's lower bound in
 * it (the split, drop or merge continues from there: no second search).
 * Keeps f->n, s->n and s->n_moved (ofi_far_put / ofi_far_take); the best, in the ladder,
 * never changes. The one copy of these cases: the fast path's far row (ofi_book_far) and
 * the general code's far_set / far_delete (_book.pyx, which do the split, drop and merge
 * when it declines) both call it. Always inlined: gcc otherwise kept it out of line, a call
 * from ofi_book_far that cost the USD-M stream's Book.apply_many 1.8 instructions a row
 * (147.3 against 145.5). */
static inline __attribute__((always_inline)) int
ofi_far_row(BookSide* s, int64_t key, double size, int strict, int* kind, Py_ssize_t* at)
{
    BookFar* f = &s->far;
    const uint64_t zb = ofi_book_bits(size);     /* 0 iff +0.0 (an integer test) */
    if (f->nb == 0)
        return 0;
    Py_ssize_t bi = ofi_lower_key(f->last, f->nb, key);
    if (bi == f->nb) {                           /* above every far level */
        if (zb == 0) {
            if (strict)
                return 0;
            *kind = 3;                           /* BOOK_MISSING */
            return 1;
        }
        bi = f->nb - 1;                          /* an insert at the last block's end */
    }
    FarBlock* blk = f->blk[bi];
    const Py_ssize_t n = blk->n;
    const Py_ssize_t i = ofi_block_lower(blk, key);
    const int found = i < n && blk->lv[i].key == key;
    at[0] = bi;
    at[1] = i;
    if (zb != 0) {
        if (found) {
            blk->lv[i].size = size;
            *kind = 0;                           /* BOOK_SET */
        } else {
            if (n == FAR_B)
                return 0;                        /* a split */
            ofi_far_put(s, bi, i, key, size);
            *kind = 1;                           /* BOOK_INSERT */
        }
    } else if (found) {
        if (n - 1 < FAR_B / 4)
            return 0;                            /* a drop or merge */
        ofi_far_take(s, bi, i);
        *kind = 2;                               /* BOOK_DELETE */
    } else {
        if (strict)
            return 0;
        *kind = 3;
    }
    return 1;
}

/* The fast path's far row: a valid row (ofi_book_row_ok) whose key lies below its side's
 * window, the side not empty, done by ofi_far_row (its simple cases). Returns 1 with *kind /
 * *key as ofi_book_fast; 0 with the state untouched otherwise (the general code then does
 * it: far_set / far_delete call the same step first). Called by `_apply` when
 * ofi_book_fast declines (so Book.apply_many reaches it for the rows its batch loop stops
 * at): inside that loop, even not inlined, it cost the ladder rows 10 more instructions (136
 * against 126 a row). */
static __attribute__((noinline, unused)) int
ofi_book_far(BookState* b, double mul, int side, double price, double size, int strict,
             int* kind, int64_t* key_out)
{
    double r;
    Py_ssize_t at[2];                                  /* (unused here) */
    const uint64_t zb = ofi_book_bits(size);
    if (!ofi_book_row_ok(mul, side, price, zb, &r))   /* as ofi_book_fast; first: r may be */
        return 0;                                      /* NaN or out of int64's range */
    BookSide* s = side > 0 ? &b->bid : &b->ask;
    const int64_t key = (int64_t) r * side;
    if (key >= s->lo || s->n == 0 || !ofi_far_row(s, key, size, strict, kind, at))
        return 0;
    *key_out = key;
    return 1;
}

/* Book.apply_many's batch, policy keep: rows i.. of the arrays through the fast path, each
 * judged (crossed / locked counted) when it ends its message (end == NULL: every row does),
 * until a row that needs the general code or n. Returns the index of that row (n when
 * none). n_updates and n_missing are summed here and stored once; last_side is left 0 ("no
 * last update known": only BookOFI reads last_*, and it never batches through this). The
 * judgement (ofi_book_judge_at) is a third predictable branch. */
static inline __attribute__((always_inline)) Py_ssize_t
ofi_book_keep_rows_(BookState* b, Py_ssize_t i, Py_ssize_t n, const signed char* side,
                    const double* price, const double* size, const unsigned char* end,
                    const int has_end, const int strict)
{
    /* j counts up to 0 from i - n over arrays addressed from their ends (one register less) */
    const signed char* se = side + n;
    const double* pe = price + n;
    const double* ze = size + n;
    const unsigned char* ee = has_end ? end + n : NULL;
    Py_ssize_t j = i - n;
    const double mul = b->tick_mul;
    int64_t missing = 0;
    int kind;
    int64_t key;
    for (; j < 0; j++) {
        if (!ofi_book_fast(b, mul, se[j], pe[j], ze[j], strict, &kind, &key))
            break;
        missing += kind & (kind >> 1);                       /* BOOK_MISSING == 3 */
        ofi_book_judge_at(b, has_end ? ee[j] != 0 : 1);
    }
    if (n + j > i) {
        b->n_updates += n + j - i;
        b->n_missing += missing;
        b->last_side = 0;
    }
    return n + j;
}

/* ofi_book_keep_rows_ for each case of end given or not and strict, in both builds */
OFI_V3_DISPATCH(Py_ssize_t, ofi_book_keep_rows,
    (BookState* b, Py_ssize_t i, Py_ssize_t n, const signed char* side, const double* price,
     const double* size, const unsigned char* end),
    (b, i, n, side, price, size, end),
    if (b->strict)
        return end ? ofi_book_keep_rows_(b, i, n, side, price, size, end, 1, 1)
                   : ofi_book_keep_rows_(b, i, n, side, price, size, end, 0, 1);
    return end ? ofi_book_keep_rows_(b, i, n, side, price, size, end, 1, 0)
               : ofi_book_keep_rows_(b, i, n, side, price, size, end, 0, 0);)

#endif
