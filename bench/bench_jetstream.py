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
- nats (ceiling 1): the same number of messages, pre-built, shaped like
  R1's, into nats-server alone through a minimal raw-protocol client (no
  PostgreSQL): how fast nats-server stores them on this machine;
- wire (ceiling 2): the slot through the least work a publisher can do:
  our Reader (decode=False) and the same raw-protocol client, the
  test_decoding text as body, the same ids and headers as ours;
- R1: pylogicaldecoding.jetstream.stream_to_jetstream into a new
  single-replica file stream (typed changes, JSON bodies, one message per
  change plus begin/commit framing, acks by JetStream, slot acked);
- R3: the same into a three-replica stream on the cluster.

Measured per run: wall time from connect to the last ack (inside the child),
the publisher's CPU (user + system, all threads) and the nats-server
processes' CPU over the run. Reported: medians and ranges, changes/s, the
ratio of changes/s of each client to raw (goal R1/raw >= 0.4) and R1/wire
(how near the ceiling), CPU per change. The ceilings ask for answers as
our sink does on a single-replica stream (--answer-every).
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


# The ceilings: the least work a publisher can do. A plain blocking socket
# speaking the NATS protocol (no client library): HPUB frames with the same
# headers as ours (Nats-Msg-Id, Nats-Expected-Last-Msg-Id, Pld-Xid,
# Pld-Kind, Pld-Lsn), written in 64 KiB chunks, at most WINDOW messages
# unconfirmed. Answers as ours on a single-replica stream: a reply subject
# on every ANSWER_EVERY-th message and on the last one of each chunk (sent
# again with one); --answer-every 1: every message asks (the errors in the
# answers are counted; any is a failure of the run).

CEILING_WINDOW = 10000
ANSWER_EVERY = 256


class RawPublisher:
    """A minimal pipelined JetStream publisher on one socket (bench only)."""

    def __init__(self, url, window=CEILING_WINDOW, answer_every=ANSWER_EVERY):
        import collections
        import socket
        host, port = url.split(",")[0].split("//")[-1].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.window = window
        self.answer_every = answer_every
        self.buf = []
        self.size = self.n = self.confirmed = self.answers = self.errors = 0
        self.asked = collections.deque()    # message number per answer
        self.last = None        # the last message sent without a reply
        self.tail = b""
        self._read_until(b"\r\n")            # INFO
        self.sock.sendall(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
            b'"no_responders":true,"protocol":1}\r\nSUB _R.* 1\r\n')

    def _read_until(self, what):
        data = b""
        while what not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("nats-server closed the connection")
            data += chunk
        return data

    def request(self, subject, body):
        """A JetStream API call, before any publish: its answer."""
        self.sock.sendall(b"PUB %s _R.api %d\r\n%s\r\n" % (
            subject.encode(), len(body), body))
        data = b""
        while True:
            data += self._read_until(b"\r\n")
            at = data.find(b"MSG _R.api ")
            end = data.find(b"\r\n", at)
            if at >= 0 and end > 0:
                size = int(data[at:end].split()[-1])
                while len(data) < end + 2 + size:
                    data += self.sock.recv(65536)
                return json.loads(data[end + 2:end + 2 + size])

    def create_stream(self, stream, subjects):
        ans = self.request("$JS.API.STREAM.CREATE." + stream, json.dumps({
            "name": stream, "subjects": [subjects], "storage": "file",
            "num_replicas": 1, "duplicate_window": 120 * 10 ** 9}).encode())
        if "error" in ans:
            raise RuntimeError("cannot create stream %s: %s" % (stream, ans))

    def add(self, subject, hdr, body):
        """One message: its subject, header block, body (bytes)."""
        self.n += 1
        if self.n % self.answer_every == 0:
            frame = b"HPUB %s _R.%d %d %d\r\n%s%s\r\n" % (
                subject, self.n, len(hdr), len(hdr) + len(body), hdr, body)
            self.asked.append(self.n)
            self.last = None
        else:
            frame = b"HPUB %s %d %d\r\n%s%s\r\n" % (
                subject, len(hdr), len(hdr) + len(body), hdr, body)
            self.last = (subject, hdr, body)
        self.buf.append(frame)
        self.size += len(frame)
        if self.size >= 65536:
            self.flush()

    def flush(self):
        if self.last is not None:
            subject, hdr, body = self.last
            self.buf.append(b"HPUB %s _R.%d %d %d\r\n%s%s\r\n" % (
                subject, self.n, len(hdr), len(hdr) + len(body), hdr, body))
            self.asked.append(self.n)
            self.last = None
        if self.buf:
            self.sock.sendall(b"".join(self.buf))
            self.buf, self.size = [], 0
        self._read_answers(block=self.n - self.confirmed > self.window)

    def _read_answers(self, block, until=None):
        sock = self.sock
        sock.setblocking(block)
        try:
            while True:
                try:
                    chunk = sock.recv(1 << 20)
                except BlockingIOError:
                    return
                if not chunk:
                    raise RuntimeError("nats-server closed the connection")
                data = self.tail + chunk
                cut = data.rfind(b"\r\n")
                done, self.tail = data[:cut + 2], data[cut + 2:]
                for _ in range(done.count(b"MSG ")):
                    self.confirmed = self.asked.popleft()
                    self.answers += 1
                self.errors += done.count(b'"error"')
                if b"PING\r\n" in done:
                    sock.sendall(b"PONG\r\n")
                if until is None:
                    if self.n - self.confirmed <= self.window:
                        return
                elif self.confirmed >= until:
                    return
                sock.setblocking(True)
        finally:
            sock.setblocking(True)

    def finish(self):
        self.flush()
        if self.confirmed < self.n:
            self._read_answers(block=True, until=self.n)
        self.sock.close()


