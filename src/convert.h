/* convert.h - value conversion: built-in fast converters and the call-out */

#ifndef PLD_CONVERT_H
#define PLD_CONVERT_H 1

#include "pld.h"

/* The converters done in C. Each is also a Python function of _core (the
 * registry in types.py holds them); the decoders recognise them by
 * identity and convert inline, without building the text first. */
enum conv_kind {
    CONV_CALL = 0,      /* any other callable: called with str or bytes */
    CONV_INT,           /* text: decimal integer */
    CONV_FLOAT,         /* text: float, NaN, Infinity, -Infinity */
    CONV_BOOL,          /* text: t/f/true/false */
    CONV_TEXT,          /* text: the str itself */
    CONV_BYTEA,         /* text: \x hex or escape form */
    CONV_DATE,          /* text: ISO date, infinity */
    CONV_TIMESTAMP,     /* text: ISO timestamp, infinity */
    CONV_TIMESTAMPTZ,   /* text: ISO timestamp with offset, infinity */
    CONV_INT_BIN,       /* binary: big-endian signed int of 2, 4 or 8 bytes */
    CONV_OID_BIN,       /* binary: big-endian unsigned int of 4 bytes */
    CONV_FLOAT_BIN,     /* binary: IEEE float4 or float8 */
    CONV_BOOL_BIN,      /* binary: one byte */
    CONV_TEXT_BIN,      /* binary: UTF-8 text */
    CONV_BYTES_BIN,     /* binary: the bytes themselves */
    CONV_DECIMAL,       /* text: decimal.Decimal itself, called with a str
                           made straight from the buffer */
    CONV_UUID,          /* text: uuid.UUID itself, built in C from the
                           canonical form */
    CONV_JSON,          /* text: json.loads itself, run as the default
                           decoder's scanner without the wrappers */
    CONV_NKINDS
};

HIDDEN RAISES_NEG int convert_init(PyObject *module);
HIDDEN enum conv_kind convert_kind(PyObject *conv);

/* Convert one value; `binary` says whether a CONV_CALL converter gets
 * bytes (binary format) or str (text format). Errors are set as
 * DecodingError by the caller, which knows the LSN. */
HIDDEN PyObject *convert_value(PyObject *conv, enum conv_kind kind,
                               const char *s, Py_ssize_t len,
                               int binary) RAISES;

/* Text-form helpers shared with convert_json.c: a decimal integer, a
 * float (as float(str) reads it), UTF-8 text as str. */
HIDDEN PyObject *convert_int(const char *s, Py_ssize_t len) RAISES;
HIDDEN PyObject *convert_float(const char *s, Py_ssize_t len) RAISES;
HIDDEN PyObject *convert_utf8(const char *s, Py_ssize_t len) RAISES;

/* json.loads(s) for the JSON the server prints, in C (convert_json.c):
 * the value, or NULL when this parser does not take the text (a syntax
 * it leaves to json.loads, an error): then the caller calls json.loads,
 * which gives the same value or raises its own error. Never raises. */
HIDDEN PyObject *convert_json_fast(const char *s, Py_ssize_t len);

/* _core.json_row(row) (encode_json.c): the compact JSON text of a flat
 * row in UTF-8, or None when the row holds what only the json module
 * writes. */
HIDDEN PyObject *encode_json_row(PyObject *self, PyObject *row) RAISES;
extern HIDDEN const char encode_json_row_doc[];

#endif /* PLD_CONVERT_H */
