"""The run event hub: late readers, bounded buffers, coalescing, lingering; safe points."""

from __future__ import annotations

import asyncio

import pytest

from services.orchestrator.models import Models, word_groups
from services.orchestrator.stream import (
    Drive,
    Event,
    RunCancelled,
    RunHub,
    Subscription,
    drive,
    halt_point,
    tool_event,
)
from services.orchestrator.workflow import ToolEvent
from supportmesh.spec.v1 import message_pb2
from tests.unit.orchestrator.test_openai_models import CALL, _request


def delta(text: str) -> message_pb2.TokenDelta:
    return message_pb2.TokenDelta(text=text)


async def read(reader: Subscription) -> list[Event]:
    return [event async for event in reader]


def texts(events: list[Event]) -> list[str]:
    return [e.text if isinstance(e, message_pb2.TokenDelta) else e.summary for e in events]


@pytest.mark.parametrize(
    "text",
    [
        "Items can be returned within 30 days of delivery for a full refund.",
        "  Leading and trailing spaces,\n\ta tab and a newline.  ",
        "One.",
        "Two words",
        "Exactly four words here",
        "",
    ],
)
def test_word_groups_concatenate_back_to_the_text_in_pieces_of_two_to_four_words(
    text: str,
) -> None:
    groups = word_groups(text)
    assert "".join(groups) == text
    if len(text.split()) >= 2:
        assert all(2 <= len(group.split()) <= 4 for group in groups)


async def test_a_late_reader_gets_what_it_missed_then_live_events_until_the_run_ends() -> None:
    hub = RunHub()
    hub.open("r")
    hub.publish("r", delta("Hello "))
    reader = hub.subscribe("r")
    assert reader is not None
    reading = asyncio.create_task(read(reader))
    await asyncio.sleep(0)
    hub.publish("r", delta("there."))
    hub.finish("r")
    assert texts(await reading) == ["Hello ", "there."]


async def test_an_ended_run_is_replayed_while_it_lingers_then_dropped() -> None:
    hub = RunHub(linger_s=0.01)
    hub.open("r")
    hub.publish("r", delta("a"))
    hub.finish("r")
    hub.publish("r", delta("after the end"))  # ignored
    reader = hub.subscribe("r")
    assert reader is not None
    assert texts(await read(reader)) == ["a"]
    later = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(2 * hub.linger_s, later.set_result, None)
    await later
    assert "r" not in hub
    assert hub.subscribe("r") is None


async def test_events_of_runs_not_driven_here_are_ignored() -> None:
    hub = RunHub()
    hub.publish("elsewhere", delta("x"))
    assert hub.subscribe("elsewhere") is None


async def test_past_the_limit_deltas_coalesce_and_tool_events_are_kept() -> None:
    hub = RunHub(max_events=3)
    hub.open("r")
    slow = hub.subscribe("r")
    assert slow is not None
    for piece in ("a", "b", "c", "d", "e"):
        hub.publish("r", delta(piece))
    requested = ToolEvent("requested", "orders.create", "create_order", "k", 1, {})
    hub.publish("r", tool_event(requested))
    hub.publish("r", delta("f"))
    hub.publish("r", delta("g"))
    hub.finish("r")
    late = hub.subscribe("r")
    assert late is not None
    for reader in (slow, late):
        events = await read(reader)
        assert texts(events) == ["a", "b", "cde", "Placing the order", "fg"]
        assert [getattr(e, "coalesced", False) for e in events] == [
            False, False, True, False, True,
        ]  # fmt: skip


async def test_a_closed_reader_no_longer_receives_events() -> None:
    hub = RunHub()
    hub.open("r")
    reader = hub.subscribe("r")
    assert reader is not None
    reader.close()
    hub.publish("r", delta("x"))
    hub.finish("r")
    assert texts(await read(reader)) == []


async def test_a_reopened_run_keeps_its_history_and_is_not_dropped() -> None:
    hub = RunHub(linger_s=0.01)
    hub.open("r")
    hub.publish("r", delta("before the pause "))
    hub.finish("r")
    hub.open("r")
    later = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(2 * hub.linger_s, later.set_result, None)
    await later
    hub.publish("r", delta("after"))
    hub.finish("r")
    reader = hub.subscribe("r")
    assert reader is not None
    assert texts(await read(reader)) == ["before the pause ", "after"]


async def test_lingering_runs_are_capped() -> None:
    hub = RunHub(max_lingering=2)
    for run in ("a", "b", "c"):
        hub.open(run)
        hub.finish(run)
    assert ("a" in hub, "b" in hub, "c" in hub) == (False, True, True)


@pytest.mark.parametrize(
    ("event", "phase", "summary"),
    [
        (
            ToolEvent("requested", "payment.charge", "charge", "k", 1, {"customer_id": "c1"}),
            message_pb2.TOOL_EVENT_PHASE_REQUESTED,
            "Taking the payment",
        ),
        (
            ToolEvent("failed", "mail.send", "confirm", "k", 1, {"to": "a@b.c"}, error="550"),
            message_pb2.TOOL_EVENT_PHASE_FAILED,
            "Sending an email: failed",
        ),
        (
            ToolEvent("compensated", "orders.cancel", "create_order", "k", 1, {},
                      compensates="create_order"),
            message_pb2.TOOL_EVENT_PHASE_COMPENSATED,
            "Cancelling the order to undo an earlier step: done",
        ),
        (
            ToolEvent("succeeded", "fax.send", "fax", "k", 1, {"number": "+1 555"}),
            message_pb2.TOOL_EVENT_PHASE_SUCCEEDED,
            "Working on your request: done",
        ),
    ],
)  # fmt: skip
def test_tool_events_carry_a_fixed_customer_safe_summary(
    event: ToolEvent, phase: int, summary: str
) -> None:
    found = tool_event(event)
    assert (found.tool, found.step_id, found.phase, found.summary) == (
        event.tool, event.step_id, phase, summary,
    )  # fmt: skip


async def test_the_embedded_responder_streams_free_text_but_not_json() -> None:
    hub = RunHub()
    hub.open(CALL.run_id)
    reader = hub.subscribe(CALL.run_id)
    assert reader is not None
    models = Models(hub=hub)
    answer = await models.generate(CALL, _request(passages=()))
    await models.generate(CALL, _request(json_output=True))
    hub.finish(CALL.run_id)
    pieces = texts(await read(reader))
    assert len(pieces) >= 2
    assert "".join(pieces) == answer.text


async def test_a_halted_drive_stops_at_the_next_safe_point_of_its_own_tasks_only() -> None:
    current = Drive("r")

    async def driven() -> None:
        drive(current)
        halt_point()
        current.halted = True
        await asyncio.create_task(asyncio.sleep(0))  # child tasks share the drive
        halt_point()

    with pytest.raises(RunCancelled):
        await asyncio.create_task(driven())
    halt_point()  # the caller that halted the run is not itself stopped
