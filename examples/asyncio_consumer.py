"""An asyncio service: an in-memory materialised view of a table, kept up
to date from logical replication and served over HTTP.

    python examples/asyncio_consumer.py "host=... dbname=... user=..." items
    python examples/asyncio_consumer.py --demo     # on a throwaway server

At start it creates a temporary pgoutput slot inside a REPEATABLE READ
transaction (USE_SNAPSHOT) and reads the table in that same snapshot: the
stream then continues exactly where the snapshot ends, nothing missed or
applied twice. The slot is temporary because the view lives in memory: a
restarted service rebuilds it the same way. Each transaction is applied
whole at its Commit, then acked (which lets the server recycle its WAL).

    GET /rows          every row, as a JSON object keyed by primary key
    GET /rows/<key>    one row (404 if absent)
    GET /status        row count, transactions applied, acked LSN

The table needs a primary key; the publication ``<table>_view`` is created
if missing (the user needs the rights to do so).
"""

import asyncio
import json
import os
import sys

import pylogicaldecoding as pld


class View:
    """The table's rows by primary key, changed one transaction at a time."""

    def __init__(self, key):
        self.key = key
        self.rows = {}
        self.pending = []       # the changes of the open transaction
        self.transactions = 0

    def load(self, names, rows):
        for row in rows:
            row = dict(zip(names, row))
            self.rows[str(row[self.key])] = row

    def change(self, change):
        self.pending.append(change)

    def commit(self):
        for c in self.pending:
            if isinstance(c, (pld.Insert, pld.Update)):
                if c.old:       # the key changed
                    self.rows.pop(str(c.old[self.key]), None)
                self.rows[str(c.new[self.key])] = c.new
            elif isinstance(c, pld.Delete):
                self.rows.pop(str(c.old[self.key]), None)
            elif isinstance(c, pld.Truncate):
                self.rows.clear()
        self.pending = []
        self.transactions += 1


class Service:
    def __init__(self, dsn, table, key="id"):
        self.table = table
        self.view = View(key)
        self.pub = table + "_view"
        self.reader = pld.AsyncReader(
            dsn, slot="view_%s_%d" % (table, os.getpid()), plugin="pgoutput",
            temporary=True, options={"publication_names": self.pub})
        self.ready = asyncio.Event()

    async def replicate(self):
        r = self.reader
        _, rows = await r.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = '%s'" % self.pub)
        if not rows:
            await r.execute("CREATE PUBLICATION %s FOR TABLE %s"
                            % (self.pub, self.table))
        # READ ONLY: PostgreSQL 18 requires it for SNAPSHOT 'use'
        await r.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        await r.create_slot(snapshot="use")
        names, rows = await r.execute("SELECT * FROM %s" % self.table)
        await r.execute("COMMIT")
        self.view.load(names, [[_typed(v) for v in row] for row in rows])
        self.ready.set()
        async for msg in r:
            change = msg.change
            if isinstance(change, pld.Commit):
                self.view.commit()
                r.ack_nowait()
            elif isinstance(change, (pld.Insert, pld.Update, pld.Delete,
                                     pld.Truncate)):
                self.view.change(change)

    async def handle(self, reader, writer):
        try:
            request = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            status, body = self.route(path)
            data = json.dumps(body, default=str, sort_keys=True).encode()
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json"
                         b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                         % (status, b"OK" if status == 200 else b"Not Found",
                            len(data)) + data)
            await writer.drain()
        finally:
            writer.close()

    def route(self, path):
        if path == "/rows":
            return 200, self.view.rows
        if path.startswith("/rows/"):
            row = self.view.rows.get(path[len("/rows/"):])
            return (200, row) if row is not None else (404, {"error": "none"})
        if path == "/status":
            return 200, {"rows": len(self.view.rows),
                         "transactions": self.view.transactions,
                         "acked_lsn": pld.format_lsn(self.reader.flushed_lsn)}
        return 404, {"error": "unknown path"}

    async def serve(self, host="127.0.0.1", port=8080):
        """Replicate and serve until cancelled; return the port in use."""
        server = await asyncio.start_server(self.handle, host, port)
        self.port = server.sockets[0].getsockname()[1]
        async with self.reader, server:
            await self.replicate()


def _typed(value):
    """The initial load comes as text: integers as ints (the example's
    tables), as the stream gives them."""
    if value is not None and value.lstrip("-").isdigit():
        return int(value)
    return value


async def _get(port, path):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def demo_main(srv):
    loop = asyncio.get_running_loop()

    def sql(q):
        return loop.run_in_executor(None, srv.execute, q)

    await sql("CREATE TABLE items (id int PRIMARY KEY, name text, qty int)")
    await sql("INSERT INTO items VALUES (1, 'pen', 10), (2, 'ink', 3)")
    svc = Service(srv.dsn, "items")
    task = asyncio.ensure_future(svc.serve(port=0))
    await asyncio.wait_for(svc.ready.wait(), 30)
    await sql("INSERT INTO items VALUES (3, 'pad', 7);"
              "UPDATE items SET qty = qty - 1 WHERE id = 1;"
              "DELETE FROM items WHERE id = 2;"
              "UPDATE items SET id = 4 WHERE id = 3")
    want = {str(r[0]): {"id": int(r[0]), "name": r[1], "qty": int(r[2])}
            for r in await sql("SELECT id, name, qty FROM items")}
    for _ in range(300):
        status, rows = await _get(svc.port, "/rows")
        if rows == want:
            break
        await asyncio.sleep(0.05)
    print("GET /rows ->", json.dumps(rows, sort_keys=True))
    print("GET /rows/1 ->", (await _get(svc.port, "/rows/1"))[1])
    print("GET /status ->", (await _get(svc.port, "/status"))[1])
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    if rows != want:
        raise SystemExit("the view %r differs from the table %r"
                         % (rows, want))
    print("the view matches the table")


def demo():
    from pylogicaldecoding.testing import Server
    with Server() as srv:
        asyncio.run(demo_main(srv))


def main(dsn, table):
    svc = Service(dsn, table)
    print("serving on http://127.0.0.1:8080/rows", file=sys.stderr)
    try:
        asyncio.run(svc.serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    if sys.argv[1:] == ["--demo"]:
        demo()
    elif len(sys.argv) == 3:
        main(sys.argv[1], sys.argv[2])
    else:
        sys.exit(__doc__)
