import pytest

# The shared helpers (tests/support) assert as the tests do: pytest explains their failures
# as it does a test's. Registered here, before anything imports them.
pytest.register_assert_rewrite("tests.support")
