"""reactio's wire format, written out here (not taken from reactio.examples): a u16 LE body
length, an i64 LE timestamp, the body."""
from __future__ import annotations

import struct

from reactio import ExpectMsgSize, MessageResult

HEADER = struct.Struct("<Hq")
HEADER_SIZE = HEADER.size               # 10


def frame(body: bytes, stamp: int = 0) -> bytes:
    """One message: header + body."""
    if len(body) > 0xFFFF:
        raise ValueError(f"body of {len(body)} bytes does not fit the u16 length field")
    return HEADER.pack(len(body), stamp) + body


def parse_frame(buf) -> tuple[MessageResult | None, int]:
    """``(ExpectMsgSize, 0)`` while the message at the start of ``buf`` is incomplete, else
    ``(None, n)`` with ``n`` the size of that whole message."""
    if len(buf) < HEADER_SIZE:
        return ExpectMsgSize(0), 0
    n = HEADER_SIZE + (buf[0] | (buf[1] << 8))
    if n > len(buf):
        return ExpectMsgSize(n), 0
    return None, n

