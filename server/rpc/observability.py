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

import contextvars
import inspect
import json
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ciphergrad.core.engine import OpCounts
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2

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


class Interceptor(grpc.aio.ServerInterceptor):
    """Request ids, per-call metrics and one log line per call, for every method (on the event loop)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
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
        self.bytes_in = self.bytes_out = 0

    def __call__(self, behaviour: Callable[..., Any], streaming_in: bool, streaming_out: bool) -> Callable[..., Any]:
        self.streams = streams = streaming_in or streaming_out

        async def count_in(requests: AsyncIterable[Any]) -> AsyncIterator[Any]:
            async for message in requests:
                self.bytes_in += message.ByteSize()
                yield message

        async def begin(request: Any, context: grpc.aio.ServicerContext) -> tuple[Any, float]:
            request_id.set(self.incoming_id or uuid.uuid4().hex[:16])  # this call's task has its own context
            await context.send_initial_metadata(((_REQUEST_ID, request_id.get()),))
            if streams:
                self.metrics.streams.labels(self.method).inc()
            if streaming_in:
                request = count_in(request)
            else:
                self.bytes_in += request.ByteSize()
            return request, time.perf_counter()

        if streaming_out:

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                request, started = await begin(request, context)
                failed = True
                try:
                    result = behaviour(request, context)
                    if inspect.isasyncgen(result):
                        async for response in result:
                            self.bytes_out += response.ByteSize()
                            yield response
                    else:  # a coroutine writing with context.write (grpc's own health Watch)
                        await result
                    failed = False
                finally:
                    self.end(context, started, failed)

            return streaming

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            request, started = await begin(request, context)
            failed = True
            try:
                response = await behaviour(request, context)
                self.bytes_out += response.ByteSize() if response is not None else 0
                failed = False
                return response
            finally:
                self.end(context, started, failed)

        return unary

    def end(self, context: grpc.aio.ServicerContext, started: float, failed: bool) -> None:
        code = context.code()
        if context.cancelled():
            code = grpc.StatusCode.CANCELLED
        elif code is None:
            code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
        name = code.name if isinstance(code, grpc.StatusCode) else _code_name(code)
        metrics, method = self.metrics, self.method
        metrics.requests.labels(method, name).inc()
        metrics.bytes_in.labels(method).inc(self.bytes_in)
        metrics.bytes_out.labels(method).inc(self.bytes_out)
        if self.streams:
            metrics.streams.labels(method).dec()
        log.info(
            "rpc",
            extra={
                "method": method,
                "code": name,
                "seconds": round(time.perf_counter() - started, 4),
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "request_id": request_id.get(),
            },
        )


def _code_name(code: Any) -> str:
    """grpc.aio reports a status set by abort() as the C core's integer."""
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)
