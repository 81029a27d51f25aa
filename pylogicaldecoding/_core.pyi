"""Type stubs for pylogicaldecoding._core, the C core."""

from datetime import date, datetime
from typing import (Any, Callable, ClassVar, Dict, List, Mapping, Optional,
                    Sequence, Tuple, Union)

__version__: str
built_with: str

Lsn = Union[int, str]

# -- exceptions --

class Error(Exception):
    pgcode: Optional[str]
    pgerror: Optional[str]

class InterfaceError(Error): ...
class DatabaseError(Error): ...
class OperationalError(DatabaseError): ...
class ProgrammingError(DatabaseError): ...
class DataError(DatabaseError): ...
class InternalError(DatabaseError): ...
class NotSupportedError(DatabaseError): ...
class ConnectionLost(OperationalError): ...
class DecodingError(DataError): ...

# -- functions --

def conninfo_parse(dsn: str) -> Dict[str, str]: ...
def conninfo_keywords() -> List[str]: ...
def parse_lsn(text: str) -> int: ...
def format_lsn(lsn: int) -> str: ...
def libpq_version() -> int: ...
def _set_sqlstate_map(mapping: Mapping[str, Callable[[str], BaseException]]) -> None: ...

# -- the stream --

class Message:
    payload: Union[str, bytes]
    data_start: int
    wal_end: int
    send_time_us: int
    change: Any
    def __init__(self, payload: Union[str, bytes], data_start: int = ...,
                 wal_end: int = ..., send_time: int = ...) -> None: ...
    @property
    def send_time(self) -> datetime: ...
    @property
    def data_start_lsn(self) -> str: ...

class Connection:
    """A libpq connection and its lock (`ReaderBase.connection`)."""
    @property
    def closed(self) -> bool: ...
    @property
    def status(self) -> str: ...
    @property
    def owner_pid(self) -> Optional[int]: ...

class ReaderBase:
    @property
    def connection(self) -> Connection: ...
    decoder: Optional[Callable[[Message], Any]]
    binary: bool
    status_interval: float
    keepalive_interval: float
    confirm_keepalives: bool
    @property
    def closed(self) -> bool: ...
    @property
    def copying(self) -> bool: ...
    @property
    def streaming(self) -> bool: ...
    @property
    def server_version(self) -> int: ...
    @property
    def backend_pid(self) -> int: ...
    @property
    def flushed_lsn(self) -> int: ...
    @property
    def received_lsn(self) -> int: ...
    @property
    def server_wal_end(self) -> int: ...
    @property
    def sent_flushed_lsn(self) -> int: ...
    @property
    def status_count(self) -> int: ...
    @property
    def message_count(self) -> int: ...
    @property
    def bytes_received(self) -> int: ...
    @property
    def transaction_count(self) -> int: ...
    @property
    def ack_count(self) -> int: ...
    @property
    def wait_count(self) -> int: ...
    @property
    def batch_wait_count(self) -> int: ...
    @property
    def batch_pause_count(self) -> int: ...
    @property
    def last_commit(self) -> Any: ...
    def _connect(self, keywords: Sequence[str], values: Sequence[str]) -> None: ...
    def execute(self, command: str, timeout: Optional[float] = ...) -> Tuple[Tuple[str, ...], List[Tuple[Optional[str], ...]]]: ...
    def start_copy(self, command: str, timeout: Optional[float] = ...) -> None: ...
    def _stream(self, until_lsn: Optional[Lsn] = ...) -> None: ...
    def read_message(self) -> Union[Message, None, bool]: ...
    def send_feedback(self, reply: bool = ...) -> None: ...
    def end_copy(self, timeout: float = ...) -> bool: ...
    def ack(self, lsn: Optional[Lsn] = ...) -> None: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...
    def fileno(self) -> int: ...
    # the non-blocking path (pylogicaldecoding.aio)
    until_lsn: int
    backlog_end: int
    recv_timeout: float
    def _connect_start(self, keywords: Sequence[str], values: Sequence[str]) -> None: ...
    def _connect_poll(self) -> int: ...
    def _send_query(self, command: str, copy: bool = ...) -> bool: ...
    def _flush(self) -> bool: ...
    def _poll_result(self) -> Union[None, bool, Tuple[Tuple[str, ...], List[Tuple[Optional[str], ...]]]]: ...
    def _end_copy_start(self) -> bool: ...
    def _end_copy_poll(self) -> bool: ...
    def _keepalive(self, on: bool) -> None: ...
    def _liveness_before(self) -> float: ...
    def _liveness_after(self, ready: bool) -> None: ...
    def _liveness_reset(self) -> None: ...
    def _set_batching(self, on: bool) -> None: ...
    def _batch_before_wait(self) -> Tuple[Optional[float], float]: ...

