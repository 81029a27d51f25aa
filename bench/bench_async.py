"""AsyncReader against the sync Reader, side by side on one throwaway server.

    .venv/bin/python bench/bench_async.py            # drain + latency
    .venv/bin/python bench/bench_async.py --quick    # smoke run
    .venv/bin/python bench/bench_async.py --phases lag,rss

Phases (each client runs in its own subprocess, alternating, and the goals
are ratios of medians over the repetitions):

1. drain: the same 300k-change test_decoding backlog (half in one
   transaction, half in 100-row transactions; see bench_drain.py) drained
   by `Reader` (no-op ``event()``) and by `AsyncReader` (a no-op ``async
   for`` body), both with typed changes (decode=True) and no acks. Goals:
   AsyncReader's CPU (user+sys) <= 1.25x the Reader's, wall <= 1.05x.
2. latency: a writer commits about 1000 single-row transactions a second;
   commit-to-message delay p99 (median over the repetitions of each run's
   p99). Goal: AsyncReader <= 1.5x the Reader's.
3. lag (optional): the loop-lag probe of the issue at full size: a task
   sleeping 10 ms, while an AsyncReader connects to a server that never
   answers (connect_timeout=3), runs commands and drains the 300k backlog.
   Goal: never more than 50 ms late.
4. rss (optional): a consumer sleeping 1 ms per message works through a
   backlog (default 1M changes: about 20 minutes); peak RSS minus RSS
   after its first 200 messages. Goal: <= 10 MiB.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_drain as bd         # noqa: E402  (its server and helpers)

GOAL_CPU = 1.25
GOAL_WALL = 1.05
GOAL_P99 = 1.5
GOAL_LAG_MS = 50.0
GOAL_RSS_MIB = 10.0


def child_cmd(out, *args):
    """The command of a child that writes its result (JSON) to ``out``."""
    return [sys.executable, os.path.abspath(__file__), "--child", out] + [
        str(a) for a in args]


#: where this child writes its result (see `report()`)
_OUT = None


def report(obj):
    """Write the child's result to its file, in one piece (a file, not
    stdout: a latency run's result is a few hundred kB, and a pipe once
    delivered only its first 128 kiB of it to the parent)."""
    tmp = _OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, _OUT)


def usage_report(t0, u0, s0, **extra):
    """`report()` the wall and CPU time since ``bd._usage()`` and
    ``extra``."""
    t1, u1, s1 = bd._usage()
    res = {"wall": t1 - t0, "user": u1 - u0, "sys": s1 - s0,
           "hwm_kib": bd.vm_hwm_kib()}
    res.update(extra)
    report(res)


def wake_ups(core):
    """The C core's wake-up counters of a reader (see bench/README.md)."""
    return {"waits": core.wait_count, "batch_waits": core.batch_wait_count,
            "pauses": core.batch_pause_count}


# -- the children --

def child_sync(dsn, slot, end):
    from pylogicaldecoding import Reader

    class Drain(Reader):
        def event(self, msg):
            pass

    t0, u0, s0 = bd._usage()
    r = Drain(dsn, slot=slot, create_slot=False, confirm_keepalives=False)
    r.start(until_lsn=end)
    n = r.message_count
    r.close()
    usage_report(t0, u0, s0, messages=n, **wake_ups(r))


def child_async(dsn, slot, end, loop="asyncio"):
    import asyncio
    from pylogicaldecoding import AsyncReader

    async def main():
        n = 0
        async with AsyncReader(dsn, slot=slot, create_slot=False,
                               confirm_keepalives=False) as r:
            async for _ in r.stream(until_lsn=end):
                n += 1
        return n, wake_ups(r._core)

    t0, u0, s0 = bd._usage()
    n, wakes = _run(main(), loop)
    usage_report(t0, u0, s0, messages=n, **wakes)


def _run(coro, loop):
    import asyncio
    if loop == "uvloop":
        import uvloop
        lp = uvloop.new_event_loop()
    else:
        lp = asyncio.new_event_loop()
    try:
        return lp.run_until_complete(coro)
    finally:
        lp.close()


