/* fanout._native: prepare's per-ID hot loops in C, run without the GIL.
 *
 * - fingerprints(buf, starts, lens, out): the 64-bit fingerprint of each ID
 *   buf[starts[i] : starts[i] + lens[i]] into out[i] (the function `fanout._dedupe` documents;
 *   tests/test_dedupe.py holds it to a plain-Python copy of the definition).
 * - encode_lines(buf, limit, slow, prefix, suffix, other, out, ends, fps, rec, marks, spans):
 *   validate, JSON-encode and fingerprint one ID per line (below, before py_encode_lines).
 * - insert(table, fps, dup): add each of fps to the open-addressing hash set `table`, in order;
 *   dup[i] = 1 if fps[i] was already in it (earlier in fps included), else 0. Returns how many
 *   were new.
 * - rehash(old, new): every fingerprint of `old` into the empty `new`.
 * - listed(data, starts, ends, head, tail, numbers, middle): the duplicates sink's lines.
 * - use_simd(on): whether the loops that have an AVX2 form use it (for tests).
 *
 * Arrays are passed as buffers (numpy arrays of the right dtype, C-contiguous): int64 for starts
 * and lens, uint64 for fingerprints and tables, uint8 for dup. Every index is checked before the
 * loops run, so bad arguments raise ValueError and never touch memory out of range.
 *
 * A table is a buffer of uint64 words: 0 marks an empty slot, and the last word says whether
 * the fingerprint 0 (which cannot be stored in a slot) was added. The slots come in buckets of
 * 8, one 64-byte cache line each, from the buffer's first 64-byte boundary. A fingerprint goes
 * to bucket (fp * buckets) >> 64, into its first empty slot, or on to the next bucket when that
 * one is full, wrapping around; the caller keeps the table at most 90% full
 * (`fanout._dedupe._FingerprintSet`). So an insert reads one cache line, rarely two, and
 * compares the 8 slots at once (AVX2 where the CPU has it); the bucket a few fingerprints
 * ahead is prefetched, since a table of tens of millions of IDs is far bigger than the caches.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_cbuffers.h"
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define P1 0x9E3779B185EBCA87ULL
#define P3 0x165667B19E3779F9ULL
#define P5 0x27D4EB2F165667C5ULL
#define M1 0xFF51AFD7ED558CCDULL
#define M2 0xC4CEB9FE1A85EC53ULL
#define AHEAD 16

/* The `n` (1 to 8) bytes at p as a little-endian word, zero-padded. Reads 8 bytes when they are
 * inside the buffer (which ends at `end`), masking what is not the ID's; else byte by byte. */
static inline uint64_t load_word(const unsigned char *p, Py_ssize_t n, const unsigned char *end) {
    uint64_t w = 0;
    if (end - p >= 8) {
        memcpy(&w, p, 8); /* little-endian hosts only: checked at import */
        return n >= 8 ? w : w & ((1ULL << (8 * n)) - 1);
    }
    for (Py_ssize_t k = 0; k < n; k++) w |= (uint64_t)p[k] << (8 * k);
    return w;
}

static inline uint64_t fingerprint(const unsigned char *p, Py_ssize_t len,
                                   const unsigned char *end) {
    uint64_t h = (uint64_t)len * P3 + P5;
    for (Py_ssize_t at = 0; at < len; at += 8) {
        h = (h ^ load_word(p + at, len - at, end)) * P1;
        h ^= h >> 29;
    }
    h ^= h >> 33;
    h *= M1;
    h ^= h >> 33;
    h *= M2;
    h ^= h >> 33;
    return h;
}

