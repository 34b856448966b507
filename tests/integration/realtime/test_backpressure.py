"""A slow client gets fewer, coalesced deltas and the final message intact."""

from __future__ import annotations

from tests.integration.realtime.conftest import (
    QUESTION,
    Chat,
    StartInstance,
    Tenant,
    mesh_metadata,
)


async def test_a_slow_reader_gets_coalesced_deltas_and_the_whole_final_message(
    tenant: Tenant, start_instance: StartInstance
) -> None:
    roomy = await start_instance()  # 32 events: a whole answer fits, nothing coalesces
    instance = await start_instance(buffer_events=2, ack_window=1)

    fast = Chat(roomy.stub, mesh_metadata(tenant))
    await fast.open()
    await fast.say(QUESTION)
    quick = await fast.until_final()

    slow = Chat(instance.stub, mesh_metadata(tenant))
    await slow.open()
    await slow.say(QUESTION)
    lagging = await slow.until_final(pause_s=0.3, ack=True)

    def deltas(events: list) -> list:  # type: ignore[type-arg]
        return [e for e in events if e.HasField("token_delta")]

    final, slow_final = quick[-1].final_message, lagging[-1].final_message
    assert slow_final.message.content == final.message.content
    assert len(deltas(lagging)) < len(deltas(quick))
    assert any(e.token_delta.coalesced for e in deltas(lagging))
    assert not any(e.token_delta.coalesced for e in deltas(quick))
    # Nothing but deltas went missing: the text still adds up, the sequence only rises.
    assert "".join(e.token_delta.text for e in deltas(lagging)).split() == (
        slow_final.message.content.split()
    )
    sequences = [e.sequence for e in lagging]
    assert sequences == sorted(set(sequences))
    assert instance.metric("ws_backpressure_drops_total", action="coalesced") > 0
    await fast.call.done_writing()
    await slow.call.done_writing()
