/* fanout._mergenative: the merge's per-line hot loops in C, run without the GIL.
 *
 * `fanout._mergekernels` wraps these functions: its docstrings are the specification (what a
 * common line is, the span columns, the held-line header); here is how each one does it. Output
 * lines come from S3 objects and are untrusted: every read of a line is checked against the end
 * of its buffer, and every argument and index (spans, positions, partitions) is checked before
 * the loops run, so bad arguments raise ValueError and never touch memory out of range.
 *
 * - join(head, body, end) -> u8: head followed by body[:end].
 * - scan(data, head, max_line) -> (kinds u8[n], spans i64[n, 9]): each line's kind (blank,
 *   common, other, overlong) and, for a common line, where its parts are (`common` checks it).
 * - scan_sent(data, head) -> (lines, lo i64, hi i64): the IDs of input lines as prepare writes
 *   them; lines is -1 (and no IDs) if any other line is found.
 * - fingerprints(data, lo, hi, mask) -> u64: FNV-1a of each data[lo:hi], then murmur3's
 *   finaliser, & mask.
 * - partitioned(data, lo, hi, tags, parts, partitions) -> (u8, i64[partitions + 1]): records
 *   `<tag>"<ID>"\n` (no tag byte for tag 0), stably grouped by partition, and the groups' bounds.
 * - flat_lines(data, spans, head, middle) -> u8: common lines as flat JSON lines.
 * - joined_lines(data, spans) -> u8: lines, each followed by `\n`.
 * - held(data, spans, positions, span, files) -> (u8, i64[files + 1]): lines behind their
 *   40-byte headers, stably grouped by file (position // span), and the groups' bounds.
 * - unheld(records) -> (positions i64, spans i64[n, 9], whole): held lines read back, up to the
 *   first one cut short or damaged (whole: where it starts).
 * - columns(data, spans) -> (id bytes, id offsets i32, item bytes, item offsets i32, item lists
 *   i32, scores f64, slow i64, score lists i32): Arrow buffers of common lines; a score the fast
 *   exact way cannot read is NaN, and the start of its text is in slow.
 * - route(sent, written, fps, tags) -> (u8, i64): each fingerprint's tag, and where it is (or
 *   would be) in the sorted `sent`; marks `written`.
 * - reconcile(sent, out, written, mask) -> (counts i64[7], lo i64, hi i64): spilled output IDs
 *   matched exactly against spilled sent IDs (a hash table by fingerprint, then byte for byte);
 *   the missing sent IDs, in the order of `sent`.
 *
 * Arrays are passed as buffers (numpy arrays of the right dtype, C-contiguous); the arrays
 * returned are new numpy arrays (made by numpy.empty, with the GIL held, between the loops).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_cbuffers.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

enum { BLANK, COMMON, OTHER, OVERLONG };
enum { LINE_LO, LINE_HI, ID_LO, ID_HI, ITEMS_LO, ITEMS_HI, SCORES_LO, SCORES_HI, COUNT, COLUMNS };
#define HELD_HEADER 40
#define RECONCILED 7

static const char MID[] = "\"},\"output\":{\"recommendedItems\":[\"";
static const char SCORES_KEY[] = ",\"scores\":[";
static const char ERROR_NULL[] = ",\"error\":null}";
#define LEN(s) ((Py_ssize_t)sizeof(s) - 1)

/* Byte classes inside a JSON string: plain ASCII, the closing quote, not allowed unescaped (a
 * control character) or an escape (not handled here), the bytes of non-ASCII characters. */
enum { PLAIN, QUOTE, STOP, HIGH };
static uint8_t CLASS[256];

static PyObject *numpy_empty; /* numpy.empty */
static PyObject *U8, *I32, *I64, *U64, *F64;

typedef const uint8_t *bytes;

/* -- buffers and arrays ------------------------------------------------------------------- */

static int check_count(Py_ssize_t count, Py_ssize_t want, const char *name) {
    if (count != want) {
        PyErr_Format(PyExc_ValueError, "%s: %zd items where %zd were expected", name, count, want);
        return -1;
    }
    return 0;
}

/* A new numpy array of `rows` items (of `columns` items each if columns > 0), not initialised;
 * its data at *data. NULL with an exception set on failure. */
static PyObject *new_array(Py_ssize_t rows, Py_ssize_t columns, PyObject *dtype, void *data) {
    PyObject *shape = columns ? Py_BuildValue("(nn)", rows, columns) : PyLong_FromSsize_t(rows);
    if (shape == NULL) return NULL;
    PyObject *array = PyObject_CallFunctionObjArgs(numpy_empty, shape, dtype, NULL);
    Py_DECREF(shape);
    if (array == NULL) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(array, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        Py_DECREF(array);
        return NULL;
    }
    *(void **)data = view.buf; /* stays valid: nobody else holds the new array yet */
    PyBuffer_Release(&view);
    return array;
}

/* Byte counts per part in b[1..parts] become offsets (b[k] where part k starts, b[parts] the
 * total); then a uint8 array of `total` bytes (*out, its data at *o) and a write cursor per part,
 * at its start (*next, PyMem_Malloc'd). Returns 0, or -1 with an exception set. */