static PyObject *py_fingerprints(PyObject *self, PyObject *args) {
    Py_buffer buf, starts, lens, out;
    if (!PyArg_ParseTuple(args, "y*y*y*w*", &buf, &starts, &lens, &out)) return NULL;
    PyObject *result = NULL;
    if (check_items(&starts, 8, "starts") || check_items(&lens, 8, "lens") ||
        check_items(&out, 8, "out"))
        goto done;
    Py_ssize_t count = out.len / 8;
    if (starts.len / 8 != count || lens.len / 8 != count) {
        PyErr_SetString(PyExc_ValueError, "starts, lens and out differ in length");
        goto done;
    }
    const int64_t *s = starts.buf, *l = lens.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (s[i] < 0 || l[i] < 0 || s[i] > buf.len - l[i]) {
            PyErr_Format(PyExc_ValueError, "ID %zd (%lld, %lld bytes) is outside the buffer", i,
                         (long long)s[i], (long long)l[i]);
            goto done;
        }
    }
    const unsigned char *data = buf.buf, *end = data + buf.len;
    uint64_t *o = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) o[i] = fingerprint(data + s[i], l[i], end);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&lens);
    PyBuffer_Release(&out);
    return result;
}

/* ---- the fingerprint set's table -------------------------------------------------------- */

/* A table is a buffer of 64-bit words: from its first 64-byte boundary, `buckets` buckets of
 * 8 slots (one cache line each), and, as its last word, whether the fingerprint 0 was added.
 * The words before the boundary and after the last whole bucket stay 0. */
typedef struct {
    uint64_t *bucket;  /* the first bucket's first slot */
    uint64_t buckets;
    uint64_t *zero;    /* the last word */
} table_t;

static inline uint64_t home(uint64_t fp, uint64_t buckets) {
    return (uint64_t)(((__uint128_t)fp * buckets) >> 64);
}

/* The slot of fp (or the first empty one) in the 8 slots at s: a bit mask of each. */
static inline void scan8(const uint64_t *s, uint64_t fp, unsigned *same, unsigned *empty) {
    unsigned m = 0, e = 0;
    for (int k = 0; k < 8; k++) {
        m |= (unsigned)(s[k] == fp) << k;
        e |= (unsigned)(s[k] == 0) << k;
    }
    *same = m, *empty = e;
}

/* Add fp: 1 if it was there already, 0 if it was added, -1 if the table is full. */
#define ADD_ONE(name, scan, attr)                                                             \
    attr static inline int name(const table_t *t, uint64_t fp) {                             \
        if (fp == 0) {                                                                        \
            int had = *t->zero != 0;                                                          \
            *t->zero = 1;                                                                     \
            return had;                                                                       \
        }                                                                                     \
        uint64_t b = home(fp, t->buckets);                                                    \
        for (uint64_t probed = 0; probed < t->buckets; probed++) {                            \
            uint64_t *s = t->bucket + 8 * b;                                                  \
            unsigned same, empty;                                                             \
            scan(s, fp, &same, &empty);                                                       \
            if (same) return 1;                                                               \
            if (empty) {                                                                      \
                s[__builtin_ctz(empty)] = fp;                                                 \
                return 0;                                                                     \
            }                                                                                 \
            if (++b == t->buckets) b = 0;                                                     \
        }                                                                                     \
        return -1;                                                                            \
    }

/* Add each of f[0:n] in order (dup[i] = 1 if it was there already); how many were new, or -1
 * once the table is full. The bucket a few fingerprints ahead is fetched meanwhile: a table
 * for millions of IDs is far bigger than the caches. */
#define INSERT_ALL(name, add, attr)                                                           \
    attr static Py_ssize_t name(const table_t *t, const uint64_t *f, unsigned char *dup,       \
                                Py_ssize_t n) {                                               \
        Py_ssize_t fresh = 0;                                                                 \
        for (Py_ssize_t i = 0; i < n; i++) {                                                  \
            if (i + AHEAD < n)                                                                \
                __builtin_prefetch(t->bucket + 8 * home(f[i + AHEAD], t->buckets), 1, 0);     \
            int had = add(t, f[i]);                                                           \
            if (had < 0) return -1;                                                           \
            dup[i] = (unsigned char)had;                                                      \
            fresh += !had;                                                                    \
        }                                                                                     \
        return fresh;                                                                         \
    }

