"""Connect timeouts against a non-routable address, run inside a private network namespace:

    unshare --net --map-root-user sh -c \
        'ip link set lo up && ip route add 192.0.2.0/24 dev lo && exec python netns_connect.py'

In that namespace 192.0.2.0/24 (TEST-NET-1) is routed into the loopback device, where packets
for an address that is not local are dropped: every SYN is lost and a connect can only end by
its timeout.  Meanwhile an echo connection inside the namespace must keep working.  Prints one
JSON line with what each completion received.
"""
import json
import os
import time

import reactio
from reactio import DefaultTcpListenerHandler, Deferred, DropMsgSize, ExpectMsgSize
from reactio.examples.pingpong import EchoReactor as Echo

N = 20


class Pinger(Echo):
    def __init__(self):
        self.rounds = 0

    def on_connected(self, ctx, listener_id):
        ctx.send_or_que(b"\x01\x00" + bytes(8) + b"p")

    def on_inbound_message(self, buf, new_bytes, decoded, ctx):
        if len(buf) < 11:
            return ExpectMsgSize(11)
        self.rounds += 1
        ctx.send_or_que(buf[:11])
        return DropMsgSize(11)


def main():
    fds0 = len(os.listdir("/proc/self/fd"))
    rt = reactio.ReactRuntime()
    got = []
    rt.cmd_sender.send_listen("127.0.0.1:0", DefaultTcpListenerHandler(lambda c, p: Echo()),
                              Deferred.IMMEDIATE, got.append)
    while not got:
        rt.process_events(0.01)
    port = rt.local_address(got[0])[1]
    pinger = Pinger()
    rt.cmd_sender.send_connect(("127.0.0.1", port), 1024, pinger)
    results = {}
    t0 = time.monotonic()
    for i in range(N):
        rt.cmd_sender.send_connect(("192.0.2.1", 9 + i), 1024, Echo(), Deferred.IMMEDIATE,
                                   lambda r, i=i: results.setdefault(i, []).append(
                                       (type(r).__name__, str(r), time.monotonic() - t0)),
                                   timeout=0.3 + 0.01 * i)
    hanging = []
    rt.cmd_sender.send_connect(("192.0.2.1", 7), 1024, Echo(), Deferred.IMMEDIATE,
                               hanging.append)                 # no timeout: close() fails it
    while len(results) < N and time.monotonic() - t0 < 20:
        rt.process_events(0.01)
    rounds_during = pinger.rounds
    pending_fds = len(os.listdir("/proc/self/fd"))
    rt.close()
    print(json.dumps({
        "results": results, "rounds_during_timeouts": rounds_during,
        "hanging": [type(r).__name__ for r in hanging],
        "fds_leaked": len(os.listdir("/proc/self/fd")) - fds0,
        "fds_while_one_connect_pending": pending_fds - fds0}), flush=True)


if __name__ == "__main__":
    main()