static int lay_out(int64_t *b, Py_ssize_t parts, int64_t total, PyObject **out, uint8_t **o,
                   int64_t **next) {
    for (Py_ssize_t k = 0; k < parts; k++) b[k + 1] += b[k];
    if ((*out = new_array(total, 0, U8, o)) == NULL) return -1;
    if ((*next = PyMem_Malloc(8 * (size_t)parts)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(*next, b, 8 * (size_t)parts);
    return 0;
}

/* `*array` replaced by its first `n` items (a view), unless it has exactly that many. */
static int shorten(PyObject **array, Py_ssize_t n, Py_ssize_t had) {
    if (n == had) return 0;
    PyObject *view = PySequence_GetSlice(*array, 0, n);
    Py_SETREF(*array, view);
    return view == NULL ? -1 : 0;
}

/* `total += size` unless that would pass PY_SSIZE_T_MAX (-1, with ValueError). */
static int grow(Py_ssize_t *total, int64_t size) {
    if (size < 0 || size > PY_SSIZE_T_MAX - *total) {
        PyErr_SetString(PyExc_ValueError, "the output would be too large");
        return -1;
    }
    *total += (Py_ssize_t)size;
    return 0;
}

static inline int in_range(int64_t lo, int64_t hi, Py_ssize_t len) {
    return 0 <= lo && lo <= hi && hi <= len;
}

/* The span rows of a `spans` buffer (int64, COLUMNS per row). */
static int span_rows(const Py_buffer *spans, Py_ssize_t *rows) {
    if (check_items(spans, 8 * COLUMNS, "spans")) return -1;
    *rows = spans->len / (8 * COLUMNS);
    return 0;
}

static int bad_row(Py_ssize_t i, const char *what) {
    PyErr_Format(PyExc_ValueError, "span row %zd: %s", i, what);
    return -1;
}

/* -- the common shape --------------------------------------------------------------------- */

static inline int at(bytes d, Py_ssize_t p, Py_ssize_t end, const void *pattern, Py_ssize_t n) {
    return p <= end - n && memcmp(d + p, pattern, (size_t)n) == 0;
}

/* Where the string starting at p (after its quote) ends (its closing quote), and in *high
 * whether it has a non-ASCII byte; -1 for a control character, a backslash or no end. */
static inline Py_ssize_t string_end(bytes d, Py_ssize_t p, Py_ssize_t end, int *high) {
    int h = 0;
    for (; p < end; p++) {
        uint8_t c = CLASS[d[p]];
        if (c == PLAIN) continue;
        if (c == QUOTE) {
            *high = h;
            return p;
        }
        if (c == STOP) break;
        h = 1;
    }
    *high = h;
    return -1;
}

/* Whether d[p:end] is valid UTF-8 (no overlong forms, surrogates or values past U+10FFFF). */
static inline int utf8(bytes d, Py_ssize_t p, Py_ssize_t end) {
    while (p < end) {
        uint8_t c = d[p];
        if (c < 0x80) {
            p++;
            continue;
        }
        Py_ssize_t size;
        uint8_t low = 0x80, high = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            size = 2;
        else if (c == 0xE0)
            size = 3, low = 0xA0;
        else if (c == 0xED)
            size = 3, high = 0x9F;
        else if (c >= 0xE1 && c <= 0xEF)
            size = 3;
        else if (c == 0xF0)
            size = 4, low = 0x90;
        else if (c >= 0xF1 && c <= 0xF3)
            size = 4;
        else if (c == 0xF4)
            size = 4, high = 0x8F;
        else
            return 0;
        if (size > end - p || d[p + 1] < low || d[p + 1] > high) return 0;
        for (Py_ssize_t k = 2; k < size; k++) {
            if (d[p + k] < 0x80 || d[p + k] > 0xBF) return 0;
        }
        p += size;
    }
    return 1;
}

/* Whether d[p:end] is empty after `bytes.strip()` (ASCII whitespace). */
static inline int blank(bytes d, Py_ssize_t p, Py_ssize_t end) {
    for (; p < end; p++) {
        uint8_t c = d[p];
        if (!(c == 32 || (c >= 9 && c <= 13))) return 0;
    }
    return 1;
}

/* Where the list of strings whose first one starts at p (after its quote) ends (the quote of
 * the last one, followed by `]`), and in *count how many strings it has; -1 if anything but
 * plain strings joined by `","` comes first (an escape, a control character, invalid UTF-8). */
static inline Py_ssize_t items_end(bytes d, Py_ssize_t p, Py_ssize_t end, int64_t *count) {
    Py_ssize_t start = p;
    int high = 0;
    int64_t n = 1;
    while (p < end) {
        uint8_t c = CLASS[d[p]];
        if (c == PLAIN) {
            p++;
        } else if (c == HIGH) {
            high = 1;
            p++;
        } else if (c == STOP || p + 2 >= end) {
            return -1;
        } else if (d[p + 1] == ']') {
            *count = n;
            return !high || utf8(d, start, p) ? p : -1;
        } else if (d[p + 1] == ',' && d[p + 2] == '"') {
            p += 3;
            n++;
        } else {
            return -1;
        }
    }
    return -1;
}

static inline int is_digit(uint8_t c) { return (uint8_t)(c - '0') <= 9; }

/* Where the list of `count` JSON numbers starting at p ends (its `]`); -1 if it is not that,
 * or has a number orjson might not read as a finite double (over 18 integer digits, a 3-digit
 * exponent). The hottest loop of all. */
static inline Py_ssize_t scores_end(bytes d, Py_ssize_t p, Py_ssize_t end, int64_t count) {
    int64_t numbers = 0;
    while (p < end) {
        if (d[p] == '-') p++;
        Py_ssize_t q = p;
        if (q < end && d[q] == '0') { /* a leading 0 stands alone */
            q++;
        } else {
            while (q < end && is_digit(d[q])) q++;
            if (q == p || q - p > 18) return -1;
        }
        if (q < end && d[q] == '.') {
            Py_ssize_t digits = ++q;
            while (q < end && is_digit(d[q])) q++;
            if (q == digits) return -1;
        }
        if (q < end && (d[q] | 32) == 'e') {
            q++;
            if (q < end && (d[q] == '+' || d[q] == '-')) q++;
            Py_ssize_t digits = q;
            while (q < end && is_digit(d[q])) q++;
            if (q == digits || q - digits > 2) return -1;
        }
        numbers++;
        if (q >= end) return -1;
        if (d[q] == ']') return numbers == count ? q : -1;
        if (d[q] != ',' || numbers == count) return -1;
        p = q + 1;
    }
    return -1;
}

/* If the line starting at s has the common shape, where it ends (its `\n`, `\r\n` or end),
 * with `row` filled in; -1 otherwise. Nothing it accepts spans a line end. */
static inline Py_ssize_t common(bytes d, Py_ssize_t s, Py_ssize_t end, bytes head,
                                Py_ssize_t head_len, int64_t *row) {
    if (head_len == 0 || !at(d, s, end, head, head_len)) return -1;
    Py_ssize_t p = s + head_len;
    int high;
    Py_ssize_t id_hi = string_end(d, p, end, &high);
    if (id_hi <= p || (high && !utf8(d, p, id_hi))) return -1;
    row[ID_LO] = p;
    row[ID_HI] = id_hi;
    if (!at(d, id_hi, end, MID, LEN(MID))) return -1;
    p = id_hi + LEN(MID);
    row[ITEMS_LO] = p;
    int64_t count = 0;
    Py_ssize_t items = items_end(d, p, end, &count);
    if (items < 0) return -1;
    row[ITEMS_HI] = items;
    row[COUNT] = count;
    p = items + 2;
    row[SCORES_LO] = row[SCORES_HI] = -1;
    if (at(d, p, end, SCORES_KEY, LEN(SCORES_KEY))) {
        p += LEN(SCORES_KEY);
        row[SCORES_LO] = p;
        p = scores_end(d, p, end, count);
        if (p < 0) return -1;
        row[SCORES_HI] = p;
        p++;
    }
    if (p >= end || d[p] != '}') return -1; /* closing "output" */
    p++;
    if (p < end && d[p] == '}')
        p++;
    else if (at(d, p, end, ERROR_NULL, LEN(ERROR_NULL)))
        p += LEN(ERROR_NULL);
    else
        return -1;
    if (p == end || d[p] == '\n') return p;
    if (d[p] == '\r' && (p + 1 == end || d[p + 1] == '\n')) return p;
    return -1;
}

/* The number of lines in d[0:len]: its line ends, and one more if it does not end in one. */
static Py_ssize_t count_lines(bytes d, Py_ssize_t len) {
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < len; i++) n += d[i] == '\n';
    return n + (len && d[len - 1] != '\n');
}

/* Where the line starting at s ends: its `\n`, or len. */
static inline Py_ssize_t line_end(bytes d, Py_ssize_t s, Py_ssize_t len) {
    const uint8_t *e = s < len ? memchr(d + s, '\n', (size_t)(len - s)) : NULL;
    return e == NULL ? len : e - d;
}

/* -- fingerprints ------------------------------------------------------------------------- */

static inline uint64_t fingerprint(bytes d, Py_ssize_t lo, Py_ssize_t hi) {
    uint64_t h = 0xCBF29CE484222325ULL;
    for (Py_ssize_t p = lo; p < hi; p++) h = (h ^ d[p]) * 0x100000001B3ULL;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 33;
    return h;
}

/* -- the numbers of scores ---------------------------------------------------------------- */

static const double POWERS[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                  1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                  1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}; /* exact */

/* The JSON number d[p:end] (as `scores_end` checked it) as a double, if the fast exact way can
 * read it: at most 15 digits (so below 2**53), scaled by 10**k with |k| <= 22, which is one
 * correctly rounded multiplication or division; NaN if not. Integer arithmetic is unsigned, so
 * it wraps (never undefined) even on text that `scores_end` did not check. */
static inline double number(bytes d, Py_ssize_t p, Py_ssize_t end) {
    int negative = p < end && d[p] == '-';
    p += negative;
    uint64_t mantissa = 0;
    int64_t digits = 0, scale = 0;
    while (p < end && is_digit(d[p])) {
        mantissa = mantissa * 10 + (uint64_t)(d[p] - '0');
        digits++;
        p++;
    }
    if (p < end && d[p] == '.') {
        p++;
        while (p < end && is_digit(d[p])) {
            mantissa = mantissa * 10 + (uint64_t)(d[p] - '0');
            digits++;
            scale--;
            p++;
        }
    }
    if (p < end) { /* an exponent */
        p++;
        uint64_t sign = 1;
        if (p < end && (d[p] == '-' || d[p] == '+')) {
            sign = d[p] == '-' ? (uint64_t)-1 : 1;
            p++;
        }
        uint64_t exponent = 0;
        for (; p < end; p++) exponent = exponent * 10 + (uint64_t)((int64_t)d[p] - '0');
        scale = (int64_t)((uint64_t)scale + sign * exponent);
    }
    if (digits > 15 || scale < -22 || scale > 22) return NAN;
    double value = (double)mantissa;
    value = scale >= 0 ? value * POWERS[scale] : value / POWERS[-scale];
    return negative ? -value : value;
}

/* -- held lines --------------------------------------------------------------------------- */

static inline void put32(uint8_t *out, int64_t value) {
    uint32_t v = (uint32_t)(uint64_t)value; /* the low 4 bytes, little-endian (checked) */
    memcpy(out, &v, 4);
}

static inline int64_t get32(bytes d) {
    int32_t v;
    memcpy(&v, d, 4);
    return v;
}

static inline int64_t get64(bytes d) {
    int64_t v;
    memcpy(&v, d, 8);
    return v;
}

/* == the functions ======================================================================== */

static PyObject *py_join(PyObject *self, PyObject *args) {
    Py_buffer head, body;
    Py_ssize_t end;
    if (!PyArg_ParseTuple(args, "y*y*n", &head, &body, &end)) return NULL;
    PyObject *out = NULL;
    uint8_t *o;
    if (end < 0 || end > body.len) {
        PyErr_SetString(PyExc_ValueError, "end is outside the body");
        goto done;
    }
    if ((out = new_array(head.len + end, 0, U8, &o)) == NULL) goto done;
    Py_BEGIN_ALLOW_THREADS
    memcpy(o, head.buf, (size_t)head.len);
    memcpy(o + head.len, body.buf, (size_t)end);
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&head);
    PyBuffer_Release(&body);
    return out;
}