ADD_ONE(add_one, scan8, )
INSERT_ALL(insert_all, add_one, )

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
/* scan8 on two 256-bit compares, for CPUs with AVX2 (chosen at import): an insert then took
 * 0.17-0.22 s for 10M random fingerprints into a 97 MB table, against 0.30-0.35 s for the
 * scalar loop (and 0.28-0.35 s for linear probing over single slots, before buckets). */
__attribute__((target("avx2"))) static inline void scan8_avx2(const uint64_t *s, uint64_t fp,
                                                                unsigned *same, unsigned *empty) {
    __m256i lo = _mm256_load_si256((const __m256i *)s);
    __m256i hi = _mm256_load_si256((const __m256i *)(s + 4));
    __m256i want = _mm256_set1_epi64x((long long)fp), none = _mm256_setzero_si256();
#define MASK(v, w) ((unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(v, w))))
    *same = MASK(lo, want) | MASK(hi, want) << 4;
    *empty = MASK(lo, none) | MASK(hi, none) << 4;
#undef MASK
}
ADD_ONE(add_one_avx2, scan8_avx2, __attribute__((target("avx2"))))
INSERT_ALL(insert_all_avx2, add_one_avx2, __attribute__((target("avx2"))))
#endif

static int cpu_avx2 = 0;  /* whether the CPU has AVX2: set at import */
static int have_avx2 = 0; /* whether to use it: the same, unless use_simd(False) said not to */

/* use_simd(on) -> whether the AVX2 loops are used from now on: `on` if the CPU has AVX2, else
 * False. For tests, to run the portable loops on any CPU. */
static PyObject *py_use_simd(PyObject *self, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
    have_avx2 = on && cpu_avx2;
    return PyBool_FromLong(have_avx2);
}

static Py_ssize_t insert_fps(const table_t *t, const uint64_t *f, unsigned char *dup,
                             Py_ssize_t n) {
#ifdef HAVE_AVX2_PATH
    if (have_avx2) return insert_all_avx2(t, f, dup, n);
#endif
    return insert_all(t, f, dup, n);
}

static int check_table(Py_buffer *buffer, table_t *t) {
    if (check_items(buffer, 8, "table")) return -1;
    uintptr_t at = (uintptr_t)buffer->buf;
    if (at % 8) {
        PyErr_SetString(PyExc_ValueError, "table: not aligned to 8 bytes");
        return -1;
    }
    Py_ssize_t words = buffer->len / 8, skip = (Py_ssize_t)((64 - at % 64) % 64 / 8);
    if (words < skip + 8 + 1) {
        PyErr_SetString(PyExc_ValueError,
                        "table: needs at least one 64-byte bucket of 8 slots and the last word");
        return -1;
    }
    t->bucket = (uint64_t *)buffer->buf + skip;
    t->buckets = (uint64_t)(words - skip - 1) / 8;
    t->zero = (uint64_t *)buffer->buf + words - 1;
    return 0;
}

static PyObject *py_insert(PyObject *self, PyObject *args) {
    Py_buffer table, fps, dup;
    if (!PyArg_ParseTuple(args, "w*y*w*", &table, &fps, &dup)) return NULL;
    PyObject *result = NULL;
    table_t t;
    if (check_table(&table, &t) || check_items(&fps, 8, "fps")) goto done;
    Py_ssize_t count = fps.len / 8;
    if (dup.len != count) {
        PyErr_SetString(PyExc_ValueError, "dup and fps differ in length");
        goto done;
    }
    Py_ssize_t fresh;
    Py_BEGIN_ALLOW_THREADS
    fresh = insert_fps(&t, fps.buf, dup.buf, count);
    Py_END_ALLOW_THREADS
    if (fresh < 0) {
        PyErr_SetString(PyExc_ValueError, "insert: the table is full");
        goto done;
    }
    result = PyLong_FromSsize_t(fresh);
done:
    PyBuffer_Release(&table);
    PyBuffer_Release(&fps);
    PyBuffer_Release(&dup);
    return result;
}

