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
