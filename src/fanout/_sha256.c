/* fanout._sha256: SHA-256 compression with the x86 SHA extensions, two messages at a time.
 *
 * OpenSSL (hashlib) hashes one message at ~1.5 GB/s here: the rounds instruction's latency,
 * every round waiting for the one before. Two independent messages' rounds interleaved keep
 * the unit busy while each waits: 2.6-2.8 GB/s over both in a prototype on the same machine.
 * The local part writer hashes each part paired with the next one (`fanout._sha`).
 *
 * - available() -> bool: whether this CPU has the instructions (SHA, SSSE3, SSE4.1); nothing
 *   else here may be called without them.
 * - blocks(state, data, state2, data2): hash the whole 64-byte blocks of data into state (eight
 *   uint32 H words, native order, in a writable 32-byte buffer) and those of data2 into
 *   state2, interleaved for as many blocks as both have, the rest of the longer one alone.
 *   Lengths must be multiples of 64; state2 and data2 may be empty (one message).
 *
 * Padding and the final block are the caller's (`fanout._sha.Sha256`); tests/test_sha.py holds
 * every digest to hashlib's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_SHA_NI 1
#include <immintrin.h>

#define SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

/* H words a..h to and from the two registers the instructions work on: [f, e, b, a] and
 * [h, g, d, c] (lowest word first). */
static inline SHA_TARGET void unpack(const uint32_t *s, __m128i *s0, __m128i *s1) {
    __m128i abcd = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)s), 0xB1);
    __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(s + 4)), 0x1B);
    *s0 = _mm_alignr_epi8(abcd, efgh, 8);
    *s1 = _mm_blend_epi16(efgh, abcd, 0xF0);
}

static inline SHA_TARGET void pack(__m128i s0, __m128i s1, uint32_t *s) {
    __m128i fe_ba = _mm_shuffle_epi32(s0, 0x1B);
    s1 = _mm_shuffle_epi32(s1, 0xB1);
    _mm_storeu_si128((__m128i *)s, _mm_blend_epi16(fe_ba, s1, 0xF0));
    _mm_storeu_si128((__m128i *)(s + 4), _mm_alignr_epi8(s1, fe_ba, 8));
}

/* Rounds 4g to 4g+3 of one message (S0, S1 its state, W its last 16 schedule words, four to
 * a register): two rounds per instruction, and, interleaved with them, the schedule words of
 * group g + 1 finished (groups 4 to 15) and those of group g + 3 begun (groups 4 to 15). */
#define GROUP(S0, S1, W, g)                                                                   \
    do {                                                                                      \
        __m128i m = _mm_add_epi32(W[(g) & 3], _mm_loadu_si128((const __m128i *)(K + 4 * (g)))); \
        S1 = _mm_sha256rnds2_epu32(S1, S0, m);                                                \
        if ((g) >= 3 && (g) <= 14) {                                                          \
            __m128i back = _mm_alignr_epi8(W[(g) & 3], W[((g) + 3) & 3], 4);                  \
            W[((g) + 1) & 3] =                                                                \
                _mm_sha256msg2_epu32(_mm_add_epi32(W[((g) + 1) & 3], back), W[(g) & 3]);      \
        }                                                                                     \
        S0 = _mm_sha256rnds2_epu32(S0, S1, _mm_shuffle_epi32(m, 0x0E));                       \
        if ((g) >= 1 && (g) <= 12)                                                            \
            W[((g) + 3) & 3] = _mm_sha256msg1_epu32(W[((g) + 3) & 3], W[(g) & 3]);            \
    } while (0)

#define LOAD(W, p, swap)                                                                      \
    for (int k = 0; k < 4; k++)                                                               \
    W[k] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)((p) + 16 * k)), swap)

static SHA_TARGET void one(uint32_t *s, const unsigned char *p, Py_ssize_t n) {
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i s0, s1;
    unpack(s, &s0, &s1);
    for (; n > 0; n--, p += 64) {
        __m128i was0 = s0, was1 = s1, W[4];
        LOAD(W, p, swap);
        GROUP(s0, s1, W, 0); GROUP(s0, s1, W, 1); GROUP(s0, s1, W, 2); GROUP(s0, s1, W, 3);
        GROUP(s0, s1, W, 4); GROUP(s0, s1, W, 5); GROUP(s0, s1, W, 6); GROUP(s0, s1, W, 7);
        GROUP(s0, s1, W, 8); GROUP(s0, s1, W, 9); GROUP(s0, s1, W, 10); GROUP(s0, s1, W, 11);
        GROUP(s0, s1, W, 12); GROUP(s0, s1, W, 13); GROUP(s0, s1, W, 14); GROUP(s0, s1, W, 15);
        s0 = _mm_add_epi32(s0, was0);
        s1 = _mm_add_epi32(s1, was1);
    }
    pack(s0, s1, s);
}

