"""pylogicaldecoding: consume PostgreSQL logical decoding from Python.

Subclass `Reader`, override `event()`, call `ack()` when a change is safely
processed, and `start()`. See README.md.
"""

from ._version import __version__
from ._core import Message, libpq_version
from .errors import (
    ConnectionLost, DatabaseError, DataError, DecodingError, Error,
    InsufficientPrivilege, InterfaceError, InternalError, InvalidName,
    InvalidOption, NotSupportedError, OperationalError, ProgrammingError,
    SlotExists, SlotInUse, SlotMismatch, SlotNotFound, UnknownPlugin,
    WalLevelError)
from .lsn import format_lsn, parse_lsn
from .reader import Reader, SlotInfo, SystemInfo

__all__ = [
    "__version__", "Reader", "Message", "SlotInfo", "SystemInfo",
    "parse_lsn", "format_lsn", "libpq_version",
    "Error", "InterfaceError", "DatabaseError", "OperationalError",
    "ProgrammingError", "DataError", "InternalError", "NotSupportedError",
    "ConnectionLost", "DecodingError", "SlotInUse", "InsufficientPrivilege",
    "InvalidName", "SlotNotFound", "SlotExists", "SlotMismatch",
    "UnknownPlugin", "InvalidOption", "WalLevelError",
]
