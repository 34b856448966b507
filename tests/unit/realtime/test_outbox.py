"""The per-connection send buffer: deltas coalesce, then drop; nothing else is ever lost."""

from __future__ import annotations

from services.realtime.outbox import Outbox
from supportmesh.spec.v1 import message_pb2


def delta(seq: int, text: str) -> message_pb2.StreamEvent:
    return message_pb2.StreamEvent(sequence=seq, token_delta=message_pb2.TokenDelta(text=text))


def tool(seq: int) -> message_pb2.StreamEvent:
    return message_pb2.StreamEvent(sequence=seq, tool_event=message_pb2.ToolEvent(tool="t"))


def final(seq: int) -> message_pb2.StreamEvent:
    message = message_pb2.ChatMessage(content="done")
    return message_pb2.StreamEvent(
        sequence=seq, final_message=message_pb2.FinalMessage(message=message)
    )


async def drain(box: Outbox) -> list[message_pb2.StreamEvent]:
    found = []
    while (event := await box.get(0)) is not None:
        found.append(event)
    return found


async def test_under_capacity_every_event_goes_out_in_order() -> None:
    box = Outbox(capacity=4)
    events = [delta(1, "a"), tool(2), delta(3, "b"), final(4)]
    for event in events:
        box.put(event)
    assert await drain(box) == events


async def test_full_buffer_coalesces_deltas_into_the_tail() -> None:
    losses: list[str] = []
    box = Outbox(capacity=2, on_drop=losses.append)
    for seq, text in enumerate(["a", "b", "c", "d", "e"], start=1):
        box.put(delta(seq, text))
    out = await drain(box)
    assert [e.token_delta.text for e in out] == ["a", "bcde"]
    assert out[1].sequence == 5
    assert out[1].token_delta.coalesced
    assert not out[0].token_delta.coalesced
    assert losses == ["coalesced"] * 3


async def test_tool_events_and_the_final_message_are_never_dropped() -> None:
    losses: list[str] = []
    box = Outbox(capacity=1, max_delta_chars=2, on_drop=losses.append)
    box.put(delta(1, "ab"))
    box.put(delta(2, "cd"))  # would exceed max_delta_chars: dropped
    box.put(tool(3))
    box.put(delta(4, "e"))  # behind a tool event: queued, the buffer is bounded anyway
    box.put(delta(5, "f"))
    box.put(final(6))
    out = await drain(box)
    kinds = [e.WhichOneof("event") for e in out]
    assert kinds == ["token_delta", "tool_event", "token_delta", "final_message"]
    assert out[2].token_delta.text == "ef"
    assert out[2].sequence == 5
    assert out[3].final_message.message.content == "done"
    assert losses == ["dropped", "coalesced"]


async def test_memory_stays_bounded_for_a_client_that_never_reads() -> None:
    box = Outbox(capacity=8, max_delta_chars=64)
    for seq in range(1, 100_001):
        box.put(delta(seq, "x"))
    assert len(box) == 8
    out = await drain(box)
    assert sum(len(e.token_delta.text) for e in out) <= 8 * 64


async def test_coalescing_does_not_touch_events_shared_with_other_connections() -> None:
    shared = delta(2, "b")
    box = Outbox(capacity=1)
    box.put(shared)
    box.put(delta(3, "c"))
    assert shared.token_delta.text == "b"
    assert shared.sequence == 2
    assert (await drain(box))[0].token_delta.text == "bc"


async def test_get_waits_for_an_event_and_times_out_without_one() -> None:
    box = Outbox()
    assert await box.get(0.01) is None
    box.put(tool(1))
    event = await box.get(0.01)
    assert event is not None
    assert event.sequence == 1
