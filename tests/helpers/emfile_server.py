"""Echo server for the accept-under-EMFILE test, run as a subprocess so that lowering its
soft RLIMIT_NOFILE cannot disturb the test process.

    python emfile_server.py SPARE_FDS

Lowers the soft limit to (descriptors open now + SPARE_FDS), listens on 127.0.0.1:0 and prints
{"port": P, "limit": L}.  Then serves reactio frames (echo) and answers lines on stdin:
"stats" -> one JSON line of counters, "quit" -> closes the runtime, prints the final counters
and exits 0.  Counters include the reactio log records by level: EMFILE must be a WARNING
(accepts paused for a moment), never an ERROR, and the loop must not spin meanwhile.
"""
import json
import logging
import os
import resource
import select
import sys

import reactio
from reactio import DefaultTcpListenerHandler, Deferred
from reactio.examples.pingpong import EchoReactor


class Counter(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.by_level = {}
        self.messages = []

    def emit(self, record):
        self.by_level[record.levelname] = self.by_level.get(record.levelname, 0) + 1
        if record.levelno >= logging.WARNING and len(self.messages) < 20:
            self.messages.append(record.getMessage())


class Echo(EchoReactor):
    served = 0
    closed = 0
    errors = []

    def on_frame(self, msg, ctx):
        super().on_frame(msg, ctx)
        Echo.served += 1

    def on_close(self, reactor_id, cmd_sender):
        Echo.closed += 1
        if self.close_error is not None:
            Echo.errors.append(repr(self.close_error))


def main():
    spare = int(sys.argv[1])
    counter = Counter()
    log = logging.getLogger("reactio")
    log.addHandler(counter)
    log.setLevel(logging.INFO)
    rt = reactio.ReactRuntime()
    done = []
    handler = DefaultTcpListenerHandler(lambda count, param: Echo(), 1024, backlog=512)
    rt.cmd_sender.send_listen("127.0.0.1:0", handler, Deferred.IMMEDIATE, done.append)
    while not done:
        rt.process_events(0.01)
    lid = done[0]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = len(os.listdir("/proc/self/fd")) - 1 + spare     # (listdir's own fd is closed again)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    print(json.dumps({"port": rt.local_address(lid)[1], "limit": limit}), flush=True)
    peak = 0

    def stats():
        t = os.times()
        return {"streams": rt.count_streams(), "peak_streams": peak, "served": Echo.served,
                "closed": Echo.closed, "close_errors": Echo.errors[:10],
                "log_levels": counter.by_level, "log": counter.messages,
                "cpu_seconds": t.user + t.system, "reactors": rt.count_reactors()}

    while True:
        rt.process_events(0.01)
        peak = max(peak, rt.count_streams())
        if select.select([sys.stdin], [], [], 0)[0]:
            line = sys.stdin.readline().strip()
            if line == "stats":
                print(json.dumps(stats()), flush=True)
            elif line in ("quit", ""):
                rt.close()
                print(json.dumps(stats()), flush=True)
                return


if __name__ == "__main__":
    main()
