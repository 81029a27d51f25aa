/* wire.c - time and LSN helpers for the wire protocol */

#include "wire.h"

#include <time.h>
#include <datetime.h>

static PyObject *pg_epoch = NULL;   /* datetime(2000, 1, 1, tzinfo=utc) */

/* Import the datetime C API (per translation unit) and build the epoch. */
RAISES_NEG int
wire_init(void)
{
    PyDateTime_IMPORT;
    if (!PyDateTimeAPI) { return -1; }
    if (!pg_epoch) {
        pg_epoch = PyDateTimeAPI->DateTime_FromDateAndTime(
            2000, 1, 1, 0, 0, 0, 0, PyDateTime_TimeZone_UTC,
            PyDateTimeAPI->DateTimeType);
        if (!pg_epoch) { return -1; }
    }
    return 0;
}

/* Now, in microseconds since 2000-01-01 UTC (the protocol's clock). */
int64_t
wire_pg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000
        - WIRE_PG_EPOCH_OFFSET_US;
}

/* Seconds on a clock that never goes back, for deadlines. */
double
wire_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A protocol timestamp as an aware datetime in UTC. */
PyObject *
wire_pgtime_to_datetime(int64_t t)
{
    PyObject *delta = NULL, *rv = NULL;
    int64_t days, rem;

    days = t / INT64_C(86400000000);
    rem = t % INT64_C(86400000000);
    if (rem < 0) { rem += INT64_C(86400000000); days -= 1; }
    if (!(delta = PyDelta_FromDSU((int)days, (int)(rem / 1000000),
                                  (int)(rem % 1000000)))) {
        goto exit;
    }
    rv = PyNumber_Add(pg_epoch, delta);

exit:
    Py_XDECREF(delta);
    return rv;
}

/* Fill a 34-byte standby status update. */
void
wire_build_status(char *buf, lsn_t written, lsn_t flushed, lsn_t applied,
                  int64_t now, int reply)
{
    buf[0] = 'r';
    wire_put_u64(buf + 1, written);
    wire_put_u64(buf + 9, flushed);
    wire_put_u64(buf + 17, applied);
    wire_put_u64(buf + 25, (uint64_t)now);
    buf[33] = reply ? 1 : 0;
}

int
wire_format_lsn(char *buf, size_t size, lsn_t lsn)
{
    return snprintf(buf, size, LSN_FMT, LSN_ARGS(lsn));
}

static int
parse_hex32(const char *s, Py_ssize_t len, uint32_t *out)
{
    uint64_t v = 0;
    Py_ssize_t i;

    if (len < 1 || len > 8) { return -1; }
    for (i = 0; i < len; i++) {
        char c = s[i];
        int d;
        if (c >= '0' && c <= '9') { d = c - '0'; }
        else if (c >= 'a' && c <= 'f') { d = c - 'a' + 10; }
        else if (c >= 'A' && c <= 'F') { d = c - 'A' + 10; }
        else { return -1; }
        v = (v << 4) | (uint64_t)d;
    }
    *out = (uint32_t)v;
    return 0;
}

/* Parse "16/B374D848"; set ValueError and return -1 if malformed. */
RAISES_NEG int
wire_parse_lsn(const char *s, Py_ssize_t len, lsn_t *out)
{
    const char *slash;
    uint32_t hi, lo;

    slash = memchr(s, '/', (size_t)len);
    if (!slash
        || parse_hex32(s, slash - s, &hi) < 0
        || parse_hex32(slash + 1, len - (slash - s) - 1, &lo) < 0) {
        PyObject *text = PyUnicode_DecodeUTF8(s, len, "replace");
        if (text) {
            PyErr_Format(PyExc_ValueError, "invalid LSN: %R "
                "(expected two hexadecimal numbers like '16/B374D848')", text);
            Py_DECREF(text);
        }
        return -1;
    }
    *out = ((lsn_t)hi << 32) | lo;
    return 0;
}
