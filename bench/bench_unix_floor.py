"""The CPU floor of a drain: the least CPU any client can spend reading a
backlog, next to psycopg2, pg_recvlogical and our Reader, on one throwaway
PostgreSQL server.

    .venv/bin/python bench/bench_unix_floor.py                 # Unix socket
    .venv/bin/python bench/bench_unix_floor.py --transports unix,tcp \\
        --ours-pauses 0,0.001,0.003                            # the A/B
    .venv/bin/python bench/bench_unix_floor.py --synthetic     # no server

Why (bench/README.md, "Where the Unix socket's CPU goes"): the walsender
sends each message with its own send(); on a Unix socket each send() stays
its own buffer (skb) in the receive queue, which the reader's recv() copies
and frees one by one, however many messages a wake-up reads. That kernel
cost per message is paid by every client, and this script measures it:

- `floor@P`: floor_reader.c, built here with the system C compiler and
  libpq (pg_config): libpq connects and starts the stream, then the socket
  is read raw into a 1 MiB buffer and the framing walked only to find the
  end; nothing per message in user space. P: microseconds it sleeps before
  each poll() (the batching of a socket that ignores SO_RCVLOWAT); with
  P > 0 it also sets SO_RCVLOWAT 64 kB with 2 ms polls, as our Reader does
  while batching (TCP honours it); P = 0: no batching at all.
- `ours`: our Reader as built in place (bench_drain.py's `ours` client:
  no-op event(), decode=False); `ours@S` (--ours-pauses): the same built
  again with BATCH_PAUSE = S seconds (`PLD_CFLAGS=-DBATCH_PAUSE=S`).
- `psycopg2`, `pg_recvlogical`: as in bench_drain.py.

Every client drains its own slot (created before the backlog) up to the same
end LSN, runs alternating over the repetitions (the order rotates and
reverses). Printed: CPU per million changes (user, sys), wall time, wake-ups,
medians with their ranges, and the ratios to psycopg2's CPU and
pg_recvlogical's wall; then, per transport, the least CPU ratio any client
reached: when even the floor reader is above a CPU goal, the goal is out of
reach for any reader on that transport.

--synthetic measures the same cost without PostgreSQL (unix_skb_cost.c): a
writer sends 90-byte messages, one send() each or 180 to a send(), over a
Unix socket and TCP; the reader's CPU per million messages.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_drain as bd  # noqa: E402  (puts the checkout first on sys.path)

ROOT = bd.ROOT
GOAL_CPU = bd.GOAL_CPU


def child_ours(pkg_dir, argv):
    """bench_drain's `ours` child with the package found in pkg_dir."""
    sys.path.insert(0, pkg_dir)
    import pylogicaldecoding._core as core
    if not os.path.abspath(core.__file__).startswith(pkg_dir):
        raise SystemExit("loaded %s, not the build in %s"
                         % (core.__file__, pkg_dir))
    bd.run_child(argv)


def pg_config(what):
    exe = os.environ.get("PG_CONFIG") or shutil.which("pg_config")
    if not exe:
        raise SystemExit("pg_config not found (set PG_CONFIG): it locates "
                         "libpq for floor_reader.c")
    return subprocess.check_output([exe, "--" + what], text=True).strip()


def compile_c(src, out, libpq=False):
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise SystemExit("no C compiler (cc, or set CC): this benchmark "
                         "builds %s" % os.path.basename(src))
    cmd = [cc, "-O2", "-o", out, src]
    if libpq:
        lib = pg_config("libdir")
        cmd[1:1] = ["-I" + pg_config("includedir")]
        cmd += ["-L" + lib, "-Wl,-rpath," + lib, "-lpq"]
    subprocess.check_call(cmd)
    return out