static PyObject *py_rehash(PyObject *self, PyObject *args) {
    Py_buffer old, new;
    if (!PyArg_ParseTuple(args, "y*w*", &old, &new)) return NULL;
    PyObject *result = NULL;
    table_t from, to;
    if (check_table(&old, &from) || check_table(&new, &to)) goto done;
    int full = 0;
    Py_BEGIN_ALLOW_THREADS
    for (uint64_t i = 0; i < 8 * from.buckets && !full; i++)
        if (from.bucket[i]) full = add_one(&to, from.bucket[i]) < 0;
    if (*from.zero) *to.zero = 1;
    Py_END_ALLOW_THREADS
    if (full) {
        PyErr_SetString(PyExc_ValueError, "rehash: the new table is full");
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&old);
    PyBuffer_Release(&new);
    return result;
}

/* ---- encode_lines: validate, JSON-encode and fingerprint one ID per line ------------------- */

enum { PLAIN = 0, NEWLINE, SPACE, CTRL, QUOTE, HIGH };
static unsigned char byte_class[256];

static void init_classes(void) {
    /* Stripped around an ID (`_encode.STRIP`'s ASCII part); the other C0 characters that
     * str.isspace() counts (11, 12, 28-31) are control characters: the line is rejected. */
    static const unsigned char spaces[] = {9, 13, 32};
    for (int c = 0; c < 32; c++) byte_class[c] = CTRL;
    byte_class[127] = CTRL;
    for (size_t k = 0; k < sizeof spaces; k++) byte_class[spaces[k]] = SPACE;
    byte_class['\n'] = NEWLINE;
    byte_class['"'] = byte_class['\\'] = QUOTE; /* escaped by JSON */
    for (int c = 128; c < 256; c++) byte_class[c] = HIGH;
}

/* The length of the valid UTF-8 sequence starting with the non-ASCII byte p[0], of the n bytes
 * from p; 0 if it is not one (overlong forms, surrogates and code points past U+10FFFF are not). */
static inline Py_ssize_t utf8_length(const unsigned char *p, Py_ssize_t n) {
    unsigned char lead = p[0], low = 0x80, high = 0xBF;
    Py_ssize_t need;
    if (lead >= 0xC2 && lead <= 0xDF) need = 1;
    else if (lead == 0xE0) need = 2, low = 0xA0;
    else if (lead == 0xED) need = 2, high = 0x9F;
    else if (lead >= 0xE1 && lead <= 0xEF) need = 2;
    else if (lead == 0xF0) need = 3, low = 0x90;
    else if (lead >= 0xF1 && lead <= 0xF3) need = 3;
    else if (lead == 0xF4) need = 3, high = 0x8F;
    else return 0;
    if (need >= n || p[1] < low || p[1] > high) return 0;
    for (Py_ssize_t k = 2; k <= need; k++)
        if ((p[k] & 0xC0) != 0x80) return 0;
    return need + 1;
}

/* Whether a non-ASCII character that `_encode.STRIP` holds (or U+0085, a control character)
 * starts at p (n bytes from p): the line is left to the caller. */
static inline int wide_space(const unsigned char *p, Py_ssize_t n) {
    if (p[0] == 0xC2) return n >= 2 && (p[1] == 0x85 || p[1] == 0xA0);
    if (p[0] == 0xEF) return n >= 3 && p[1] == 0xBB && p[2] == 0xBF;    /* U+FEFF */
    if (n < 3 || p[0] < 0xE1 || p[0] > 0xE3) return 0;
    unsigned char one = p[1], two = p[2];
    if (p[0] == 0xE1) return one == 0x9A && two == 0x80;                 /* U+1680 */
    if (p[0] == 0xE3) return one == 0x80 && two == 0x80;                 /* U+3000 */
    if (one == 0x80) return two <= 0x8A || two == 0xA8 || two == 0xA9 || two == 0xAF;
    return one == 0x81 && two == 0x9F;                                   /* U+205F */
}

