"""The in-process wake-up of log readers: no poke is lost, however it falls."""

from __future__ import annotations

import asyncio

from nome_api.streams import LogSignal


async def signal() -> LogSignal:
    log_signal = LogSignal()
    log_signal.bind(asyncio.get_running_loop())
    return log_signal


async def test_a_poke_that_lands_while_the_reader_reads_ends_its_next_wait_at_once() -> None:
    log_signal = await signal()
    seen = log_signal.generation  # noted before reading the log
    log_signal.poke()  # the log moves during the read
    await asyncio.sleep(0)  # the thread-safe poke lands on the loop

    # Without the generation, this would sleep the whole poll.
    await asyncio.wait_for(log_signal.wait(60, seen), timeout=5)


async def test_a_waiting_reader_is_woken_by_a_poke_from_another_thread() -> None:
    log_signal = await signal()
    waiter = asyncio.create_task(log_signal.wait(60, log_signal.generation))
    await asyncio.sleep(0)
    assert not waiter.done()

    await asyncio.to_thread(log_signal.poke)

    await asyncio.wait_for(waiter, timeout=5)
    assert log_signal.generation == 1


async def test_without_a_poke_the_wait_ends_at_its_timeout() -> None:
    log_signal = await signal()
    await log_signal.wait(0.01, log_signal.generation)
    assert log_signal.generation == 0