#define GROUP2(g) GROUP(a0, a1, A, g); GROUP(b0, b1, B, g)

static SHA_TARGET void two(uint32_t *sa, const unsigned char *pa, uint32_t *sb,
                           const unsigned char *pb, Py_ssize_t n) {
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i a0, a1, b0, b1;
    unpack(sa, &a0, &a1);
    unpack(sb, &b0, &b1);
    for (; n > 0; n--, pa += 64, pb += 64) {
        __m128i wasa0 = a0, wasa1 = a1, wasb0 = b0, wasb1 = b1, A[4], B[4];
        LOAD(A, pa, swap);
        LOAD(B, pb, swap);
        GROUP2(0); GROUP2(1); GROUP2(2); GROUP2(3); GROUP2(4); GROUP2(5); GROUP2(6); GROUP2(7);
        GROUP2(8); GROUP2(9); GROUP2(10); GROUP2(11); GROUP2(12); GROUP2(13); GROUP2(14);
        GROUP2(15);
        a0 = _mm_add_epi32(a0, wasa0);
        a1 = _mm_add_epi32(a1, wasa1);
        b0 = _mm_add_epi32(b0, wasb0);
        b1 = _mm_add_epi32(b1, wasb1);
    }
    pack(a0, a1, sa);
    pack(b0, b1, sb);
}

static int has_sha_ni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1") &&
           __builtin_cpu_supports("ssse3");
}
#else
static int has_sha_ni(void) { return 0; }
#endif

static int available = 0;

static PyObject *py_available(PyObject *self, PyObject *args) {
    return PyBool_FromLong(available);
}

static int check_message(const Py_buffer *state, const Py_buffer *data, const char *which) {
    if (state->len == 0 && data->len == 0 && which[0] == '2') return 0; /* no second message */
    if (state->len != 32 || data->len % 64) {
        PyErr_Format(PyExc_ValueError,
                     "blocks: message %s needs a 32-byte state and whole 64-byte blocks "
                     "(state %zd bytes, data %zd bytes)",
                     which, state->len, data->len);
        return -1;
    }
    return 0;
}

static PyObject *py_blocks(PyObject *self, PyObject *args) {
    Py_buffer state, data, state2, data2;
    if (!PyArg_ParseTuple(args, "w*y*w*y*", &state, &data, &state2, &data2)) return NULL;
    PyObject *result = NULL;
    if (!available) {
        PyErr_SetString(PyExc_RuntimeError, "this CPU has no SHA extensions: use hashlib");
        goto done;
    }
    if (check_message(&state, &data, "1") || check_message(&state2, &data2, "2")) goto done;
#ifdef HAVE_SHA_NI
    {
        Py_ssize_t n1 = data.len / 64, n2 = data2.len / 64, both = n1 < n2 ? n1 : n2;
        uint32_t *s1 = state.buf, *s2 = state2.buf;
        const unsigned char *p1 = data.buf, *p2 = data2.buf;
        Py_BEGIN_ALLOW_THREADS
        if (both) two(s1, p1, s2, p2, both);
        if (n1 > both) one(s1, p1 + 64 * both, n1 - both);
        if (n2 > both) one(s2, p2 + 64 * both, n2 - both);
        Py_END_ALLOW_THREADS
    }
#endif
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&state);
    PyBuffer_Release(&data);
    PyBuffer_Release(&state2);
    PyBuffer_Release(&data2);
    return result;
}

static PyMethodDef methods[] = {
    {"available", py_available, METH_NOARGS,
     "available() -> whether this CPU has the SHA extensions the rest needs."},
    {"blocks", py_blocks, METH_VARARGS,
     "blocks(state, data, state2, data2): hash whole blocks into the states (see _sha256.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "fanout._sha256",
    .m_doc = "SHA-256 blocks with the x86 SHA extensions, two messages at a time",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__sha256(void) {
    available = has_sha_ni();
    return PyModule_Create(&module);
}
