"""OpenTelemetry traces of transactions: one trace per transaction, across processes.

Off unless configured, and then nearly free: every hook is behind the module flag
:data:`on` (call sites test it first), and nothing here imports OpenTelemetry until
:func:`configure` finds it configured. Install the ``otel`` extra
(``pip install 'paxos-commit[otel]'``) and configure it with the standard variables:

- ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``; ``none`` or unset: off unless an OTLP
  endpoint is set), ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
  ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc``, the default, or ``http/protobuf``),
  ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SDK_DISABLED``; the exporter
  reads its own ``OTEL_EXPORTER_OTLP_*`` settings (headers, timeouts, certificates).
- An application that set up its own global ``TracerProvider`` (before its first
  ``Client`` or ``Participant``) gets its spans there.
- ``PAXOS_COMMIT_OTEL_SPAN_DIR``: also write each finished span, as one JSON line, to
  ``<dir>/<service>-<pid>.jsonl`` (how the tests collect spans from many processes).

**How processes join one trace.** Every process that touches a transaction knows its id
(it travels in the transaction context the SDK propagates, and in every protocol
message), so the trace id is derived from it: ``sha256("paxos-commit/" + txn_id)``, with
the root span's id from the same hash. The application's ``paxos.transaction`` span (from
``Client.begin`` to the end of commit or abort) is that root; every other span, in the
coordinators, the resource managers and the acceptors, is its child, with no extra
metadata on the wire (one batched stream carries many transactions, so per-call metadata
could not carry it anyway). A span that was current when the application began the
transaction is linked from the root.

Spans: ``paxos.transaction``, ``paxos.begin``, ``paxos.join``, ``paxos.commit`` /
``paxos.abort`` (application); ``paxos.coordinator.<request>`` and ``paxos.decide``
(coordinators); ``paxos.prepare``, ``paxos.vote`` and ``paxos.outcome`` (resource
managers: their work, their ballot-0 vote until an acceptor accepted it, applying the
outcome); ``paxos.acceptor.phase1b`` / ``phase2b`` / ``record_outcome`` (each durable
step). Attributes: ``paxos.txn_id`` always, and ``paxos.rm_id``, ``paxos.acceptor``,
``paxos.outcome``, ``paxos.abort_cause``, ``paxos.abort_reason``, ``paxos.ballot`` where
they apply. The protocol core stays free of all this: the drivers make the spans.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "configure",
    "decision_attributes",
    "end",
    "id_generator",
    "on",
    "shutdown",
    "start",
    "start_root",
    "trace_ids",
    "use",
]

#: True once tracing is configured in this process; every call site tests it first.
on = False

_tracer: Any = None
_provider: Any = None
_own_provider = False
_configured = False
_lock = threading.Lock()
#: (trace id, span id) the next root span takes (our id generator reads it).
_forced: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "paxos_otel_ids", default=None
)


def trace_ids(txn_id: str) -> tuple[int, int]:
    """The trace id of ``txn_id``'s trace and the span id of its root span."""
    h = hashlib.sha256(f"paxos-commit/{txn_id}".encode()).digest()
    return int.from_bytes(h[:16], "big") or 1, int.from_bytes(h[16:24], "big") or 1


def _wanted() -> bool:
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters and exporters != "none":
        return True
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") and exporters != "none")
        or env.get("PAXOS_COMMIT_OTEL_SPAN_DIR")
    )


def configure(service_name: str | None = None) -> bool:
    """Turn tracing on if the environment (or the application's own TracerProvider)
    asks for it; ``service_name``: this process's default ``service.name``. Idempotent;
    returns whether tracing is on."""
    global on, _tracer, _provider, _own_provider, _configured
    with _lock:
        if _configured:
            return on
        _configured = True
        if not _wanted() and "opentelemetry.trace" not in sys.modules:
            # Nothing asks for traces and no provider can be set up (OpenTelemetry is not
            # even imported): stay off without paying for the import.
            return False
        try:
            from opentelemetry import trace
        except ImportError:
            if _wanted():
                import logging

                logging.getLogger("paxos_commit.otel").warning(
                    "OTEL_* asks for traces but OpenTelemetry is not installed: pip install 'paxos-commit[otel]'"
                )
            return False
        current = trace.get_tracer_provider()
        if type(current).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider"):
            _provider, _own_provider = current, False  # the application's own set-up
        elif _wanted():
            _provider, _own_provider = _make_provider(service_name), True
            trace.set_tracer_provider(_provider)
        else:
            return False
        _tracer = _provider.get_tracer("paxos_commit")
        on = True
        return True


_id_generator_class: Any = None


def id_generator() -> Any:
    """An OpenTelemetry SDK ``IdGenerator`` that gives each transaction's root span the ids
    every other process derives from the transaction id (random ids otherwise). An
    application with its own ``TracerProvider`` passes it (``TracerProvider(id_generator=
    rm_sdk.otel.id_generator())``) so that its ``paxos.transaction`` spans are the roots."""
    global _id_generator_class
    if _id_generator_class is None:
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        class TxnIds(RandomIdGenerator):
            def generate_trace_id(self) -> int:
                forced = _forced.get()
                return forced[0] if forced is not None else super().generate_trace_id()

            def generate_span_id(self) -> int:
                forced = _forced.get()
                return forced[1] if forced is not None else super().generate_span_id()

        _id_generator_class = TxnIds
    return _id_generator_class()


