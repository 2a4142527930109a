"""reactio's examples, runnable as modules:

- ``python -m reactio.examples.pingpong``: server and client on one runtime, latency report;
- ``python -m reactio.examples.threaded_pingpong``: client and server on two runtimes of a
  ThreadedReactorMgr, with a deferred self-command, a name lookup and a cross-thread command;
- ``python -m reactio.examples.echo_server --addr 127.0.0.1:10254`` and
  ``python -m reactio.examples.echo_client --addr 127.0.0.1:10254 --count N --batch B``.
"""
