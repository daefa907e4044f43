"""NOME write side: the pure domain and its event store glue."""