/* Whether the valid UTF-8 p[0:n] starts or ends with such a character. */
static inline int wide_space_around(const unsigned char *p, Py_ssize_t n) {
    if (wide_space(p, n)) return 1;
    if (n >= 2 && p[n - 2] == 0xC2 && wide_space(p + n - 2, 2)) return 1;
    return n >= 3 && wide_space(p + n - 3, 3);
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Whether each of the 8 bytes of w is printable ASCII (0x20 to 0x7E) other than " and \. */
static inline int plain_word(uint64_t w) {
    uint64_t quote = w ^ (ONES * '"'), slash = w ^ (ONES * '\\'), del = w ^ (ONES * 0x7F);
    uint64_t odd = (w - ONES * 0x20) & ~w;   /* a byte under 0x20 (or 0x80 and up) */
    odd |= (quote - ONES) & ~quote;          /* a zero byte in quote: a " */
    odd |= (slash - ONES) & ~slash;
    odd |= (del - ONES) & ~del;
    return !((odd | w) & HIGHS);
}

typedef struct {
    Py_ssize_t lines, records, blanks, slows, size;
} encoded_t;

/* rec[k] = k for the first n records; returns 1. */
static inline int number(int64_t *rec, Py_ssize_t n) {
    for (Py_ssize_t k = 0; k < n; k++) rec[k] = k;
    return 1;
}

/* The loop of py_encode_lines (see there), for at most `lines` lines: at one more it stops,
 * returning lines + 1. */
static encoded_t encode_lines(const unsigned char *buf, Py_ssize_t size, Py_ssize_t limit,
                              int slow, const unsigned char *prefix, Py_ssize_t n_prefix,
                              const unsigned char *suffix, Py_ssize_t n_suffix,
                              const unsigned char *other, Py_ssize_t n_other, unsigned char *out,
                              int64_t *ends, uint64_t *fps, int64_t *rec, int64_t *marks,
                              int64_t *spans, Py_ssize_t lines) {
    encoded_t r = {0, 0, 0, 0, 0};
    int numbered = 0; /* rec is left unwritten while record k is line k for every k */
    const unsigned char *end_of_buf = buf + size;
    /* A prefix or suffix of up to 16 bytes is put with one fixed-size copy from a padded copy
     * of it (out has 16 bytes to spare for the overrun, which what follows overwrites). */
    unsigned char pre[16] = {0}, suf[16] = {0};
    int short_pre = n_prefix <= 16, short_suf = n_suffix <= 16;
    if (short_pre) memcpy(pre, prefix, n_prefix);
    if (short_suf) memcpy(suf, suffix, n_suffix);
    Py_ssize_t pos = 0, line = 0, at = 0;
    while (at < size) {
        if (line == lines) {
            r.lines = lines + 1;
            return r;
        }
        Py_ssize_t i = at;
        while (i < size && byte_class[buf[i]] == SPACE) i++;
        Py_ssize_t first = i, last = i, inner = -1;
        int high = 0, bad = 0;
        if (short_pre) memcpy(out + pos, pre, 16);
        else memcpy(out + pos, prefix, n_prefix);
        Py_ssize_t put = pos + n_prefix, stop_put = put; /* the copy of buf[first:last] ends there */
        while (i < size) {
            /* A run of printable ASCII but " and \ (spaces included: trailing ones are taken
             * off at the end), 16 bytes at a time while it lasts: all 16 are copied, and the
             * bytes after the run's end are overwritten by what comes next (out has 16 bytes to
             * spare at its end). */
            Py_ssize_t run = i;
#ifdef __SSE2__
            while (i <= size - 16) {
                __m128i v = _mm_loadu_si128((const __m128i *)(buf + i));
                _mm_storeu_si128((__m128i *)(out + put), v);
                int odd = _mm_movemask_epi8(_mm_or_si128(
                    _mm_or_si128(_mm_cmpgt_epi8(_mm_set1_epi8(0x20), v), /* < 0x20, >= 0x80 */
                                 _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7F))),
                    _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                 _mm_cmpeq_epi8(v, _mm_set1_epi8('\\')))));
                if (odd) { /* the run ends at a byte the loops below would stop at too */
                    int n = __builtin_ctz((unsigned)odd);
                    i += n, put += n;
                    goto ran;
                }
                i += 16, put += 16;
            }
#endif
            uint64_t w;
            while (i <= size - 8 && (memcpy(&w, buf + i, 8), plain_word(w))) {
                memcpy(out + put, &w, 8);
                i += 8, put += 8;
            }
            while (i < size && (byte_class[buf[i]] == PLAIN || buf[i] == ' ')) out[put++] = buf[i++];
#ifdef __SSE2__
        ran:
#endif
            if (i > run) {
                last = i, stop_put = put;
                if (i == size) break;
            }
            unsigned char c = buf[i];
            int kind = byte_class[c];
            if (kind == NEWLINE) break;
            if (kind == SPACE) { /* kept if more of the ID follows; ends not yet known */
                if (inner < 0) inner = i;
                out[put++] = c;
                i++;
                continue;
            }
            Py_ssize_t step = 1;
            if (kind == HIGH) {
                high = 1;
                step = utf8_length(buf + i, size - i);
                if (!step) bad = 1, step = 1;
                else if (buf[i] == 0xC2 && buf[i + 1] < 0xA0) bad = 1; /* U+0080-U+009F: C1 */
            } else if (kind == QUOTE) {
                out[put++] = '\\';
            } else {
                bad = 1; /* a control character */
            }
            memcpy(out + put, buf + i, step);
            put += step;
            i += step;
            last = i, stop_put = put;
        }
        while (last > first && buf[last - 1] == ' ') last--, stop_put--; /* copied 1:1 */
        Py_ssize_t stop = i; /* the line's end: its \n, or the end of buf */
        if (stop > at && buf[stop - 1] == '\r') stop--; /* \r\n ends a line as \n does */
        if (last == first && !slow) {
            marks[r.blanks++] = line;
        } else {
            if (slow || last == first || (inner >= 0 && inner < last)) bad = 1;
            if (!bad && last - first > limit) {
                Py_ssize_t chars = last - first;
                if (high)
                    for (Py_ssize_t k = first; k < last; k++) chars -= (buf[k] & 0xC0) == 0x80;
                bad = chars > limit;
            }
            if (!bad && high) bad = wide_space_around(buf + first, last - first);
            if (!bad && n_other && last - first == n_other && !memcmp(buf + first, other, n_other))
                bad = 1; /* the caller's to settle (a file's header line again) */
            if (bad) {
                r.slows++;
                marks[lines - r.slows] = line;
                spans[2 * (lines - r.slows)] = at;
                spans[2 * (lines - r.slows) + 1] = stop;
            } else {
                if (short_suf) memcpy(out + stop_put, suf, 16);
                else memcpy(out + stop_put, suffix, n_suffix);
                pos = stop_put + n_suffix;
                ends[r.records] = pos;
                if (r.records != line) { /* not every line so far is a record */
                    if (!numbered) numbered = number(rec, r.records);
                    rec[r.records] = line;
                }
                if (fps) fps[r.records] = fingerprint(buf + first, last - first, end_of_buf);
                r.records++;
            }
        }
        line++;
        at = i + 1;
    }
    if (r.records != line && !numbered) number(rec, r.records);
    r.lines = line;
    r.size = pos;
    return r;
}