def build_ours(pause, tmp):
    """Our package built with BATCH_PAUSE = pause seconds; its directory."""
    d = os.path.join(tmp, "ours-%s" % pause)
    env = dict(os.environ, PLD_CFLAGS="-DBATCH_PAUSE=%s" % float(pause))
    subprocess.check_call(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib",
         os.path.join(d, "lib"), "--build-temp", os.path.join(d, "tmp")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    pkg = os.path.join(d, "pkg")
    shutil.copytree(os.path.join(ROOT, "pylogicaldecoding"),
                    os.path.join(pkg, "pylogicaldecoding"),
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    built = os.path.join(d, "lib", "pylogicaldecoding")
    for name in os.listdir(built):
        if name.endswith(".so"):
            shutil.copy(os.path.join(built, name),
                        os.path.join(pkg, "pylogicaldecoding"))
    return pkg


def start_options(variant):
    opts = bd.PLUGINS[variant][1]
    if not opts:
        return ""
    return "(%s)" % ", ".join('"%s" \'%s\'' % kv for kv in opts.items())


def run_json(cmd, what):
    t0 = time.monotonic()
    out, wall, ru = bd.finish(bd.spawn(cmd), t0, what)
    return json.loads(out.strip().splitlines()[-1])


def med_range(xs):
    return statistics.median(xs), min(xs), max(xs)


def drains(a, tmp):
    floor = compile_c(os.path.join(HERE, "floor_reader.c"),
                      os.path.join(tmp, "floor_reader"), libpq=True)
    builds = {p: build_ours(p, tmp) for p in a.ours_pauses}
    clients = (["psycopg2", "pg_recvlogical", "ours"]
               + ["ours@%s" % p for p in a.ours_pauses]
               + ["floor@%d" % p for p in a.floor_pauses])
    b = bd.Bench(argparse.Namespace(changes=a.changes, reps=a.reps))
    b.start_server(a.pg)
    m = b.results["machine"]
    print("machine: %s, %s cores, Linux %s, Python %s, PostgreSQL %s; "
          "load average at start %.1f" % (
              m["cpu"], m["cores"], m["kernel"], m["python"],
              m["postgresql"], os.getloadavg()[0]))
    plugin = bd.PLUGINS[a.plugin][0]
    try:
        keys = [(tr, c) for tr in a.transports for c in clients]
        slots = {k: b.new_slots(a.reps, plugin) for k in keys}
        end = b.backlog(a.changes)
        runs = {k: [] for k in keys}
        for rep in range(a.reps):
            k = (rep * 3) % len(keys)
            order = keys[k:] + keys[:k]
            if rep % 2:
                order.reverse()
            for tr, c in order:
                slot, dsn = slots[tr, c][rep], b.dsns[tr]
                if c.startswith("floor@"):
                    r = run_json([floor, dsn + " replication=database", slot,
                                  str(end), c[6:], start_options(a.plugin)],
                                 c)
                elif c.startswith("ours@"):
                    r = run_json([sys.executable, os.path.abspath(__file__),
                                  "--child-ours", builds[c[5:]], "ours", dsn,
                                  slot, str(end), a.plugin], c)
                else:
                    r = b.drain(c, slot, end, tr, a.plugin)
                r["cpu"] = r["user"] + r["sys"]
                runs[tr, c].append(r)
                print("  rep %d %-4s %-15s wall %6.3f s  cpu %6.3f s (user "
                      "%.3f sys %.3f)%s  load %.1f" % (
                          rep + 1, tr, c, r["wall"], r["cpu"], r["user"],
                          r["sys"], "  %d waits" % r["waits"]
                          if "waits" in r else "", os.getloadavg()[0]),
                      flush=True)
        b.drop_slots([s for k in keys for s in slots[k]])
    finally:
        b.server.cleanup()
        os.unlink(b.writer_script)
    report(a, clients, runs)
    return runs


def report(a, clients, runs):
    per_m = 1e6 / a.changes
    print("\n%d changes (%s), %d alternating repetitions; per million "
          "changes; median (range); load average now %.1f"
          % (a.changes, a.plugin, a.reps, os.getloadavg()[0]))
    for tr in a.transports:
        print("\n%-4s %-15s %-22s %-7s %-7s %-20s %s" % (
            tr, "client", "CPU s/M", "user/M", "sys/M", "wall s",
            "waits/M"))
        for c in clients:
            rs = runs[tr, c]
            cpu = med_range([r["cpu"] * per_m for r in rs])
            wall = med_range([r["wall"] for r in rs])
            waits = [r["waits"] * 1e6 / r["messages"] for r in rs
                     if r.get("messages")]
            print("     %-15s %.3f (%.3f-%.3f)    %.3f   %.3f   "
                  "%.3f (%.2f-%.2f)  %s" % (
                      c, cpu[0], cpu[1], cpu[2],
                      statistics.median(r["user"] * per_m for r in rs),
                      statistics.median(r["sys"] * per_m for r in rs),
                      wall[0], wall[1], wall[2],
                      "%.0f" % statistics.median(waits) if waits else "-"))
        print("\n     ratios of the medians (range of the per-repetition "
              "ratios)")
        ref_cpu = [r["cpu"] for r in runs[tr, "psycopg2"]]
        ref_wall = [r["wall"] for r in runs[tr, "pg_recvlogical"]]
        best = None
        for c in clients:
            rs = runs[tr, c]
            cr = (statistics.median(r["cpu"] for r in rs)
                  / statistics.median(ref_cpu))
            wr = (statistics.median(r["wall"] for r in rs)
                  / statistics.median(ref_wall))
            pc = [r["cpu"] / x for r, x in zip(rs, ref_cpu)]
            pw = [r["wall"] / x for r, x in zip(rs, ref_wall)]
            print("     %-15s CPU/psycopg2 %.2f (%.2f-%.2f)  "
                  "wall/pg_recvlogical %.2f (%.2f-%.2f)" % (
                      c, cr, min(pc), max(pc), wr, min(pw), max(pw)))
            if c not in ("psycopg2", "pg_recvlogical") and (
                    best is None or cr < best[1]):
                best = (c, cr)
        if best:
            print("\n     %s: the least CPU any client spent here is %s's, "
                  "%.2fx psycopg2's: a CPU goal of %.1fx is %s on this "
                  "transport" % (tr, best[0], best[1], GOAL_CPU,
                                 "within reach" if best[1] <= GOAL_CPU
                                 else "out of reach for any client"))


def synthetic(a, tmp):
    exe = compile_c(os.path.join(HERE, "unix_skb_cost.c"),
                    os.path.join(tmp, "unix_skb_cost"))
    cases = []
    for tr in a.transports:
        cases += [(tr, p, 1) for p in a.floor_pauses] + [(tr, 0, 180)]
    runs = {c: [] for c in cases}
    for rep in range(a.reps):
        order = cases if rep % 2 == 0 else cases[::-1]
        for tr, pause, per_send in order:
            r = run_json([exe, tr, "1000000", "90", str(pause),
                          str(per_send)], "unix_skb_cost")
            runs[tr, pause, per_send].append(r)
    print("\nsynthetic: 1M messages of 90 bytes, the reader's CPU per "
          "million messages, median (range) of %d alternating runs; load "
          "average now %.1f" % (a.reps, os.getloadavg()[0]))
    print("%-4s %-8s %-13s %-24s %-8s %s" % (
        "", "pause", "msgs/send()", "CPU s/M", "user/M", "wake-ups/M"))
    for tr, pause, per_send in cases:
        rs = runs[tr, pause, per_send]
        cpu = med_range([r["user_per_m"] + r["sys_per_m"] for r in rs])
        print("%-4s %-8s %-13d %.3f (%.3f-%.3f)      %.3f    %.0f" % (
            tr, "%d us" % pause, per_send, cpu[0], cpu[1], cpu[2],
            statistics.median(r["user_per_m"] for r in rs),
            statistics.median(r["wakes_per_m"] for r in rs)))
    return {"%s %d %d" % k: v for k, v in runs.items()}


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--child-ours":
        return child_ours(sys.argv[2], sys.argv[3:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--changes", type=int, default=300000,
                   help="backlog size (default 300000)")
    p.add_argument("--reps", type=int, default=5,
                   help="repetitions per client (default 5)")
    p.add_argument("--transports", default="unix",
                   help="comma-separated subset of tcp,unix (default unix)")
    p.add_argument("--plugin", default="test_decoding",
                   choices=sorted(bd.PLUGINS))
    p.add_argument("--pg", type=int, help="PostgreSQL major version "
                   "(default: what pylogicaldecoding.testing finds first)")
    p.add_argument("--floor-pauses", default="0,300,1000",
                   help="floor_reader's pauses before each poll(), in "
                   "microseconds (default 0,300,1000)")
    p.add_argument("--ours-pauses", default="",
                   help="also our Reader built with these BATCH_PAUSE "
                   "values, in seconds, e.g. 0,0.001 (default none)")
    p.add_argument("--synthetic", action="store_true",
                   help="measure the cost per send() without PostgreSQL "
                   "instead (unix_skb_cost.c)")
    p.add_argument("--json", metavar="PATH", help="also write the runs as "
                   "JSON")
    a = p.parse_args()
    a.transports = [x for x in a.transports.split(",") if x]
    for tr in a.transports:
        if tr not in bd.TRANSPORTS:
            p.error("--transports: %r is neither tcp nor unix" % tr)
    a.floor_pauses = [int(x) for x in a.floor_pauses.split(",") if x]
    a.ours_pauses = [x for x in a.ours_pauses.split(",") if x]
    for x in a.ours_pauses:
        float(x)
    tmp = tempfile.mkdtemp(prefix="bench-floor-")
    try:
        if a.synthetic:
            runs = synthetic(a, tmp)
        else:
            runs = drains(a, tmp)
            runs = {"%s %s" % k: v for k, v in runs.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
