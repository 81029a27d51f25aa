"""The publisher the JetStream proofs start, kill and restart: the slot into
JetStream through pylogicaldecoding.jetstream (options as pld stream's).
Exit 0 on SIGTERM (after acking what is stored), 1 with `pld: error: ...`."""

import argparse
import asyncio
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pylogicaldecoding import jetstream  # noqa: E402
from pylogicaldecoding.errors import Error  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dsn", required=True)
    p.add_argument("--slot", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--stream", default="PLD")
    p.add_argument("--subject-prefix", default="pld")
    p.add_argument("--create-stream", action="store_true")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--ack-timeout", type=float, default=5.0)
    p.add_argument("--window", type=int, default=1000)
    a = p.parse_args()
    from jetstream_support import ThreadedSource

    async def run():
        holder = {}
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM,
                                lambda: holder["h"].stop() if "h" in holder else None)
        await jetstream.stream_to_jetstream(
            a.dsn, slot=a.slot, url=a.to, stream=a.stream,
            subject_prefix=a.subject_prefix, create_stream=a.create_stream,
            replicas=a.replicas, ack_timeout=a.ack_timeout, window=a.window,
            source=ThreadedSource(a.dsn, slot=a.slot, create_slot=False),
            handoff_cb=lambda h: holder.__setitem__("h", h))

    try:
        asyncio.run(run())
    except Error as e:
        print("pld: error: %s" % e, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
