"""pylogicaldecoding: consume PostgreSQL logical decoding from Python.

Subclass `Reader`, override `event()`, call `ack()` when a change is safely
processed, and `start()`. See README.md.
"""

from typing import TYPE_CHECKING

from ._version import __version__
from ._core import libpq_version
from ._core import Message as StreamMessage
from .changes import (
    UNCHANGED, Begin, BeginPrepare, Change, Column, Commit, CommitPrepared,
    Delete, Insert, LogicalMessage, Message, Origin, Prepare, Relation,
    RollbackPrepared, StreamAbort, StreamCommit, StreamPrepare, StreamStart,
    StreamStop, Truncate, Type, Update)
from .changes import SnapshotEnd, SnapshotRow, SnapshotStart
from .decoders import create_publication, drop_publication
from .errors import (
    ConnectionFailed, ConnectionLost, DatabaseError, DataError, DecodingError,
    Error, InsufficientPrivilege, InterfaceError, InternalError, InvalidName,
    InvalidOption, NotSupportedError, OperationalError, ProgrammingError,
    PluginNotAllowed, SlotExists, SlotInUse, SlotInvalidated, SlotMismatch,
    SlotNotFound, UnknownPlugin, WalLevelError)
from .errors import SnapshotError
from .errors import CommandInterrupted
from .lsn import format_lsn, parse_lsn
from .reader import Reader, Reconnect, SlotInfo, SystemInfo

if TYPE_CHECKING:
    from .aio import AsyncReader


def __getattr__(name):
    # AsyncReader is imported on first use: a blocking consumer does not
    # pay for asyncio at start-up
    if name == "AsyncReader":
        from .aio import AsyncReader
        return AsyncReader
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


__all__ = [
    "__version__", "Reader", "AsyncReader", "Reconnect", "StreamMessage", "SlotInfo", "SystemInfo",
    "Change", "Begin", "Commit", "Insert", "Update", "Delete", "Truncate",
    "Message", "LogicalMessage", "Relation", "Column", "Type", "Origin",
    "StreamStart", "StreamStop", "StreamCommit", "StreamAbort",
    "BeginPrepare", "Prepare", "CommitPrepared", "RollbackPrepared",
    "StreamPrepare", "UNCHANGED", "create_publication", "drop_publication",
    "parse_lsn", "format_lsn", "libpq_version",
    "Error", "InterfaceError", "DatabaseError", "OperationalError",
    "ProgrammingError", "DataError", "InternalError", "NotSupportedError",
    "ConnectionLost", "ConnectionFailed", "DecodingError", "SlotInUse",
    "InsufficientPrivilege",    "InvalidName", "SlotNotFound", "SlotExists", "SlotMismatch",
    "UnknownPlugin", "InvalidOption", "WalLevelError",
    "SnapshotRow", "SnapshotStart", "SnapshotEnd", "SnapshotError",
    "PluginNotAllowed", "SlotInvalidated", "CommandInterrupted",
]
