"""``server.rpc.work.Work.ordered``: a request stream's batches run up to ``width`` at once on the HE pool and
their answers come back in input order, whatever order the calls finish in. ``Work.open_stream``: the caller
is known before anything is read, its stream counts against its limit for the block only, and a wrong first
message is refused with the servicer's sentence."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from ciphergrad.server.rpc.errors import ServiceError
from ciphergrad.server.rpc.work import Limits, Work
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2


async def _items(count: int) -> AsyncIterator[int]:
    for item in range(count):
        yield item


def _run(width: int, delays: list[float]) -> tuple[list[int], int]:
    """The answers of ``ordered`` over ``len(delays)`` items (item i takes delays[i] s), and the most calls
    that ran at once."""
    work = Work(2, Limits(4, 4, 2**20), idle_timeout=None)
    lock, running, most = threading.Lock(), [0], [0]

    def call(item: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(delays[item])
        with lock:
            running[0] -= 1
        return item * 10

    async def collect() -> list[int]:
        return [answer async for answer in work.ordered(_items(len(delays)), call, width)]

    try:
        return asyncio.run(collect()), most[0]
    finally:
        work.close()


def test_answers_come_in_input_order_with_calls_in_flight() -> None:
    answers, most = _run(2, [0.3, 0.0, 0.2, 0.0, 0.0])  # the first call finishes after the second
    assert answers == [0, 10, 20, 30, 40]
    assert most == 2


def test_width_one_runs_one_call_at_a_time() -> None:
    answers, most = _run(1, [0.05, 0.0, 0.05])
    assert answers == [0, 10, 20] and most == 1


def test_a_failed_call_ends_the_stream_with_its_error() -> None:
    work = Work(2, Limits(4, 4, 2**20), idle_timeout=None)

    def call(item: int) -> int:
        if item == 1:
            raise ValueError("batch 1 is bad")
        return item

    async def collect() -> list[int]:
        return [answer async for answer in work.ordered(_items(4), call, 2)]

    try:
        with pytest.raises(ValueError, match="batch 1"):
            asyncio.run(collect())
    finally:
        work.close()


class _Context:
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", "Bearer t"),)


class _Session:
    id = "s1"


async def _stream(messages: list, read: list) -> AsyncIterator:
    for message in messages:
        read.append(message)
        yield message


def _open(work: Work, messages: list, caller=lambda metadata: _Session(), read: list | None = None, **options):
    """Open a Train-like stream of ``messages`` (each appended to ``read`` as the server reads it); what the
    block saw: (caller, first message, the rest, open streams of session s1)."""
    read = [] if read is None else read

    async def run():
        async with work.open_stream(_stream(messages, read), _Context(), "Train", caller, kinds=("start", "attach"),
                                    refusal="send start or attach first", **options) as (who, requests, first):
            inside = work.limits._streams["s1"]
            return who, first, [message async for message in requests], inside

    return asyncio.run(run())


def test_open_stream_gives_caller_first_message_and_the_rest_under_the_session_limit() -> None:
    work = Work(1, Limits(1, 1, 2**20), idle_timeout=None)
    start = training_service_pb2.TrainRequest(start=training_service_pb2.JobSpec(dataset_id="d"))
    reply = training_service_pb2.TrainRequest(normal_solution=training_service_pb2.NormalSolution())
    try:
        who, first, rest, inside = _open(work, [start, reply])
        assert isinstance(who, _Session) and first == start and rest == [reply]
        assert inside == 1 and work.limits._streams["s1"] == 0  # held for the block, released after
    finally:
        work.close()


def test_open_stream_refuses_a_missing_or_wrong_first_message_with_the_servicers_sentence() -> None:
    work = Work(1, Limits(1, 1, 2**20), idle_timeout=None)
    reply = training_service_pb2.TrainRequest(normal_solution=training_service_pb2.NormalSolution())
    try:
        for messages in ([], [reply]):
            with pytest.raises(ServiceError) as caught:
                _open(work, messages)
            assert (caught.value.code, caught.value.message) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                                 "send start or attach first")
            assert work.limits._streams["s1"] == 0
    finally:
        work.close()


def test_open_stream_checks_the_caller_before_reading_anything() -> None:
    work = Work(1, Limits(1, 1, 2**20), idle_timeout=None)

    def refused(metadata) -> None:
        assert metadata == (("authorization", "Bearer t"),)
        raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, "who are you")

    read: list = []
    try:
        with pytest.raises(ServiceError, match="who are you"):
            _open(work, [training_service_pb2.TrainRequest()], caller=refused, read=read)
        assert read == []
    finally:
        work.close()


def test_open_stream_counts_against_the_limit_it_is_given() -> None:
    work = Work(1, Limits(1, 0, 2**20), idle_timeout=None)  # no anonymous stream allowed
    start = training_service_pb2.TrainRequest(start=training_service_pb2.JobSpec())
    try:
        with pytest.raises(ServiceError, match="--max-anonymous-streams=0"):
            _open(work, [start], limit=lambda who: work.limits.anonymous())
    finally:
        work.close()
