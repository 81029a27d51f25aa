"""Readers and helpers shared by the tests."""

import threading
import time

import pylogicaldecoding as pld


class Collector(pld.Reader):
    """Keep every message; optionally ack each COMMIT; stop when asked.

    ``until(reader)`` is checked after each message; ``on_event(reader,
    msg)`` runs first, for tests that need to act in the middle.
    """

    def __init__(self, *args, until=None, ack_commits=False, on_event=None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.msgs = []
        self.until = until
        self.ack_commits = ack_commits
        self.on_event = on_event

    def event(self, msg):
        self.msgs.append(msg)
        if self.on_event:
            self.on_event(self, msg)
        if self.ack_commits and is_commit(msg):
            self.ack()
        if self.until and self.until(self):
            self.stop()

    @property
    def payloads(self):
        return [m.payload for m in self.msgs]

    def commits(self):
        return sum(1 for m in self.msgs if is_commit(m))


def is_commit(msg):
    payload = msg.payload
    if isinstance(payload, bytes):
        return payload[:1] == b"C"
    return payload.startswith("COMMIT")


def current_lsn(sql):
    return pld.parse_lsn(sql("SELECT pg_current_wal_lsn()::text")[0][0])


def drain(dsn, slot, sql, **kwargs):
    """Read what the slot has now and return the Collector (closed)."""
    end = current_lsn(sql)
    kwargs.setdefault("create_slot", False)
    with Collector(dsn, slot=slot, **kwargs) as r:
        r.start(until_lsn=end)
    return r


# Background readers started and not joined yet: wait_for() looks at them.
_unjoined = set()


class Background:
    """Run ``reader.start()`` in a thread; keep its exception.

    Until ``join()`` is called, ``wait_for()`` fails at once, with this
    exception, when the thread has died of one: a test waiting for something
    the reader should do learns why it never will without sitting out the
    deadline.
    """

    def __init__(self, reader, **kwargs):
        self.reader = reader
        self.error = None
        self.thread = threading.Thread(target=self._run, kwargs=kwargs,
                                       daemon=True)
        _unjoined.add(self)
        self.thread.start()

    def _run(self, **kwargs):
        try:
            self.reader.start(**kwargs)
        except BaseException as e:
            self.error = e

    def join(self, timeout=30):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the reader did not stop"
        _unjoined.discard(self)
        return self.error


def _check_background():
    for bg in list(_unjoined):
        if bg.error is not None and not bg.thread.is_alive():
            _unjoined.discard(bg)
            raise AssertionError("the Reader thread died: %r" % (bg.error,)) \
                from bg.error


def wait_for(predicate, timeout=30, interval=0.02, what="condition"):
    """Return ``predicate()``'s first true value, polling every
    ``interval`` s; fail after ``timeout`` s, or at once if a Background
    reader not joined yet died of an exception."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        _check_background()
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(interval)


def slot_row(sql, slot):
    rows = sql("SELECT active, active_pid, confirmed_flush_lsn::text,"
               " restart_lsn::text FROM pg_replication_slots"
               " WHERE slot_name = %s", slot)
    if not rows:
        return None
    active, pid, confirmed, restart = rows[0]
    return {"active": active, "active_pid": pid,
            "confirmed_flush_lsn": pld.parse_lsn(confirmed) if confirmed else None,
            "restart_lsn": pld.parse_lsn(restart) if restart else None}


def wait_inactive(sql, slot, timeout=30):
    """Wait until no walsender holds the slot (its last feedback is in)."""
    return wait_for(lambda: (slot_row(sql, slot) or {"active": False})
                    ["active"] is False, timeout, what="slot %s inactive" % slot)
