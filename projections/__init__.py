"""NOME read side: Redis read models built from the event log."""
