"""Multicast join / leave on loopback, run in a private network namespace by
tests/test_udp.py (lo up with multicast on, 224.0.0.0/4 routed to lo):

    unshare --net --map-root-user sh -c 'ip link set lo up multicast on &&
        ip route add 224.0.0.0/4 dev lo && exec python udp_multicast.py'

A member endpoint bound to the group's port gets the sender's datagrams; after leave_group it
gets none of the next ones; after join_group it gets them again.  Prints one line with the
three counts.  (Self-contained: helper scripts import only reactio.)
"""
import time

import reactio
from reactio import DatagramReactor, Deferred

GROUP = "239.1.2.3"


class Member(DatagramReactor):
    def __init__(self):
        self.got = []
        self.ctx = None

    def on_bound(self, ctx):
        self.ctx = ctx

    def on_datagram(self, buf, addr, ctx):
        self.got.append(bytes(buf))


def pump(rt, pred, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        rt.process_events(0.01)
    return pred()


def main():
    rt = reactio.ReactRuntime()
    member, sender = Member(), Member()
    ids = []
    rt.cmd_sender.send_bind_udp("0.0.0.0:0", member, Deferred.IMMEDIATE, ids.append,
                                multicast_groups=[GROUP], multicast_interface="127.0.0.1")
    pump(rt, lambda: ids)
    if not isinstance(ids[0], reactio.ReactorID):
        raise ids[0]
    port = rt.local_address(ids[0])[1]
    rt.cmd_sender.send_bind_udp("127.0.0.1:0", sender, Deferred.IMMEDIATE, ids.append,
                                multicast_interface="127.0.0.1", multicast_ttl=1)
    pump(rt, lambda: len(ids) == 2)
    if not isinstance(ids[1], reactio.ReactorID):
        raise ids[1]
    counts = []

    def burst(tag):
        before = len(member.got)
        for i in range(5):
            sender.ctx.send_to(b"%s%d" % (tag, i), (GROUP, port))
        pump(rt, lambda: len(member.got) >= before + 5, 1.0)
        pump(rt, lambda: False, 0.2)      # anything late would show up here
        counts.append(len(member.got) - before)

    burst(b"a")
    member.ctx.leave_group(GROUP, "127.0.0.1")
    burst(b"b")
    member.ctx.join_group(GROUP, "127.0.0.1")
    burst(b"c")
    rt.close()
    print(f"joined={counts[0]} left={counts[1]} rejoined={counts[2]}")


if __name__ == "__main__":
    main()