static PyObject *py_scan(PyObject *self, PyObject *args) {
    Py_buffer data, head;
    Py_ssize_t max_line;
    if (!PyArg_ParseTuple(args, "y*y*n", &data, &head, &max_line)) return NULL;
    PyObject *kinds = NULL, *spans = NULL, *result = NULL;
    bytes d = data.buf, h = head.buf;
    Py_ssize_t size = data.len, n;
    Py_BEGIN_ALLOW_THREADS
    n = count_lines(d, size);
    Py_END_ALLOW_THREADS
    uint8_t *k;
    int64_t *sp;
    if ((kinds = new_array(n, 0, U8, &k)) == NULL) goto done;
    if ((spans = new_array(n, COLUMNS, I64, &sp)) == NULL) goto done;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t s = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t *row = sp + COLUMNS * i;
        Py_ssize_t full, e = common(d, s, size, h, head.len, row);
        if (e >= 0) {
            k[i] = COMMON;
            full = e < size && d[e] == '\r' ? e + 1 : e; /* the \r counts for the limit */
        } else {
            for (int c = 0; c < COLUMNS; c++) row[c] = -1;
            full = line_end(d, s, size);
            e = full > s && d[full - 1] == '\r' ? full - 1 : full;
            k[i] = blank(d, s, e) ? BLANK : OTHER;
        }
        if (full - s > max_line) k[i] = OVERLONG;
        row[LINE_LO] = s;
        row[LINE_HI] = e;
        s = full + 1;
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, kinds, spans);
done:
    Py_XDECREF(kinds);
    Py_XDECREF(spans);
    PyBuffer_Release(&data);
    PyBuffer_Release(&head);
    return result;
}