class AsyncIter:
    """The async iterator of AsyncReader's streams (C fast path)."""
    enabled: int
    stopped: int
    yielded: float
    def __init__(self, reader: ReaderBase, slow: Callable[..., Any],
                 yield_every: float = ...) -> None: ...
    def __aiter__(self) -> "AsyncIter": ...
    def __anext__(self) -> Any: ...
    def __await__(self) -> Any: ...

# -- decoded changes --

class UnchangedType: ...

UNCHANGED: UnchangedType

class Change:
    _fields: ClassVar[Tuple[str, ...]]
    def _asdict(self) -> Dict[str, Any]: ...

class Insert(Change):
    _fields: ClassVar[Tuple[str, ...]]
    schema: str
    table: str
    new: Optional[Dict[str, Any]]
    old: Optional[Dict[str, Any]]
    lsn: Optional[int]
    xid: Optional[int]
    relid: Optional[int]
    def __init__(self, schema: Any = ..., table: Any = ..., new: Any = ..., old: Any = ..., lsn: Any = ..., xid: Any = ..., relid: Any = ...) -> None: ...

class Begin(Change):
    _fields: ClassVar[Tuple[str, ...]]
    xid: Optional[int]
    lsn: Optional[int]
    commit_time: Optional[datetime]
    final_lsn: Optional[int]
    def __init__(self, xid: Any = ..., lsn: Any = ..., commit_time: Any = ..., final_lsn: Any = ...) -> None: ...

class Commit(Change):
    _fields: ClassVar[Tuple[str, ...]]
    xid: Optional[int]
    lsn: Optional[int]
    commit_time: Optional[datetime]
    end_lsn: Optional[int]
    flags: Optional[int]
    def __init__(self, xid: Any = ..., lsn: Any = ..., commit_time: Any = ..., end_lsn: Any = ..., flags: Any = ...) -> None: ...

class Update(Change):
    _fields: ClassVar[Tuple[str, ...]]
    schema: str
    table: str
    new: Optional[Dict[str, Any]]
    old: Optional[Dict[str, Any]]
    lsn: Optional[int]
    xid: Optional[int]
    relid: Optional[int]
    def __init__(self, schema: Any = ..., table: Any = ..., new: Any = ..., old: Any = ..., lsn: Any = ..., xid: Any = ..., relid: Any = ...) -> None: ...

class Delete(Change):
    _fields: ClassVar[Tuple[str, ...]]
    schema: str
    table: str
    new: Optional[Dict[str, Any]]
    old: Optional[Dict[str, Any]]
    lsn: Optional[int]
    xid: Optional[int]
    relid: Optional[int]
    def __init__(self, schema: Any = ..., table: Any = ..., new: Any = ..., old: Any = ..., lsn: Any = ..., xid: Any = ..., relid: Any = ...) -> None: ...

class Truncate(Change):
    _fields: ClassVar[Tuple[str, ...]]
    tables: List[Tuple[str, str]]
    cascade: bool
    restart_identity: bool
    lsn: Optional[int]
    xid: Optional[int]
    relids: Optional[List[int]]
    def __init__(self, tables: Any = ..., cascade: Any = ..., restart_identity: Any = ..., lsn: Any = ..., xid: Any = ..., relids: Any = ...) -> None: ...

