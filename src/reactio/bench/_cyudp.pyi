# Type stubs of the Cython datagram reactors of the reactio-cy UDP leg (_cyudp.pyx), for udp_legs.
from typing import List

from reactio import DatagramReactor
from typing_extensions import disjoint_base

from .worker import Recorder

@disjoint_base
class CyUdpEcho(DatagramReactor):
    """Send every datagram back to its sender; one shorter than a header ends the endpoint."""

@disjoint_base
class CyUdpPing(DatagramReactor):
    """Strict ping-pong over a connected endpoint."""

    @property
    def i(self) -> int:
        """Round trips completed, the warm-up included."""
    def __init__(self, size: int, rec: Recorder, errors: List[BaseException]) -> None: ...