def use(provider: Any) -> None:
    """Trace to ``provider`` (an OpenTelemetry ``TracerProvider``) from now on, whatever
    the environment says; None turns tracing off. For tests and for applications that
    keep their provider out of the global one."""
    global on, _tracer, _provider, _own_provider, _configured
    with _lock:
        _configured = True
        _provider, _own_provider = provider, False
        _tracer = provider.get_tracer("paxos_commit") if provider is not None else None
        on = provider is not None


def _ours(provider: Any) -> bool:
    gen = getattr(provider, "id_generator", None)
    return _id_generator_class is not None and isinstance(gen, _id_generator_class)


def _make_provider(service_name: str | None) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    attrs: dict[str, Any] = {}
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if service_name and not named:
        attrs["service.name"] = service_name  # a default: the environment's name wins
    resource = Resource.create(attrs)
    provider = TracerProvider(resource=resource, id_generator=id_generator())
    exporters = {
        e.strip().lower() for e in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()
    }
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if "otlp" in exporters or (endpoint and "none" not in exporters):
        protocol = (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        )
        if protocol.startswith("http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            provider.add_span_processor(BatchSpanProcessor(HttpExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            provider.add_span_processor(BatchSpanProcessor(GrpcExporter()))
    if "console" in exporters:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    folder = os.environ.get("PAXOS_COMMIT_OTEL_SPAN_DIR")
    if folder:
        name = str(resource.attributes.get("service.name", "paxos-commit")).replace("/", "_")
        provider.add_span_processor(
            SimpleSpanProcessor(_FileExporter(Path(folder) / f"{name}-{os.getpid()}.jsonl"))
        )
    return provider


def _file_exporter_class() -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class FileExporter(SpanExporter):
        """Each finished span as one JSON line (``ReadableSpan.to_json``), flushed."""

        def __init__(self, path: Path) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")
            self._lock = threading.Lock()

        def export(self, spans: Any) -> Any:
            with self._lock:
                for s in spans:
                    self._file.write(json.dumps(json.loads(s.to_json())) + "\n")
                self._file.flush()
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            with self._lock:
                self._file.close()

    return FileExporter


def _FileExporter(path: Path) -> Any:
    return _file_exporter_class()(path)


def shutdown() -> None:
    """Flush and stop the exporters this module set up (at process exit)."""
    global on
    if _provider is not None and _own_provider:
        _provider.shutdown()
    on = False


def _parent(txn_id: str) -> Any:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    trace_id, root = trace_ids(txn_id)
    ctx = SpanContext(trace_id, root, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(ctx))


def start(
    name: str, txn_id: str, attributes: dict[str, Any] | None = None, *, start_ns: int | None = None
) -> Any:
    """A span of ``txn_id``'s trace (a child of its root); None when tracing is off."""
    if not on:
        return None
    attrs = {"paxos.txn_id": txn_id, **(attributes or {})}
    return _tracer.start_span(name, context=_parent(txn_id), attributes=attrs, start_time=start_ns)


def start_root(txn_id: str, attributes: dict[str, Any] | None = None) -> Any:
    """The transaction's root span (the application's ``paxos.transaction``), with the
    ids every other process derives from ``txn_id``; None when tracing is off."""
    if not on:
        return None
    from opentelemetry import context, trace

    links = []
    current = trace.get_current_span().get_span_context()
    if current.is_valid:
        links.append(trace.Link(current))
    attrs = {"paxos.txn_id": txn_id, **(attributes or {})}
    if not _ours(_provider):
        # Not our id generator: the root is a child of the derived (virtual) root.
        return _tracer.start_span("paxos.transaction", context=_parent(txn_id), attributes=attrs, links=links)
    token = _forced.set(trace_ids(txn_id))
    try:
        return _tracer.start_span(
            "paxos.transaction", context=context.Context(), attributes=attrs, links=links
        )
    finally:
        _forced.reset(token)


def end(
    span: Any, attributes: dict[str, Any] | None = None, *, error: str = "", end_ns: int | None = None
) -> None:
    """End ``span`` (None: nothing), adding ``attributes``; ``error`` marks it failed."""
    if span is None:
        return
    if attributes:
        span.set_attributes({k: v for k, v in attributes.items() if v is not None and v != ""})
    if error:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=end_ns)


def decision_attributes(outcome: str, cause: str = "", rm_id: str = "", reason: str = "") -> dict[str, Any]:
    """The attributes of a decided outcome."""
    attrs: dict[str, Any] = {"paxos.outcome": outcome}
    if outcome == "aborted":
        attrs["paxos.abort_cause"] = cause or "unknown"
        if rm_id:
            attrs["paxos.rm_id"] = rm_id
        if reason:
            attrs["paxos.abort_reason"] = reason[:512]
    return attrs