static PyObject *py_scan_sent(PyObject *self, PyObject *args) {
    Py_buffer data, head;
    if (!PyArg_ParseTuple(args, "y*y*", &data, &head)) return NULL;
    PyObject *lo = NULL, *hi = NULL, *result = NULL;
    bytes d = data.buf, h = head.buf;
    Py_ssize_t size = data.len, n;
    Py_BEGIN_ALLOW_THREADS
    n = count_lines(d, size);
    Py_END_ALLOW_THREADS
    int64_t *l, *r;
    if ((lo = new_array(n, 0, I64, &l)) == NULL || (hi = new_array(n, 0, I64, &r)) == NULL)
        goto done;
    Py_ssize_t lines = 0, found = 0;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t s = 0;
    while (s < size) {
        Py_ssize_t e = line_end(d, s, size), following = e + 1;
        lines++;
        if (e > s && d[e - 1] == '\r') e--;
        if (!blank(d, s, e)) {
            if (!at(d, s, e, h, head.len)) {
                lines = -1;
                break;
            }
            Py_ssize_t p = s + head.len;
            int high;
            Py_ssize_t q = string_end(d, p, e, &high);
            if (q <= p || q + 2 != e || d[q + 1] != '}' || (high && !utf8(d, p, q))) {
                lines = -1;
                break;
            }
            l[found] = p; /* found < lines <= n */
            r[found] = q;
            found++;
        }
        s = following;
    }
    Py_END_ALLOW_THREADS
    if (lines < 0) found = 0;
    if (shorten(&lo, found, n) || shorten(&hi, found, n)) goto done;
    result = Py_BuildValue("nOO", lines, lo, hi);
done:
    Py_XDECREF(lo);
    Py_XDECREF(hi);
    PyBuffer_Release(&data);
    PyBuffer_Release(&head);
    return result;
}

/* Check lo and hi (int64, `count` items each) as ranges of a buffer of `len` bytes. */
static int check_ranges(const Py_buffer *lo, const Py_buffer *hi, Py_ssize_t len,
                        Py_ssize_t *count) {
    if (check_items(lo, 8, "lo") || check_items(hi, 8, "hi")) return -1;
    *count = lo->len / 8;
    if (check_count(hi->len / 8, *count, "hi")) return -1;
    const int64_t *l = lo->buf, *h = hi->buf;
    for (Py_ssize_t i = 0; i < *count; i++) {
        if (!in_range(l[i], h[i], len)) {
            PyErr_Format(PyExc_ValueError, "ID %zd (%lld to %lld) is outside the data", i,
                         (long long)l[i], (long long)h[i]);
            return -1;
        }
    }
    return 0;
}

static PyObject *py_fingerprints(PyObject *self, PyObject *args) {
    Py_buffer data, lo, hi;
    unsigned long long mask;
    if (!PyArg_ParseTuple(args, "y*y*y*K", &data, &lo, &hi, &mask)) return NULL;
    PyObject *out = NULL;
    Py_ssize_t n;
    uint64_t *o;
    if (check_ranges(&lo, &hi, data.len, &n) || (out = new_array(n, 0, U64, &o)) == NULL)
        goto done;
    bytes d = data.buf;
    const int64_t *l = lo.buf, *h = hi.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) o[i] = fingerprint(d, l[i], h[i]) & mask;
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&lo);
    PyBuffer_Release(&hi);
    return out;
}

static PyObject *py_partitioned(PyObject *self, PyObject *args) {
    Py_buffer data, lo, hi, tags, parts;
    Py_ssize_t partitions;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*n", &data, &lo, &hi, &tags, &parts, &partitions))
        return NULL;
    PyObject *out = NULL, *bounds = NULL, *result = NULL;
    Py_ssize_t n, total = 0;
    int64_t *b, *next = NULL;
    uint8_t *o;
    if (check_ranges(&lo, &hi, data.len, &n) || check_count(tags.len, n, "tags") ||
        check_items(&parts, 8, "parts") || check_count(parts.len / 8, n, "parts"))
        goto done;
    if (partitions < 1 || partitions > PY_SSIZE_T_MAX / 8 - 1) {
        PyErr_SetString(PyExc_ValueError, "partitions must be at least 1");
        goto done;
    }
    const int64_t *l = lo.buf, *h = hi.buf, *part = parts.buf;
    const uint8_t *t = tags.buf;
    if ((bounds = new_array(partitions + 1, 0, I64, &b)) == NULL) goto done;
    memset(b, 0, 8 * (size_t)(partitions + 1));
    for (Py_ssize_t i = 0; i < n; i++) {
        if (part[i] < 0 || part[i] >= partitions) {
            PyErr_Format(PyExc_ValueError, "ID %zd: partition %lld of %zd", i,
                         (long long)part[i], partitions);
            goto done;
        }
        int64_t size = h[i] - l[i] + 3 + (t[i] != 0);
        b[part[i] + 1] += size;
        if (grow(&total, size)) goto done;
    }
    if (lay_out(b, partitions, total, &out, &o, &next)) goto done;
    bytes d = data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t *p = o + next[part[i]];
        if (t[i]) *p++ = t[i];
        *p++ = '"';
        memcpy(p, d + l[i], (size_t)(h[i] - l[i]));
        p += h[i] - l[i];
        *p++ = '"';
        *p++ = '\n';
        next[part[i]] = p - o;
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, out, bounds);
done:
    PyMem_Free(next);
    Py_XDECREF(out);
    Py_XDECREF(bounds);
    PyBuffer_Release(&data);
    PyBuffer_Release(&lo);
    PyBuffer_Release(&hi);
    PyBuffer_Release(&tags);
    PyBuffer_Release(&parts);
    return result;
}

