"""Map failures to gRPC status codes with messages a user can act on."""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import grpc
from grpc.aio import AbortError

from ciphergrad.core.errors import LevelError, MalformedInputError, ParameterError, SecretKeyError, ShapeError
from ciphergrad.server.execution import ExecutionError

log = logging.getLogger("ciphergrad.server")
_ABORTED = (AbortError,)


class ServiceError(Exception):
    """A failure with the gRPC status the caller should see."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[grpc.StatusCode, str]]:
        """Picklable with its code: a check that fails on a Ray worker reaches the caller as this error."""
        return ServiceError, (self.code, self.message)


def invalid(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def precondition(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, message)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status a core or service error maps to; anything unexpected is INTERNAL (and logged)."""
    if isinstance(exc, ServiceError):
        return exc.code, exc.message
    if isinstance(exc, (SecretKeyError, LevelError)):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, (MalformedInputError, ShapeError, ParameterError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, ExecutionError):  # the cluster, named in the message, failed or went away
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, (OSError, sqlite3.Error)):
        return _storage_status(exc)
    log.exception("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


def _storage_status(exc: OSError | sqlite3.Error) -> tuple[grpc.StatusCode, str]:
    """A full disk is RESOURCE_EXHAUSTED, any other storage failure UNAVAILABLE (the caller may retry); the
    store's write order keeps it consistent either way (see server.store.store)."""
    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        isinstance(exc, sqlite3.Error) and "full" in str(exc).lower()
    )
    if full:
        log.warning("storage full: %s", exc)
        return (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "the server's disk is full: the request was not completed; free space in its --data-dir (or delete "
            "datasets and models you no longer need) and try again",
        )
    log.error("storage failure: %s", exc)
    return (
        grpc.StatusCode.UNAVAILABLE,
        f"the server's storage failed ({type(exc).__name__}): try again later",
    )


def rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn exceptions raised by a servicer method into gRPC statuses: the one place that aborts calls.

    Servicers raise ``ServiceError`` or core errors instead of calling ``context.abort`` themselves, which
    keeps their sync bodies testable without a live RPC. Methods are coroutines or async generators
    (``grpc.aio``, see ``server.rpc.work``); plain functions and generators are wrapped too.
    """
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def async_stream(self: Any, request: Any, context: Any) -> Any:
            try:
                async for response in method(self, request, context):
                    yield response
            except Exception as exc:
                await _abort_async(context, exc)

        return async_stream

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def async_unary(self: Any, request: Any, context: Any) -> Any:
            try:
                return await method(self, request, context)
            except Exception as exc:
                await _abort_async(context, exc)

        return async_unary

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                yield from method(self, request, context)
            except Exception as exc:
                _abort(context, exc)

        return stream

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:
            _abort(context, exc)

    return unary


def _abort(context: grpc.ServicerContext, exc: Exception) -> None:
    if not context.is_active():
        return  # the client is gone (cancelled or disconnected): nobody to tell
    code, message = status_for(exc)
    context.abort(code, message)


async def _abort_async(context: Any, exc: Exception) -> None:
    if isinstance(exc, _ABORTED):
        raise exc  # context.abort() was already called (by an interceptor or grpc itself)
    if context.cancelled() or context.done():
        return  # the client is gone (cancelled or disconnected): nobody to tell
    code, message = status_for(exc)
    await context.abort(code, message)
