"""Work the worker role does besides driving runs: periodic jobs (`host.py`) and log
followers with side effects (`follower.py`). A context gives only what to do with one tick
or one event; leases, jitter, tracking and retries live here."""
