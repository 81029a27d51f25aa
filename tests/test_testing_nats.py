"""The throwaway nats-server fixtures (pylogicaldecoding.testing.NatsServer,
NatsCluster): ports, store kept across a crash, clean-up, and a clear error
when the program is missing."""

import asyncio
import os
import time

import pytest

from pylogicaldecoding import testing as pldtesting

from jetstream_support import start_nats


async def _roundtrip(urls, stream, publish=True, replicas=1):
    import nats
    import nats.js.errors
    from nats.js.api import StreamConfig
    nc = await nats.connect(urls, connect_timeout=5)
    try:
        # a three-node stream's creation (its own leader election) took
        # over the default 5 s under ASan on a loaded machine
        js = nc.jetstream(timeout=30)
        if publish:
            await js.add_stream(StreamConfig(name=stream, subjects=["f.>"],
                                             num_replicas=replicas))
            # add_stream answers before the stream's subject interest has
            # reached every node: the node we talk to may still answer "no
            # responders" (503) for a while (CI saw it once, three nodes)
            deadline = time.monotonic() + 30
            while True:
                try:
                    await js.publish("f.x", b"kept", timeout=10)
                    break
                except nats.js.errors.NoStreamResponseError:
                    assert time.monotonic() < deadline, \
                        "stream %s took no message for 30 s" % stream
                    await asyncio.sleep(0.1)
        return (await js.get_msg(stream, 1)).data
    finally:
        await nc.close()


def test_single_node_keeps_its_store_across_a_crash():
    ns = start_nats(pldtesting.NatsServer)
    try:
        assert ns.url.startswith("nats://127.0.0.1:") and ns.running
        assert asyncio.run(_roundtrip([ns.url], "F")) == b"kept"
        port, pid = ns.port, ns.pid
        ns.kill()
        assert not ns.running and not ns.healthy()
        ns.start()
        assert ns.port == port and ns.pid != pid
        assert asyncio.run(_roundtrip([ns.url], "F", publish=False)) == b"kept"
        base = ns.base_dir
    finally:
        ns.cleanup()
    assert not os.path.exists(base)
    ns.cleanup()                     # twice is fine


def test_cluster_of_three_survives_one_node():
    cluster = start_nats(pldtesting.NatsCluster, 3)
    try:
        assert len(set(n.port for n in cluster.nodes)) == 3
        assert asyncio.run(_roundtrip(cluster.urls, "G", replicas=3)) == b"kept"
        cluster.node("n1").kill()
        alive = [n.url for n in cluster.nodes if n.running]
        # if n1 led the stream, the others elect a new leader first
        deadline = time.monotonic() + 60
        while True:
            try:
                data = asyncio.run(_roundtrip(alive, "G", publish=False))
                break
            except Exception:
                assert time.monotonic() < deadline, "no leader after 60 s"
                time.sleep(0.2)
        assert data == b"kept"
        base = cluster.base_dir
    finally:
        cluster.cleanup()
    assert not os.path.exists(base)


def test_missing_program_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PLD_NATS_SERVER", str(tmp_path / "nope"))
    with pytest.raises(pldtesting.NatsServerError, match="not an executable"):
        pldtesting.nats_server_bin()
    monkeypatch.delenv("PLD_NATS_SERVER")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setattr("sysconfig.get_path", lambda name: str(tmp_path))
    monkeypatch.setattr("os.path.isfile",
                        lambda p, _f=os.path.isfile: False if p.endswith(
                            "nats-server") else _f(p))
    with pytest.raises(pldtesting.NatsServerError,
                       match=r"jetstream-server.*apt-get install nats-server"):
        pldtesting.nats_server_bin()


def _hold_port(port):
    """Listen on ``port`` (as another process that took it would)."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1)
    return s


def test_a_port_taken_before_the_first_start_is_picked_again():
    ns = pldtesting.NatsServer()
    held = _hold_port(ns.http_port)
    try:
        taken = ns.http_port
        ns.start()
        assert ns.running and ns.http_port != taken
        assert asyncio.run(_roundtrip([ns.url], "P")) == b"kept"
    finally:
        held.close()
        ns.cleanup()


def test_a_cluster_port_taken_before_the_first_start_is_picked_again():
    cluster = pldtesting.NatsCluster(3)
    held = _hold_port(cluster.nodes[1].cluster["port"])
    try:
        cluster.start()
        assert all(n.running for n in cluster.nodes)
        routes = [n.cluster["port"] for n in cluster.nodes]
        assert held.getsockname()[1] not in routes
    finally:
        held.close()
        cluster.cleanup()
