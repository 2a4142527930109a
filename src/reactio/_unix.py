"""Unix-domain stream sockets, cold side: the ``"unix:/path"`` / ``"unix:@name"`` addresses,
the listening socket and its file (created, and removed when the listener closes), the
non-blocking connect, and the addresses reported back (``peer_address``, ``local_address``).

Rules for a path that already exists when a listener binds it (docs/unix.md):

- a socket file nobody listens on (a connect to it is refused: what a killed server leaves
  behind) is stale: it is removed and the listener binds;
- a socket with a live listener on it: OSError EADDRINUSE, the file is left alone;
- anything else (regular file, directory, ...): OSError EADDRINUSE, never removed.

The listener remembers the inode it created and, when it closes, removes the path only while
it still names that inode (another process may have replaced it meanwhile).
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import sys

__all__ = ["PREFIX", "parse", "open_listener", "start_connect", "remove_file", "format_address"]

PREFIX = "unix:"
# sun_path holds 108 bytes on Linux and Windows; a path keeps one for its terminating NUL (what
# other tools expect), an abstract name uses the one its leading NUL leaves.
SUN_PATH_MAX = 107
AF_UNIX = getattr(socket, "AF_UNIX", 1)     # (1 everywhere; Python on Windows has no name for it)
ABSTRACT = sys.platform.startswith("linux")

log = logging.getLogger("reactio")


def parse(addr):
    """None when ``addr`` is not a ``"unix:"`` address; else the sockaddr for the socket
    module: the path (str), or ``"\\0name"`` for ``"unix:@name"`` (Linux abstract namespace).
    ValueError for an empty, too long or NUL-holding path, or an abstract name off Linux."""
    if not isinstance(addr, str) or not addr.startswith(PREFIX):
        return None
    path = addr[len(PREFIX):]
    if path == "" or path == "@":
        raise ValueError(f"empty Unix socket path: {addr!r}")
    if "\0" in path:
        raise ValueError(f"a Unix socket path cannot hold a NUL character: {addr!r}")
    if path.startswith("@"):
        if not ABSTRACT:
            raise ValueError(f"abstract Unix socket names ('unix:@name') exist on Linux only, "
                             f"not on {sys.platform}: {addr!r}")
        path = "\0" + path[1:]
    n = len(os.fsencode(path)) - path.startswith("\0")
    if n > SUN_PATH_MAX:
        raise ValueError(f"Unix socket path too long: {n} bytes, the limit is {SUN_PATH_MAX} "
                         f"(sun_path); use a shorter or a relative path: {addr!r}")
    return path


def _check_existing(path: str) -> None:
    """Clear the way for bind(): remove a stale socket file, refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EADDRINUSE, "the path exists and is not a socket (left alone)")
    probe = socket.socket(AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        err = probe.connect_ex(path)
    finally:
        probe.close()
    if err != errno.ECONNREFUSED:       # 0, or EAGAIN for a full backlog: someone listens
        if err in (0, errno.EAGAIN):
            raise OSError(errno.EADDRINUSE, "another listener is live on this socket")
        raise OSError(err, os.strerror(err))
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass                            # another server removed it first; bind() decides
    log.info("removed the stale Unix socket file %r (nobody listened on it)", path)


def open_listener(path: str, backlog: int, reuse_port: bool = False):
    """A bound, listening, non-blocking AF_UNIX socket: (fd, owned), ``owned`` the file to
    remove at close (None for an abstract name).  The caller owns the fd."""
    if reuse_port:
        raise ValueError("reuse_port=True means nothing to a Unix socket (one listener per "
                         "path)")
    abstract = path.startswith("\0")
    if not abstract:
        _check_existing(path)
    sock = socket.socket(AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(path)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "no such directory for the socket file")
        owned = None
        if not abstract:
            st = os.lstat(path)
            owned = (os.path.abspath(path), st.st_dev, st.st_ino)
        try:
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            remove_file(owned)
            raise
    except BaseException:
        sock.close()
        raise
    return sock.detach(), owned


def remove_file(owned) -> None:
    """Remove the listener's socket file if the path still names the inode it created."""
    if owned is None:
        return
    path, dev, ino = owned
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == (dev, ino) and stat.S_ISSOCK(st.st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove the Unix socket file %r: %s", path, exc)


def start_connect(path: str) -> tuple[int, int]:
    """A non-blocking connect: (fd, 0) when connected at once (the usual case), (fd,
    EINPROGRESS) while in progress.  Raises OSError: ENOENT (no such socket file),
    ECONNREFUSED (nobody listens), EACCES, and EAGAIN when the listener's backlog is full
    (a Unix connect does not wait for room: nothing is in progress then)."""
    sock = socket.socket(AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        err = sock.connect_ex(path)
        if err not in (0, errno.EINPROGRESS):
            what = "the listener's backlog is full" if err == errno.EAGAIN else os.strerror(err)
            raise OSError(err, f"{what} (connect to {PREFIX + format_address(os.fsencode(path))!r})")
    except BaseException:
        sock.close()
        raise
    return sock.detach(), err


def format_address(sun_path: bytes) -> str:
    """The address reported for ``sun_path`` (the bytes the kernel gave, as long as it said):
    the path, ``"@name"`` for an abstract name, ``""`` for an unnamed socket (a client that
    did not bind: what a listener sees as its peers' address)."""
    if sun_path[:1] == b"\0":
        return "@" + os.fsdecode(sun_path[1:])
    return os.fsdecode(sun_path.split(b"\0", 1)[0])