static inline uint8_t *put(uint8_t *out, const void *source, int64_t size) {
    memcpy(out, source, (size_t)size);
    return out + size;
}

static PyObject *py_flat_lines(PyObject *self, PyObject *args) {
    Py_buffer data, spans, head, middle;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &data, &spans, &head, &middle)) return NULL;
    PyObject *out = NULL;
    Py_ssize_t n, total = 0;
    uint8_t *o;
    if (span_rows(&spans, &n)) goto done;
    const int64_t *sp = spans.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t *r = sp + COLUMNS * i;
        if (!in_range(r[ID_LO], r[ID_HI], data.len) ||
            !in_range(r[ITEMS_LO], r[ITEMS_HI], data.len) ||
            (r[SCORES_LO] >= 0 && !in_range(r[SCORES_LO], r[SCORES_HI], data.len))) {
            bad_row(i, "a part is outside the data");
            goto done;
        }
        if (grow(&total, head.len + r[ID_HI] - r[ID_LO] + middle.len) ||
            grow(&total, r[ITEMS_HI] - r[ITEMS_LO] + 4) ||
            (r[SCORES_LO] >= 0 && grow(&total, LEN(SCORES_KEY) + r[SCORES_HI] - r[SCORES_LO] + 1)))
            goto done;
    }
    if ((out = new_array(total, 0, U8, &o)) == NULL) goto done;
    bytes d = data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t *r = sp + COLUMNS * i;
        o = put(o, head.buf, head.len);
        o = put(o, d + r[ID_LO], r[ID_HI] - r[ID_LO]);
        o = put(o, middle.buf, middle.len);
        o = put(o, d + r[ITEMS_LO], r[ITEMS_HI] - r[ITEMS_LO]);
        *o++ = '"';
        *o++ = ']';
        if (r[SCORES_LO] >= 0) {
            o = put(o, SCORES_KEY, LEN(SCORES_KEY));
            o = put(o, d + r[SCORES_LO], r[SCORES_HI] - r[SCORES_LO]);
            *o++ = ']';
        }
        *o++ = '}';
        *o++ = '\n';
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&spans);
    PyBuffer_Release(&head);
    PyBuffer_Release(&middle);
    return out;
}

static PyObject *py_joined_lines(PyObject *self, PyObject *args) {
    Py_buffer data, spans;
    if (!PyArg_ParseTuple(args, "y*y*", &data, &spans)) return NULL;
    PyObject *out = NULL;
    Py_ssize_t n, total = 0;
    uint8_t *o;
    if (span_rows(&spans, &n)) goto done;
    const int64_t *sp = spans.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t *r = sp + COLUMNS * i;
        if (!in_range(r[LINE_LO], r[LINE_HI], data.len)) {
            bad_row(i, "the line is outside the data");
            goto done;
        }
        if (grow(&total, r[LINE_HI] - r[LINE_LO] + 1)) goto done;
    }
    if ((out = new_array(total, 0, U8, &o)) == NULL) goto done;
    bytes d = data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t *r = sp + COLUMNS * i;
        o = put(o, d + r[LINE_LO], r[LINE_HI] - r[LINE_LO]);
        *o++ = '\n';
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&spans);
    return out;
}

static PyObject *py_held(PyObject *self, PyObject *args) {
    Py_buffer data, spans, positions;
    Py_ssize_t span, files;
    if (!PyArg_ParseTuple(args, "y*y*y*nn", &data, &spans, &positions, &span, &files))
        return NULL;
    PyObject *out = NULL, *bounds = NULL, *result = NULL;
    Py_ssize_t n, total = 0;
    int64_t *b, *next = NULL;
    uint8_t *o;
    if (span_rows(&spans, &n) || check_items(&positions, 8, "positions") ||
        check_count(positions.len / 8, n, "positions"))
        goto done;
    if (span < 1 || files < 1 || files > PY_SSIZE_T_MAX / 8 - 1) {
        PyErr_SetString(PyExc_ValueError, "span and files must be at least 1");
        goto done;
    }
    const int64_t *sp = spans.buf, *at = positions.buf;
    if ((bounds = new_array(files + 1, 0, I64, &b)) == NULL) goto done;
    memset(b, 0, 8 * (size_t)(files + 1));
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t *r = sp + COLUMNS * i;
        if (at[i] < 0 || at[i] / span >= files) {
            PyErr_Format(PyExc_ValueError, "line %zd: position %lld is not in any of %zd files",
                         i, (long long)at[i], files);
            goto done;
        }
        if (!in_range(r[LINE_LO], r[LINE_HI], data.len) || r[LINE_HI] - r[LINE_LO] > INT32_MAX) {
            bad_row(i, "the line is outside the data or over 2 GiB");
            goto done;
        }
        int64_t size = HELD_HEADER + r[LINE_HI] - r[LINE_LO];
        b[at[i] / span + 1] += size;
        if (grow(&total, size)) goto done;
    }
    if (lay_out(b, files, total, &out, &o, &next)) goto done;
    bytes d = data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t *r = sp + COLUMNS * i;
        int64_t file = at[i] / span, lo = r[LINE_LO], size = r[LINE_HI] - lo;
        uint8_t *p = o + next[file];
        memcpy(p, &at[i], 8);
        put32(p + 8, size);
        for (int c = ID_LO; c < COUNT; c++)
            put32(p + 12 + 4 * (c - ID_LO), r[c] >= 0 ? r[c] - lo : -1);
        put32(p + 36, r[COUNT]);
        memcpy(p + HELD_HEADER, d + lo, (size_t)size);
        next[file] += HELD_HEADER + size;
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, out, bounds);
done:
    PyMem_Free(next);
    Py_XDECREF(out);
    Py_XDECREF(bounds);
    PyBuffer_Release(&data);
    PyBuffer_Release(&spans);
    PyBuffer_Release(&positions);
    return result;
}

