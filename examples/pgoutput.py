"""Typed changes from pgoutput, the plugin built into PostgreSQL.

    python examples/pgoutput.py "host=... dbname=... user=..."
    python examples/pgoutput.py --demo      # on a throwaway server

Creates a publication and a slot if they are missing, then prints every
change as Python values and acks each transaction once it is printed.
"""

import sys

import pylogicaldecoding as pld
from pylogicaldecoding import decoders

PUBLICATION = "example_pub"
SLOT = "example_pgoutput"


class Printer(pld.Reader):
    def event(self, msg):
        change = msg.change
        if isinstance(change, (pld.Insert, pld.Update, pld.Delete)):
            print("%-6s %s.%s new=%r old=%r" % (
                type(change).__name__, change.schema, change.table,
                change.new, change.old))
        elif isinstance(change, pld.Commit):
            print("commit xid=%s at %s" % (change.xid, change.commit_time))
            self.ack(msg.data_start)     # the transaction is handled
        elif isinstance(change, pld.Message):
            print("message %r: %r" % (change.prefix, change.content))


def run(dsn, until=None):
    reader = Printer(dsn, slot=SLOT, plugin="pgoutput")
    reader.connect()
    _, rows = reader.execute("SELECT 1 FROM pg_publication WHERE pubname = '%s'"
                             % PUBLICATION)
    if not rows:
        decoders.create_publication(reader, PUBLICATION)   # FOR ALL TABLES
    # proto_version (the highest the server has) and messages are filled in
    reader.options = decoders.default_options(
        "pgoutput", {"publication_names": PUBLICATION}, reader.server_version)
    reader._options = pld.reader.commands.check_options(reader.options)
    # until the Reader does it itself (decode=True): a fresh decoder per
    # stream, with the user types read from the catalog
    reader.decoder = decoders.make_decoder(
        "pgoutput", reader.options, reader.server_version,
        execute=reader.execute)
    try:
        reader.start(until_lsn=until)
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
    return reader


def demo():
    from pylogicaldecoding.testing import Server
    with Server() as srv:
        srv.execute("CREATE TABLE items (id serial PRIMARY KEY, name text,"
                    " price numeric(8,2), tags text[], seen timestamptz)")
        reader = Printer(srv.dsn, slot=SLOT, plugin="pgoutput")
        decoders.create_publication(reader, PUBLICATION)
        reader.create_slot(snapshot="nothing")
        reader.close()
        srv.execute("INSERT INTO items (name, price, tags, seen) VALUES "
                    "('pen', 1.50, '{blue,cheap}', now())")
        srv.execute("UPDATE items SET price = 2 WHERE name = 'pen'")
        srv.execute("SELECT pg_logical_emit_message(true, 'demo', 'hello')")
        srv.execute("DELETE FROM items")
        end = srv.execute("SELECT pg_current_wal_lsn()")[0][0]
        run(srv.dsn, until=end)
        srv.execute("SELECT pg_drop_replication_slot('%s')" % SLOT)


if __name__ == "__main__":
    if sys.argv[1:] == ["--demo"]:
        demo()
    elif len(sys.argv) == 2:
        run(sys.argv[1])
    else:
        sys.exit(__doc__)
