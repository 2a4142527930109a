# The IOCP backend's listeners: ACCEPTS_PER_LISTENER AcceptEx operations outstanding per
# listener, each with its own accepting socket; a completed one is adopted like an accepted
# epoll connection (_adopt) and posted again.

cdef int _iocp_post_accepts(ReactRuntime rt, _Listener lst) except -1:
    cdef w.rio_op *op
    cdef int k, err
    cdef w.DWORD got = 0
    cdef w.SOCKET s
    for k in range(ACCEPTS_PER_LISTENER):
        op = &(<w.rio_op *>lst.backend_ops)[k]
        while not op.pending and not lst.closed and not lst.paused:
            s = w.WSASocketW(lst.family, w.SOCK_STREAM, w.IPPROTO_TCP, NULL, 0,
                             w.WSA_FLAG_OVERLAPPED | w.WSA_FLAG_NO_HANDLE_INHERIT)
            if s == w.INVALID_SOCKET:
                err = w.WSAGetLastError()
                log.warning("listener %s: cannot create a socket to accept on: %s; pausing "
                            "accepts for 100 ms", lst.reactor_id, os.strerror(err))
                _pause_accepts(rt, lst)
                return 0
            op.sock = s
            _op_start(rt, op, lst, OP_ACCEPT)
            if w.rio_AcceptEx(<w.SOCKET><size_t>lst.fd, s, op, &got):
                _op_finish(rt, op)
                _iocp_accepted(rt, lst, op, 0)
                continue
            err = w.WSAGetLastError()
            if err == w.WSA_IO_PENDING:
                break
            _op_finish(rt, op)
            _iocp_accepted(rt, lst, op, err)
            if err != w.WSAECONNRESET:
                # AcceptEx itself failed (resources): retry later rather than go silent
                log.warning("listener %s: AcceptEx failed: %s; pausing accepts for 100 ms",
                            lst.reactor_id, os.strerror(err))
                _pause_accepts(rt, lst)
                return 0
    return 0


cdef int _iocp_accept_done(ReactRuntime rt, _Listener lst, w.rio_op *op) except -1:
    cdef int err = _op_error(<w.SOCKET><size_t>lst.fd, op) if not lst.closed else w.WSA_OPERATION_ABORTED
    try:
        _iocp_accepted(rt, lst, op, err)
    finally:                        # (on_new_connection may unwind with Ctrl-C)
        if not lst.closed:
            _iocp_post_accepts(rt, lst)
    return 0


cdef int _iocp_accepted(ReactRuntime rt, _Listener lst, w.rio_op *op, int err) except -1:
    cdef w.sockaddr_storage peer
    cdef w.SOCKET s = op.sock
    op.sock = w.INVALID_SOCKET
    if err != 0 or lst.closed:
        w.closesocket(s)
        if err != 0 and err != w.WSA_OPERATION_ABORTED:
            log.info("listener %s: accept failed: %s (connection dropped)", lst.reactor_id,
                     os.strerror(err))
        return 0
    if w.rio_accepted_peer(<w.SOCKET><size_t>lst.fd, s, op, &peer) != 0 or w.rio_set_nonblocking(s) != 0:
        log.info("listener %s: accepted socket unusable: %s", lst.reactor_id,
                 os.strerror(w.WSAGetLastError()))
        w.closesocket(s)
        return 0
    _adopt(rt, lst, <int>s, _sockaddr_to_tuple(<sockaddr *>&peer, sizeof(peer)))
    return 0
