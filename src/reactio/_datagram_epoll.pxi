# Datagram I/O of the epoll backend.  Receive: recvmmsg() takes up to recv_batch datagrams into
# one buffer (one slot of max_datagram_size + 1 bytes each: a datagram that fills its slot was
# truncated; MSG_TRUNC says so too), then they are dispatched one by one.  Send: replies made
# while a batch of several datagrams is dispatched (ctx.corked) are copied into the out batch
# and leave in one sendmmsg() when the dispatch ends; any other send (the reply to a lone
# datagram, a send outside a dispatch) goes out at once with sendto().
# The out batch also holds what a full socket did not take (write interest until it drains);
# when it is full too the datagram is dropped and counted (send_dropped), as the network would.
# recv_batch=1 reads one datagram per recvmsg(), asyncio's way: the bench compares the two.


cdef int _dg_set_want(DatagramContext ctx, int want) except -1:
    if want != ctx.want and ctx.fd >= 0:
        _epoll_ctl(ctx.rt, EPOLL_CTL_MOD, ctx.fd, _epoll_bits(want), _poll_key(ctx.reactor_id))
        ctx.want = want
    return 0


# ------------------------------------------------------------------------- sending

cdef int _dg_send(DatagramContext ctx, const char *data, Py_ssize_t n, const sockaddr *sa,
                  socklen_t salen) except -1:
    cdef ssize_t r
    cdef int err
    if ctx.corked:
        return _dg_queue(ctx, data, n, sa, salen)      # (the dispatch's end flushes)
    if ctx.nout > ctx.ohead:
        # behind what waits for the socket: order kept.  A flush of the full batch inside
        # _dg_queue may have dropped the write interest: this datagram needs it back.
        r = _dg_queue(ctx, data, n, sa, salen)
        _dg_set_want(ctx, WANT_READ | WANT_WRITE)
        return <int>r
    while True:
        if ctx.refuse_sends == 0:
            r = rio_sendto(ctx.fd, data, n, sa, salen)
            ctx.send_calls += 1
            if r >= 0:
                ctx.datagrams_sent += 1
                return 1
            err = rio_errno()
        else:
            ctx.refuse_sends -= 1       # a test's full socket (DatagramContext._refuse_sends)
            err = EAGAIN
        if err == EINTR:
            continue
        if rio_would_block(err) or err == ENOBUFS:
            r = _dg_queue(ctx, data, n, sa, salen)
            _dg_set_want(ctx, WANT_READ | WANT_WRITE)
            return <int>r
        raise _net.os_error(err, "sendto")


cdef int _dg_flush_once(DatagramContext ctx) except -1:
    """One sendmmsg of the queued datagrams.  Returns how many left; raises the OSError of a
    datagram the kernel refused (that one is dropped)."""
    cdef mmsghdr *m = <mmsghdr *>ctx.omsgs
    cdef iovec *iov = <iovec *>ctx.oiov
    cdef int i, k = 0, r, err
    for i in range(ctx.ohead, ctx.nout):
        rio_dgram_out(&m[k], &iov[k], &ctx.osa[i], ctx.osalen[i], ctx.obuf + ctx.ooff[i],
                      ctx.olens[i])
        k += 1
    if k == 0:
        return 0
    r = rio_sendmmsg(ctx.fd, m, k)
    ctx.send_calls += 1
    if r > 0:
        ctx.datagrams_sent += r
        ctx.ohead += r
    elif r < 0:
        err = rio_errno()
        if err == EINTR or rio_would_block(err) or err == ENOBUFS:
            return 0
        ctx.ohead += 1          # the kernel refused the first one: drop it, tell the reactor
        ctx.send_dropped += 1
        if ctx.ohead == ctx.nout:
            ctx.nout = ctx.ohead = 0
            ctx.olen = 0
        raise _net.os_error(err, "sendmmsg")
    if ctx.ohead == ctx.nout:
        ctx.nout = ctx.ohead = 0
        ctx.olen = 0
    return r


