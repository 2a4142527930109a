"""An echo server on 127.0.0.1 in rt.run(-1), as a user runs one: prints its port, echoes
every chunk it reads until the peer closes, then exits (the runtime is idle).  Self-contained
(tests/helpers run under wine too)."""
import sys

import reactio
from reactio import DefaultTcpListenerHandler, Deferred, DropMsgSize, Reactor


class Echo(Reactor):
    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        ctx.send_or_que(buf)
        return DropMsgSize(len(buf))


def main():
    rt = reactio.ReactRuntime()
    done = []
    rt.cmd_sender.send_listen("127.0.0.1:0", DefaultTcpListenerHandler(lambda c, p: Echo()),
                              Deferred.IMMEDIATE, done.append)
    while not done:
        rt.process_events(0.01)
    lid = done[0]
    print(rt.local_address(lid)[1], flush=True)
    while rt.count_streams() == 0:
        rt.process_events(0.01)
    rt.cmd_sender.send_close(lid)       # one peer only: run() returns when it has gone
    rt.run(-1.0)
    rt.close()


if __name__ == "__main__":
    sys.exit(main())