/* encode_lines(buf, limit, slow, prefix, suffix, other, out, ends, fps, rec, marks, spans)
 *   -> (lines, records, blank, slow, size) | None
 *
 * Validate and encode every line of buf as fanout._encode._check_line and _Template.record
 * would. A line (its \r\n or \n left off; the last may have neither) is stripped of ASCII
 * whitespace; then it is blank (its index goes to the front of `marks`), or clean: valid UTF-8
 * without control characters, at most `limit` characters, not starting or ending in other
 * whitespace, and not `other` (unless that is empty: a file's header line, which the caller
 * rejects). A clean line becomes prefix + ID + suffix in `out` (" and \ escaped as JSON
 * does: the ID is copied as it is checked, and the copy of a line that is not clean is
 * overwritten by the next), its end in `ends`, its index in `rec` (only if some line is not a
 * record: else rec is left as it was) and its fingerprint in `fps` (unless `fps` is empty).
 * Any other line, and with `slow` every line, is left to the caller: its index goes to the
 * back of `marks` and its span of buf to `spans` (pairs of int64).
 * The other arrays need one entry per line and `out` 2 * len(buf) + lines * (len(prefix) +
 * len(suffix)) + 16 bytes for the lines they have room for (less raises ValueError). Returns
 * the counts and the bytes of `out` used; or None, having stopped at the first line more than
 * the arrays have room for (the caller guessed the lines too few: nothing written is of use). */