def _hdr(rid, last, xid, kind, lsn):
    hdr = b"NATS/1.0\r\nNats-Msg-Id: %s\r\n" % rid
    if last is not None:
        hdr += b"Nats-Expected-Last-Msg-Id: %s\r\n" % last
    return hdr + b"Pld-Xid: %d\r\nPld-Kind: %s\r\nPld-Lsn: %X/%X\r\n\r\n" % (
        xid, kind, lsn >> 32, lsn & 0xFFFFFFFF)


def backlog_shape(changes):
    """(transaction sizes) of bench_drain's backlog."""
    big = changes // 2
    return [big] + [100] * ((changes - big) // 100)


def child_nats(url, stream, prefix, changes, answer_every):
    """nats-server alone: pre-built messages shaped like R1's (a begin, the
    rows, a commit per transaction, ~130-byte JSON bodies), published as
    fast as nats-server stores them. No PostgreSQL."""
    frames = []
    last = None
    lsn, xid, n = 0x1A000000, 750, 0
    row = prefix.encode() + b".public.t"
    tx = prefix.encode() + b"._tx"
    for size in backlog_shape(changes):
        begin = lsn
        for i in range(size + 2):
            rid = b"bench:%X:%d" % (begin, i)
            kind = (b"begin" if i == 0 else b"commit" if i == size + 1
                    else b"insert")
            body = (b'{"lsn":"%X/%X","xid":%d,"kind":"insert","schema":'
                    b'"public","table":"t","new":{"id":%d,"data":"row %d"},'
                    b'"old":null,"commit_time":null}' % (
                        lsn >> 32, lsn & 0xFFFFFFFF, xid, n, n))
            frames.append((row if kind == b"insert" else tx,
                           _hdr(rid, last, xid, kind, lsn), body))
            last = rid
            lsn += 72
            n += 1
        xid += 1
    t0, u0, s0 = bench_drain._usage()
    pub = RawPublisher(url, answer_every=answer_every)
    pub.create_stream(stream, prefix + ".>")
    for f in frames:
        pub.add(*f)
    pub.finish()
    bench_drain._report(t0, u0, s0, messages=pub.n, answers=pub.answers,
                        errors=pub.errors)


def child_wire(dsn, slot, end, url, stream, prefix, answer_every):
    """The slot into JetStream with the least work per change: our Reader
    (decode=False, as raw), one frame per message built with one bytes
    format (the test_decoding text as body, ids from the begin LSN and an
    ordinal, the same headers as ours), acks counted; the slot is acked
    once at the end. What any publisher of this slot can at best do."""
    from pylogicaldecoding import Reader
    pub = RawPublisher(url, answer_every=answer_every)
    pub.create_stream(stream, prefix + ".>")
    row = prefix.encode() + b".public.t"
    tx = prefix.encode() + b"._tx"
    slot_b = slot.encode()
    state = {"begin": 0, "n": 0, "last": None, "xid": 0}

    class Wire(Reader):
        def event(self, msg):
            payload = msg.payload.encode()
            lsn = msg.data_start
            if payload.startswith(b"BEGIN"):
                state["begin"], state["n"] = lsn, 0
                state["xid"] = int(payload[6:])
                subject, kind = tx, b"begin"
            elif payload.startswith(b"COMMIT"):
                subject, kind = tx, b"commit"
            elif payload.startswith(b"table"):
                subject, kind = row, b"insert"
            else:
                return
            rid = b"%s:%X:%d" % (slot_b, state["begin"], state["n"])
            state["n"] += 1
            pub.add(subject, _hdr(rid, state["last"], state["xid"], kind,
                                  lsn), payload)
            state["last"] = rid

    t0, u0, s0 = bench_drain._usage()
    r = Wire(dsn, slot=slot, create_slot=False, confirm_keepalives=False,
             decode=False)
    r.start(until_lsn=end)
    pub.finish()
    r.close()
    bench_drain._report(t0, u0, s0, messages=pub.n, answers=pub.answers,
                        errors=pub.errors)


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


def run_js(b, slot, end, url, replicas, nats_pids, n, kind="js",
           changes=0, answer_every=ANSWER_EVERY):
    stream = "BENCH%d" % n
    if kind == "js":
        args = [b.dsn, slot, str(end), url, stream, stream.lower(),
                str(replicas)]
    elif kind == "wire":
        args = [b.dsn, slot, str(end), url, stream, stream.lower(),
                str(answer_every)]
    else:
        args = [url, stream, stream.lower(), str(changes), str(answer_every)]
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind] + args
    c0 = sum(proc_cpu(p) for p in nats_pids)
    t0 = time.monotonic()
    proc = bench_drain.spawn(cmd)
    out, wall, ru = bench_drain.finish(proc, t0, "publisher %s" % kind)
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
        a = sys.argv[3:]
        if kind == "js":
            return child_js(a[0], a[1], int(a[2]), a[3], a[4], a[5],
                            int(a[6]))
        if kind == "nats":
            return child_nats(a[0], a[1], a[2], int(a[3]), int(a[4]))
        if kind == "wire":
            return child_wire(a[0], a[1], int(a[2]), a[3], a[4], a[5],
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
    p.add_argument("--answer-every", type=int, default=ANSWER_EVERY,
                   help="the ceilings ask for an answer every N messages "
                   "and at the end of each 64 KiB chunk (default %d, as "
                   "our sink on a single-replica stream; 1: every message)"
                   % ANSWER_EVERY)
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
        clients = ["raw"] + (["nats", "wire"] if 1 in replicas else []) + [
            "R%d" % r for r in replicas]
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
                elif c in ("nats", "wire"):
                    n += 1
                    r = run_js(b, slot, end, single.url, 1, [single.pid], n,
                               kind=c, changes=a.changes,
                               answer_every=a.answer_every)
                    if r.get("errors"):
                        raise RuntimeError("%s: %d refused publishes"
                                           % (c, r["errors"]))
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
        if "wire" in rate and "R1" in rate:
            print("changes/s R1/wire (how near the ceiling): %.3f"
                  % (rate["R1"] / rate["wire"]))
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
