"""Storage adapter of the write side: the log (eventsourcing's recorders), its row format and
the group-commit writer. Context packages never import this; the command bus is given a
store and a writer."""

from nome_core.storage.store import EventStore
from nome_core.storage.writer import GroupCommitWriter

__all__ = ["EventStore", "GroupCommitWriter"]
