/* What fanout's C extensions (_native.c, _mergenative.c) share: argument checks and the
 * byte-order check at import. Included by both, after <Python.h>. */
#ifndef FANOUT_CBUFFERS_H
#define FANOUT_CBUFFERS_H

#include <stdint.h>

/* -1 with ValueError unless b holds a whole number of itemsize-byte items. */
static int check_items(const Py_buffer *b, Py_ssize_t itemsize, const char *name) {
    if (b->len % itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of %zd-byte items",
                     name, b->len, itemsize);
        return -1;
    }
    return 0;
}

/* -1 with ImportError on a big-endian host: words are read from bytes as little-endian. */
static int require_little_endian(const char *module) {
    const uint16_t probe = 1;
    if (*(const unsigned char *)&probe != 1) {
        PyErr_Format(PyExc_ImportError, "%s supports little-endian hosts only", module);
        return -1;
    }
    return 0;
}

#endif
