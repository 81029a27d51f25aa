"""Code a user would write: type-checked with mypy by tests/test_typing.py."""

from typing import List, Optional

import pylogicaldecoding as pld


class Audit(pld.Reader):
    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, slot="audit", plugin="pgoutput",
                         options={"publication_names": "audit"},
                         reconnect=pld.Reconnect(max_attempts=5))
        self.rows: List[dict] = []
        self.last: Optional[int] = None

    def event(self, msg: pld.StreamMessage) -> None:
        change = msg.change
        if isinstance(change, pld.Insert) and change.new is not None:
            self.rows.append(change.new)
        elif isinstance(change, pld.Commit):
            self.ack(msg.data_start)
            self.last = msg.data_start
        when = msg.send_time.isoformat()
        print(when, pld.format_lsn(msg.data_start), self.flushed_lsn)


def main() -> None:
    with Audit("dbname=app") as reader:
        info: pld.SlotInfo = reader.create_slot(snapshot="nothing")
        print(info.consistent_point + 1, reader.identify_system().xlogpos)
        reader.start(until_lsn=pld.parse_lsn("0/10"))
        reader.drain()


async def async_main() -> None:
    async with pld.AsyncReader("dbname=app", slot="s", plugin="pgoutput",
                               options={"publication_names": "p"}) as r:
        info: pld.SystemInfo = await r.identify_system()
        status = await r.slot_status()
        print(info.xlogpos + 1, status and status["active"])
        async for msg in r:
            print(msg.data_start + 1, msg.change)
            if isinstance(msg.change, pld.Commit):
                await r.ack(msg.data_start)
                r.ack_nowait()
                r.stop()
        async for msg in r.stream(until_lsn="0/10"):
            pass


def connection_primitives(r: pld.Reader) -> int:
    """The connection under a reader, used through the C core's stub."""
    conn = r.connection
    names, rows = conn.execute("IDENTIFY_SYSTEM", timeout=5.0)
    if conn.send_query("SELECT 1"):
        conn.flush()
    result = conn.poll_result()
    if result is not None:
        print(result[0], len(rows), names)
    conn.close()
    return conn.fileno() + conn.server_version