class LogicalMessage(Change):
    _fields: ClassVar[Tuple[str, ...]]
    prefix: str
    content: bytes
    transactional: bool
    lsn: Optional[int]
    xid: Optional[int]
    def __init__(self, prefix: Any = ..., content: Any = ..., transactional: Any = ..., lsn: Any = ..., xid: Any = ...) -> None: ...

class Relation(Change):
    _fields: ClassVar[Tuple[str, ...]]
    relid: Optional[int]
    schema: str
    table: str
    replica_identity: Optional[str]
    columns: List[Column]
    lsn: Optional[int]
    xid: Optional[int]
    def __init__(self, relid: Any = ..., schema: Any = ..., table: Any = ..., replica_identity: Any = ..., columns: Any = ..., lsn: Any = ..., xid: Any = ...) -> None: ...

class Column(Change):
    _fields: ClassVar[Tuple[str, ...]]
    name: str
    type_oid: int
    type_modifier: int
    key: bool
    def __init__(self, name: Any = ..., type_oid: Any = ..., type_modifier: Any = ..., key: Any = ...) -> None: ...

class Type(Change):
    _fields: ClassVar[Tuple[str, ...]]
    oid: int
    schema: str
    name: str
    xid: Optional[int]
    def __init__(self, oid: Any = ..., schema: Any = ..., name: Any = ..., xid: Any = ...) -> None: ...

class Origin(Change):
    _fields: ClassVar[Tuple[str, ...]]
    name: str
    lsn: Optional[int]
    def __init__(self, name: Any = ..., lsn: Any = ...) -> None: ...

class StreamStart(Change):
    _fields: ClassVar[Tuple[str, ...]]
    xid: Optional[int]
    first_segment: Optional[bool]
    def __init__(self, xid: Any = ..., first_segment: Any = ...) -> None: ...

class StreamStop(Change):
    _fields: ClassVar[Tuple[str, ...]]
    pass
    def __init__(self) -> None: ...

class StreamCommit(Change):
    _fields: ClassVar[Tuple[str, ...]]
    xid: Optional[int]
    lsn: Optional[int]
    commit_time: Optional[datetime]
    end_lsn: Optional[int]
    flags: Optional[int]
    def __init__(self, xid: Any = ..., lsn: Any = ..., commit_time: Any = ..., end_lsn: Any = ..., flags: Any = ...) -> None: ...

class StreamAbort(Change):
    _fields: ClassVar[Tuple[str, ...]]
    xid: Optional[int]
    subxid: Optional[int]
    abort_lsn: Optional[int]
    abort_time: Optional[datetime]
    def __init__(self, xid: Any = ..., subxid: Any = ..., abort_lsn: Any = ..., abort_time: Any = ...) -> None: ...

class BeginPrepare(Change):
    _fields: ClassVar[Tuple[str, ...]]
    xid: Optional[int]
    gid: str
    lsn: Optional[int]
    end_lsn: Optional[int]
    prepare_time: Optional[datetime]
    flags: Optional[int]
    def __init__(self, xid: Any = ..., gid: Any = ..., lsn: Any = ..., end_lsn: Any = ..., prepare_time: Any = ..., flags: Any = ...) -> None: ...

class Prepare(Change):
    _fields: ClassVar[Tuple[str, ...]]
    xid: Optional[int]
    gid: str
    lsn: Optional[int]
    end_lsn: Optional[int]
    prepare_time: Optional[datetime]
    flags: Optional[int]
    def __init__(self, xid: Any = ..., gid: Any = ..., lsn: Any = ..., end_lsn: Any = ..., prepare_time: Any = ..., flags: Any = ...) -> None: ...

class CommitPrepared(Change):
    _fields: ClassVar[Tuple[str, ...]]
    xid: Optional[int]
    gid: str
    lsn: Optional[int]
    end_lsn: Optional[int]
    commit_time: Optional[datetime]
    flags: Optional[int]
    def __init__(self, xid: Any = ..., gid: Any = ..., lsn: Any = ..., end_lsn: Any = ..., commit_time: Any = ..., flags: Any = ...) -> None: ...