def child_lat_sync(dsn, slot):
    from pylogicaldecoding import Reader
    events = []
    now = time.time

    class Lat(Reader):
        ready = False

        def event(self, msg):
            p = msg.payload
            events.append((now(), p))
            if p[0] == "m":
                if "bench-stop" in p:
                    self.stop()
                elif not self.ready:
                    self.ready = True
                    sys.stdout.write("ready\n")
                    sys.stdout.flush()

    t0, u0, s0 = bd._usage()
    r = Lat(dsn, slot=slot, create_slot=False, confirm_keepalives=False,
            decode=False)
    r.start()
    r.close()
    usage_report(t0, u0, s0, delays=bd._latency_result(events))


def child_lat_async(dsn, slot, loop="asyncio"):
    from pylogicaldecoding import AsyncReader
    events = []
    now = time.time

    async def main():
        ready = False
        async with AsyncReader(dsn, slot=slot, create_slot=False,
                               confirm_keepalives=False, decode=False) as r:
            async for msg in r:
                p = msg.payload
                events.append((now(), p))
                if p[0] == "m":
                    if "bench-stop" in p:
                        r.stop()
                    elif not ready:
                        ready = True
                        sys.stdout.write("ready\n")
                        sys.stdout.flush()

    t0, u0, s0 = bd._usage()
    _run(main(), loop)
    usage_report(t0, u0, s0, delays=bd._latency_result(events))


def child_lag(dsn, slot, end):
    """The loop-lag probe; reports the worst lateness of each phase."""
    import asyncio
    import pylogicaldecoding as pld

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    silent_dsn = ("host=127.0.0.1 port=%d dbname=test user=postgres "
                  "sslmode=disable" % silent.getsockname()[1])

    async def main():
        worst = {"now": 0.0}

        async def probe():
            while True:
                t0 = time.monotonic()
                await asyncio.sleep(0.01)
                worst["now"] = max(worst["now"],
                                   time.monotonic() - t0 - 0.01)

        task = asyncio.ensure_future(probe())
        lags = {}
        r = pld.AsyncReader(silent_dsn, slot=slot, connect_timeout=3)
        try:
            await r.connect()
        except pld.ConnectionFailed:
            pass
        lags["connect"], worst["now"] = worst["now"], 0.0
        n = 0
        async with pld.AsyncReader(dsn, slot=slot, create_slot=False) as r:
            for _ in range(5):
                await r.identify_system()
                await r.slot_status()
            lags["commands"], worst["now"] = worst["now"], 0.0
            async for _ in r.stream(until_lsn=end):
                n += 1
            lags["drain"] = worst["now"]
        task.cancel()
        return {k: v * 1000.0 for k, v in lags.items()}, n

    lags, n = _run(main(), "asyncio")
    silent.close()
    report({"lags_ms": lags, "messages": n})


def child_rss(dsn, slot, count):
    import asyncio
    import pylogicaldecoding as pld

    def rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024

    async def main():
        n, idle, peak = 0, None, 0
        async with pld.AsyncReader(dsn, slot=slot, create_slot=False) as r:
            async for _ in r:
                n += 1
                await asyncio.sleep(0.001)
                if n == 200:
                    idle = rss()
                elif n > 200 and n % 100 == 0:
                    peak = max(peak, rss())
                if n >= count:
                    break
        return idle, peak, n

    idle, peak, n = _run(main(), "asyncio")
    report({"idle": idle, "peak": peak, "messages": n})


def run_child(argv):
    kind = argv[0]
    if kind == "sync":
        child_sync(argv[1], argv[2], int(argv[3]))
    elif kind == "async":
        child_async(argv[1], argv[2], int(argv[3]))
    elif kind == "async-uvloop":
        child_async(argv[1], argv[2], int(argv[3]), "uvloop")
    elif kind == "lat-sync":
        child_lat_sync(argv[1], argv[2])
    elif kind == "lat-async":
        child_lat_async(argv[1], argv[2])
    elif kind == "lat-async-uvloop":
        child_lat_async(argv[1], argv[2], "uvloop")
    elif kind == "lag":
        child_lag(argv[1], argv[2], int(argv[3]))
    elif kind == "rss":
        child_rss(argv[1], argv[2], int(argv[3]))
    else:
        raise SystemExit("unknown child %r" % kind)


# -- the parent --

