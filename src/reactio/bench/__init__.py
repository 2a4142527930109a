"""``python -m reactio.bench``: the round-trip latency and throughput harness.

Users pick a low-latency library by its numbers, so this harness is a product feature that
runs on the user's machine, not a test helper. Five commands:

``pingpong``
    One TCP connection on 127.0.0.1 between two processes, strict ping-pong (one message in
    flight) in reactio's wire format (u16 body length + i64 monotonic-ns send stamp, both
    little-endian, then the body). The client measures every round trip with a monotonic
    clock. With ``--compare`` the same ping-pong runs over every leg (C epoll floor, asyncio,
    uvloop, reactio with a Python reactor, reactio with a Cython reactor), interleaved in
    rounds so that machine drift hits every leg alike, and every leg is reported as a ratio
    to the C floor.
``scale``
    Echo throughput with N connections, one message in flight on each, driven by a C epoll
    load generator against each leg's server: messages/s, latency percentiles, server CPU
    time per message, ratios to the C server.
``pipeline``
    DEPTH messages in flight on one connection (a C client pipelining in bursts, as
    ``redis-benchmark -P`` does): messages/s, server CPU time per message, and system calls
    per message by call (``strace -c`` in a separate traced phase).
``cost``
    User-space instructions per echoed message of each leg's server under ``valgrind
    --tool=callgrind``: runs of N and 2N messages, the difference over N. Exact, so it gates
    regressions (tests/test_cost.py) where timings cannot.
``idle``
    Server RSS per idle connection, with N connections (10,000 by default) held open by a C
    client.

Module map (the harness process imports only the first group; the children run ``worker``):

* ``cli``: argument parsing and the commands' top level.
* ``pingpong``, ``scale``, ``pipeline``, ``cost``, ``idle``: orchestration of the runs
  (rounds, legs, pinning); ``cost`` reuses ``pipeline``'s server + client session.
* ``tools``: finds valgrind and strace, or says how to install them.
* ``legs``: the registry of legs: how to start each leg's server and client, availability.
* ``procs``: child-process plumbing (deadlines, reaping, CPU affinity, CPU time, RSS).
* ``cbuild``: compiles the C programs in ``c/`` with the system compiler, cached by hash.
* ``stats``, ``report``, ``plot``, ``machine``: numbers, tables/JSON, charts, machine info.
* ``worker``: entry point of the Python children (``python -m reactio.bench.worker``), which
  runs ``legs_asyncio`` (asyncio, uvloop) or ``legs_reactio`` (reactio, with ``_pyecho`` for
  the Python reactors and ``_cyecho`` for the Cython ones).

Importing this package must stay cheap and must not import reactio's extension modules: a
leg that cannot import is reported as skipped, never a crash of the harness.
"""
