"""Initial snapshot benchmark: typed SnapshotRows against psql's \\copy.

    .venv/bin/python bench/bench_snapshot.py            # 2M rows, 5 reps
    .venv/bin/python bench/bench_snapshot.py --quick    # 300k rows, 3 reps

On one throwaway PostgreSQL server:

1. throughput: a table of mixed types (int, text, numeric, timestamptz,
   jsonb, uuid). Alternating, several repetitions, each in its own
   subprocess: ``psql -c "\\copy t to '/dev/null'"`` (raw text, nothing
   decoded: the limit on this machine), and our Reader(snapshot=True,
   tables=["public.t"], snapshot_workers=N) for N = 1 and 2, whose event()
   counts the SnapshotRows and stops at SnapshotEnd. Our wall time covers
   everything from before connecting (slot creation, the exported
   snapshot's import, the copy) to the end of the snapshot; its CPU time
   (the consumer process: receiving, decoding, event()) is printed too,
   and for every client the server's CPU time (postmaster and children,
   from /proc): on a machine of few cores the two compete.
   rows/s and MB/s (COPY text bytes) of each; medians, ranges, and the
   ratio of medians ours/psql against the goal (>= 0.7).
2. memory: peak RSS (VmHWM) of our snapshot of a table of 1 kB rows
   (``--rss-rows``, default 2M, quick 200k), with 1 and 2 workers: the
   rows stream through one batch at a time, so the goal (< 100 MiB) does
   not depend on the table's size.

The machine may be shared: the figures are noisy; quote medians with their
range and the machine.
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

GOAL_RATIO = 0.7
GOAL_RSS_MIB = 100.0

SERVER_SETTINGS = {
    "max_wal_size": "8GB",
    "checkpoint_timeout": "1h",
    "synchronous_commit": False,
    "max_replication_slots": 16,
    "autovacuum": False,
    "shared_buffers": "256MB",
}


def vm_hwm_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# -- the child: our snapshot -------------------------------------------------

def child_ours(dsn, slot, table, workers):
    import pylogicaldecoding as pld

    class Count(pld.Reader):
        rows = 0

        def event(self, msg):
            ch = msg.change
            if type(ch) is pld.SnapshotRow:
                self.rows += 1
            elif type(ch) is pld.SnapshotEnd:
                self.stop()

    t0 = time.monotonic()
    c0 = time.process_time()
    r = Count(dsn, slot=slot, snapshot=True, tables=[table],
              snapshot_workers=workers, temporary=True)
    r.start()
    wall = time.monotonic() - t0
    cpu = time.process_time() - c0
    nbytes = r._snapshot.bytes
    r.close()
    sys.stdout.write(json.dumps({"wall": wall, "cpu": cpu, "rows": r.rows,
                                 "bytes": nbytes,
                                 "hwm_kib": vm_hwm_kib()}) + "\n")


# -- the parent ------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def proc_times(pid):
    """(utime + stime, cutime + cstime) of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return ((int(fields[11]) + int(fields[12])) / TICK,
            (int(fields[13]) + int(fields[14])) / TICK, int(fields[1]))


def server_cpu(postmaster):
    """CPU seconds used so far by the server: the postmaster with its
    exited (reaped) children, and its live children."""
    own, reaped, _ = proc_times(postmaster)
    total = own + reaped
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cpu, _, ppid = proc_times(int(name))
        except (OSError, IndexError, ValueError):
            continue
        if ppid == postmaster:
            total += cpu
    return total


def run(cmd):
    t0 = time.monotonic()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    wall = time.monotonic() - t0
    if out.returncode != 0:
        raise RuntimeError("%s failed: %s" % (cmd[:3], out.stderr))
    return out.stdout, wall


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
            "python": platform.python_version(),
            "loadavg": os.getloadavg()}


