"""Batching: while the server streams a backlog, the stream loop waits for a
buffer full of data (SO_RCVLOWAT) rather than waking up for every few
messages; it must undo that whenever the loop ends, or the next waits (the
end of the copy, commands) would sleep on small answers. The CPU it saves
is measured by bench/bench_drain.py, not here."""

import socket

import pylogicaldecoding as pld

from readers import current_lsn


class LowatProbe(pld.Reader):
    """Record the socket's SO_RCVLOWAT every 1000 messages."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.count = 0
        self.lowats = set()

    def lowat(self):
        s = socket.socket(fileno=self.fileno())
        try:
            return s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)
        finally:
            s.detach()      # the socket stays libpq's

    def event(self, msg):
        self.count += 1
        if self.count % 1000 == 0:
            self.lowats.add(self.lowat())


class AckingProbe(LowatProbe):
    """Ack the last COMMIT of the backlog: the next one starts after it."""

    def event(self, msg):
        super().event(msg)
        if self.count == 200002:
            self.ack()


def test_backlog_batches_then_resets(dsn, sql, slot_name, table):
    with LowatProbe(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    # Whether a backlog is read fast enough to batch depends on the CPU the
    # consumer gets: on a busy machine a drain may not. The reset is what
    # this test is about, so it drains backlogs until one batched (a few at
    # most), and checks the reset after each.
    for attempt in range(5):
        sql("INSERT INTO %s (data) SELECT 'row ' || i "
            "FROM generate_series(1, 200000) i" % table)
        end = current_lsn(sql)
        r = AckingProbe(dsn, slot=slot_name, decode=False, create_slot=False)
        try:
            r.start(until_lsn=end)
            assert r.count == 200002
            # the loop ended: back to waking up for every byte, connection
            # usable (the end of the copy did not wait for 16 kB)
            assert not r.closed
            assert r.lowat() == 1
            assert r.execute("SELECT 1")[1] == [("1",)]
        finally:
            r.close()
        if max(r.lowats) > 1:
            break
    else:
        raise AssertionError("5 backlogs of 200000 rows, never batched")


def test_live_stream_does_not_batch(dsn, sql, slot_name, table):
    """A few transactions at a time: every wait wakes up on any data."""
    seen = []

    class Live(LowatProbe):
        def event(self, msg):
            seen.append(self.lowat())
            if msg.payload.startswith("COMMIT"):
                if len(seen) >= 30:
                    self.stop()
                else:
                    sql("INSERT INTO %s (data) VALUES ('x')" % table)

    with Live(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s (data) VALUES ('x')" % table)
    r = Live(dsn, slot=slot_name, decode=False)
    try:
        r.start()
    finally:
        r.close()
    assert set(seen) == {1}
