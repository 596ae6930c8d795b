"""The outbox between the scheduler's thread and the consumers' event loops: each flush hands every
loop its chunks in one call, in order, in each callback's context; a closed loop's chunks call
their `on_closed` instead; one failing callback does not stop the others."""

from __future__ import annotations

import asyncio
import contextvars
import threading

from inference.outbox import Outbox

WHO = contextvars.ContextVar("who", default="nobody")


async def test_a_flush_hands_each_loop_its_chunks_in_order_in_one_call():
    loop = asyncio.get_running_loop()
    outbox, got, calls = Outbox(), [], []
    original = loop.call_soon_threadsafe

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    loop.call_soon_threadsafe = counting
    try:
        context = contextvars.copy_context()
        context.run(WHO.set, "submitter")
        worker = threading.Thread(target=lambda: [
            outbox.put(loop, got.append, i, lambda: None) for i in range(5)] + [
            outbox.put(loop, lambda _: got.append(WHO.get()), None, lambda: None, context)] + [
            outbox.flush()])
        worker.start()
        worker.join()
        await asyncio.sleep(0.01)
    finally:
        del loop.call_soon_threadsafe
    assert got == [0, 1, 2, 3, 4, "submitter"]
    assert len(calls) == 1
    outbox.flush()  # nothing pending: no call
    await asyncio.sleep(0.01)
    assert len(calls) == 1


def test_chunks_for_a_closed_loop_call_on_closed():
    closed = asyncio.new_event_loop()
    closed.close()
    outbox, cancelled, got = Outbox(), [], []
    outbox.put(closed, got.append, "chunk", lambda: cancelled.append("seq"))
    outbox.flush()
    assert cancelled == ["seq"] and got == []


async def test_a_failing_callback_does_not_stop_the_others():
    loop = asyncio.get_running_loop()
    outbox, got = Outbox(), []

    def explode(_):
        raise RuntimeError("boom")

    outbox.put(loop, explode, None, lambda: None)
    outbox.put(loop, got.append, "after", lambda: None)
    outbox.flush()
    await asyncio.sleep(0.01)
    assert got == ["after"]