static PyObject *py_encode_lines(PyObject *self, PyObject *args) {
    Py_buffer buf, prefix, suffix, other, out, ends, fps, rec, marks, spans;
    Py_ssize_t limit;
    int slow;
    if (!PyArg_ParseTuple(args, "y*npy*y*y*w*w*w*w*w*w*", &buf, &limit, &slow, &prefix, &suffix,
                          &other, &out, &ends, &fps, &rec, &marks, &spans))
        return NULL;
    PyObject *result = NULL;
    if (check_items(&ends, 8, "ends") || check_items(&fps, 8, "fps") ||
        check_items(&rec, 8, "rec") || check_items(&marks, 8, "marks") ||
        check_items(&spans, 16, "spans"))
        goto done;
    /* The lines the arrays have room for; the loop stops with an error at one more. */
    Py_ssize_t room = ends.len / 8;
    if (rec.len / 8 < room) room = rec.len / 8;
    if (marks.len / 8 < room) room = marks.len / 8;
    if (spans.len / 16 < room) room = spans.len / 16;
    if (fps.len && fps.len / 8 < room) room = fps.len / 8;
    Py_ssize_t need = 2 * buf.len + room * (prefix.len + suffix.len) + 16;
    if (limit < 0 || out.len < need) {
        PyErr_Format(PyExc_ValueError, "encode_lines: out is too small (%zd bytes, needs %zd)",
                     out.len, need);
        goto done;
    }
    encoded_t r;
    Py_BEGIN_ALLOW_THREADS
    r = encode_lines(buf.buf, buf.len, limit, slow, prefix.buf, prefix.len, suffix.buf,
                     suffix.len, other.buf, other.len, out.buf, ends.buf, fps.len ? fps.buf : NULL,
                     rec.buf, marks.buf, spans.buf, room);
    Py_END_ALLOW_THREADS
    if (r.lines > room) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    result = Py_BuildValue("nnnnn", r.lines, r.records, r.blanks, r.slows, r.size);
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&suffix);
    PyBuffer_Release(&other);
    PyBuffer_Release(&out);
    PyBuffer_Release(&ends);
    PyBuffer_Release(&fps);
    PyBuffer_Release(&rec);
    PyBuffer_Release(&marks);
    PyBuffer_Release(&spans);
    return result;
}

/* listed(data, starts, ends, head, tail, numbers, middle) -> bytes: for each i, the field
 * data[starts[i] + head : ends[i] - tail], then `middle`, then numbers[i] in decimal, then a
 * newline (the duplicates sink's `<ID as JSON>\t<file>:<line>` lines, from the records). */