def fmt_range(values, scale=1.0, fmt="%.0f"):
    return "%s (%s-%s)" % (fmt % (statistics.median(values) / scale),
                           fmt % (min(values) / scale),
                           fmt % (max(values) / scale))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        a = sys.argv[2:]
        return child_ours(a[0], a[1], a[2], int(a[3]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rows", type=int, help="mixed-type table rows "
                   "(default 2000000, quick 300000)")
    p.add_argument("--rss-rows", type=int, help="1 kB-row table rows "
                   "(default 2000000, quick 200000)")
    p.add_argument("--reps", type=int, help="repetitions (default 5, quick 3)")
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args()
    a.rows = a.rows or (300000 if a.quick else 2000000)
    a.rss_rows = a.rss_rows or (200000 if a.quick else 2000000)
    a.reps = a.reps or (3 if a.quick else 5)

    from pylogicaldecoding.testing import Server, pg_bin
    server = Server(settings=SERVER_SETTINGS)
    results = {"machine": machine_info(), "args": vars(a)}
    try:
        dsn = server.dsn
        psql = pg_bin("psql")
        results["machine"]["postgresql"] = server.execute(
            "SHOW server_version")[0][0]
        print("loading %d mixed-type rows and %d 1 kB rows..."
              % (a.rows, a.rss_rows), flush=True)
        server.execute(
            "CREATE TABLE t (id int PRIMARY KEY, txt text, n numeric,"
            " ts timestamptz, j jsonb, u uuid);"
            "INSERT INTO t SELECT g, 'row number ' || g, g * 1.5,"
            " '2024-01-01 00:00+00'::timestamptz + g * interval '1 s',"
            " jsonb_build_object('id', g, 'tag', 'x'), md5(g::text)::uuid"
            " FROM generate_series(1, %d) g;"
            "CREATE TABLE wide (id int PRIMARY KEY, pad text);"
            "INSERT INTO wide SELECT g, repeat(md5(g::text), 31) FROM"
            " generate_series(1, %d) g;"
            "VACUUM ANALYZE t; VACUUM ANALYZE wide" % (a.rows, a.rss_rows),
            timeout=3600)
        with open(os.path.join(server.data_dir, "postmaster.pid")) as f:
            postmaster = int(f.readline())
        clients = ["psql", "ours-1", "ours-2"]
        res = {c: [] for c in clients}
        nbytes = None
        for rep in range(a.reps):
            for c in (clients if rep % 2 == 0 else clients[::-1]):
                cpu0 = server_cpu(postmaster)
                if c == "psql":
                    cmd = shlex.split(server.psql_command()) + [
                        "-c", "\\copy t to '/dev/null'"]
                    _, wall = run(cmd)
                    res[c].append({"wall": wall, "rows": a.rows})
                else:
                    out, _ = run([sys.executable, os.path.abspath(__file__),
                                  "--child", dsn, "bench_%d_%s" % (
                                      rep, c[-1]), "public.t", c[-1]])
                    r = json.loads(out)
                    assert r["rows"] == a.rows, r
                    nbytes = r["bytes"]
                    res[c].append(r)
                time.sleep(0.5)         # the backends exit and are reaped
                res[c][-1]["server_cpu"] = server_cpu(postmaster) - cpu0
                print("  rep %d %-7s %6.2f s" % (rep, c, res[c][-1]["wall"]),
                      flush=True)
        rss = {}
        for w in (1, 2):
            out, _ = run([sys.executable, os.path.abspath(__file__),
                          "--child", dsn, "bench_rss_%d" % w, "public.wide",
                          str(w)])
            rss[w] = json.loads(out)
            assert rss[w]["rows"] == a.rss_rows
    finally:
        server.cleanup()

    print("\nmachine: %(cpu)s, %(cores)s cores, Python %(python)s, "
          "PostgreSQL %(postgresql)s, load average %(loadavg)s"
          % results["machine"])
    print("the machine is shared with other work: figures are noisy\n")
    print("%d-row mixed table, %.1f MB of COPY text; medians (range) of %d "
          "runs" % (a.rows, nbytes / 1e6, a.reps))
    rates = {}
    for c in clients:
        rps = [a.rows / r["wall"] for r in res[c]]
        mbs = [nbytes / r["wall"] for r in res[c]]
        rates[c] = statistics.median(rps)
        line = "  %-7s rows/s %s   MB/s %s" % (
            c, fmt_range(rps), fmt_range(mbs, 1e6, "%.1f"))
        line += "\n          server CPU %s s" % fmt_range(
            [r["server_cpu"] for r in res[c]], 1, "%.2f")
        if c != "psql":
            line += "   client CPU %s s   peak RSS %.0f MiB" % (
                fmt_range([r["cpu"] for r in res[c]], 1, "%.2f"),
                statistics.median(r["hwm_kib"] for r in res[c]) / 1024)
        print(line)
    for c in ("ours-1", "ours-2"):
        ratio = rates[c] / rates["psql"]
        print("  %s / psql rows/s: %.2fx (goal >= %.1fx: %s)" % (
            c, ratio, GOAL_RATIO, "met" if ratio >= GOAL_RATIO else
            "NOT met"))
    for w, r in sorted(rss.items()):
        mib = r["hwm_kib"] / 1024
        print("peak RSS, %d rows of 1 kB, %d worker%s: %.0f MiB (goal < %.0f "
              "MiB: %s)" % (a.rss_rows, w, "s" if w > 1 else "", mib,
                            GOAL_RSS_MIB,
                            "met" if mib < GOAL_RSS_MIB else "NOT met"))
    results.update(results=res, rss=rss, bytes=nbytes)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
