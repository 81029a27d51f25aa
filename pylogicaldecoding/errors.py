"""The exceptions raised by pylogicaldecoding: one hierarchy under `Error`.

Errors reported by the server carry its SQLSTATE in ``pgcode`` and its
message (without the severity prefix) in ``pgerror``; both are None for
errors raised by the library itself. No message ever holds a password.

::

    Error
    +-- InterfaceError              misuse: closed connection, stream running
    +-- DatabaseError
        +-- OperationalError
        |   +-- ConnectionFailed        the connection could not be opened
        |   +-- ConnectionLost          the connection or the stream dropped
        |   +-- CommandInterrupted      stop()/close() ended a waiting command
        |   +-- SlotInUse               another consumer holds the slot
        |   +-- InsufficientPrivilege   the role lacks REPLICATION
        |   +-- SlotInvalidated         the server invalidated the slot
        +-- ProgrammingError
        |   +-- InvalidName             a slot/plugin/option name we refuse
        |   +-- SlotNotFound            the slot does not exist
        |   +-- SlotExists              the slot exists already
        |   +-- SlotMismatch            the slot exists with another plugin
        |   +-- UnknownPlugin           the server has no such output plugin
        |   |   +-- PluginNotAllowed    not in output_plugin_libraries
        |   +-- InvalidOption           a plugin option the plugin refused
        |   +-- SnapshotError           a snapshot or backfill cannot be done
        +-- NotSupportedError
        |   +-- WalLevelError           the server lacks wal_level=logical
        +-- DataError
        |   +-- DecodingError           a server message we cannot parse
        +-- InternalError
"""

import re

from . import _core

Error = _core.Error
InterfaceError = _core.InterfaceError
DatabaseError = _core.DatabaseError
OperationalError = _core.OperationalError
ProgrammingError = _core.ProgrammingError
DataError = _core.DataError
InternalError = _core.InternalError
NotSupportedError = _core.NotSupportedError
ConnectionLost = _core.ConnectionLost
DecodingError = _core.DecodingError
CommandInterrupted = _core.CommandInterrupted


class ConnectionFailed(OperationalError):
    """The connection could not be opened (server down, refused, timeout,
    authentication failed)."""


class SlotInUse(OperationalError):
    """The replication slot is active: another connection streams from it."""


class InsufficientPrivilege(OperationalError):
    """The role may not replicate (it needs REPLICATION or superuser)."""


class SlotInvalidated(OperationalError):
    """The server invalidated the replication slot: it can never stream again.

    ``reason`` is the server's ``invalidation_reason`` when known:
    ``"wal_removed"`` (the slot fell behind ``max_slot_wal_keep_size``),
    ``"rows_removed"`` (on a standby: the primary removed rows the slot
    needed; use ``hot_standby_feedback`` and a physical slot),
    ``"wal_level_insufficient"`` (the primary's ``wal_level`` dropped below
    logical), ``"idle_timeout"`` (``idle_replication_slot_timeout``, 18+);
    else None. ``slot`` is the slot's name when known.

    Retrying never helps (``reconnect`` does not): drop the slot, create it
    again, and take a new snapshot of the data, since the changes between
    the last acknowledged position and the new slot are lost.
    """

    #: what to do, appended to the message
    ADVICE = ("the slot cannot stream again: drop it and create it again, "
              "then re-snapshot the data (the changes since the last "
              "acknowledged position are lost)")

    def __init__(self, message="", reason=None, slot=None):
        super().__init__(message)
        self.reason = reason
        self.slot = slot


class InvalidName(ProgrammingError, ValueError):
    """A slot name, plugin name or option name that we refuse to send.

    Slot names are lower-case letters, digits and underscores, at most 63
    bytes; nothing is sent to the server before they are checked.
    """


class SlotNotFound(ProgrammingError):
    """The replication slot does not exist."""


class SlotExists(ProgrammingError):
    """The replication slot exists already."""


class SlotMismatch(ProgrammingError):
    """The slot exists but cannot serve this Reader (other plugin, physical
    slot, other database)."""


class UnknownPlugin(ProgrammingError):
    """The server has no output plugin of that name."""


