"""Prometheus metrics of every paxos-commit service (names follow Prometheus conventions,
prefixed ``paxos_commit_``), and the gRPC interceptor that counts requests by status."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["AcceptorMetrics", "CoordinatorMetrics", "RequestCounter", "metrics_host", "serve_metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_WRITE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _Base:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.grpc_requests = Counter(
            "paxos_commit_grpc_requests",
            "gRPC requests served, by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.stream_messages = Counter(
            "paxos_commit_stream_messages",
            "Messages served inside batched streams, by message kind and status code.",
            ["kind", "code"],
            registry=self.registry,
        )
        self.stream_batch_size = Histogram(
            "paxos_commit_stream_batch_size",
            "Messages per incoming stream batch.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.stream_reply_batch_size = Histogram(
            "paxos_commit_stream_reply_batch_size",
            "Replies per outgoing stream batch (one stream write each).",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.authz_refusals = Counter(
            "paxos_commit_authz_refusals",
            "Requests refused by the authorization policy (paxos_commit.authz), by rule and peer role.",
            ["rule", "role"],
            registry=self.registry,
        )
        self.undecodable = Counter(
            "paxos_commit_undecodable_requests",
            "Unary requests whose bytes did not decode (answered INVALID_ARGUMENT), by method.",
            ["method"],
            registry=self.registry,
        )
        # Queue depths, computed when scraped (nothing on the hot path).
        #: The open streams' StreamReplies: ``serve_stream(live=...)`` keeps its own here.
        #: Scrapes come from another thread: ``list()`` of a set is one step under the GIL.
        self.open_streams: set[Any] = set()
        live = self.open_streams
        self.streams = Gauge(
            "paxos_commit_streams_open",
            "Batched streams open to this process (one per peer process and identity).",
            registry=self.registry,
        )
        self.stream_requests_open = Gauge(
            "paxos_commit_stream_requests_open",
            "Requests read from this process's streams and not answered yet (a stream is not "
            "read while 10,000 of its own are open: back-pressure).",
            registry=self.registry,
        )
        self.stream_replies_unsent = Gauge(
            "paxos_commit_stream_replies_unsent",
            "Replies ready on this process's streams and not written yet (they leave with the "
            "stream's next write).",
            registry=self.registry,
        )
        self.streams.set_function(lambda: len(live))
        self.stream_requests_open.set_function(lambda: sum(max(r.open, 0) for r in list(live)))
        self.stream_replies_unsent.set_function(lambda: sum(r.unsent for r in list(live)))
        self.insecure = Gauge(
            "paxos_commit_insecure",
            "1 if this process serves without TLS (--insecure): anyone who can reach it may act as any role.",
            registry=self.registry,
        )

    def on_stream_batch(self, size: int) -> None:
        if size:
            self.stream_batch_size.observe(size)

    def on_stream_reply_batch(self, size: int) -> None:
        if size:
            self.stream_reply_batch_size.observe(size)

    def on_refusal(self, rule: str, role: str) -> None:
        self.authz_refusals.labels(rule, role).inc()

    def on_undecodable(self, method: str) -> None:
        self.undecodable.labels(method).inc()


class AcceptorMetrics(_Base):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.write_seconds = Histogram(
            "paxos_commit_acceptor_write_seconds",
            "Time to make one group-commit batch durable.",
            buckets=_WRITE_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "paxos_commit_acceptor_batch_size",
            "Protocol steps committed together in one storage transaction.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )

        # Collection (acceptor/collect.py), refreshed after every pass.
        self.txns_live = Gauge(
            "paxos_commit_acceptor_transactions_live",
            "Transactions with state here: undecided, or decided and not collected yet.",
            registry=self.registry,
        )
        self.txns_collectable = Gauge(
            "paxos_commit_acceptor_transactions_collectable",
            "Decided transactions every participant acknowledged, waiting for collection.",
            registry=self.registry,
        )
        self.outcome_records = Gauge(
            "paxos_commit_acceptor_outcome_records",
            "Compact outcome records of collected transactions kept (retention).",
            registry=self.registry,
        )
        self.txns_collected = Counter(
            "paxos_commit_acceptor_transactions_collected",
            "Transactions collected here (state replaced by a compact outcome record).",
            registry=self.registry,
        )
        self.oldest_unacknowledged = Gauge(
            "paxos_commit_acceptor_oldest_unacknowledged_age_seconds",
            "Age of the oldest decided transaction some participant has not acknowledged (an RM "
            "that never comes back keeps it here; 0 if none).",
            registry=self.registry,
        )
        self.instance_rows = Gauge(
            "paxos_commit_acceptor_instance_rows",
            "Instance rows stored (of live transactions).",
            registry=self.registry,
        )
        self.db_bytes = Gauge(
            "paxos_commit_acceptor_database_bytes",
            "Bytes the acceptor's database takes on disk.",
            registry=self.registry,
        )
        self.collect_batch_seconds = Gauge(
            "paxos_commit_acceptor_collect_batch_seconds",
            "How long the last collection batch held the writer.",
            registry=self.registry,
        )
        self._collected_seen = 0
        self.storage_queue = Gauge(
            "paxos_commit_acceptor_storage_queue_steps",
            "Protocol steps not durable yet, by state: waiting for the writer, or in the storage "
            "transaction being written (their replies leave once it commits).",
            ["state"],
            registry=self.registry,
        )

    def watch_store(self, store: Any) -> None:
        """Report ``store``'s queue (an ``acceptor.storage.AcceptorStore``), when scraped."""
        self.storage_queue.labels("waiting").set_function(lambda: store.steps_waiting)
        self.storage_queue.labels("writing").set_function(lambda: store.steps_writing)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.write_seconds.observe(seconds)

    def on_collect(self, stats: Any) -> None:
        """After each collection pass (an ``acceptor.collect.CollectStats``)."""
        self.txns_live.set(stats.live)
        self.txns_collectable.set(stats.collectable)
        self.outcome_records.set(stats.records)
        self.oldest_unacknowledged.set(stats.oldest_unacked_ms / 1000.0)
        self.db_bytes.set(stats.db_bytes)
        self.instance_rows.set(stats.instances)
        self.collect_batch_seconds.set(stats.last_batch_seconds)
        if stats.collected_total > self._collected_seen:
            self.txns_collected.inc(stats.collected_total - self._collected_seen)
            self._collected_seen = stats.collected_total


