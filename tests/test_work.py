"""``server.work.Work.ordered``: a request stream's batches run up to ``width`` at once on the HE pool and
their answers come back in input order, whatever order the calls finish in."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest

from server.work import Limits, Work


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