class PluginNotAllowed(UnknownPlugin):
    """The server refuses the output plugin: its ``output_plugin_libraries``
    setting (PostgreSQL 18.6, 17.11, 16.15 and later; default ``'pgoutput,
    test_decoding'``) does not list it (SQLSTATE 42501).

    A superuser may add the plugin, if it is safe for every REPLICATION
    role, to ``output_plugin_libraries`` in postgresql.conf and reload."""


class InvalidOption(ProgrammingError):
    """The output plugin refused an option or its value."""


class SnapshotError(ProgrammingError):
    """A snapshot or a backfill cannot be done as asked: ``snapshot=True``
    on a slot that exists already, a table that does not exist, has no
    primary key (backfills) or is outside the publication."""


class WalLevelError(NotSupportedError):
    """The server is not configured for logical decoding.

    Set ``wal_level = logical`` in postgresql.conf and restart the server.
    """


_REASONS = ("wal_removed", "rows_removed", "wal_level_insufficient",
            "idle_timeout")


def _invalidation_reason(message):
    """The invalidation reason a server's message names, or None."""
    m = re.search(r'invalidated due to "([a-z_]+)"', message)    # 17+
    if m:
        return m.group(1)
    if "exceeded the maximum reserved size" in message:        # 13-16
        return "wal_removed"
    if "conflicting with recovery" in message:     # 16: rows or wal_level
        return None
    for reason in _REASONS:
        if reason in message:
            return reason
    return None


def _slot_name(message):
    m = re.search(r'replication slot "([a-z0-9_]+)"', message)
    return m.group(1) if m else None


def slot_invalidated(message, reason=None, slot=None):
    """A `SlotInvalidated` for a server message (the reason read from it
    unless given), with what to do appended."""
    if reason is None:
        reason = _invalidation_reason(message)
    return SlotInvalidated("%s\n(%s)" % (message.rstrip(), SlotInvalidated.ADVICE),
                           reason=reason, slot=slot or _slot_name(message))


def _sqlstate_42501(message):
    # 42501 is also what output_plugin_libraries answers
    if "may not be used as an output plugin" in message:
        return PluginNotAllowed(message)
    return InsufficientPrivilege(message)


def _sqlstate_55000(message):
    # object_not_in_prerequisite_state: an invalidated slot, among others
    if ("can no longer access replication slot" in message      # 17+
            or "can no longer get changes from replication slot" in message
            or "This slot has been invalidated" in message):
        return slot_invalidated(message)
    return OperationalError(message)


# SQLSTATE (or its two-character class) -> an exception class, or a
# function of the message that returns an exception: the C core calls the
# value with the server's message, raises the result and sets its pgcode
# and pgerror.
SQLSTATE_MAP = {
    "08": ConnectionLost,           # connection exception
    "57P01": ConnectionLost,        # admin_shutdown (pg_terminate_backend)
    "57P02": ConnectionLost,        # crash_shutdown
    "57P03": ConnectionLost,        # cannot_connect_now
    "55006": SlotInUse,             # object_in_use
    "42501": _sqlstate_42501,       # insufficient_privilege
    "55000": _sqlstate_55000,       # object_not_in_prerequisite_state
    "42704": SlotNotFound,          # undefined_object
    "42710": SlotExists,            # duplicate_object
    "58P01": UnknownPlugin,         # undefined_file (the plugin's library)
    "22023": InvalidOption,         # invalid_parameter_value
    "42602": InvalidName,           # invalid_name
    "0A": NotSupportedError,
    "22": DataError,
    "28": OperationalError,         # invalid authorization
    "42": ProgrammingError,
    "53": OperationalError,         # insufficient resources
    "54": OperationalError,
    "55": OperationalError,
    "57": OperationalError,
    "58": OperationalError,
    "XX": InternalError,
}

_core._set_sqlstate_map(SQLSTATE_MAP)

__all__ = [
    "Error", "InterfaceError", "DatabaseError", "OperationalError",
    "ProgrammingError", "DataError", "InternalError", "NotSupportedError",
    "ConnectionLost", "ConnectionFailed", "DecodingError", "SlotInUse",
    "InsufficientPrivilege",    "InvalidName", "SlotNotFound", "SlotExists", "SlotMismatch",
    "UnknownPlugin", "PluginNotAllowed", "InvalidOption", "WalLevelError",
    "SnapshotError", "SlotInvalidated", "CommandInterrupted",
]
