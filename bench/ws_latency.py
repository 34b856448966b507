"""Chat latency through the edge: WebSocket (/ws/chat) side by side with native gRPC Chat.

It starts the platform (fast mode, free ports, a temporary state directory), creates a
tenant on the ``bench`` plan with a ``chat:write`` key, places one order, then holds
conversations about it: every message runs the tracking workflow with the embedded
responder, streamed back through the realtime service. For each transport and each
concurrency (1 and ``--connections``), every connection opens a session and sends
``--messages`` messages one after another; per message it records the time to the first
token delta and to the final message. The same conversation runs over WebSocket (Envoy →
edge bridge → realtime) and over native gRPC (Envoy → realtime), so the ratio isolates what
the WebSocket bridge costs. It prints figures against the goals, not a verdict. Run it as
``.venv/bin/python bench/ws_latency.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
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
from bench.chat_e2e import provision, tracking_context
from services.kit.devstack import Platform
from supportmesh.realtime.v1 import realtime_service_pb2 as pb
from supportmesh.realtime.v1 import realtime_service_pb2_grpc as pb_grpc

GOALS = {"p50": 50.0, "p95": 200.0, "ratio": 1.5}
QUESTION = "Where is my order?"
Sample = tuple[float, float]  # (first token ms, final message ms)
Conversation = Callable[[int], Awaitable[list[Sample]]]


async def over_websocket(
    platform: Platform, secret: str, messages: int, context: dict[str, Any]
) -> list[Sample]:
    """One WebSocket connection holding ``messages`` exchanges."""
    found: list[Sample] = []
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(platform.websocket_url, headers={"x-api-key": secret}) as ws,
    ):
        await ws.send_json({"open": {"userId": "u-bench"}})
        await ws.receive()  # the greeting heartbeat
        for _ in range(messages):
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


async def bench(platform: Platform, connections: int, messages: int) -> None:
    """Warm up, then measure both transports at concurrency 1 and ``connections``."""
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
        rows, figures = [], {}
        for concurrency in (1, connections):
            count = messages if concurrency == 1 else max(2, messages // 10)
            for name, converse in (("websocket", ws), ("grpc", native)):
                began = time.perf_counter()
                samples = await run(converse, concurrency, count)
                elapsed = time.perf_counter() - began
                rows.append(row(f"{name} c={concurrency}", samples))
                figures[(name, concurrency)] = rows[-1]
                print(f"  {name} c={concurrency}: {len(samples) / elapsed:.0f} answers/s")
    print("Chat through the edge (tracking workflow, embedded responder), ms:")
    print_table(["series", "n", "first p50", "first p95", "final p50", "final p95"], rows, digits=1)
    ws_many, grpc_many = figures[("websocket", connections)], figures[("grpc", connections)]
    ws_one, grpc_one = figures[("websocket", 1)], figures[("grpc", 1)]
    print(f"  WebSocket/gRPC final p50 ratio: c=1 {ws_one[4] / grpc_one[4]:.2f}, "
          f"c={connections} {ws_many[4] / grpc_many[4]:.2f} (goal ≤ {GOALS['ratio']})")  # fmt: skip
    print(f"  WebSocket c={connections}: final p50 {ws_many[4]:.1f} ms (goal ≤ {GOALS['p50']:.0f})"
          f", p95 {ws_many[5]:.1f} ms (goal ≤ {GOALS['p95']:.0f})")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Start the platform, run the benchmark, stop the platform."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=200, help="concurrent connections")
    parser.add_argument("--messages", type=int, default=100, help="messages at concurrency 1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ws-bench-") as state:
        platform = Platform(state_dir=Path(state), fast=True)
        platform.start()
        try:
            asyncio.run(bench(platform, args.connections, args.messages))
        finally:
            platform.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
