"""heap.freeze exempts a started service's live objects from collection, not its garbage.

Each check runs in a fresh interpreter: freezing the test runner's heap would keep every
later test's objects."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import gc, weakref
    from services.kit import heap

    class Node:
        pass

    heap.refreeze()  # a process that never froze (a test run) is left alone
    assert gc.get_freeze_count() == 0

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    garbage, kept = cycle(), Node()
    frozen = heap.freeze()
    assert frozen == gc.get_freeze_count() > 1000, frozen
    assert garbage() is None  # collected before the freeze, not kept forever
    assert gc.is_tracked(kept) and kept not in gc.get_objects()  # frozen: never walked

    later = cycle()  # made after the freeze: collected as usual
    assert later() is not None
    gc.collect()
    assert later() is None

    heap.refreeze()  # a service that froze once freezes what it loaded since
    assert gc.get_freeze_count() > frozen
    print("ok")
    """
)


def test_freeze_keeps_what_lives_and_collects_the_rest() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
