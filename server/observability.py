"""What an operator sees: Prometheus metrics (``--metrics-port``) and one structured log line per call.

Every gRPC call passes one interceptor, which gives it a request id (the client's ``x-request-id`` metadata
if it sent one, else a fresh one, returned in the initial metadata), counts its messages' bytes in and out,
tracks open streams and records the status it ended with. Logs are JSON lines carrying the request id;
they never hold a token (metadata is not logged) or ciphertext bytes (only sizes).

Metrics (all prefixed ``ciphergrad_``): ``requests_total{method,code}``, ``streams_in_flight{method}``,
``request_bytes_total{method}``, ``response_bytes_total{method}``, ``jobs{state}`` (from the store at scrape
time), ``he_operations_total{kind}`` (every engine the server made: uploads, predictions, statistics, jobs).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from core.engine import OpCounts
from wire.proto_gen.ciphergrad.v1 import training_service_pb2

log = logging.getLogger("ciphergrad.server")
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_REQUEST_ID = "x-request-id"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the call's request id and any ``extra``."""

    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id.get(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class Metrics:
    """The server's Prometheus registry (one per server, so several servers in a process do not collide)."""

    def __init__(self, job_counts: Callable[[], dict[int, int]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ciphergrad_requests", "gRPC calls by method and status", ["method", "code"], registry=self.registry
        )
        self.streams = Gauge("ciphergrad_streams_in_flight", "open streaming calls", ["method"], registry=self.registry)
        self.bytes_in = Counter(
            "ciphergrad_request_bytes", "bytes of request messages", ["method"], registry=self.registry
        )
        self.bytes_out = Counter(
            "ciphergrad_response_bytes", "bytes of response messages", ["method"], registry=self.registry
        )
        self._op_counts: list[OpCounts] = []
        self._job_counts = job_counts
        self.registry.register(_StoreCollector(self))
        self._http: Any = None

    def track(self, counts: OpCounts) -> None:
        """Count ``counts`` (an engine's, updated in place as it works) in he_operations_total."""
        self._op_counts.append(counts)

    def serve(self, host: str, port: int) -> int:
        """Expose /metrics over HTTP; returns the bound port."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def operations(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for counts in list(self._op_counts):
            for kind, value in counts.to_dict().items():
                totals[kind] = totals.get(kind, 0) + value
        return totals


class _StoreCollector:
    """Values read at scrape time: jobs by state (from the store) and HE operations."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list:
        return []  # collected lazily: no store query at registration

    def collect(self) -> Iterator[Any]:
        jobs = GaugeMetricFamily("ciphergrad_jobs", "training jobs by state", labels=["state"])
        counts = self.metrics._job_counts()
        for name, value in training_service_pb2.JobState.items():
            if value:  # JOB_STATE_UNSPECIFIED is never stored
                jobs.add_metric([name.removeprefix("JOB_STATE_").lower()], counts.get(value, 0))
        yield jobs
        ops = CounterMetricFamily("ciphergrad_he_operations", "homomorphic operations performed", labels=["kind"])
        for kind, value in sorted(self.metrics.operations().items()):
            ops.add_metric([kind], value)
        yield ops


class Interceptor(grpc.ServerInterceptor):
    """Request ids, per-call metrics and one log line per call, for every method."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit(".", 1)[-1]  # "Service/Method"
        incoming = dict(details.invocation_metadata or ()).get(_REQUEST_ID, "")
        wrap = _Call(self.metrics, method, str(incoming)[:64])
        if handler.request_streaming and handler.response_streaming:
            make, behaviour = grpc.stream_stream_rpc_method_handler, handler.stream_stream
        elif handler.request_streaming:
            make, behaviour = grpc.stream_unary_rpc_method_handler, handler.stream_unary
        elif handler.response_streaming:
            make, behaviour = grpc.unary_stream_rpc_method_handler, handler.unary_stream
        else:
            make, behaviour = grpc.unary_unary_rpc_method_handler, handler.unary_unary
        return make(
            wrap(behaviour, handler.request_streaming, handler.response_streaming),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _Call:
    def __init__(self, metrics: Metrics, method: str, incoming_id: str) -> None:
        self.metrics, self.method, self.incoming_id = metrics, method, incoming_id

    def __call__(self, behaviour: Callable[..., Any], streaming_in: bool, streaming_out: bool) -> Callable[..., Any]:
        metrics, method = self.metrics, self.method
        counts = {"in": 0, "out": 0}

        def count_in(requests: Iterable[Any]) -> Iterator[Any]:
            for message in requests:
                counts["in"] += message.ByteSize()
                yield message

        def begin(request: Any, context: grpc.ServicerContext) -> tuple[Any, contextvars.Token, float]:
            rid = self.incoming_id or uuid.uuid4().hex[:16]
            token = request_id.set(rid)
            context.send_initial_metadata(((_REQUEST_ID, rid),))
            if streaming_in or streaming_out:
                metrics.streams.labels(method).inc()
            if streaming_in:
                request = count_in(request)
            else:
                counts["in"] += request.ByteSize()
            return request, token, time.perf_counter()

        def end(context: grpc.ServicerContext, started: float, token: contextvars.Token, failed: bool) -> None:
            code = context.code() if hasattr(context, "code") else None
            if code is None:
                code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
            name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            metrics.requests.labels(method, name).inc()
            metrics.bytes_in.labels(method).inc(counts["in"])
            metrics.bytes_out.labels(method).inc(counts["out"])
            if streaming_in or streaming_out:
                metrics.streams.labels(method).dec()
            log.info(
                "rpc",
                extra={
                    "method": method,
                    "code": name,
                    "seconds": round(time.perf_counter() - started, 4),
                    "bytes_in": counts["in"],
                    "bytes_out": counts["out"],
                    "request_id": request_id.get(),
                },
            )
            with contextlib.suppress(ValueError):  # a stream resumed in another context keeps its id
                request_id.reset(token)

        if streaming_out:

            def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                request, token, started = begin(request, context)
                failed = True
                try:
                    for response in behaviour(request, context):
                        counts["out"] += response.ByteSize()
                        yield response
                    failed = False
                finally:
                    end(context, started, token, failed)

            return streaming

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            request, token, started = begin(request, context)
            failed = True
            try:
                response = behaviour(request, context)
                counts["out"] += response.ByteSize() if response is not None else 0
                failed = False
                return response
            finally:
                end(context, started, token, failed)

        return unary
