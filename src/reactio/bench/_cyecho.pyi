# Type stubs of the Cython reactors of the reactio-cy leg (_cyecho.pyx), for legs_reactio.
from typing import List

from reactio import Reactor
from typing_extensions import disjoint_base

from .legs_reactio import _ServerState
from .worker import Recorder

@disjoint_base
class CyEchoServer(Reactor):
    """Echo every complete message back, straight from the receive buffer."""

    def __init__(self, state: _ServerState) -> None: ...

@disjoint_base
class CyPingClient(Reactor):
    """Strict ping-pong: send, wait for the whole echo, record the RTT, repeat."""

    @property
    def i(self) -> int:
        """Round trips completed, the warm-up included."""
    def __init__(self, size: int, rec: Recorder, errors: List[BaseException]) -> None: ...
