/* decode.h - the decoder types of test_decoding and pgoutput output */

#ifndef PLD_DECODE_H
#define PLD_DECODE_H 1

#include "pld.h"
#include "convert.h"

extern HIDDEN PyTypeObject tdDecoderType;
extern HIDDEN PyTypeObject pgoDecoderType;

/* A cache of converters (or column names) by the text that names them:
 * a growable array searched linearly, the handful of types of a stream. */
typedef struct {
    char *key;
    Py_ssize_t len;
    PyObject *obj;              /* converter, or the name as str */
    enum conv_kind kind;
} cacheEntry;

typedef struct {
    cacheEntry *entries;
    Py_ssize_t n, size;
} nameCache;

HIDDEN void cache_clear(nameCache *c);
HIDDEN RAISES_NEG int cache_add(nameCache *c, const char *key, Py_ssize_t len,
                                PyObject *obj, enum conv_kind kind);
HIDDEN cacheEntry *cache_find(nameCache *c, const char *key, Py_ssize_t len);

/* Raise DecodingError "<plugin> output at X/Y: <what>", chaining the
 * current exception if any. Always returns NULL. */
HIDDEN PyObject *decode_error(const char *plugin, lsn_t lsn,
                              const char *fmt, ...) RAISES;

HIDDEN RAISES_NEG int decode_init(PyObject *module);

#endif /* PLD_DECODE_H */
