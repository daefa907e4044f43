"""The system clock's ids: random version-4 UUIDs, from bytes read ahead from the kernel, and
never the same in a forked child as in its parent."""

from __future__ import annotations

import os
import uuid

from nome_core.clock import SystemClock


def test_ids_are_distinct_version_4_uuids() -> None:
    clock = SystemClock()
    ids = [clock.new_id() for _ in range(20_000)]  # several refills of the read-ahead
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    clock = SystemClock()
    clock.new_id()  # the read-ahead holds bytes the parent will use next
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, clock.new_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    childs = os.read(read, 64).decode()
    os.close(read)
    assert childs != clock.new_id()