static PyObject *py_unheld(PyObject *self, PyObject *args) {
    Py_buffer records;
    if (!PyArg_ParseTuple(args, "y*", &records)) return NULL;
    PyObject *positions = NULL, *spans = NULL, *result = NULL;
    bytes d = records.buf;
    Py_ssize_t len = records.len, count = 0, p = 0;
    Py_BEGIN_ALLOW_THREADS
    while (p <= len - HELD_HEADER) {
        int64_t size = get32(d + p + 8);
        if (size < 0 || size > len - HELD_HEADER - p) break;
        count++;
        p += HELD_HEADER + size;
    }
    Py_END_ALLOW_THREADS
    int64_t *at, *sp;
    if ((positions = new_array(count, 0, I64, &at)) == NULL ||
        (spans = new_array(count, COLUMNS, I64, &sp)) == NULL)
        goto done;
    Py_ssize_t i;
    p = 0;
    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < count; i++) { /* each line's size was checked above */
        int64_t *r = sp + COLUMNS * i;
        int64_t lo = p + HELD_HEADER, size = get32(d + p + 8);
        at[i] = get64(d + p);
        r[LINE_LO] = lo;
        r[LINE_HI] = lo + size;
        int damaged = 0;
        for (int c = ID_LO; c < COUNT && !damaged; c++) {
            int64_t offset = get32(d + p + 12 + 4 * (c - ID_LO));
            damaged = offset < -1 || offset > size; /* never a range outside the line */
            r[c] = offset >= 0 ? lo + offset : -1;
        }
        r[COUNT] = get32(d + p + 36);
        if (damaged || r[COUNT] < -1 || at[i] < 0) break;
        p = r[LINE_HI];
    }
    Py_END_ALLOW_THREADS
    if (shorten(&positions, i, count) || shorten(&spans, i, count)) goto done;
    result = Py_BuildValue("OOn", positions, spans, p);
done:
    Py_XDECREF(positions);
    Py_XDECREF(spans);
    PyBuffer_Release(&records);
    return result;
}

static PyObject *py_columns(PyObject *self, PyObject *args) {
    Py_buffer data, spans;
    if (!PyArg_ParseTuple(args, "y*y*", &data, &spans)) return NULL;
    enum { IDS, ID_AT, ITEMS, ITEM_AT, ITEM_LISTS, VALUES, SLOW, SCORE_LISTS, ARRAYS };
    PyObject *arrays[ARRAYS] = {NULL}, *result = NULL;
    Py_ssize_t n, id_size = 0, item_size = 0, items = 0, scores = 0;
    if (span_rows(&spans, &n)) goto done;
    const int64_t *sp = spans.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t *r = sp + COLUMNS * i;
        if (!in_range(r[ID_LO], r[ID_HI], data.len) ||
            !in_range(r[ITEMS_LO], r[ITEMS_HI], data.len) ||
            (r[SCORES_LO] >= 0 && !in_range(r[SCORES_LO], r[SCORES_HI], data.len)) ||
            r[COUNT] < 1) {
            bad_row(i, "a part is outside the data, or no items");
            goto done;
        }
        if (grow(&id_size, r[ID_HI] - r[ID_LO]) || grow(&item_size, r[ITEMS_HI] - r[ITEMS_LO]) ||
            grow(&items, r[COUNT]) || (r[SCORES_LO] >= 0 && grow(&scores, r[COUNT])))
            goto done;
    }
    if (id_size > INT32_MAX || item_size > INT32_MAX || items > INT32_MAX || n > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many lines for 32-bit offsets");
        goto done;
    }
    uint8_t *ids, *item_data;
    int32_t *id_at, *item_at, *item_lists, *score_lists;
    double *values;
    int64_t *slow;
    if ((arrays[IDS] = new_array(id_size, 0, U8, &ids)) == NULL ||
        (arrays[ID_AT] = new_array(n + 1, 0, I32, &id_at)) == NULL ||
        (arrays[ITEMS] = new_array(item_size, 0, U8, &item_data)) == NULL ||
        (arrays[ITEM_AT] = new_array(items + 1, 0, I32, &item_at)) == NULL ||
        (arrays[ITEM_LISTS] = new_array(n + 1, 0, I32, &item_lists)) == NULL ||
        (arrays[VALUES] = new_array(scores, 0, F64, &values)) == NULL ||
        (arrays[SLOW] = new_array(scores, 0, I64, &slow)) == NULL ||
        (arrays[SCORE_LISTS] = new_array(n + 1, 0, I32, &score_lists)) == NULL)
        goto done;
    bytes d = data.buf;
    Py_ssize_t ip = 0, it = 0, ix = 0, sx = 0, slow_count = 0, bad = -1;
    Py_BEGIN_ALLOW_THREADS
    id_at[0] = item_at[0] = item_lists[0] = score_lists[0] = 0;
    for (Py_ssize_t i = 0; i < n && bad < 0; i++) {
        const int64_t *r = sp + COLUMNS * i;
        memcpy(ids + ip, d + r[ID_LO], (size_t)(r[ID_HI] - r[ID_LO]));
        ip += r[ID_HI] - r[ID_LO];
        id_at[i + 1] = (int32_t)ip;
        /* Items are joined by `","`, and no other quote is inside them; each line has exactly
         * COUNT of them (a row that says otherwise is rejected before it can write past its
         * share). Copied bytes stay within ITEMS_LO:ITEMS_HI, so within item_size. */
        Py_ssize_t p = r[ITEMS_LO], last = ix + r[COUNT];
        for (;;) {
            Py_ssize_t q = p;
            while (q < r[ITEMS_HI] && d[q] != '"') item_data[it++] = d[q++];
            if (ix == last) {
                bad = i;
                break;
            }
            item_at[++ix] = (int32_t)it;
            if (q >= r[ITEMS_HI]) break;
            p = q + 3;
        }
        if (ix != last) bad = i;
        item_lists[i + 1] = (int32_t)ix;
        if (r[SCORES_LO] >= 0 && bad < 0) {
            Py_ssize_t last_score = sx + r[COUNT];
            p = r[SCORES_LO];
            for (;;) {
                Py_ssize_t q = p;
                while (q < r[SCORES_HI] && d[q] != ',') q++;
                if (sx == last_score) {
                    bad = i;
                    break;
                }
                double value = number(d, p, q);
                if (isnan(value)) slow[slow_count++] = p;
                values[sx++] = value;
                if (q >= r[SCORES_HI]) break;
                p = q + 1;
            }
            if (sx != last_score) bad = i;
        }
        score_lists[i + 1] = (int32_t)sx;
    }
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        bad_row(bad, "its items or scores do not match its count");
        goto done;
    }
    if (shorten(&arrays[ITEMS], it, item_size) || shorten(&arrays[SLOW], slow_count, scores))
        goto done;
    result = PyTuple_New(ARRAYS);
    if (result == NULL) goto done;
    for (int a = 0; a < ARRAYS; a++) {
        PyTuple_SET_ITEM(result, a, arrays[a]);
        arrays[a] = NULL;
    }
