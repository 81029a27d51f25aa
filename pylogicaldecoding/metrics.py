"""Stats of a Reader and their Prometheus exposition.

`Reader.stats()` returns a `Stats`: always on, counted by the C core as
messages arrive (a few integer additions per message). It is safe to call
from any thread, while the stream runs.

Counters (since the Reader was made; they never go down):
    ``messages`` (XLogData messages received), ``bytes`` (their payload
    bytes), ``transactions`` (commits decoded: `Commit`, `StreamCommit`,
    `CommitPrepared`; 0 with ``decode=False``), ``acks`` (`ack()` calls
    that moved the acked position), ``reconnections`` (with
    ``reconnect``), ``status_updates`` (standby status updates sent).
Gauges:
    ``received_lsn`` (the last message delivered), ``flushed_lsn`` (the
    acked position, what the server may forget), ``server_lsn`` (the
    server's end of WAL, as it last told us), ``lag_bytes``
    (``server_lsn - flushed_lsn``: WAL written but not yet confirmed by
    this consumer; None before the server has said where its WAL ends),
    ``last_commit_time`` (the commit timestamp of the last transaction
    decoded, when the plugin sends it: pgoutput always, test_decoding with
    ``include-timestamp``, wal2json with ``include-timestamp``) and
    ``last_commit_age`` (seconds between now and it; None if unknown).
    LSNs are ints (`pylogicaldecoding.format_lsn` prints them).

Prometheus (the ``metrics`` extra: ``pip install
'pylogicaldecoding[metrics]'``, which installs prometheus-client):

    from pylogicaldecoding import metrics
    metrics.serve(reader, 9187)               # http://host:9187/metrics
    # or, in an application that has its own registry/endpoint:
    prometheus_client.REGISTRY.register(metrics.ReaderCollector(reader))

Metric names (labels: ``slot``): ``pld_messages_total``,
``pld_received_bytes_total``, ``pld_transactions_total``,
``pld_acks_total``, ``pld_reconnections_total``,
``pld_status_updates_total``, ``pld_received_lsn``, ``pld_flushed_lsn``,
``pld_server_lsn`` (bytes: LSNs as numbers), ``pld_lag_bytes``,
``pld_last_commit_age_seconds``, ``pld_last_commit_timestamp_seconds``
(the last two absent while unknown).
"""

import collections
import datetime as _dt
import time as _time

__all__ = ["Stats", "collect", "ReaderCollector", "exposition", "serve"]

Stats = collections.namedtuple(
    "Stats",
    "messages bytes transactions acks reconnections status_updates "
    "received_lsn flushed_lsn server_lsn lag_bytes last_commit_time "
    "last_commit_age")
Stats.__doc__ = """A Reader's counters and gauges (see the module's doc)."""

_EXTRA_HINT = ("Prometheus metrics need the prometheus-client package: "
               "pip install 'pylogicaldecoding[metrics]'")


def collect(reader):
    """The `Stats` of a Reader (or anything with the C core's counters)."""
    server = reader.server_wal_end
    flushed = reader.flushed_lsn
    commit = reader.last_commit
    when = getattr(commit, "commit_time", None) if commit is not None else None
    age = None
    if isinstance(when, _dt.datetime) and when.tzinfo is not None \
            and when.year < 9999:
        age = max(0.0, _time.time() - when.timestamp())
    return Stats(
        messages=reader.message_count,
        bytes=reader.bytes_received,
        transactions=reader.transaction_count,
        acks=reader.ack_count,
        reconnections=getattr(reader, "reconnections", 0),
        status_updates=reader.status_count,
        received_lsn=reader.received_lsn,
        flushed_lsn=flushed,
        server_lsn=server,
        lag_bytes=max(0, server - flushed) if server else None,
        last_commit_time=when if isinstance(when, _dt.datetime) else None,
        last_commit_age=age,
    )


def _prometheus():
    try:
        import prometheus_client.core
        import prometheus_client.exposition
        import prometheus_client.registry
    except ImportError as e:
        raise ImportError(_EXTRA_HINT) from e
    return prometheus_client


_COUNTERS = [
    ("messages", "pld_messages", "XLogData messages received"),
    ("bytes", "pld_received_bytes", "payload bytes received"),
    ("transactions", "pld_transactions", "transactions (commits) decoded"),
    ("acks", "pld_acks", "acks that moved the confirmed position"),
    ("reconnections", "pld_reconnections", "reconnections after a lost "
     "connection"),
    ("status_updates", "pld_status_updates", "standby status updates sent"),
]
_GAUGES = [
    ("received_lsn", "pld_received_lsn",
     "WAL position of the last message delivered (an LSN as a number)"),
    ("flushed_lsn", "pld_flushed_lsn",
     "acked WAL position, confirmed to the server (an LSN as a number)"),
    ("server_lsn", "pld_server_lsn",
     "the server's end of WAL as last reported (an LSN as a number)"),
    ("lag_bytes", "pld_lag_bytes",
     "bytes of WAL between the server's end and the acked position"),
    ("last_commit_age", "pld_last_commit_age_seconds",
     "seconds since the commit timestamp of the last transaction decoded"),
]


class ReaderCollector:
    """A prometheus-client collector of one Reader's `Stats`.

    Register it in a registry (``registry.register(ReaderCollector(r))``);
    each scrape reads the Reader's stats at that moment. ``labels`` (a
    dict) are added to every sample; by default ``{"slot": reader.slot}``.
    Needs the ``metrics`` extra (prometheus-client).
    """

    def __init__(self, reader, labels=None):
        _prometheus()
        self.reader = reader
        if labels is None:
            labels = {"slot": getattr(reader, "slot", "")}
        self.labels = dict(labels)

    def describe(self):
        """Nothing: the metrics are read at each scrape, not at
        registration (a Reader may not be connected yet)."""
        return []

    def collect(self):
        """Called by prometheus-client at each scrape: the metric families."""
        core = _prometheus().core
        stats = collect(self.reader)
        names = list(self.labels)
        values = [str(self.labels[n]) for n in names]
        for field, name, doc in _COUNTERS:
            fam = core.CounterMetricFamily(name, doc, labels=names)
            fam.add_metric(values, getattr(stats, field))
            yield fam
        for field, name, doc in _GAUGES:
            value = getattr(stats, field)
            if value is None:
                continue
            fam = core.GaugeMetricFamily(name, doc, labels=names)
            fam.add_metric(values, value)
            yield fam
        if stats.last_commit_time is not None:
            fam = core.GaugeMetricFamily(
                "pld_last_commit_timestamp_seconds",
                "commit timestamp of the last transaction decoded (Unix time)",
                labels=names)
            fam.add_metric(values, stats.last_commit_time.timestamp())
            yield fam


def _registry(reader, labels=None):
    prom = _prometheus()
    registry = prom.registry.CollectorRegistry(auto_describe=False)
    registry.register(ReaderCollector(reader, labels))
    return registry


def exposition(reader, labels=None):
    """The Reader's metrics in the Prometheus text format (bytes), for an
    application that serves them itself. Needs the ``metrics`` extra."""
    return _prometheus().exposition.generate_latest(_registry(reader, labels))


def serve(reader, port, addr="0.0.0.0", labels=None):
    """Serve the Reader's metrics at ``http://addr:port/metrics`` from a
    daemon thread (prometheus-client's own HTTP server); return the
    server, whose ``shutdown()`` stops it. ``port`` 0 picks a free port
    (``server.server_port`` tells which). Needs the ``metrics`` extra."""
    prom = _prometheus()
    server, _ = prom.exposition.start_http_server(
        port, addr=addr, registry=_registry(reader, labels))
    return server
