"""Where a call's work runs: the servicers' pattern on the ``grpc.aio`` server.

The server's event loop (one thread, ``server.app``) only waits: it reads request streams, writes responses,
sleeps on timers. It never runs homomorphic work nor a storage call that may block, so a stalled client, a
slow key holder or a queued job costs no thread and health answers whatever the load.

The pattern every servicer method follows (async shell, sync body):

    @rpc
    async def Method(self, request_iterator, context):
        async with self.work.open_stream(                      # the caller, its stream limit, the first message
            request_iterator, context, "Method", self.access.session,
            kinds=("manifest",), refusal="Method: send a MethodManifest first, then the matrix's chunks",
        ) as (session, requests, first):
            with self.store.staging() as scratch:
                await receive_matrix_async(requests, "chunk", scratch / "m.bin", budget, "the matrix")
                return await self.work.he(self.method_body, session, first.manifest, scratch)  # sync, testable

    @rpc
    async def UnaryMethod(self, request, context):            # a unary call: its whole body on a pool
        return await self.work.io(self.unary_method, request, context.invocation_metadata())

- ``Work.io(fn, ...)``: storage calls (SQLite, small files, token checks) on a small thread pool.
- ``Work.he(fn, ...)``: homomorphic work (parsing and checking ciphertexts, predictions, statistics,
  loading a context) on a pool of ``--workers`` threads: at most that many such calls run at once, the rest
  wait in its queue holding no thread. Training jobs compute on threads of their own under a bound of their
  own, also --workers (``server.jobs.runner``).
- ``Work.ordered(inputs, fn, width)``: a request stream's batches (prediction, query batches), each a
  ``Work.he`` call of its own, up to ``width`` in flight (the executor's ``parallelism``: 1 in this process,
  the Ray pool's size), answered in order.
- ``Work.limits``: per-session streams, anonymous streams and memory in flight, each refused with
  RESOURCE_EXHAUSTED naming its flag.
- ``Work.open_stream``: a client-streaming or bidi call's opening, the same for every such servicer: who
  calls (``caller`` on the IO pool, e.g. ``Access.session``: UNAUTHENTICATED before anything is read), one
  open stream of theirs (``limit``; a session's by default), the first message, which must be one of
  ``kinds`` or the call ends with INVALID_ARGUMENT and the servicer's own ``refusal``.
- ``Inbound``: the next message of a request stream, or DEADLINE_EXCEEDED naming --stream-idle-timeout.

Both pools run the sync body in a copy of the caller's ``contextvars`` (the request id reaches its logs).
Streaming responses are yielded by the async shell (``async for ... yield``) from what the body returned.
A servicer still written the old way (plain methods reading a sync iterator) runs too, on a thread of
grpc's own for as long as its call lasts: convert it to this pattern so that waiting costs nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, NamedTuple, TypeVar

import grpc

from ciphergrad.server.rpc.errors import ServiceError, invalid

T = TypeVar("T")
A = TypeVar("A")
C = TypeVar("C")
IO_THREADS = 8
MIB = 2**20


def exhausted(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


class Limits:
    """Counters shared by every call: open streams per session, anonymous streams, bytes in memory."""

    def __init__(self, streams_per_session: int, anonymous_streams: int, inflight_bytes: int) -> None:
        self.streams_per_session = streams_per_session
        self.anonymous_streams = anonymous_streams
        self.inflight_bytes = inflight_bytes
        self._streams: Counter[str] = Counter()
        self._anonymous = 0
        self._inflight = 0
        self._lock = threading.Lock()  # memory is reserved from worker threads too

    @contextlib.asynccontextmanager
    async def stream(self, session_id: str) -> AsyncIterator[None]:
        """One open stream of ``session_id`` for the block (the loop's thread only)."""
        if self._streams[session_id] >= self.streams_per_session:
            raise exhausted(
                f"this session already has {self._streams[session_id]} open streams, the server's limit "
                f"(server flag --max-streams-per-session={self.streams_per_session}): wait for one to end"
            )
        self._streams[session_id] += 1
        try:
            yield
        finally:
            self._streams[session_id] -= 1
            if not self._streams[session_id]:
                del self._streams[session_id]

    @contextlib.asynccontextmanager
    async def anonymous(self) -> AsyncIterator[None]:
        """One open stream of a caller with no session yet (CreateSession)."""
        if self._anonymous >= self.anonymous_streams:
            raise exhausted(
                f"{self._anonymous} CreateSession streams are open, the server's limit (server flag "
                f"--max-anonymous-streams={self.anonymous_streams}): try again shortly"
            )
        self._anonymous += 1
        try:
            yield
        finally:
            self._anonymous -= 1

    @contextlib.contextmanager
    def memory(self, size: int, what: str) -> Iterator[None]:
        """Hold ``size`` bytes of request data in memory for the block, or RESOURCE_EXHAUSTED."""
        with self._lock:
            if self._inflight + size > self.inflight_bytes:
                held = self._inflight
                refused = True
            else:
                self._inflight += size
                refused = False
        if refused:
            raise exhausted(
                f"{what} ({size / MIB:.1f} MiB) does not fit in the server's memory for requests: {held / MIB:.1f} "
                f"of {self.inflight_bytes / MIB:.0f} MiB are in use (server flag --max-inflight-mb): send "
                "smaller batches or try again shortly"
            )
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= size

    @property
    def inflight(self) -> int:
        return self._inflight


class Opened(NamedTuple, Generic[C]):
    """A request stream past its opening (``Work.open_stream``): who calls, the stream, its first message."""

    caller: C
    requests: Inbound
    first: Any


class Work:
    """The server's two bounded thread pools and its limits (one per server)."""

    def __init__(self, he_threads: int, limits: Limits, idle_timeout: float) -> None:
        self.limits = limits
        self.idle_timeout = idle_timeout
        self._he = ThreadPoolExecutor(max_workers=he_threads, thread_name_prefix="he")
        self._io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="io")

    @contextlib.asynccontextmanager
    async def open_stream(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext, name: str,
        caller: Callable[[Any], C], *, kinds: tuple[str, ...], refusal: str,
        limit: Callable[[C], AbstractAsyncContextManager[None]] | None = None,
    ) -> AsyncIterator[Opened[C]]:
        """The opening of the stream ``name`` (as --stream-idle-timeout's message names it), for the block:
        ``caller(metadata)`` on the IO pool, then one open stream of that caller (``limit(caller)``; default a
        session's, --max-streams-per-session), then the first message, which must be of one of ``kinds`` (its
        ``kind`` oneof): a missing or other first message is INVALID_ARGUMENT with ``refusal``."""
        who = await self.io(caller, context.invocation_metadata())
        requests = Inbound(request_iterator, self.idle_timeout, name)
        held = limit(who) if limit is not None else self.limits.stream(who.id)  # a SessionRecord by default
        async with held:
            first = await requests.next()
            if first is None or first.WhichOneof("kind") not in kinds:
                raise invalid(refusal)
            yield Opened(who, requests, first)

    async def he(self, function: Callable[..., T], *args: Any) -> T:
        return await self._run(self._he, function, *args)

    async def io(self, function: Callable[..., T], *args: Any) -> T:
        return await self._run(self._io, function, *args)

    async def ordered(self, inputs: AsyncIterator[A], function: Callable[[A], T], width: int) -> AsyncIterator[T]:
        """``function(item)`` on the HE pool for each of ``inputs``, up to ``width`` at once (the next inputs
        are read meanwhile), results in input order. ``width`` 1: one at a time, each read after the previous
        result. On an early exit (a failed call, the client gone) the calls not yet started are cancelled; one
        already running finishes on its thread and its answer is dropped."""
        running: collections.deque[asyncio.Future[T]] = collections.deque()
        try:
            async for item in inputs:
                running.append(asyncio.ensure_future(self.he(function, item)))
                if len(running) >= width:
                    yield await running.popleft()
            while running:
                yield await running.popleft()
        finally:
            for future in running:
                if not future.cancel() and not future.cancelled():
                    future.exception()  # a call that failed meanwhile: its error is not logged as unretrieved

    @staticmethod
    async def _run(pool: ThreadPoolExecutor, function: Callable[..., T], *args: Any) -> T:
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(context.run, function, *args))

    def close(self) -> None:
        for pool in (self._he, self._io):
            pool.shutdown(wait=True, cancel_futures=True)


class Inbound:
    """A request stream read on the loop, one message at a time, each within --stream-idle-timeout."""

    def __init__(self, requests: AsyncIterator[Any], idle_timeout: float | None, what: str) -> None:
        self._requests = aiter(requests)
        self.idle_timeout = idle_timeout
        self.what = what
        self._unread: list[Any] = []

    def unread(self, message: Any) -> None:
        """Put ``message`` back: ``next()`` returns it first."""
        self._unread.append(message)

    async def next(self) -> Any | None:
        """The next message, or None at the stream's end."""
        if self._unread:
            return self._unread.pop()
        try:
            return await asyncio.wait_for(anext(self._requests), self.idle_timeout)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{self.what} sent nothing for {self.idle_timeout:g} s (server flag --stream-idle-timeout): "
                "the call was ended; send the data without pauses",
            ) from None

    def __aiter__(self) -> Inbound:
        return self

    async def __anext__(self) -> Any:
        message = await self.next()
        if message is None:
            raise StopAsyncIteration
        return message
