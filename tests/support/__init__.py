"""Helpers shared by the test modules (tests/conftest.py holds only fixtures).

``pythonpath = ["tests"]`` in pyproject.toml puts tests/ on sys.path, so a test imports what it
needs from the module of its concern::

    from support.runtime import listen_factory, pump_until    # driving a runtime
    from support.reactors import EchoReactor, SinkReactor     # reactors the tests serve with
    from support.wire import frame                            # reactio's wire format
    from support.sockets import raw_client, recv_exact_nb     # plain-socket peers
    from support.fds import runtime_descriptors               # leak checks, both backends
    from support.env import BACKEND, HAS_IPV6, UNDER_WINE     # what the machine offers
    from support.subproc import HELPERS, run_helper           # tests/helpers/*.py children

Nothing here depends on reactio.examples: the examples are under test, not test machinery.
"""