static PyObject *py_listed(PyObject *self, PyObject *args) {
    Py_buffer data, starts, ends, numbers, middle;
    Py_ssize_t head, tail;
    if (!PyArg_ParseTuple(args, "y*y*y*nny*y*", &data, &starts, &ends, &head, &tail, &numbers,
                          &middle))
        return NULL;
    PyObject *result = NULL;
    if (check_items(&starts, 8, "starts") || check_items(&ends, 8, "ends") ||
        check_items(&numbers, 8, "numbers"))
        goto done;
    Py_ssize_t count = starts.len / 8;
    if (ends.len / 8 != count || numbers.len / 8 != count || head < 0 || tail < 0) {
        PyErr_SetString(PyExc_ValueError, "listed: starts, ends and numbers differ in length");
        goto done;
    }
    const int64_t *s = starts.buf, *e = ends.buf, *num = numbers.buf;
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (s[i] < 0 || e[i] > data.len || e[i] - tail < s[i] + head || num[i] < 0) {
            PyErr_Format(PyExc_ValueError, "listed: record %zd (%lld to %lld) is outside the data",
                         i, (long long)s[i], (long long)e[i]);
            goto done;
        }
        Py_ssize_t digits = 1;
        for (int64_t n = num[i]; n >= 10; n /= 10) digits++;
        total += (e[i] - tail) - (s[i] + head) + middle.len + digits + 1;
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) goto done;
    char *out = PyBytes_AS_STRING(result);
    const char *from = data.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t len = (e[i] - tail) - (s[i] + head);
        memcpy(out, from + s[i] + head, len);
        out += len;
        memcpy(out, middle.buf, middle.len);
        out += middle.len;
        char digits[24];
        int k = 0;
        int64_t n = num[i];
        do digits[k++] = (char)('0' + n % 10);
        while ((n /= 10) > 0);
        while (k) *out++ = digits[--k];
        *out++ = '\n';
    }
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&ends);
    PyBuffer_Release(&numbers);
    PyBuffer_Release(&middle);
    return result;
}

/* count_lines(buf) -> the number of lines: of \n, plus one if the last byte is not one. */
static PyObject *py_count_lines(PyObject *self, PyObject *args) {
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    const unsigned char *data = buf.buf, *end = data + buf.len;
    Py_ssize_t lines = buf.len && end[-1] != '\n';
    Py_BEGIN_ALLOW_THREADS
    const unsigned char *p = data;
#ifdef __SSE2__
    /* 16 bytes at a time: each \n adds one to its byte's counter (cmpeq gives -1: subtracted),
     * and the counters are summed before any could pass 255. */
    const __m128i newline = _mm_set1_epi8('\n'), zero = _mm_setzero_si128();
    while (end - p >= 16) {
        __m128i counts = zero;
        for (int k = 0; k < 255 && end - p >= 16; k++, p += 16)
            counts = _mm_sub_epi8(
                counts, _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)p), newline));
        __m128i sums = _mm_sad_epu8(counts, zero);
        lines += _mm_cvtsi128_si64(sums) + _mm_cvtsi128_si64(_mm_unpackhi_epi64(sums, sums));
    }
#endif
    for (; (p = memchr(p, '\n', end - p)); p++) lines++;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    return PyLong_FromSsize_t(lines);
}

static PyMethodDef methods[] = {
    {"fingerprints", py_fingerprints, METH_VARARGS,
     "fingerprints(buf, starts, lens, out): out[i] = the fingerprint of ID i."},
    {"insert", py_insert, METH_VARARGS,
     "insert(table, fps, dup) -> new: add fps to the set; dup[i] = 1 if already there."},
    {"rehash", py_rehash, METH_VARARGS, "rehash(old, new): old's fingerprints into new."},
    {"encode_lines", py_encode_lines, METH_VARARGS,
     "encode_lines(buf, limit, slow, prefix, suffix, other, out, ends, fps, rec, marks, spans)"
     " -> (lines, records, blank, slow, size) | None: see _native.c."},
    {"count_lines", py_count_lines, METH_VARARGS, "count_lines(buf) -> the number of lines."},
    {"listed", py_listed, METH_VARARGS,
     "listed(data, starts, ends, head, tail, numbers, middle) -> bytes: see _native.c."},
    {"use_simd", py_use_simd, METH_VARARGS,
     "use_simd(on) -> whether the AVX2 loops are used from now on (for tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "fanout._native",
    .m_doc = "prepare's per-ID loops in C (see _native.c)",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (require_little_endian("fanout._native")) return NULL;
    init_classes();
#ifdef HAVE_AVX2_PATH
    __builtin_cpu_init();
    cpu_avx2 = have_avx2 = __builtin_cpu_supports("avx2") != 0;
#endif
    return PyModule_Create(&module);
}