class AsyncBench(bd.Bench):

    def spawn(self, *args):
        """Start a child; return it, with the path of its result file."""
        self._seq += 1
        out = os.path.join(self.tmp, "result-%d.json" % self._seq)
        proc = bd.spawn(child_cmd(out, *args))
        proc.result_path = out
        return proc

    @staticmethod
    def result(proc):
        """The result a finished child wrote (see `report()`)."""
        try:
            with open(proc.result_path) as f:
                return json.load(f)
        finally:
            os.unlink(proc.result_path)

    def run_client(self, client, slot, end):
        t0 = time.monotonic()
        proc = self.spawn(client, self.dsn, slot, end)
        bd.finish(proc, t0, "%s on %s" % (client, slot))
        res = self.result(proc)
        res["cpu"] = res["user"] + res["sys"]
        return res

    def phase_drain(self):
        a = self.args
        clients = ["sync", "async"] + (["async-uvloop"] if a.uvloop else [])
        print("\n== drain: %d changes, %d repetitions, typed changes ==" % (
            a.changes, a.reps))
        slots = {c: self.new_slots(a.reps) for c in clients}
        end = self.backlog(a.changes)
        runs = {c: [] for c in clients}
        for rep in range(a.reps):
            k = rep % len(clients)
            for c in clients[k:] + clients[:k]:
                res = self.run_client(c, slots[c][rep], end)
                runs[c].append(res)
                print("  rep %d %-13s wall %6.3f s  cpu %6.3f s  %d msgs  "
                      "%d waits (%d batched)" % (
                          rep + 1, c, res["wall"], res["cpu"],
                          res["messages"], res["waits"], res["batch_waits"]),
                      flush=True)
        for c in clients:
            self.drop_slots(slots[c])
        self.truncate()
        med = {c: {k: statistics.median(r[k] for r in runs[c])
                   for k in ("wall", "cpu", "waits")} for c in clients}
        rng = {c: {k: (min(r[k] for r in runs[c]), max(r[k] for r in runs[c]))
                   for k in ("wall", "cpu")} for c in clients}
        print()
        for c in clients:
            print("%-13s wall median %6.3f s (%.3f-%.3f)  cpu median %6.3f s "
                  "(%.3f-%.3f)  waits median %d" % (
                      c, med[c]["wall"], rng[c]["wall"][0], rng[c]["wall"][1],
                      med[c]["cpu"], rng[c]["cpu"][0], rng[c]["cpu"][1],
                      med[c]["waits"]))
        self.results["drain"] = {"runs": runs, "median": med}
        goals = [("drain CPU async/sync", med["async"]["cpu"]
                  / med["sync"]["cpu"], GOAL_CPU),
                 ("drain wall async/sync", med["async"]["wall"]
                  / med["sync"]["wall"], GOAL_WALL)]
        if a.uvloop:
            goals.append(("drain CPU uvloop/sync", med["async-uvloop"]["cpu"]
                          / med["sync"]["cpu"], GOAL_CPU))
        return goals

    def latency_run(self, client, slot):
        t0 = time.monotonic()
        proc = self.spawn("lat-" + client, self.dsn, slot)
        line = proc.stdout.readline()
        if line.strip() != "ready":
            bd.finish(proc, t0, "%s latency client" % client)
            raise RuntimeError("%s latency client did not start" % client)
        # bench_drain's writer: pgbench -R, each row holding the server's
        # clock_timestamp() at its INSERT, which the clients subtract
        n, rate = self.run_writer(self.args.rate)
        bd.finish(proc, t0, "%s latency client" % client)
        delays = self.result(proc)["delays"]
        if len(delays) != n:
            raise RuntimeError("%s saw %d rows of the %d committed"
                               % (client, len(delays), n))
        return delays, rate

    def phase_latency(self):
        a = self.args
        clients = ["sync", "async"] + (
            ["async-uvloop"] if a.uvloop else [])
        print("\n== latency: ~%d commits/s for %g s, %d repetitions ==" % (
            a.rate, a.seconds, a.lat_reps))
        p99s = {c: [] for c in clients}
        for rep in range(a.lat_reps):
            k = rep % len(clients)
            for c in clients[k:] + clients[:k]:
                slot = self.new_slots(1)[0]
                self.sql("SELECT pg_logical_emit_message(false, "
                         "'bench-ready', '')")
                d, rate = self.latency_run(c, slot)
                self.drop_slots([slot])
                p99s[c].append(bd.pct(d, 99))
                print("  rep %d %-12s %5d commits (%.0f/s)  p50 %6.3f ms  "
                      "p99 %6.3f ms" % (rep + 1, c, len(d), rate,
                                        bd.pct(d, 50), bd.pct(d, 99)),
                      flush=True)
        self.server.execute("TRUNCATE lat")
        med = {c: statistics.median(p99s[c]) for c in clients}
        for c in clients:
            print("%-12s p99 median %6.3f ms (runs %s)" % (
                c, med[c], ", ".join("%.3f" % v for v in p99s[c])))
        self.results["latency"] = p99s
        goals = [("latency p99 async/sync", med["async"] / med["sync"],
                  GOAL_P99)]
        if a.uvloop:
            goals.append(("latency p99 uvloop/sync",
                          med["async-uvloop"] / med["sync"], GOAL_P99))
        return goals

    def phase_lag(self):
        a = self.args
        print("\n== lag: probe while connecting (silent server, "
              "connect_timeout=3), commands, draining %d changes ==" % a.changes)
        slot = self.new_slots(1)[0]
        end = self.backlog(a.changes)
        proc = self.spawn("lag", self.dsn, slot, end)
        bd.finish(proc, time.monotonic(), "lag probe")
        self.drop_slots([slot])
        self.truncate()
        res = self.result(proc)
        print("  worst lateness (ms): %s; %d messages" % (
            ", ".join("%s %.1f" % kv for kv in res["lags_ms"].items()),
            res["messages"]))
        return [("loop lag worst ms", max(res["lags_ms"].values()),
                 GOAL_LAG_MS)]

    def phase_rss(self):
        a = self.args
        print("\n== rss: a consumer sleeping 1 ms per message, %d changes "
              "==" % a.rss_changes)
        slot = self.new_slots(1)[0]
        self.backlog(a.rss_changes, one_txn=True)
        t0 = time.monotonic()
        proc = self.spawn("rss", self.dsn, slot, a.rss_changes)
        _, wall, _ = bd.finish(proc, t0, "rss consumer")
        self.drop_slots([slot])
        self.truncate()
        res = self.result(proc)
        growth = (res["peak"] - res["idle"]) / 1048576.0
        print("  %d messages in %.0f s; RSS idle %.1f MiB, peak %.1f MiB" % (
            res["messages"], wall, res["idle"] / 1048576.0,
            res["peak"] / 1048576.0))
        return [("RSS growth MiB", growth, GOAL_RSS_MIB)]

    def run(self):
        m = self.results["machine"]
        self.start_server()
        print("machine: %s, %s cores, Linux %s, Python %s, PostgreSQL %s" % (
            m["cpu"], m["cores"], m["kernel"], m["python"], m["postgresql"]))
        goals = []
        self.tmp = tempfile.mkdtemp(prefix="pld-bench-async-")
        try:
            for phase in self.args.phases.split(","):
                goals += getattr(self, "phase_" + phase)()
        finally:
            self.server.cleanup()
            shutil.rmtree(self.tmp, ignore_errors=True)
        print()
        for name, value, goal in goals:
            print("%-26s %8.3f  (goal <= %.2f)  %s" % (
                name, value, goal, "PASS" if value <= goal else "FAIL"))
        if self.args.json:
            with open(self.args.json, "w") as f:
                json.dump(self.results, f, indent=1, default=str)
        return 0 if all(v <= g for _, v, g in goals) else 1


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        global _OUT
        _OUT = sys.argv[2]
        return run_child(sys.argv[3:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smaller backlog, fewer repetitions (a loaded "
                   "machine: figures are indicative only)")
    p.add_argument("--changes", type=int, help="drain backlog (default "
                   "300000, quick 100000)")
    p.add_argument("--reps", type=int, help="drain repetitions per client "
                   "(default 5, quick 3)")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--writers", type=int, help="pgbench connections of the "
                   "latency writer (default: bench_drain's choice)")
    p.add_argument("--seconds", type=float, help="latency run (default 10, "
                   "quick 4)")
    p.add_argument("--lat-reps", type=int, help="default 4, quick 2")
    p.add_argument("--rss-changes", type=int, default=1000000)
    p.add_argument("--uvloop", action="store_true",
                   help="drain and latency with uvloop too")
    p.add_argument("--phases", default="drain,latency",
                   help="comma-separated: drain, latency, lag, rss")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    q = args.quick
    args.changes = args.changes or (100000 if q else 300000)
    args.reps = args.reps or (3 if q else 5)
    args.seconds = args.seconds or (4.0 if q else 10.0)
    args.lat_reps = args.lat_reps or (2 if q else 4)
    return AsyncBench(args).run()


if __name__ == "__main__":
    sys.exit(main())
