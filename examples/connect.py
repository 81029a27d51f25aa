#!/usr/bin/env python3
"""Print every change of a database, as the 2015 README shows.

    python examples/connect.py "host=localhost dbname=app"   # stream forever
    python examples/connect.py              # PG* variables, or a throwaway server
    python examples/connect.py --demo       # play the README's walkthrough

Each change is printed as a "got event:" block; every 5 commits the Reader
acknowledges what it has printed, so a restarted consumer receives again
only what was not acknowledged.

Without a DSN and without PG* environment variables, a throwaway PostgreSQL
server is started (pylogicaldecoding.testing, as user postgres when run as
root) and a psql command to reach it is printed. With --demo the script
plays the walkthrough itself against it, prints the events, stops the
server and exits.
"""

import argparse
import os
import sys
import threading

import pylogicaldecoding as pld


class Printer(pld.Reader):
    """The seed's consumer: print, and ack every 5 commits."""

    def __init__(self, *args, stop_after=None, ack_at_stop=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.commits = 0
        self.stop_after = stop_after
        self.ack_at_stop = ack_at_stop

    def event(self, msg):
        print("got event:\n%s\n" % msg.payload, flush=True)
        if msg.payload.startswith("COMMIT"):
            self.commits += 1
            if self.commits % 5 == 0:
                self.ack()
            if self.stop_after and self.commits >= self.stop_after:
                if self.ack_at_stop:
                    self.ack()
                self.stop()


# The seed README's walkthrough: (what the user types, SQL)
WALKTHROUGH = [
    ("insert a row",
     "INSERT INTO data(data) VALUES('1');"),
    ("update and delete it in one transaction",
     "BEGIN; UPDATE data SET data='2' WHERE id=1; "
     "DELETE FROM data WHERE id=1; COMMIT;"),
    ("insert in a transaction rolled back: never delivered",
     "BEGIN; INSERT INTO data(data) VALUES('1'); ROLLBACK;"),
    ("REPLICA IDENTITY FULL: old values in updates and deletes",
     "ALTER TABLE data REPLICA IDENTITY FULL;"),
    ("insert, update and delete in one transaction",
     "BEGIN; INSERT INTO data(data) VALUES('1'); "
     "UPDATE data SET data='2' WHERE id=3; DELETE FROM data WHERE id=3; "
     "COMMIT;"),
]
DEMO_COMMITS = 3    # the rolled back and the DDL transactions are not sent
# Both modes: empty transactions (a CREATE TABLE's) are skipped, as in the
# README's output.
OPTIONS = {"skip-empty-xacts": "1"}


def have_env_dsn():
    return any(k in os.environ for k in ("PGHOST", "PGPORT", "PGDATABASE",
                                         "PGUSER", "PGSERVICE"))


def run_demo(server, slot):
    """Play the walkthrough while a Printer streams it, then show acks."""
    server.execute("DROP TABLE IF EXISTS data; "
                   "CREATE TABLE data(id serial primary key, data text);")
    options = OPTIONS
    reader = Printer(server.dsn, slot=slot, options=options,
                     stop_after=DEMO_COMMITS)
    reader.create_slot(snapshot="nothing")

    def writer():
        for what, sql in WALKTHROUGH:
            print("-- %s: %s\n" % (what, sql), flush=True)
            server.execute(sql)

    guard = threading.Timer(60, reader.stop)
    guard.start()
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reader.start()
    finally:
        guard.cancel()
        thread.join()
        reader.close()
    if reader.commits < DEMO_COMMITS:
        print("demo: only %d of %d transactions arrived in 60 s"
              % (reader.commits, DEMO_COMMITS), file=sys.stderr)
        return 1

    print("-- 3 commits, fewer than 5: nothing was acknowledged. A new "
          "consumer receives the same transactions again:\n", flush=True)
    again = Printer(server.dsn, slot=slot, options=options,
                    stop_after=DEMO_COMMITS, ack_at_stop=True)
    with again:
        again.start()   # acks the last commit: the server may forget them
    print("-- acknowledged; a third consumer finds nothing to replay.\n",
          flush=True)
    with Printer(server.dsn, slot=slot, options=options) as last:
        end = last.identify_system().xlogpos
        last.start(until_lsn=end)
        replayed = last.commits
        last.drop_slot()
    print("-- replayed after the ack: %d transactions" % replayed)
    return 0 if replayed == 0 else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dsn", nargs="?", default=None,
                        help="libpq connection string or URI")
    parser.add_argument("--slot", default="pylogicaldecoding_example")
    parser.add_argument("--demo", action="store_true",
                        help="play the README walkthrough on a throwaway "
                             "server, print the events and exit")
    args = parser.parse_args(argv)

    if args.dsn is None and (args.demo or not have_env_dsn()):
        from pylogicaldecoding.testing import Server
        with Server() as server:
            if args.demo:
                return run_demo(server, args.slot)
            print("Started a throwaway PostgreSQL server; connect with:\n\n"
                  "    %s\n\nthen: CREATE TABLE data(id serial primary key, "
                  "data text); INSERT INTO data(data) VALUES('1');\n"
                  % server.psql_command(), flush=True)
            return stream(server.dsn, args.slot)
    if args.demo:
        parser.error("--demo runs on its own throwaway server: give no DSN")
    return stream(args.dsn or "", args.slot)


def stream(dsn, slot):
    reader = Printer(dsn, slot=slot, options=OPTIONS)
    try:
        reader.start()
    except KeyboardInterrupt:
        print("interrupted: the unacknowledged transactions will be sent "
              "again next time", file=sys.stderr)
        return 130
    finally:
        reader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
