"""NOME benchmarks: every figure is printed as a ratio against a baseline measured in the same
run on the same machine, because absolute rates on a shared 2-core box mean little.

`make bench` (`python -m bench`) needs PostgreSQL and Redis on 127.0.0.1. It uses its own
Postgres schema and Redis key prefix, drops both at the end, and writes bench/results.json.
Nothing asserts on time: a benchmark is not a test.
"""
