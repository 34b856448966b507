"""Chat latency through the edge: WebSocket (/ws/chat) side by side with native gRPC Chat.

It starts the platform (fast mode, free ports, a temporary state directory), creates a
tenant on the ``bench`` plan with a ``chat:write`` key, places one order, then holds
conversations about it: every message runs the tracking workflow with the embedded
responder, streamed back through the realtime service. For each transport and each
concurrency (1 and ``--connections``), every connection opens a session and sends
``--messages`` messages one after another; per message it records the time to the first
token delta and to the final message. The same conversation runs over WebSocket (Envoy →
edge bridge → realtime) and over native gRPC (Envoy → realtime), so the ratio isolates what
the WebSocket bridge costs.

Back to back, ``--connections`` clients keep the platform saturated: each answer waits for
the ones ahead of it, so latency is connections / throughput (Little's law) and the phase
measures capacity. A last phase holds the same number of WebSocket connections the way
people do: each sends a message, reads the answer and pauses (``--think-s`` on average,
exponentially distributed) before the next, so the offered load is connections / think time.
It also prints the CPU each process spent per answer. Every phase starts on an idle
platform: an answer's follow-up work (the outbox relay publishing its events, the router
reading its outcome) runs for seconds after a burst, so the bench waits for it to finish
and counts it in the CPU of the phase that caused it. Figures against the goals, not a
verdict. Run it as ``.venv/bin/python bench/ws_latency.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from google.protobuf import json_format, struct_pb2

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import percentile, print_table
from bench.chat_e2e import cpu_per_request, cpu_seconds, provision, settle, tracking_context
from services.kit.devstack import Platform
from supportmesh.realtime.v1 import realtime_service_pb2 as pb
from supportmesh.realtime.v1 import realtime_service_pb2_grpc as pb_grpc

GOALS = {"p50": 50.0, "p95": 200.0, "ratio": 1.5}
QUESTION = "Where is my order?"
OPEN_LOOP_MESSAGES = 3  # per person in the last phase
Sample = tuple[float, float]  # (first token ms, final message ms)
Conversation = Callable[[int], Awaitable[list[Sample]]]


async def over_websocket(
    platform: Platform, secret: str, messages: int, context: dict[str, Any], think_s: float = 0.0
) -> list[Sample]:
    """One WebSocket connection holding ``messages`` exchanges, ``think_s`` apart on average.

    With ``think_s`` the client is a person: it waits a random time (exponential, that
    mean; the first wait uniform over it, so connections do not start in step) before each
    message. Without, it sends the next message as soon as the answer is complete.
    """
    found: list[Sample] = []
    pause = random.Random()
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(platform.websocket_url, headers={"x-api-key": secret}) as ws,
    ):
        await ws.send_json({"open": {"userId": "u-bench"}})
        await ws.receive()  # the greeting heartbeat
        for number in range(messages):
            if think_s:
                wait = pause.uniform(0, think_s) if number == 0 else pause.expovariate(1 / think_s)
                await asyncio.sleep(wait)
            began = time.perf_counter()
            first = 0.0
            await ws.send_json({"userMessage": {"text": QUESTION, "metadata": context}})
            while True:
                event = json.loads((await ws.receive()).data)
                if not first and "tokenDelta" in event:
                    first = time.perf_counter()
                if "finalMessage" in event or "error" in event:
                    if "error" in event:
                        raise RuntimeError(f"answer failed: {event['error']}")
                    done = time.perf_counter()
                    found.append((((first or done) - began) * 1e3, (done - began) * 1e3))
                    break
    return found


async def over_grpc(
    stub: pb_grpc.RealtimeServiceStub, secret: str, messages: int, context: dict[str, Any]
) -> list[Sample]:
    """One native gRPC Chat stream holding ``messages`` exchanges."""
    metadata = struct_pb2.Struct()
    json_format.ParseDict(context, metadata)
    chat: Any = stub.Chat
    call: Any = chat(metadata=(("x-api-key", secret),), timeout=600)
    await call.write(pb.ChatRequest(open=pb.OpenSession(user_id="u-bench")))
    await call.read()
    found: list[Sample] = []
    for _ in range(messages):
        began = time.perf_counter()
        first = 0.0
        message = pb.UserMessage(text=QUESTION, metadata=metadata)
        await call.write(pb.ChatRequest(user_message=message))
        while True:
            event = await call.read()
            kind = event.WhichOneof("event")
            if not first and kind == "token_delta":
                first = time.perf_counter()
            if kind in ("final_message", "error"):
                if kind == "error":
                    raise RuntimeError(f"answer failed: {event.error}")
                done = time.perf_counter()
                found.append((((first or done) - began) * 1e3, (done - began) * 1e3))
                break
    await call.done_writing()
    return found


async def run(converse: Conversation, connections: int, messages: int) -> list[Sample]:
    """``connections`` conversations at once."""
    results = await asyncio.gather(*(converse(messages) for _ in range(connections)))
    return [sample for result in results for sample in result]


def row(name: str, samples: Sequence[Sample]) -> list[Any]:
    """p50/p95 of first-token and final-message latency."""
    first = sorted(s[0] for s in samples)
    final = sorted(s[1] for s in samples)
    return [
        name, len(samples), percentile(first, 50), percentile(first, 95),
        percentile(final, 50), percentile(final, 95),
    ]  # fmt: skip


async def bench(platform: Platform, connections: int, messages: int, think_s: float) -> None:
    """Warm up, measure both transports at concurrency 1 and ``connections``, then people."""
    tenant, secret = await provision(platform)
    async with aiohttp.ClientSession(platform.edge_url, headers={"x-api-key": secret}) as http:
        context = await tracking_context(http, tenant)
    async with grpc.aio.insecure_channel(platform.edge_url.removeprefix("http://")) as channel:
        stub = pb_grpc.RealtimeServiceStub(channel)

        async def ws(n: int) -> list[Sample]:
            return await over_websocket(platform, secret, n, context)

        async def native(n: int) -> list[Sample]:
            return await over_grpc(stub, secret, n, context)

        await run(ws, 4, 5)  # warm-up
        await run(native, 4, 5)
        rows, figures, cpu = [], {}, {}
        await settle()

        async def phase(label: str, converse: Conversation, concurrency: int, count: int) -> str:
            """Measure one series; its CPU counts until the platform is idle again."""
            began, before = time.perf_counter(), cpu_seconds()
            samples = await run(converse, concurrency, count)
            elapsed = time.perf_counter() - began
            drained = await settle()
            rows.append(row(label, samples))
            spent = cpu_per_request(before, cpu_seconds(), len(samples))
            cpu[label] = {**spent, "total": sum(spent.values())}
            return (f"{len(samples)} answers in {elapsed:.1f} s ({len(samples) / elapsed:.0f}/s), "
                    f"idle again {drained:.1f} s later")  # fmt: skip

        for concurrency in (1, connections):
            count = messages if concurrency == 1 else max(2, messages // 10)
            for name, converse in (("websocket", ws), ("grpc", native)):
                done = await phase(f"{name} c={concurrency}", converse, concurrency, count)
                figures[(name, concurrency)] = rows[-1]
                print(f"  {name} c={concurrency}: {done}")
        if think_s:
            # The same connections held by people, who read the answer and think before the
            # next message: the offered load is connections / think_s messages a second.
            async def person(n: int) -> list[Sample]:
                return await over_websocket(platform, secret, n, context, think_s)

            label = f"websocket c={connections} people"
            done = await phase(label, person, connections, OPEN_LOOP_MESSAGES)
            figures[("people", connections)] = rows[-1]
            offered = f"{connections / think_s:.0f} messages/s at the start"
            print(f"  {label}: {done}; offered about {offered} (one per {think_s:.0f} s "
                  "per person; fewer as they finish)")  # fmt: skip
    print("Chat through the edge (tracking workflow, embedded responder), ms:")
    print_table(["series", "n", "first p50", "first p95", "final p50", "final p95"], rows, digits=1)
    ws_many, grpc_many = figures[("websocket", connections)], figures[("grpc", connections)]
    ws_one, grpc_one = figures[("websocket", 1)], figures[("grpc", 1)]
    print(f"  WebSocket/gRPC final p50 ratio: c=1 {ws_one[4] / grpc_one[4]:.2f}, "
          f"c={connections} {ws_many[4] / grpc_many[4]:.2f} (goal ≤ {GOALS['ratio']})")  # fmt: skip
    print("CPU ms per answer by process (user + system), 2 cores shared:")
    names = [n for n, ms in cpu[f"websocket c={connections}"].items() if ms >= 0.05]  # by cost
    print_table(
        ["process", *cpu],
        [[n, *(spent.get(n, 0.0) for spent in cpu.values())] for n in names],
        digits=2,
    )
    goals = f"(goal ≤ {GOALS['p50']:.0f}), p95"
    print(f"  WebSocket c={connections} back to back: final p50 {ws_many[4]:.1f} ms {goals} "
          f"{ws_many[5]:.1f} ms (goal ≤ {GOALS['p95']:.0f})")  # fmt: skip
    if ("people", connections) in figures:
        people = figures[("people", connections)]
        print(f"  WebSocket c={connections} people (think {think_s:.0f} s): final p50 "
              f"{people[4]:.1f} ms (goal ≤ {GOALS['p50']:.0f}), p95 {people[5]:.1f} ms "
              f"(goal ≤ {GOALS['p95']:.0f})")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Start the platform, run the benchmark, stop the platform."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=200, help="concurrent connections")
    parser.add_argument("--messages", type=int, default=100, help="messages at concurrency 1")
    parser.add_argument(
        "--think-s", type=float, default=20.0,
        help="mean pause between a person's messages in the last phase (0: skip that phase)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ws-bench-") as state:
        platform = Platform(state_dir=Path(state), fast=True)
        platform.start()
        try:
            asyncio.run(bench(platform, args.connections, args.messages, args.think_s))
        finally:
            platform.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
