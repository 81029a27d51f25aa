"""JetStream sink benchmark: how fast a backlog goes from a slot into NATS
JetStream, side by side with our raw drain of the same backlog.

    .venv/bin/python bench/bench_jetstream.py --quick   # ~1-2 minutes
    .venv/bin/python bench/bench_jetstream.py           # 5 repetitions

One throwaway PostgreSQL (bench_drain's settings), one single-node
nats-server with JetStream (file storage) and, unless --replicas 1, a
three-node cluster, all on 127.0.0.1. A fresh test_decoding slot per client
and repetition is created before the backlog (300k changes: half in one
transaction, half in 100-row transactions, as bench_drain.py). Then,
alternating, each client drains its own slot up to the same end LSN in its
own subprocess:

- raw: our Reader, decode=False, event() does nothing (bench_drain's
  "ours");
- R1: pylogicaldecoding.jetstream.stream_to_jetstream into a new
  single-replica file stream (typed changes, JSON bodies, one message per
  change plus begin/commit framing, acks by JetStream, slot acked);
- R3: the same into a three-replica stream on the cluster.

Measured per run: wall time from connect to the last ack (inside the child),
the publisher's CPU (user + system, all threads) and the nats-server
processes' CPU over the run. Reported: medians and ranges, changes/s, the
ratio of changes/s R1/raw (goal >= 0.4) and R3/raw, CPU per change.
Everything shares the machine's cores (PostgreSQL, the walsender,
nats-server and the publisher): figures from a loaded machine are noisy.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import bench_drain  # noqa: E402

GOAL_R1 = 0.4


# -- children ------------------------------------------------------------------

def child_js(dsn, slot, end, url, stream, prefix, replicas):
    from pylogicaldecoding import jetstream
    t0, u0, s0 = bench_drain._usage()
    h = asyncio.run(jetstream.stream_to_jetstream(
        dsn, slot=slot, url=url, stream=stream, subject_prefix=prefix,
        create_stream=True, replicas=replicas, until_lsn=end,
        create_slot=False, confirm_keepalives=False))
    bench_drain._report(t0, u0, s0, messages=h.published,
                        retries=h.retries, reorders=h.reorders)


# -- the parent ----------------------------------------------------------------

def proc_cpu(pid):
    """utime + stime of a process, in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def delete_stream(url, stream):
    async def main():
        import nats
        nc = await nats.connect(url.split(","))
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()
    try:
        asyncio.run(main())
    except Exception as e:
        print("  (could not delete stream %s: %s)" % (stream, e))


def run_js(b, slot, end, url, replicas, nats_pids, n):
    stream = "BENCH%d" % n
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "js",
           b.dsn, slot, str(end), url, stream, stream.lower(),
           str(replicas)]
    c0 = sum(proc_cpu(p) for p in nats_pids)
    t0 = time.monotonic()
    proc = bench_drain.spawn(cmd)
    out, wall, ru = bench_drain.finish(proc, t0, "publisher R%d" % replicas)
    res = json.loads(out.strip().splitlines()[-1])
    res["nats_cpu"] = sum(proc_cpu(p) for p in nats_pids) - c0
    res["cpu"] = res["user"] + res["sys"]
    delete_stream(url, stream)
    return res


def med(values):
    return statistics.median(values)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind = sys.argv[2]
        if kind == "js":
            a = sys.argv[3:]
            return child_js(a[0], a[1], int(a[2]), a[3], a[4], a[5],
                            int(a[6]))
        return bench_drain.run_child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="3 repetitions instead of 5")
    p.add_argument("--changes", type=int, default=300000,
                   help="backlog size (default 300000)")
    p.add_argument("--reps", type=int, help="repetitions (default 5, "
                   "quick 3)")
    p.add_argument("--replicas", default="1,3",
                   help="which streams: 1, 3 or 1,3 (default)")
    p.add_argument("--json", metavar="PATH", help="also write the results")
    a = p.parse_args()
    a.reps = a.reps or (3 if a.quick else 5)
    replicas = [int(x) for x in a.replicas.split(",") if x.strip()]

    from pylogicaldecoding.testing import NatsCluster, NatsServer
    b = bench_drain.Bench(argparse.Namespace(json=None))
    b.start_server()
    single = cluster = None
    try:
        single = NatsServer()
        single.start()
        if 3 in replicas:
            cluster = NatsCluster(3)
            cluster.start()
        clients = ["raw"] + ["R%d" % r for r in replicas]
        slots = {c: b.new_slots(a.reps) for c in clients}
        t = time.monotonic()
        end = b.backlog(a.changes)
        print("backlog: %d changes written in %.1f s; %d repetitions of %s, "
              "alternating" % (a.changes, time.monotonic() - t, a.reps,
                               ", ".join(clients)))
        results = {c: [] for c in clients}
        n = 0
        for rep in range(a.reps):
            for c in clients:
                slot = slots[c][rep]
                if c == "raw":
                    r = b.drain("ours", slot, end)
                    r["nats_cpu"] = 0.0
                else:
                    n += 1
                    if c == "R1":
                        url, pids = single.url, [single.pid]
                    else:
                        url = cluster.url
                        pids = [x.pid for x in cluster.nodes]
                    r = run_js(b, slot, end, url, int(c[1:]), pids, n)
                results[c].append(r)
                print("  rep %d %-4s wall %6.2f s  cpu %6.2f s  nats cpu "
                      "%6.2f s%s" % (rep + 1, c, r["wall"], r["cpu"],
                                     r["nats_cpu"],
                                     "  retries %d" % r["retries"]
                                     if r.get("retries") else ""))
        print()
        print("%-5s %10s %14s %12s %16s %16s" % (
            "", "wall s", "(range)", "changes/s", "client us/chg",
            "nats us/chg"))
        rate = {}
        for c in clients:
            walls = [r["wall"] for r in results[c]]
            rate[c] = a.changes / med(walls)
            print("%-5s %10.2f %14s %12.0f %16.2f %16.2f" % (
                c, med(walls), "%.2f-%.2f" % (min(walls), max(walls)),
                rate[c], med(r["cpu"] for r in results[c]) / a.changes * 1e6,
                med(r["nats_cpu"] for r in results[c]) / a.changes * 1e6))
        # ratio of medians over alternating repetitions
        ok = True
        for c in clients[1:]:
            ratio = rate[c] / rate["raw"]
            goal = GOAL_R1 if c == "R1" else None
            verdict = ""
            if goal is not None:
                passed = ratio >= goal
                ok = ok and passed
                verdict = " (goal >= %.1f: %s)" % (goal,
                                                   "PASS" if passed else "FAIL")
            print("changes/s %s/raw: %.3f%s" % (c, ratio, verdict))
        info = bench_drain.machine_info()
        print("machine: %s, %s cores, Python %s; load average at the end: "
              "%s (shared with other work: noisy)" % (
                  info["cpu"], info["cores"], info["python"],
                  " ".join("%.1f" % x for x in os.getloadavg())))
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"machine": info, "changes": a.changes,
                           "results": results}, f, indent=1)
        return 0 if ok else 1
    finally:
        for s in (single, cluster):
            if s is not None:
                s.cleanup()
        if b.server is not None:
            b.server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
