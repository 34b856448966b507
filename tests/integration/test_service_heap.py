"""Every service process of the platform froze its start-up heap before it served."""

from __future__ import annotations

import json

from services.kit.devstack import Platform


def test_each_service_froze_its_heap_before_serving(platform: Platform) -> None:
    for entry in platform.catalog:
        lines = platform.processes[entry.name].log_path.read_text().splitlines()
        frozen = [i for i, line in enumerate(lines) if '"heap frozen"' in line]
        ready = [i for i, line in enumerate(lines) if line.startswith("READY ")]
        assert frozen, entry.name
        assert ready, entry.name
        assert frozen[0] < ready[0], entry.name
        assert json.loads(lines[frozen[0]])["objects"] > 10_000, entry.name
