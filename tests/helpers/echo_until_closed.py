"""An echo server on 127.0.0.1 in rt.run(-1), as a user runs one: prints its port, echoes
every chunk it reads until its one peer closes, then exits (the runtime is idle).  Linux only
(tests/test_run_loop.py runs it under strace), so it takes its helpers from tests/support
(child_env(TESTS) puts them on the path)."""
import reactio
from reactio import DropMsgSize, Reactor

from support.runtime import listen_factory, pump_until


class Echo(Reactor):
    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        ctx.send_or_que(buf)
        return DropMsgSize(len(buf))


def main():
    with reactio.ReactRuntime() as rt:
        lid, port = listen_factory(rt, Echo)
        print(port, flush=True)
        pump_until(rt, lambda: rt.count_streams() == 1, timeout=30)
        rt.cmd_sender.send_close(lid)       # one peer only: run() returns when it has gone
        print("serving", flush=True)        # (marks in a trace where run() begins)
        rt.run(-1.0)


if __name__ == "__main__":
    main()