class CoordinatorMetrics(_Base):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.begun = Counter("paxos_commit_transactions_begun", "Transactions begun here.", registry=r)
        self.committed = Counter(
            "paxos_commit_transactions_committed", "Transactions decided committed here.", registry=r
        )
        self.aborted = Counter(
            "paxos_commit_transactions_aborted",
            "Transactions decided aborted here, by reason.",
            ["reason"],
            registry=r,
        )
        self.commit_latency = Histogram(
            "paxos_commit_commit_latency_seconds",
            "From the commit request to the decision, for transactions owned here.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "paxos_commit_transactions_in_flight", "Transactions owned here and not yet decided.", registry=r
        )
        self.in_doubt = Gauge(
            "paxos_commit_transactions_in_doubt",
            "Transactions whose commit started (RMs may be prepared) and that are not decided yet.",
            registry=r,
        )
        self.oldest_in_doubt = Gauge(
            "paxos_commit_oldest_in_doubt_age_seconds",
            "Age of the oldest in-doubt transaction this replica is driving (0 if none).",
            registry=r,
        )
        self.recovery_ballots = Counter(
            "paxos_commit_recovery_ballots", "Ballots above 0 started (recovery of an instance).", registry=r
        )
        self.peers_reachable = Gauge(
            "paxos_commit_acceptor_peers_reachable",
            "Acceptors that answered the last health check.",
            registry=r,
        )
        self.acceptors = Gauge("paxos_commit_acceptors", "Acceptors configured (2F+1).", registry=r)
        self.acknowledged = Counter(
            "paxos_commit_acknowledgements",
            "RM acknowledgements of applied outcomes taken here (counted or passed on).",
            registry=r,
        )
        self.awaiting_acks = Gauge(
            "paxos_commit_transactions_awaiting_acks",
            "Decided transactions owned here waiting for their RMs' acknowledgements.",
            registry=r,
        )
        self.operator_actions = Counter(
            "paxos_commit_operator_actions",
            "Operators' actions served here (retry), by action and result.",
            ["action", "result"],
            registry=r,
        )
        self.acceptor_link_requests = Gauge(
            "paxos_commit_acceptor_link_requests",
            "Requests to each acceptor over its stream, by state: unsent (queued for the "
            "link's next write) or unanswered (sent or queued, no answer yet; at 20,000 new "
            "ones fail over to another acceptor at once).",
            ["acceptor", "state"],
            registry=r,
        )

    def watch_acceptor_links(self, links: Any) -> None:
        """Report each acceptor link's queue (an ``rm_sdk._streams.StreamAcceptors``)."""

        def read(i: int, which: int) -> Callable[[], float]:
            return lambda: links.depth(i)[which]

        for i in range(links.n):
            self.acceptor_link_requests.labels(str(i), "unsent").set_function(read(i, 0))
            self.acceptor_link_requests.labels(str(i), "unanswered").set_function(read(i, 1))


if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class RequestCounter(_Interceptor):
    """Counts every unary request by method and final status code."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner: Any = handler.unary_unary
        counter = self.counter

        async def counted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                reply = await inner(request, context)
            except asyncio.CancelledError:
                # The peer went away (or the server is stopping): not an error of ours.
                counter.labels(method, _code_name(context.code() or grpc.StatusCode.CANCELLED)).inc()
                raise
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                counter.labels(method, _code_name(code)).inc()
                raise
            counter.labels(method, _code_name(context.code() or grpc.StatusCode.OK)).inc()
            return reply

        return grpc.unary_unary_rpc_method_handler(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _code_name(code: Any) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


def metrics_host(listen: str) -> str:
    """The host of a ``host:port`` listen address, for /metrics to bind the same interface
    as the gRPC port (not every interface: ``--listen 127.0.0.1:7700`` keeps metrics local)."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    return host or "0.0.0.0"


def serve_metrics(port: int, registry: CollectorRegistry, addr: str = "127.0.0.1") -> int:
    """Serve /metrics over HTTP on ``addr`` in a background thread; returns the bound port."""
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return int(server.server_port)
