"""A training job's line to its Train stream and to the key holder behind it.

A job runs on a thread of its own (the trainer in ``core`` calls ``refresh`` synchronously, mid-epoch); the
stream lives on the server's event loop. ``Link`` joins the two: the job ``emit``s events, which reach the
stream's ``asyncio.Queue`` through ``loop.call_soon_threadsafe``; the stream's reader task puts the client's
replies on a ``queue.Queue`` the job thread waits on.

``JobSlot``: a job holds one of the server's ``--workers`` HE slots only while it computes. It gives its slot
back while it waits for the key holder (``StreamRefresh``), so a slow key holder stops no other job's work,
and takes one again when the reply has come. A job that waits longer than --refresh-timeout pauses
(``Detached`` with a message naming the flag; state PAUSED, resumable with ``attach``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc

from ciphergrad.core.gram import UPPER, GramStatistics
from ciphergrad.core.layout import Tile
from ciphergrad.core.normal import RightHandSide
from ciphergrad.core.refine import Preconditioner
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.server.rpc import validation
from ciphergrad.server.rpc.errors import ServiceError, invalid
from ciphergrad.wire import codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2 as pool_pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2 as pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2

log = logging.getLogger("ciphergrad.server")
POLL_SECONDS = 0.2  # how often a waiting job looks at its link (detached? cancelled?)


class Detached(Exception):
    """The client went away (or its key holder did not answer in time): pause at the last checkpoint. A
    message, if any, is what the stream is told."""


class Cancelled(Exception):
    """CancelJob (or the session's deletion) stopped the job."""


@dataclass
class End:
    """Last item on a link's event queue; ``code`` None means nobody is listening any more."""

    code: grpc.StatusCode | None = grpc.StatusCode.OK
    message: str = ""


class Link:
    """A job's connection to the Train stream attached to it (events out, replies in)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self.replies: queue.Queue[Any] = queue.Queue()
        self.detached = threading.Event()
        self.cancelled = threading.Event()

    def emit(self, item: pb.TrainResponse | End) -> None:
        """Send ``item`` to the stream (from any thread)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server stopped, nobody listens
            self.loop.call_soon_threadsafe(self._events.put_nowait, item)

    async def next_event(self) -> pb.TrainResponse | End:
        return await self._events.get()

    def detach(self) -> None:
        self.detached.set()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled
        if self.detached.is_set():
            raise Detached


class JobSlot:
    """One job's share of the server's HE slots (a semaphore of --workers)."""

    def __init__(self, slots: threading.BoundedSemaphore) -> None:
        self._slots = slots
        self.held = False

    def try_take(self) -> bool:
        self.held = self._slots.acquire(blocking=False)
        return self.held

    def take(self, link: Link) -> None:
        """Wait for a slot on this (the job's) thread, giving up if the link is detached or cancelled."""
        while not self._slots.acquire(timeout=POLL_SECONDS):
            link.check()
        self.held = True

    def give(self) -> None:
        if self.held:
            self.held = False
            self._slots.release()


def refined_solution(engine: Any, reply: pb.NormalSolution,
                     features: int) -> tuple[EncryptedMatrix, list[EncryptedMatrix]]:
    """Refinement's answer checked (here, or on the Ray worker running the job's trainer): the warm start and
    ``Enc(P)``'s ``features`` rows, each parsed against the session's context."""
    if len(reply.preconditioner) != features:
        raise invalid(f"normal_solution.preconditioner has {len(reply.preconditioner)} rows; expected {features} "
                      "(a client too old for refine_steps?)")
    rows = [validation.reply_matrix(engine, row, "a preconditioner row") for row in reply.preconditioner]
    return validation.reply_matrix(engine, reply.weights, "the solved weights"), rows


class StreamRefresh:
    """The trainer's line to the key holder (``core.gram_training.KeyHolderLink``): round trips to the
    attached client, masked refreshes and the normal solver's system."""

    def __init__(self, link: Link, engine: Any, timeout: float, slot: JobSlot) -> None:
        self.link, self.engine, self.timeout, self.slot = link, engine, timeout, slot
        self._next_id = 0

    def __call__(self, masked: EncryptedMatrix) -> EncryptedMatrix:
        return self._refresh(masked, False)

    def precondition(self, masked: EncryptedMatrix) -> EncryptedMatrix:
        """Refinement (``core.refine``): a fresh encryption of ``P`` times the masked row."""
        return self._refresh(masked, True)

    def _refresh(self, masked: EncryptedMatrix, precondition: bool) -> EncryptedMatrix:
        reply = self.refresh_reply(masked, precondition)
        what = "the preconditioned refresh" if precondition else "the refreshed matrix"
        return validation.reply_matrix(self.engine, reply, what, like=masked)

    def refresh_reply(self, masked: Any, precondition: bool = False) -> types_pb2.EncryptedMatrix:
        """The round trip of a refresh: the client's refreshed matrix as it came (its caller checks it, here or
        on the Ray worker running the job's trainer: ``server.execution.ray_trainers``)."""
        self._next_id += 1
        request = pb.RefreshRequest(refresh_id=self._next_id, masked=codec.matrix_to_proto(masked),
                                    precondition=precondition)
        reply = self._round_trip(pb.TrainResponse(refresh_request=request), pb.RefreshReply)
        if reply.refresh_id != self._next_id:
            raise invalid(f"refresh_reply answers request {reply.refresh_id}; expected {self._next_id}")
        return reply.refreshed

    def solve_normal(self, system: GramStatistics, rhs: RightHandSide | None = None) -> EncryptedMatrix:
        return validation.reply_matrix(self.engine, self.normal_reply(system, rhs).weights, "the solved weights")

    def solve_refined(self, system: GramStatistics, rhs: RightHandSide,
                      spec: Preconditioner) -> tuple[EncryptedMatrix, list[EncryptedMatrix]]:
        """Refinement: the warm start and ``Enc(P)``'s rows, fresh encryptions in ``spec.tile``."""
        return refined_solution(self.engine, self.normal_reply(system, rhs, spec), system.features)

    def normal_reply(self, system: GramStatistics, rhs: RightHandSide | None = None,
                     spec: Preconditioner | None = None) -> Any:
        """The round trip of a normal system (``system``'s matrices parsed, or ``FlatMatrix``): the client's
        ``NormalSolution`` as it came, its weights present but not yet parsed."""
        self._next_id += 1
        request = pb.NormalSystemRequest(
            request_id=self._next_id,
            gram_diagonals=codec.matrix_to_proto(system.diagonals),
            gram_column=codec.matrix_to_proto(system.column),
            rows=system.rows,
            features=system.features,
            factor=system.factor,
            diagonal_form=pb.DIAGONAL_FORM_UPPER if system.form == UPPER else pb.DIAGONAL_FORM_WRAPPED,
        )
        if rhs is not None:
            request.right_hand_side.CopyFrom(
                pb.RightHandSide(target_scale=rhs.target_scale, ones_scale=rhs.ones_scale,
                                 ones_column=rhs.ones_column, targets=rhs.targets)
            )
        if spec is not None:
            request.preconditioner.CopyFrom(pb.Preconditioner(
                system_ridge=spec.system_ridge, l2=spec.l2, intercept_column=spec.intercept_column,
                weight_scale=spec.weight_scale, tile_rows=spec.tile.rows, tile_cols=spec.tile.cols))
        reply = self._round_trip(pb.TrainResponse(normal_system=request), pb.NormalSolution)
        if reply.request_id != self._next_id:
            raise invalid(f"normal_solution answers request {reply.request_id}; expected {self._next_id}")
        if not codec.has_matrix(reply.weights):
            raise invalid("normal_solution.weights is empty: send a fresh encryption of the solved weights")
        return reply

    def release_reply(self, release: pool_pb.PoolRelease, tile: Tile) -> types_pb2.EncryptedMatrix:
        """A pool job's one exchange: the sealed release out, the key holder's weights back as they came
        (``server.jobs.pool_view.release_weights`` checks them where the session's context is loaded)."""
        self._next_id += 1
        request = pb.PoolReleaseRequest(request_id=self._next_id, release=release, weight_tile_rows=tile.rows,
                                        weight_tile_cols=tile.cols)
        reply = self._round_trip(pb.TrainResponse(pool_release=request), pb.NormalSolution)
        if reply.request_id != self._next_id:
            raise invalid(f"normal_solution answers request {reply.request_id}; expected {self._next_id}")
        if not codec.has_matrix(reply.weights):
            raise invalid("normal_solution.weights is empty: send a fresh encryption of the solved weights")
        return reply.weights

    def _round_trip(self, event: pb.TrainResponse, expected: type) -> Any:
        self.link.check()
        self.link.emit(event)
        self.slot.give()  # waiting for the key holder is no HE work: another job may compute meanwhile
        reply = self._wait_for_reply()
        self.slot.take(self.link)
        if isinstance(reply, ServiceError):
            raise reply
        if not isinstance(reply, expected):
            raise invalid(f"the server asked for a {expected.__name__}; the client sent a {type(reply).__name__}")
        return reply

    def _wait_for_reply(self) -> Any:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return self.link.replies.get(timeout=POLL_SECONDS)
            except queue.Empty:
                self.link.check()
                if time.monotonic() > deadline:
                    log.warning("no reply from the key holder within %g s; pausing the job", self.timeout)
                    raise Detached(
                        f"the key holder did not answer within {self.timeout:g} s (server flag --refresh-timeout): "
                        "the job is paused at its last checkpoint; resume it with Client.train(job_id=...) "
                        "(TrainRequest.attach)"
                    ) from None
