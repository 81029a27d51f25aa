"""Connection strings: merge a DSN and keyword arguments, hide passwords.

The conninfo is parsed by libpq itself (``PQconninfoParse``), merged with
the keyword arguments, and handed to libpq as keyword/value arrays: it is
never rebuilt by pasting strings.
"""

import os

from . import _core
from .errors import ProgrammingError

#: Keywords whose values never appear in a message or a repr.
SECRET_KEYWORDS = frozenset(["password", "sslpassword"])

#: Seconds allowed to connect when neither the DSN nor PGCONNECT_TIMEOUT say.
DEFAULT_CONNECT_TIMEOUT = 10

#: Session settings the plugins' text output is parsed with. They go first
#: in ``options``: the caller's own ``-c`` settings, later, still win, and
#: as client settings they override ALTER DATABASE/ROLE ... SET.
OUTPUT_SETTINGS = "-c datestyle=ISO -c intervalstyle=postgres"

_known_keywords = None


def known_keywords():
    """The connection keywords the libpq in use accepts."""
    global _known_keywords
    if _known_keywords is None:
        _known_keywords = frozenset(_core.conninfo_keywords())
    return _known_keywords


def make_params(dsn="", **kwargs):
    """Return the connection parameters of a replication connection.

    ``dsn`` is a conninfo string ("host=x dbname=y") or a URI
    ("postgresql://..."); ``kwargs`` are libpq keywords that override it
    (None values are ignored). Unknown keywords, and values holding NUL
    characters, raise `ProgrammingError`. The result asks for a logical
    replication connection (``replication=database``) whose session prints
    dates and intervals the way the decoders read them (`OUTPUT_SETTINGS`).
    """
    if not isinstance(dsn, str):
        raise TypeError("dsn must be a str, got %s" % type(dsn).__name__)
    params = _core.conninfo_parse(dsn) if dsn.strip() else {}
    known = known_keywords()
    for key, value in kwargs.items():
        if key not in known:
            raise ProgrammingError("unknown connection keyword: %r" % key)
        if value is None:
            continue
        params[key] = str(value)
    for key, value in params.items():
        if "\0" in value:
            raise ProgrammingError(
                "the value of connection keyword %r holds a NUL character" % key)
    params["replication"] = "database"
    user_options = params.get("options") or os.environ.get("PGOPTIONS", "")
    params["options"] = (OUTPUT_SETTINGS + " " + user_options).strip()
    params.setdefault("fallback_application_name", "pylogicaldecoding")
    if "connect_timeout" not in params and not os.environ.get("PGCONNECT_TIMEOUT"):
        params["connect_timeout"] = str(DEFAULT_CONNECT_TIMEOUT)
    return params


def describe(params):
    """Where a connection goes, for log lines: host, port, dbname and user
    as given (the PG* variables and libpq's defaults otherwise); never a
    password or any other setting."""
    parts = []
    for key in ("host", "hostaddr", "port", "dbname", "user"):
        value = params.get(key)
        if value:
            parts.append("%s=%s" % (key, quote_value(value)))
    return " ".join(parts) or "libpq's defaults"


def quote_value(value):
    """Quote a conninfo value the way libpq reads it back."""
    if value and all(c not in value for c in " \t\n\r\\'"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_string(params, hide_secrets=True):
    """A conninfo string for ``params``, with passwords masked as '***'."""
    parts = []
    for key, value in params.items():
        if hide_secrets and key in SECRET_KEYWORDS:
            value = "***"
        parts.append("%s=%s" % (key, quote_value(value)))
    return " ".join(parts)
