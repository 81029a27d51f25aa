/* wire.h - big-endian integers, PostgreSQL timestamps and LSN text */

#ifndef PLD_WIRE_H
#define PLD_WIRE_H 1

#include "pld.h"

#include <string.h>

/* Reads go through memcpy: no alignment assumption on the buffer. */
static inline uint64_t
wire_get_u64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
#if defined(__GNUC__)
# if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
# endif
#else
    {
        const unsigned char *b = (const unsigned char *)p;
        v = ((uint64_t)b[0] << 56) | ((uint64_t)b[1] << 48)
            | ((uint64_t)b[2] << 40) | ((uint64_t)b[3] << 32)
            | ((uint64_t)b[4] << 24) | ((uint64_t)b[5] << 16)
            | ((uint64_t)b[6] << 8) | (uint64_t)b[7];
    }
#endif
    return v;
}

static inline uint32_t
wire_get_u32(const char *p)
{
    const unsigned char *b = (const unsigned char *)p;
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16)
        | ((uint32_t)b[2] << 8) | (uint32_t)b[3];
}

static inline uint16_t
wire_get_u16(const char *p)
{
    const unsigned char *b = (const unsigned char *)p;
    return (uint16_t)(((uint16_t)b[0] << 8) | (uint16_t)b[1]);
}

static inline void
wire_put_u64(char *p, uint64_t v)
{
    int i;
    for (i = 7; i >= 0; i--) {
        p[i] = (char)(v & 0xFF);
        v >>= 8;
    }
}

/* Sizes of the COPY BOTH messages (type byte included) */
#define WIRE_XLOGDATA_HDR 25        /* 'w' + 3 * Int64 */
#define WIRE_KEEPALIVE_LEN 18       /* 'k' + 2 * Int64 + Byte1 */
#define WIRE_STATUS_LEN 34          /* 'r' + 4 * Int64 + Byte1 */

/* Microseconds between 1970-01-01 and 2000-01-01, UTC */
#define WIRE_PG_EPOCH_OFFSET_US INT64_C(946684800000000)

HIDDEN RAISES_NEG int wire_init(void);
HIDDEN int64_t wire_pg_now(void);
HIDDEN double wire_monotonic(void);
HIDDEN PyObject *wire_pgtime_to_datetime(int64_t t) RAISES;
HIDDEN void wire_build_status(char *buf, lsn_t written, lsn_t flushed,
                              lsn_t applied, int64_t now, int reply);
/* "FFFFFFFF/FFFFFFFF" and its NUL; Python's %-formats have no %X */
#define LSN_BUFSIZE 20
HIDDEN int wire_format_lsn(char *buf, size_t size, lsn_t lsn);
HIDDEN RAISES_NEG int wire_parse_lsn(const char *s, Py_ssize_t len, lsn_t *out);

#endif /* PLD_WIRE_H */
