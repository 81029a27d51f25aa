"""The text of replication commands, built from validated, quoted parts.

Slot names are checked against PostgreSQL's own rule before any command is
built; plugin and option names are quoted as identifiers, option values
as string literals. Nothing a caller passes can end a command early or
add another one.
"""

import re

from .errors import InvalidName, NotSupportedError
from .lsn import format_lsn, parse_lsn

_SLOT_RE = re.compile(r"[a-z0-9_]{1,63}\Z")
_PLUGIN_RE = re.compile(r"[A-Za-z0-9_.\-]{1,63}\Z")
_SNAPSHOT_ACTIONS = ("export", "use", "nothing")


def check_slot_name(name):
    """Return ``name`` if it is a valid slot name, else raise InvalidName."""
    if not isinstance(name, str):
        raise InvalidName("a slot name must be a str, got %s"
                          % type(name).__name__)
    if not _SLOT_RE.match(name):
        raise InvalidName(
            "invalid replication slot name %r: use 1 to 63 lower-case "
            "letters, digits and underscores" % name)
    return name


def check_plugin_name(name):
    """Return ``name`` if it can be an output plugin name, else raise."""
    if not isinstance(name, str) or not _PLUGIN_RE.match(name):
        raise InvalidName(
            "invalid output plugin name %r: use letters, digits, '_', '.' "
            "and '-'" % (name,))
    return name


def quote_ident(name):
    """Quote an identifier of the replication grammar ("...").

    The replication command scanner has no escape for a double quote
    inside a quoted identifier, so such names are refused.
    """
    if not name or "\0" in name or '"' in name:
        raise InvalidName("an identifier cannot be empty or hold NUL or "
                          "double quotes: %r" % (name,))
    return '"' + name + '"'


def quote_literal(value):
    """Quote a string literal ('...'), doubling the quotes inside."""
    if "\0" in value:
        raise InvalidName("a value cannot hold a NUL character: %r" % (value,))
    return "'" + value.replace("'", "''") + "'"


def option_value(value):
    """The text sent for a plugin option value (None: no value)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value)
    return str(value)


def check_options(options):
    """Normalise plugin options to a list of (name, text or None)."""
    if options is None:
        return []
    if not hasattr(options, "items"):
        raise TypeError("options must be a mapping, got %s"
                        % type(options).__name__)
    rv = []
    for name, value in options.items():
        if not isinstance(name, str) or not name:
            raise InvalidName("plugin option names must be non-empty str, "
                              "got %r" % (name,))
        quote_ident(name)
        text = option_value(value)
        if text is not None:
            quote_literal(text)
        rv.append((name, text))
    return rv


def lsn_int(lsn):
    """An LSN given as an int or an 'X/Y' str, as an int."""
    if isinstance(lsn, str):
        return parse_lsn(lsn)
    if not isinstance(lsn, int) or isinstance(lsn, bool):
        raise TypeError("an LSN must be an int or a str like '16/B374D848'")
    return lsn


def lsn_text(lsn):
    """An LSN (int or 'X/Y' str) as the 'X/Y' text of the grammar."""
    return format_lsn(lsn_int(lsn))


def start_replication(slot, lsn=0, options=()):
    """START_REPLICATION SLOT "slot" LOGICAL X/Y ("opt" 'value', ...)"""
    cmd = "START_REPLICATION SLOT %s LOGICAL %s" % (
        quote_ident(check_slot_name(slot)), lsn_text(lsn))
    if options:
        parts = []
        for name, text in options:
            if text is None:
                parts.append(quote_ident(name))
            else:
                parts.append("%s %s" % (quote_ident(name), quote_literal(text)))
        cmd += " (%s)" % ", ".join(parts)
    return cmd


def create_slot(slot, plugin, temporary=False, snapshot="export",
                server_version=150000, two_phase=False, failover=False):
    """CREATE_REPLICATION_SLOT, in the form the server version takes
    (``two_phase`` needs 15+ and ``failover`` 17+: the caller checks)."""
    if snapshot not in _SNAPSHOT_ACTIONS:
        raise ValueError("snapshot must be one of %s, got %r"
                         % (", ".join(_SNAPSHOT_ACTIONS), snapshot))
    cmd = "CREATE_REPLICATION_SLOT %s %sLOGICAL %s" % (
        quote_ident(check_slot_name(slot)),
        "TEMPORARY " if temporary else "",
        quote_ident(check_plugin_name(plugin)))
    if server_version >= 150000:
        cmd += " (SNAPSHOT %s%s%s)" % (
            quote_literal(snapshot), ", TWO_PHASE" if two_phase else "",
            ", FAILOVER" if failover else "")
    else:
        cmd += {"export": " EXPORT_SNAPSHOT", "use": " USE_SNAPSHOT",
                "nothing": " NOEXPORT_SNAPSHOT"}[snapshot]
    return cmd


def check_slot_features(server_version, two_phase=False, failover=False):
    """Raise NotSupportedError if the server cannot make a slot with these
    features: two-phase needs 15+ (over the replication protocol),
    failover 17+, and 17 refuses both at once."""
    if two_phase and server_version < 150000:
        raise NotSupportedError("two-phase slots need PostgreSQL 15 or later")
    if failover and server_version < 170000:
        raise NotSupportedError("failover slots need PostgreSQL 17 or later")
    if failover and two_phase and server_version < 180000:
        raise NotSupportedError(
            "PostgreSQL 17 cannot make a slot both failover and two-phase "
            "(18 can); choose one")


def drop_slot(slot, wait=False):
    """DROP_REPLICATION_SLOT "slot" [WAIT]"""
    return "DROP_REPLICATION_SLOT %s%s" % (
        quote_ident(check_slot_name(slot)), " WAIT" if wait else "")


def slot_query(slot):
    """SQL reading a slot's row from pg_replication_slots."""
    return ("SELECT slot_name, plugin, slot_type, database, temporary, active,"
            " active_pid, confirmed_flush_lsn, restart_lsn"
            " FROM pg_catalog.pg_replication_slots WHERE slot_name = %s"
            % quote_literal(check_slot_name(slot)))