done:
    for (int a = 0; a < ARRAYS; a++) Py_XDECREF(arrays[a]);
    PyBuffer_Release(&data);
    PyBuffer_Release(&spans);
    return result;
}

/* The first index of the sorted a[0:n] whose value is not below key (numpy's searchsorted). */
static inline Py_ssize_t lower_bound(const uint64_t *a, Py_ssize_t n, uint64_t key) {
    Py_ssize_t lo = 0;
    while (n > 0) {
        Py_ssize_t half = n / 2;
        if (a[lo + half] < key) {
            lo += half + 1;
            n -= half + 1;
        } else {
            n = half;
        }
    }
    return lo;
}

static PyObject *py_route(PyObject *self, PyObject *args) {
    Py_buffer sent, written, fps, tags;
    if (!PyArg_ParseTuple(args, "y*w*y*y*", &sent, &written, &fps, &tags)) return NULL;
    PyObject *out = NULL, *where = NULL, *result = NULL;
    if (check_items(&sent, 8, "sent") || check_count(written.len, sent.len / 8, "written") ||
        check_items(&fps, 8, "fps"))
        goto done;
    if (tags.len < 3) {
        PyErr_SetString(PyExc_ValueError, "tags: three are needed");
        goto done;
    }
    Py_ssize_t ns = sent.len / 8, n = fps.len / 8;
    uint8_t *o;
    int64_t *w;
    if ((out = new_array(n, 0, U8, &o)) == NULL || (where = new_array(n, 0, I64, &w)) == NULL)
        goto done;
    const uint64_t *s = sent.buf, *f = fps.buf;
    uint8_t *marks = written.buf;
    const uint8_t *t = tags.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t at = lower_bound(s, ns, f[i]);
        w[i] = at;
        if (at < ns && s[at] == f[i]) {
            o[i] = marks[at] ? t[1] : t[0];
            marks[at] = 1;
        } else {
            o[i] = t[2];
        }
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, out, where);
done:
    Py_XDECREF(out);
    Py_XDECREF(where);
    PyBuffer_Release(&sent);
    PyBuffer_Release(&written);
    PyBuffer_Release(&fps);
    PyBuffer_Release(&tags);
    return result;
}

/* The records of a spill (`partitioned`): n of them (the line ends in d[0:len]), each a tag
 * byte if `tagged`, then a line; lo and hi inside the quotes (as ranges, hi < lo for a record
 * too short to have both: such a range is empty). 0, or -1 if a record has no line end. */
static int records(bytes d, Py_ssize_t len, int tagged, Py_ssize_t n, int64_t *lo, int64_t *hi,
                   uint8_t *tags) {
    Py_ssize_t s = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (tagged) {
            if (s >= len) return -1;
            tags[i] = d[s++];
        }
        Py_ssize_t e = line_end(d, s, len);
        if (e == len) return -1;
        lo[i] = s + 1;
        hi[i] = e - 1;
        s = e + 1;
    }
    return 0;
}

static inline uint64_t record_fingerprint(bytes d, int64_t lo, int64_t hi, uint64_t mask) {
    return fingerprint(d, lo, hi) & mask; /* (no byte when hi <= lo) */
}

static inline int same(bytes a, int64_t a_lo, int64_t a_hi, bytes b, int64_t b_lo,
                       int64_t b_hi) {
    int64_t size = a_hi - a_lo;
    if (size != b_hi - b_lo) return 0;
    return size <= 0 || memcmp(a + a_lo, b + b_lo, (size_t)size) == 0;
}

enum { ENTRY = 1, RESULT = 2, ERROR = 4 };

