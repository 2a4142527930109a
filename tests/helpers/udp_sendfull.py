"""A UDP send buffer the real kernel fills, run in a private network namespace by
tests/test_udp_sendfull.py, whose loopback sends slowly:

    unshare --net --map-root-user sh -c 'ip link set lo up &&
        tc qdisc add dev lo root tbf rate 20mbit burst 4000 limit 10000000 &&
        exec python udp_sendfull.py'

(Datagrams wait in the qdisc charged to the sender's send buffer, so sendto() says EAGAIN once
SO_SNDBUF is used up; on a plain loopback it never does.)  One callback sends 1500 numbered
datagrams of 1000 bytes to a plain socket: the kernel takes some, the out batch keeps 64, the
rest are dropped (send_to returns False, send_dropped counts them).  The plain socket must get
exactly the accepted datagrams, in order, once.  Prints
"accepted=A dropped=D received=R order=ok|bad".  (Self-contained: imports only reactio.)
"""
import socket
import sys
import time

import reactio
from reactio import DatagramReactor, Deferred

N = 1500
SIZE = 1000


def payload(i):
    return b"%06d" % i + b"x" * (SIZE - 6)


class Flood(DatagramReactor):
    def __init__(self, dest):
        self.dest = dest
        self.ctx = None
        self.results = []
        self.errors = []

    def on_bound(self, ctx):
        self.ctx = ctx

    def on_command(self, cmd, ctx):
        self.results = [ctx.send_to(payload(i), self.dest) for i in range(N)]

    def on_datagram(self, buf, addr, ctx):
        pass

    def on_error(self, exc, ctx):
        self.errors.append(exc)


def drain(rx, got):
    """The numbers of the datagrams waiting in rx, appended to got."""
    try:
        while True:
            got.append(int(rx.recv(2000)[:6]))
    except BlockingIOError:
        pass


def main():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    rt = reactio.ReactRuntime()
    flood = Flood(rx.getsockname())
    bound = []
    rt.cmd_sender.send_bind_udp("127.0.0.1:0", flood, Deferred.IMMEDIATE, bound.append)
    while not bound:
        rt.process_events(0.01)
    assert isinstance(bound[0], reactio.ReactorID), bound[0]
    rt.cmd_sender.send_user_cmd(bound[0], "go")
    while not flood.results:
        rt.process_events(0.01)
    accepted = [i for i, ok in enumerate(flood.results) if ok]
    dropped = N - len(accepted)
    got = []
    end = time.monotonic() + 30
    while len(got) < len(accepted) and time.monotonic() < end:
        rt.process_events(0.005)
        drain(rx, got)
    time.sleep(0.2)         # none more may come
    rt.process_events(0.01)
    drain(rx, got)
    ctx = flood.ctx
    problems = []
    if ctx.send_dropped != dropped:
        problems.append(f"send_dropped={ctx.send_dropped}, send_to said False {dropped} times")
    if ctx.datagrams_sent != len(accepted):
        problems.append(f"datagrams_sent={ctx.datagrams_sent}, accepted {len(accepted)}")
    if flood.errors:
        problems.append(f"on_error got {flood.errors[:3]}")
    # after the drain the socket takes datagrams at once again
    if not ctx.send_to(payload(N), rx.getsockname()):
        problems.append("send_to after the drain returned False")
    order = "ok" if got == accepted else "bad"
    print(f"send_calls={ctx.send_calls} problems={len(problems)}", file=sys.stderr)
    for p in problems:
        print(p, file=sys.stderr)
    rt.close()
    print(f"accepted={len(accepted)} dropped={dropped} received={len(got)} order={order}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
