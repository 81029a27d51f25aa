/* pld.h - definitions shared by every file of the pylogicaldecoding C core */

#ifndef PLD_H
#define PLD_H 1

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <libpq-fe.h>

/* Symbols shared between the files of the module but not exported. */
#if defined(__GNUC__) && (__GNUC__ >= 4)
#define HIDDEN __attribute__((visibility("hidden")))
#else
#define HIDDEN
#endif

/* Markers, as in psycopg2: a negative return (or NULL) means "exception set" */
#define RAISES_NEG
#define RAISES
#define BORROWED

#ifndef PLD_VERSION
#define PLD_VERSION "unknown"
#endif

/* The code that differs between platforms, each part chosen by a macro
 * that a Linux build can also force (-DPLD_NO_...: scripts/run-portable.sh
 * builds and tests the portable paths in CI):
 * PLD_NO_CONDATTR_SETCLOCK  no pthread_condattr_setclock() (macOS): the
 *                           keepalive thread times its waits on the
 *                           realtime clock
 * PLD_NO_PPOLL              no ppoll() (all but Linux): poll(), waits
 *                           rounded up to a millisecond */
#if defined(__APPLE__) && !defined(PLD_NO_CONDATTR_SETCLOCK)
#define PLD_NO_CONDATTR_SETCLOCK 1
#endif
#if !defined(__linux__) && !defined(PLD_NO_PPOLL)
#define PLD_NO_PPOLL 1
#endif

/* A WAL position. No server header: the type and its "X/Y" form are ours. */
typedef uint64_t lsn_t;
#define LSN_FMT "%X/%X"
#define LSN_ARGS(l) (unsigned int)((uint64_t)(l) >> 32), (unsigned int)(l)

/* Exception classes, created in module.c */
extern HIDDEN PyObject *pld_Error;
extern HIDDEN PyObject *pld_InterfaceError;
extern HIDDEN PyObject *pld_DatabaseError;
extern HIDDEN PyObject *pld_OperationalError;
extern HIDDEN PyObject *pld_ProgrammingError;
extern HIDDEN PyObject *pld_DataError;
extern HIDDEN PyObject *pld_InternalError;
extern HIDDEN PyObject *pld_NotSupportedError;
extern HIDDEN PyObject *pld_ConnectionLost;
extern HIDDEN PyObject *pld_CommandInterrupted;
extern HIDDEN PyObject *pld_DecodingError;

/* dict SQLSTATE (5 chars or 2-char class) -> exception class, filled by errors.py */
extern HIDDEN PyObject *pld_sqlstate_map;

#endif /* PLD_H */