cdef int _dg_flush(DatagramContext ctx) except -1:
    """Send the out batch; what the socket does not take now waits for write readiness (the
    endpoint is held by the caller)."""
    cdef int guard = 0
    while ctx.nout > ctx.ohead and ctx.state == ST_OPEN and guard < OUT_MAX:
        guard += 1
        try:
            if _dg_flush_once(ctx) == 0 and ctx.nout > ctx.ohead:
                break           # the socket is full
        except OSError as exc:
            _dg_report(ctx, exc)
    if ctx.state == ST_OPEN:
        _dg_set_want(ctx, WANT_READ | WANT_WRITE if ctx.nout > ctx.ohead else WANT_READ)
    return 0


# ------------------------------------------------------------------------- receiving

cdef int _dg_event(ReactRuntime rt, DatagramContext ctx, uint32_t ev) except -1:
    """One epoll event of an endpoint (called by _epoll_poll)."""
    _dg_hold(ctx)
    try:
        if ev & EPOLLOUT and ctx.state == ST_OPEN:
            _dg_flush(ctx)
        if ev & (EPOLLIN | EPOLLERR) and ctx.state == ST_OPEN:
            _dg_readable(rt, ctx)
    except (KeyboardInterrupt, SystemExit):
        _dg_release(rt, ctx)
        raise
    except BaseException as exc:
        _dg_failed(rt, ctx, exc)
    _dg_release(rt, ctx)
    return 0


cdef int _dg_readable(ReactRuntime rt, DatagramContext ctx) except -1:
    """Receive and dispatch batches until the socket is drained or the endpoint had its turn
    (READ_BUDGET bytes or READ_SLICE_NS, as streams)."""
    cdef Py_ssize_t total = 0
    cdef int64_t deadline = 0
    cdef int n, err
    while ctx.state == ST_OPEN:
        n = _dg_recv(ctx)
        if n < 0:
            err = rio_errno()
            if err == EINTR:
                continue
            if not rio_would_block(err):
                _dg_report(ctx, _net.os_error(err, "recvmmsg"))
            return 0
        if n == 0:
            return 0
        ctx.corked = n > 1      # a lone datagram's reply goes out at once, from send_to
        try:
            total += _dg_dispatch(ctx, n)
        finally:
            ctx.corked = False
        if ctx.nout > ctx.ohead and ctx.state == ST_OPEN:
            _dg_flush(ctx)
        if n < ctx.nbatch or _turn_over(total, &deadline):
            return 0
    return 0


cdef int _dg_recv(DatagramContext ctx) except -2:
    """Fill the receive batch: the number of datagrams, or -1 with errno set."""
    cdef mmsghdr *m = <mmsghdr *>ctx.rmsgs
    cdef char *buf = ctx.reader.store.data
    cdef socklen_t salen
    cdef int flags = 0
    cdef ssize_t r
    cdef int n
    if ctx.nbatch == 1:
        r = rio_recvfrom(ctx.fd, buf, ctx.slot, ctx.raddrs, &salen, &flags)
        ctx.recv_calls += 1
        if r < 0:
            return -1
        rio_dgram_prepare(m, <iovec *>ctx.riov, ctx.raddrs, buf, ctx.slot, 1)
        m[0].msg_len = <unsigned>r
        m[0].msg_hdr.msg_flags = flags
        m[0].msg_hdr.msg_namelen = salen
        return 1
    rio_dgram_prepare(m, <iovec *>ctx.riov, ctx.raddrs, buf, ctx.slot, ctx.nbatch)
    n = rio_recvmmsg(ctx.fd, m, <unsigned>ctx.nbatch)    # (MSG_DONTWAIT: never blocks)
    ctx.recv_calls += 1
    return n


cdef int _dg_last_flush(DatagramContext ctx) noexcept:
    if ctx.nout > ctx.ohead:
        try:
            _dg_flush_once(ctx)
        except BaseException:
            pass
    return 0
