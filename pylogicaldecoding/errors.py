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
        |   +-- SlotInUse               another consumer holds the slot
        |   +-- InsufficientPrivilege   the role lacks REPLICATION
        +-- ProgrammingError
        |   +-- InvalidName             a slot/plugin/option name we refuse
        |   +-- SlotNotFound            the slot does not exist
        |   +-- SlotExists              the slot exists already
        |   +-- SlotMismatch            the slot exists with another plugin
        |   +-- UnknownPlugin           the server has no such output plugin
        |   +-- InvalidOption           a plugin option the plugin refused
        |   +-- SnapshotError           a snapshot or backfill cannot be done
        +-- NotSupportedError
        |   +-- WalLevelError           the server lacks wal_level=logical
        +-- DataError
        |   +-- DecodingError           a server message we cannot parse
        +-- InternalError
"""

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


class ConnectionFailed(OperationalError):
    """The connection could not be opened (server down, refused, timeout,
    authentication failed)."""


class SlotInUse(OperationalError):
    """The replication slot is active: another connection streams from it."""


class InsufficientPrivilege(OperationalError):
    """The role may not replicate (it needs REPLICATION or superuser)."""


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


# SQLSTATE (or its two-character class) -> class, used by the C core.
SQLSTATE_MAP = {
    "08": ConnectionLost,           # connection exception
    "57P01": ConnectionLost,        # admin_shutdown (pg_terminate_backend)
    "57P02": ConnectionLost,        # crash_shutdown
    "57P03": ConnectionLost,        # cannot_connect_now
    "55006": SlotInUse,             # object_in_use
    "42501": InsufficientPrivilege,
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
    "UnknownPlugin", "InvalidOption", "WalLevelError", "SnapshotError",
]
