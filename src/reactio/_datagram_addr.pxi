# Addresses of datagram endpoints, both ways, kept cheap:
#   received: the sender's raw sockaddr -> the tuple on_datagram gets.  A direct-mapped cache
#     (ADDR_CACHE entries, by a hash of the raw bytes) keeps the tuple built for each recent
#     sender, so a feed, a peer, or a few hundred clients cost no allocation per datagram; a
#     connected endpoint hands out its peer's tuple.  A Cython reactor (on_datagram_raw) gets
#     the raw sockaddr and builds nothing.
#   sent: the tuple given to send_to -> a raw sockaddr.  The tuple of the last sender (a
#     reply) is recognised by identity; other tuples are looked up in a table filled on first
#     use (bounded: reset at SA_OF_MAX entries).

cdef object _dg_addr(DatagramContext ctx, const sockaddr *sa, socklen_t salen):
    cdef unsigned i
    if ctx.connected:
        return ctx.peer
    if salen == 0 or salen > sizeof(sockaddr_storage):
        return None
    i = rio_sa_hash(sa, salen) % ADDR_CACHE
    ctx.last_idx = i
    o = <object>PyList_GET_ITEM(ctx.cache_obj, i)
    if (o is not None and ctx.cache_len[i] == salen
            and memcmp(&ctx.cache_sa[i], sa, salen) == 0):
        return o
    o = _sockaddr_to_tuple(<sockaddr *>sa, salen)
    memcpy(&ctx.cache_sa[i], sa, salen)
    ctx.cache_len[i] = salen
    ctx.cache_obj[i] = o
    return o


cdef socklen_t _dg_sockaddr(DatagramContext ctx, object addr, sockaddr_storage *out) except 0:
    """The raw sockaddr of a send_to address; its length."""
    cdef int i = ctx.last_idx
    cdef socklen_t n
    if ctx.state != ST_OPEN:
        raise ReactorClosedError(f"datagram endpoint {ctx.reactor_id} is closed")
    if addr is not None and addr is <object>PyList_GET_ITEM(ctx.cache_obj, i):
        n = ctx.cache_len[i]
        memcpy(out, &ctx.cache_sa[i], n)
        return n
    raw = ctx.sa_of.get(addr) if type(addr) is tuple else None
    if raw is None:
        raw = _udpnet.sockaddr_bytes(ctx.family, addr)
        if type(addr) is tuple:
            if len(ctx.sa_of) >= SA_OF_MAX:
                ctx.sa_of.clear()
            ctx.sa_of[addr] = raw
    n = <socklen_t>PyBytes_GET_SIZE(raw)
    memcpy(out, PyBytes_AS_STRING(raw), n)
    return n
