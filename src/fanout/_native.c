/* fanout._native: prepare's per-ID hot loops in C, run without the GIL.
 *
 * - fingerprints(buf, starts, lens, out): the 64-bit fingerprint of each ID
 *   buf[starts[i] : starts[i] + lens[i]] into out[i] (the function `fanout._dedupe` documents;
 *   tests/test_dedupe.py holds it to a plain-Python copy of the definition).
 * - fingerprints_strided(buf, start, stride, size, out): the same for len(out) IDs of `size`
 *   bytes, `stride` bytes apart from `start`.
 * - insert(table, fps, dup): add each of fps to the open-addressing hash set `table`, in order;
 *   dup[i] = 1 if fps[i] was already in it (earlier in fps included), else 0. Returns how many
 *   were new.
 * - rehash(old, new): every fingerprint of `old` into the empty `new`.
 *
 * Arrays are passed as buffers (numpy arrays of the right dtype, C-contiguous): int64 for starts
 * and lens, uint64 for fingerprints and tables, uint8 for dup. Every index is checked before the
 * loops run, so bad arguments raise ValueError and never touch memory out of range.
 *
 * A table holds `slots` uint64 slots plus one last word: 0 marks an empty slot, and the last word
 * says whether the fingerprint 0 (which cannot be stored in a slot) was added. A fingerprint goes
 * to slot (fp * slots) >> 64 and probes linearly, wrapping around; the caller keeps the table
 * at most ~80% full (`fanout._dedupe._FingerprintSet`). Inserts look up a few fingerprints
 * ahead with a prefetch, since a table of tens of millions of IDs is far bigger than the caches.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

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

static int check_items(Py_buffer *b, Py_ssize_t itemsize, const char *name) {
    if (b->len % itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of %zd-byte items",
                     name, b->len, itemsize);
        return -1;
    }
    return 0;
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

static PyObject *py_fingerprints_strided(PyObject *self, PyObject *args) {
    Py_buffer buf, out;
    Py_ssize_t start, stride, size;
    if (!PyArg_ParseTuple(args, "y*nnnw*", &buf, &start, &stride, &size, &out)) return NULL;
    PyObject *result = NULL;
    if (check_items(&out, 8, "out")) goto done;
    Py_ssize_t count = out.len / 8;
    if (start < 0 || stride < 1 || size < 0 ||
        (count && (start > buf.len - size || count - 1 > (buf.len - size - start) / stride))) {
        PyErr_SetString(PyExc_ValueError, "the strided IDs run outside the buffer");
        goto done;
    }
    const unsigned char *data = (const unsigned char *)buf.buf + start;
    const unsigned char *end = (const unsigned char *)buf.buf + buf.len;
    uint64_t *o = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) o[i] = fingerprint(data + i * stride, size, end);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&out);
    return result;
}

static inline uint64_t home(uint64_t fp, uint64_t slots) {
    return (uint64_t)(((__uint128_t)fp * slots) >> 64);
}

/* Add fp; 1 if it was there already. */
static inline int add_one(uint64_t *table, uint64_t slots, uint64_t fp) {
    if (fp == 0) {
        int had = table[slots] != 0;
        table[slots] = 1;
        return had;
    }
    uint64_t at = home(fp, slots);
    for (;;) {
        uint64_t here = table[at];
        if (here == fp) return 1;
        if (here == 0) {
            table[at] = fp;
            return 0;
        }
        if (++at == slots) at = 0;
    }
}

static int check_table(Py_buffer *table, uint64_t *slots) {
    if (check_items(table, 8, "table")) return -1;
    if (table->len < 16) {
        PyErr_SetString(PyExc_ValueError, "table: needs at least one slot and the last word");
        return -1;
    }
    *slots = (uint64_t)(table->len / 8 - 1);
    return 0;
}

static PyObject *py_insert(PyObject *self, PyObject *args) {
    Py_buffer table, fps, dup;
    if (!PyArg_ParseTuple(args, "w*y*w*", &table, &fps, &dup)) return NULL;
    PyObject *result = NULL;
    uint64_t slots;
    if (check_table(&table, &slots) || check_items(&fps, 8, "fps")) goto done;
    Py_ssize_t count = fps.len / 8;
    if (dup.len != count) {
        PyErr_SetString(PyExc_ValueError, "dup and fps differ in length");
        goto done;
    }
    uint64_t *t = table.buf;
    const uint64_t *f = fps.buf;
    unsigned char *d = dup.buf;
    Py_ssize_t fresh = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        if (i + AHEAD < count) __builtin_prefetch(t + home(f[i + AHEAD], slots), 1, 0);
        d[i] = (unsigned char)add_one(t, slots, f[i]);
        fresh += !d[i];
    }
    Py_END_ALLOW_THREADS
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
    uint64_t old_slots, slots;
    if (check_table(&old, &old_slots) || check_table(&new, &slots)) goto done;
    const uint64_t *o = old.buf;
    uint64_t *t = new.buf;
    Py_BEGIN_ALLOW_THREADS
    for (uint64_t i = 0; i < old_slots; i++) {
        if (o[i]) add_one(t, slots, o[i]);
    }
    t[slots] = o[old_slots];
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&old);
    PyBuffer_Release(&new);
    return result;
}

static PyMethodDef methods[] = {
    {"fingerprints", py_fingerprints, METH_VARARGS,
     "fingerprints(buf, starts, lens, out): out[i] = the fingerprint of ID i."},
    {"fingerprints_strided", py_fingerprints_strided, METH_VARARGS,
     "fingerprints_strided(buf, start, stride, size, out): fixed-width IDs' fingerprints."},
    {"insert", py_insert, METH_VARARGS,
     "insert(table, fps, dup) -> new: add fps to the set; dup[i] = 1 if already there."},
    {"rehash", py_rehash, METH_VARARGS, "rehash(old, new): old's fingerprints into new."},
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
    const uint16_t probe = 1;
    if (*(const unsigned char *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "fanout._native supports little-endian hosts only");
        return NULL;
    }
    return PyModule_Create(&module);
}
