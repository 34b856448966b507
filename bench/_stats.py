"""Small statistics and table helpers shared by the benchmarks.

Latencies are kept as plain lists of milliseconds; :func:`summarize` reduces them to the
figures the benchmarks print, and :func:`print_table` lines them up in columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Cell = str | int | float


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Return the ``q``-th percentile (0 ≤ q ≤ 100) of already sorted values.

    Linear interpolation between the two closest ranks, as ``numpy.percentile``'s default
    (Hyndman & Fan type 7): q=0 is the minimum, q=100 the maximum, q=50 the median.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    position = (len(sorted_values) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    fraction = position - lower
    low, high = sorted_values[lower], sorted_values[upper]
    return low + (high - low) * fraction


@dataclass(frozen=True, slots=True)
class Summary:
    """Order statistics of one series of samples, in the samples' unit (ms here)."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float


def summarize(samples_ms: Iterable[float]) -> Summary:
    """Summarize latency samples (any order) into p50/p90/p99/mean/min/max and their count."""
    ordered = sorted(samples_ms)
    if not ordered:
        raise ValueError("summary of no samples")
    return Summary(
        n=len(ordered),
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        mean=math.fsum(ordered) / len(ordered),
        min=ordered[0],
        max=ordered[-1],
    )


def _text(cell: Cell, digits: int) -> str:
    if isinstance(cell, float):
        return f"{cell:,.{digits}f}"
    if isinstance(cell, int):
        return f"{cell:,}"
    return cell


def format_table(
    headers: Sequence[str], rows: Iterable[Sequence[Cell]], *, digits: int = 3, indent: int = 2
) -> str:
    """Return rows as aligned columns under ``headers``, with a rule below them.

    Numbers are right-aligned (floats with ``digits`` decimals), text left-aligned.
    """
    body = [list(row) for row in rows]
    for row in body:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells for {len(headers)} headers")
    texts = [[_text(cell, digits) for cell in row] for row in body]
    widths = [
        max([len(header), *(len(row[i]) for row in texts)]) for i, header in enumerate(headers)
    ]
    numeric = [
        bool(body) and all(isinstance(row[i], int | float) for row in body)
        for i in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return (" " * indent + "  ".join(parts)).rstrip()

    rule = " " * indent + "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in texts)])


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[Cell]], *, digits: int = 3, indent: int = 2
) -> None:
    """Print :func:`format_table` of the same arguments."""
    print(format_table(headers, rows, digits=digits, indent=indent))
