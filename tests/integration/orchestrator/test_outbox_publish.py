"""The outbox relay's publishing against the real JetStream: order, de-duplication, a bad row."""

from __future__ import annotations

import uuid

from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from services.kit import events
from services.kit.devstack import Platform
from services.orchestrator.outbox import Row, publish_rows


async def _stored(js: JetStreamContext, stream: str) -> list[str]:
    """The ``Nats-Msg-Id`` of every message in ``stream``, in stream order."""
    info = await js.stream_info(stream)
    found = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(stream, sequence)
        found.append((message.headers or {}).get("Nats-Msg-Id", ""))
    return found


async def test_rows_are_stored_in_order_once_and_a_bad_row_holds_back_nothing(
    platform: Platform,
) -> None:
    client, js = await events.connect(platform.nats_url)
    prefix = f"relaytest{uuid.uuid4().hex[:8]}"
    stream = prefix.upper()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{prefix}.>"]))
    try:
        rows: list[Row] = [
            (seq, f"{prefix}-{seq}", f"{prefix}.event", f"payload {seq}".encode())
            for seq in range(1, 121)
        ]
        # No stream takes this subject: its publish fails and the row stays unsent.
        rows[40] = (41, f"{prefix}-41", f"{prefix}x.nowhere", b"lost")

        sent = await publish_rows(js, rows)

        good = [row for row in rows if row[0] != 41]
        assert sent == [row[0] for row in good]
        assert await _stored(js, stream) == [row[1] for row in good]
        # A relay that crashed before marking its rows publishes them again: JetStream keeps
        # one copy of each (the event id is the de-duplication id).
        assert await publish_rows(js, good[:10]) == [row[0] for row in good[:10]]
        assert await _stored(js, stream) == [row[1] for row in good]
        assert await publish_rows(js, []) == []
    finally:
        await js.delete_stream(stream)
        await client.close()