class RollbackPrepared(Change):
    _fields: ClassVar[Tuple[str, ...]]
    xid: Optional[int]
    gid: str
    lsn: Optional[int]
    end_lsn: Optional[int]
    prepare_time: Optional[datetime]
    rollback_time: Optional[datetime]
    flags: Optional[int]
    def __init__(self, xid: Any = ..., gid: Any = ..., lsn: Any = ..., end_lsn: Any = ..., prepare_time: Any = ..., rollback_time: Any = ..., flags: Any = ...) -> None: ...

class StreamPrepare(Change):
    _fields: ClassVar[Tuple[str, ...]]
    xid: Optional[int]
    gid: str
    lsn: Optional[int]
    end_lsn: Optional[int]
    prepare_time: Optional[datetime]
    flags: Optional[int]
    def __init__(self, xid: Any = ..., gid: Any = ..., lsn: Any = ..., end_lsn: Any = ..., prepare_time: Any = ..., flags: Any = ...) -> None: ...

class SnapshotRow(Change):
    _fields: ClassVar[Tuple[str, ...]]
    schema: str
    table: str
    new: Dict[str, Any]
    backfill: bool
    def __init__(self, schema: Any = ..., table: Any = ..., new: Any = ..., backfill: Any = ...) -> None: ...

class SnapshotStart(Change):
    _fields: ClassVar[Tuple[str, ...]]
    schema: str
    table: str
    backfill: bool
    def __init__(self, schema: Any = ..., table: Any = ..., backfill: Any = ...) -> None: ...

class SnapshotEnd(Change):
    _fields: ClassVar[Tuple[str, ...]]
    schema: str
    table: str
    rows: int
    backfill: bool
    def __init__(self, schema: Any = ..., table: Any = ..., rows: Any = ..., backfill: Any = ...) -> None: ...

# -- snapshots and backfills --

_Bytes = bytes

class CopyConnection:
    rows: int
    bytes: int
    def __init__(self, keys: Sequence[str], values: Sequence[str]) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def copying(self) -> bool: ...
    @property
    def backend_pid(self) -> Optional[int]: ...
    def execute(self, sql: str) -> Tuple[List[str], List[Tuple[Optional[str], ...]]]: ...
    def copy_start(self, sql: str, names: Sequence[str], converters: Sequence[Callable[[Any], Any]], binary: bool, schema: str, table: str, backfill: bool = ...) -> None: ...
    def read(self, max_rows: int = ..., data_start: Optional[int] = ..., payload: Union[str, _Bytes, None] = ..., wait: bool = ...) -> List[Any]: ...
    def close(self) -> None: ...
    def fileno(self) -> int: ...

# -- decoders --

class PgoutputDecoder:
    @property
    def relations(self) -> Dict[int, Tuple[str, str, Tuple[str, ...]]]: ...
    types: Dict[int, Tuple[str, str]]
    in_stream: bool
    xid: Optional[int]
    def __init__(self, resolve: Callable[..., Any]) -> None: ...
    def __call__(self, msg: Message) -> Any: ...
    def reset(self) -> None: ...

class TestDecodingDecoder:
    def __init__(self, resolve: Callable[..., Any],
                 other: Callable[[Message, Any], Any]) -> None: ...
    def __call__(self, msg: Message) -> Any: ...

def text_int(s: str) -> int: ...
def text_float(s: str) -> float: ...
def text_bool(s: str) -> bool: ...
def text_str(s: str) -> str: ...
def text_bytea(s: str) -> bytes: ...
def text_date(s: str) -> Union[date, str]: ...
def text_timestamp(s: str) -> Union[datetime, str]: ...
def text_timestamptz(s: str) -> Union[datetime, str]: ...
def bin_int(b: bytes) -> int: ...
def bin_oid(b: bytes) -> int: ...
def bin_float(b: bytes) -> float: ...
def bin_bool(b: bytes) -> bool: ...
def bin_str(b: bytes) -> str: ...
def bin_bytes(b: bytes) -> bytes: ...
