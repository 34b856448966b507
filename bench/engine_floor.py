"""What a workflow run costs in the orchestrator's engine, against LangGraph's own floor.

No servers: the tracking workflow (the one ``bench/chat_e2e.py`` drives) runs on
:class:`~services.orchestrator.workflow.WorkflowEngine` over the in-memory port doubles of
the unit tests and an in-memory checkpointer, so the figure is the engine's CPU alone (the
graph, the nodes, gates, templates), with no PostgreSQL, gRPC or tool behind it. Side by
side, the baseline: a LangGraph chain of no-op nodes with as many super-steps as the run
takes, with the same checkpointer and durability, and without a checkpointer.

It prints CPU ms per run (``time.process_time``, rounds interleaved so noise hits all
alike), the ratios, and the most runs a second the machine's cores could complete if they
did nothing else: a ceiling on any request that runs a workflow. Figures, not a verdict.
Run it as ``.venv/bin/python bench/engine_floor.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import print_table
from services.orchestrator.workflow import WorkflowEngine, load_workflows
from services.orchestrator.workflow.engine import run_config
from tests.unit.orchestrator.doubles import ORDER_ID, TOOL_SPECS, Doubles, no_sleep
from tests.unit.orchestrator.samples import SHIPPED

INPUT = {
    "order_id": ORDER_ID, "query": "Where is my order?", "customer_id": "u-bench",
    "context": {"order_id": ORDER_ID},
}  # fmt: skip


class Chain(TypedDict, total=False):
    n: int
    steps: Annotated[list[int], operator.add]


def chain(length: int, saver: InMemorySaver | None) -> Any:
    """A compiled chain of ``length`` no-op nodes, each updating two channels."""
    graph = StateGraph(Chain)

    async def node(state: Chain) -> Chain:
        return {"n": state.get("n", 0) + 1, "steps": [1]}

    previous = START
    for index in range(length):
        graph.add_node(f"n{index}", node)
        graph.add_edge(previous, f"n{index}")
        previous = f"n{index}"
    graph.add_edge(previous, END)
    return graph.compile(checkpointer=saver)


def tracking_engine() -> tuple[WorkflowEngine, Any]:
    """The engine with the tracking workflow over in-memory doubles."""
    workflow = load_workflows(known_tools=TOOL_SPECS)["tracking"]
    doubles = Doubles()
    doubles.models.replies = {"SLM_A": SHIPPED}
    doubles.tools.handlers["orders.get"] = lambda arguments: {
        "order_id": arguments["order_id"], "status": "SHIPPED", "carrier": "DHL",
    }  # fmt: skip
    return WorkflowEngine(doubles.ports, InMemorySaver(), sleep=no_sleep), workflow


async def cpu_ms(run: Callable[[int], Awaitable[None]], count: int, start: int) -> float:
    """CPU ms per call of ``run`` over ``count`` calls."""
    began = time.process_time()
    for index in range(start, start + count):
        await run(index)
    return (time.process_time() - began) * 1000 / count


async def bench(runs: int, rounds: int) -> None:
    """Warm up, count the run's super-steps, then measure the three in interleaved rounds."""
    engine, workflow = tracking_engine()

    async def tracking(index: int) -> None:
        view = await engine.start(workflow, tenant_id="t", run_id=f"r{index}", input=INPUT)
        if view.status != "SUCCEEDED":
            raise RuntimeError(f"the tracking run ended {view.status}: {view.message}")

    await tracking(-1)
    snapshot = await engine.graph.aget_state(run_config("t", "r-1", workflow))
    steps = int((snapshot.metadata or {})["step"]) + 1  # super-steps are numbered from 0
    graphs = {"no-op chain, in-memory checkpointer": chain(steps, InMemorySaver())}
    graphs["no-op chain, no checkpointer"] = chain(steps, None)

    def invoker(graph: Any) -> Callable[[int], Awaitable[None]]:
        async def invoke(index: int) -> None:
            if graph.checkpointer is None:
                await graph.ainvoke({"n": 0})
            else:
                config = {"configurable": {"thread_id": f"c{index}"}}
                await graph.ainvoke({"n": 0}, config, durability="sync")

        return invoke

    subjects: dict[str, Callable[[int], Awaitable[None]]] = {
        "tracking workflow (engine, doubles)": tracking
    }
    subjects.update({name: invoker(graph) for name, graph in graphs.items()})
    totals: dict[str, list[float]] = {name: [] for name in subjects}
    for subject in subjects.values():
        await cpu_ms(subject, 20, 10_000_000)  # warm-up
    for round_ in range(rounds):
        order = list(subjects.items())
        order = order[round_ % len(order) :] + order[: round_ % len(order)]
        for name, subject in order:
            totals[name].append(await cpu_ms(subject, runs, round_ * runs))
    cores = os.cpu_count() or 1
    base = min(totals["no-op chain, in-memory checkpointer"])
    print(f"CPU ms per run, best of {rounds} rounds of {runs}; {steps} super-steps a run, "
          f"{cores} cores:")  # fmt: skip
    rows: list[list[str | float]] = []
    for name, values in totals.items():
        best = min(values)
        rows.append([name, best, f"{best / base:.2f}x", cores * 1000 / best])
    print_table(["series", "cpu ms/run", "vs chain", "runs/s ceiling"], rows, digits=2)
    print("  ceiling: the cores' CPU divided by one run's, with nothing else running")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200, help="runs per series per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    args = parser.parse_args(argv)
    asyncio.run(bench(args.runs, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
