"""Markdown tables for the documents from one or more `bench_drain.py
--json` files: each figure as the median over the runs with its range.

    .venv/bin/python bench/bench_report.py run1.json run2.json run3.json

With one run, each ratio is that run's ratio of medians (the goal's
figure) and its range the spread of the per-repetition ratios (the drain's
repetitions side by side; each repetition's p99 for latency); with
several runs, the median of the runs' figures and their range. Paste the output into
README.md and bench/README.md after a run on a quiet machine; the goals
met per run are printed first.
"""

import json
import statistics
import sys

PLUGINS = ("test_decoding", "pgoutput", "pgoutput-binary")


def fmt(values, digits=2, unit="", value=None):
    """'median (lo-hi)' of a list of numbers; `value` replaces the median
    (a single run's ratio of medians, shown with its per-repetition
    range)."""
    med = statistics.median(values) if value is None else value
    if len(values) == 1:
        return "%.*f%s" % (digits, med, unit)
    return "%.*f%s (%.*f-%.*f)" % (digits, med, unit, digits, min(values),
                                  digits, max(values))


def per_rep(runs, c1, c2, field):
    return [a[field] / b[field] for a, b in zip(runs[c1], runs[c2])]


def drain_figure(results, server, where, what):
    """The values of one drain figure over the runs (or, for a single run,
    over its repetitions) and the figure to show (None: their median; a
    single run: the ratio of its medians, the goal's figure)."""
    values = []
    for res in results:
        d = res["servers"].get(server, {}).get("drain")
        if not d or where not in d:
            continue
        if what == "cpu":
            ratio, c1, c2, f = d[where]["cpu_ratio"], "ours", "psycopg2", "cpu"
        elif what == "wall":
            ratio, c1, c2, f = (d[where]["wall_ratio"], "ours",
                                "pg_recvlogical", "wall")
        else:       # ours CPU seconds per million changes
            per_m = 1e6 / d["changes"]
            ms = d["median"][where]["ours"]["cpu"] * per_m
            if len(results) == 1:
                return ([r["cpu"] * per_m for r in d["runs"][where]["ours"]],
                        ms)
            values.append(ms)
            continue
        if len(results) == 1:
            return per_rep(d["runs"][where], c1, c2, f), ratio
        values.append(ratio)
    return values, None


def main(paths):
    results = []
    for p in paths:
        with open(p) as f:
            results.append(json.load(f))
    servers = []
    for res in results:
        for s in res["servers"]:
            if s not in servers:
                servers.append(s)
    m = results[0]["machine"]
    print("Runs: %d (%s); machine: %s, %s cores, Linux %s, Python %s"
          % (len(results), ", ".join(paths), m["cpu"], m["cores"],
             m["kernel"], m["python"]))
    for i, res in enumerate(results):
        goals = res.get("goals", [])
        print("- run %d: %d of %d goals met" % (
            i + 1, sum(1 for g in goals if g["pass"]), len(goals)))
    cols = []
    for s in servers:
        for tr in ("tcp", "unix"):
            cols.append((s, tr))
    print()
    print("Drain (%s; ratios of medians of alternating repetitions)" % (
        "median over %d runs, range over the runs" % len(results)
        if len(results) > 1 else
        "one run: range over its per-repetition ratios"))
    print()
    print("| figure | " + " | ".join("PG %s %s" % (s.split()[0], tr)
                                     for s, tr in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for plugin in PLUGINS:
        for what, label in (("cpu", "CPU ours/psycopg2 (goal <= 0.3)"),
                            ("wall", "wall ours/pg_recvlogical (goal <= 1.0)"),
                            ("cpu_s", "ours CPU s per M changes")):
            cells = []
            for s, tr in cols:
                v, shown = drain_figure(results, s, "%s %s" % (tr, plugin),
                                        what)
                cells.append(fmt(v, value=shown) if v else "-")
            if any(c != "-" for c in cells):
                print("| %s, %s | %s |" % (plugin, label, " | ".join(cells)))
    print()
    print("Latency, INSERT to event(), p99 ms (median over the repetitions "
          "of each one's p99%s)" % (
              "; median over the runs, range over the runs"
              if len(results) > 1 else "; range over the repetitions"))
    print()
    labels = []
    for res in results:
        for s in servers:
            for label in res["servers"].get(s, {}).get("latency", {}):
                if (s, label) not in labels:
                    labels.append((s, label))
    print("| case | ours p99 ms | psycopg2 p99 ms | ours/psycopg2 | goal |")
    print("|---|---|---|---|---|")
    for s, label in labels:
        ours, theirs, ratio, shown = [], [], [], None
        for res in results:
            st = res["servers"].get(s, {}).get("latency", {}).get(label)
            if not st:
                continue
            if len(results) == 1:
                ours = st["ours"]["p99_runs"]
                theirs = st["psycopg2"]["p99_runs"]
                ratio = [a / b for a, b in zip(ours, theirs)]
                shown = (st["ours"]["p99_median"]
                         / st["psycopg2"]["p99_median"])
            else:
                ours.append(st["ours"]["p99_median"])
                theirs.append(st["psycopg2"]["p99_median"])
                ratio.append(st["ours"]["p99_median"]
                             / st["psycopg2"]["p99_median"])
        goal = "<= 2.0x" if "hog" in label else "<= 5 ms and <= 1.0x"
        print("| PG %s %s | %s | %s | %s | %s |" % (
            s.split()[0], label, fmt(ours), fmt(theirs),
            fmt(ratio, value=shown), goal))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