static PyObject *py_reconcile(PyObject *self, PyObject *args) {
    Py_buffer sent, out, written;
    unsigned long long mask;
    if (!PyArg_ParseTuple(args, "y*y*y*K", &sent, &out, &written, &mask)) return NULL;
    PyObject *counts_array = NULL, *lo = NULL, *hi = NULL, *result = NULL;
    int64_t *s_lo = NULL, *s_hi = NULL, *o_lo = NULL, *o_hi = NULL, *slots = NULL, *lines = NULL;
    uint64_t *fps = NULL;
    uint8_t *o_tags = NULL, *flags = NULL;
    if (written.len < 2) {
        PyErr_SetString(PyExc_ValueError, "written: two tags are needed");
        goto done;
    }
    bytes sd = sent.buf, od = out.buf;
    const uint8_t *wr = written.buf;
    int64_t counts[RECONCILED] = {0};
    Py_ssize_t ns, no, size = 16;
    int failed = 0; /* 1: no memory, 2: damaged records */
    Py_BEGIN_ALLOW_THREADS
    ns = count_lines(sd, sent.len) - (sent.len && sd[sent.len - 1] != '\n');
    no = count_lines(od, out.len) - (out.len && od[out.len - 1] != '\n');
    while (size < 2 * ns) size *= 2;
    size_t s8 = 8 * (size_t)ns + 8, o8 = 8 * (size_t)no + 8;
    s_lo = PyMem_RawMalloc(s8);
    s_hi = PyMem_RawMalloc(s8);
    fps = PyMem_RawMalloc(s8);
    lines = PyMem_RawCalloc((size_t)ns + 1, 8);
    flags = PyMem_RawCalloc((size_t)ns + 1, 1);
    o_lo = PyMem_RawMalloc(o8);
    o_hi = PyMem_RawMalloc(o8);
    o_tags = PyMem_RawMalloc((size_t)no + 1);
    slots = PyMem_RawMalloc(8 * (size_t)size);
    if (!s_lo || !s_hi || !fps || !lines || !flags || !o_lo || !o_hi || !o_tags || !slots)
        failed = 1;
    else if (records(sd, sent.len, 0, ns, s_lo, s_hi, NULL) ||
             records(od, out.len, 1, no, o_lo, o_hi, o_tags))
        failed = 2;
    if (!failed) {
        uint64_t wrap = (uint64_t)size - 1;
        memset(slots, 0xFF, 8 * (size_t)size); /* -1: empty */
        for (Py_ssize_t i = 0; i < ns; i++) { /* a distinct sent ID's entry, by fingerprint */
            uint64_t fp = fps[i] = record_fingerprint(sd, s_lo[i], s_hi[i], mask);
            for (uint64_t h = fp & wrap;; h = (h + 1) & wrap) {
                int64_t j = slots[h];
                if (j < 0) {
                    slots[h] = i;
                    flags[i] = ENTRY;
                    counts[6]++;
                    break;
                }
                if (fps[j] == fp && same(sd, s_lo[j], s_hi[j], sd, s_lo[i], s_hi[i]))
                    break; /* sent twice */
            }
        }
        for (Py_ssize_t k = 0; k < no; k++) {
            uint64_t fp = record_fingerprint(od, o_lo[k], o_hi[k], mask);
            uint8_t tag = o_tags[k];
            for (uint64_t h = fp & wrap;; h = (h + 1) & wrap) {
                int64_t j = slots[h];
                if (j < 0) {
                    counts[3]++;                                 /* unexpected */
                    counts[5] += tag == wr[0] || tag == wr[1]; /* written: a collision */
                    break;
                }
                if (fps[j] == fp && same(sd, s_lo[j], s_hi[j], od, o_lo[k], o_hi[k])) {
                    lines[j]++;
                    flags[j] |= (tag == wr[0] ? RESULT : 0) | (tag == wr[1] ? ERROR : 0);
                    break;
                }
            }
        }
        for (Py_ssize_t j = 0; j < ns; j++) {
            if (!(flags[j] & ENTRY)) continue;
            counts[4] += lines[j] > 1 ? lines[j] - 1 : 0;
            if (flags[j] & RESULT) {
                counts[0]++;
            } else if (flags[j] & ERROR) {
                counts[1]++;
            } else {
                counts[2]++;
                counts[5] += lines[j] > 0; /* its lines went unwritten because of a collision */
            }
        }
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        if (failed == 1)
            PyErr_NoMemory();
        else
            PyErr_SetString(PyExc_ValueError, "a spilled record has no line end");
        goto done;
    }
    int64_t *c, *l, *h;
    if ((counts_array = new_array(RECONCILED, 0, I64, &c)) == NULL ||
        (lo = new_array(counts[2], 0, I64, &l)) == NULL ||
        (hi = new_array(counts[2], 0, I64, &h)) == NULL)
        goto done;
    memcpy(c, counts, sizeof counts);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0, m = 0; j < ns; j++) { /* the missing ones, in the order of `sent` */
        if ((flags[j] & (ENTRY | RESULT | ERROR)) == ENTRY) {
            l[m] = s_lo[j];
            h[m] = s_hi[j];
            m++;
        }
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(3, counts_array, lo, hi);
done:
    PyMem_RawFree(s_lo);
    PyMem_RawFree(s_hi);
    PyMem_RawFree(fps);
    PyMem_RawFree(lines);
    PyMem_RawFree(flags);
    PyMem_RawFree(o_lo);
    PyMem_RawFree(o_hi);
    PyMem_RawFree(o_tags);
    PyMem_RawFree(slots);
    Py_XDECREF(counts_array);
    Py_XDECREF(lo);
    Py_XDECREF(hi);
    PyBuffer_Release(&sent);
    PyBuffer_Release(&out);
    PyBuffer_Release(&written);
    return result;
}

static PyMethodDef methods[] = {
    {"join", py_join, METH_VARARGS, "join(head, body, end) -> head + body[:end]."},
    {"scan", py_scan, METH_VARARGS, "scan(data, head, max_line) -> (kinds, spans)."},
    {"scan_sent", py_scan_sent, METH_VARARGS, "scan_sent(data, head) -> (lines, lo, hi)."},
    {"fingerprints", py_fingerprints, METH_VARARGS,
     "fingerprints(data, lo, hi, mask) -> each ID's fingerprint."},
    {"partitioned", py_partitioned, METH_VARARGS,
     "partitioned(data, lo, hi, tags, parts, partitions) -> (records, bounds)."},
    {"flat_lines", py_flat_lines, METH_VARARGS,
     "flat_lines(data, spans, head, middle) -> flat JSON lines."},
    {"joined_lines", py_joined_lines, METH_VARARGS, "joined_lines(data, spans) -> the lines."},
    {"held", py_held, METH_VARARGS,
     "held(data, spans, positions, span, files) -> (records, bounds)."},
    {"unheld", py_unheld, METH_VARARGS, "unheld(records) -> (positions, spans, whole)."},
    {"columns", py_columns, METH_VARARGS, "columns(data, spans) -> Arrow buffers."},
    {"route", py_route, METH_VARARGS, "route(sent, written, fps, tags) -> (tags, where)."},
    {"reconcile", py_reconcile, METH_VARARGS,
     "reconcile(sent, out, written, mask) -> (counts, lo, hi)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "fanout._mergenative",
    .m_doc = "the merge's per-line loops in C (see _mergenative.c)",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__mergenative(void) {
    if (require_little_endian("fanout._mergenative")) return NULL;
    for (int c = 0; c < 256; c++)
        CLASS[c] = c < 32 || c == '\\' ? STOP : c == '"' ? QUOTE : c >= 128 ? HIGH : PLAIN;
    PyObject *numpy = PyImport_ImportModule("numpy");
    if (numpy == NULL) return NULL;
    PyObject *dtype = PyObject_GetAttrString(numpy, "dtype");
    numpy_empty = PyObject_GetAttrString(numpy, "empty");
    Py_DECREF(numpy);
    if (dtype == NULL || numpy_empty == NULL) {
        Py_XDECREF(dtype);
        return NULL;
    }
    U8 = PyObject_CallFunction(dtype, "s", "u1");
    I32 = PyObject_CallFunction(dtype, "s", "i4");
    I64 = PyObject_CallFunction(dtype, "s", "i8");
    U64 = PyObject_CallFunction(dtype, "s", "u8");
    F64 = PyObject_CallFunction(dtype, "s", "f8");
    Py_DECREF(dtype);
    if (!U8 || !I32 || !I64 || !U64 || !F64) return NULL;
    return PyModule_Create(&module);
}
