# Socket addresses as the API reports them (peer_address, local_address, on_new_connection):
# (host, port[, flow, scope]) tuples for IP, the str of _unix.format_address for AF_UNIX.


cdef object _sockaddr_to_tuple(sockaddr *sa, socklen_t n):
    """(host, port[, flow, scope]) for IP; for AF_UNIX the str of _unix.format_address (the
    path, "@name", "" when unnamed), ``n`` bytes of address counted."""
    cdef char host[64]
    cdef sockaddr_in *sin
    cdef sockaddr_in6 *sin6
    if sa.sa_family == AF_INET:
        sin = <sockaddr_in *>sa
        inet_ntop(AF_INET, &sin.sin_addr, host, sizeof(host))
        return ((<bytes>host).decode("ascii"), ntohs(sin.sin_port))
    if sa.sa_family == AF_INET6:
        sin6 = <sockaddr_in6 *>sa
        inet_ntop(AF_INET6, &sin6.sin6_addr, host, sizeof(host))
        return ((<bytes>host).decode("ascii"), ntohs(sin6.sin6_port),
                ntohl(sin6.sin6_flowinfo), sin6.sin6_scope_id)
    if sa.sa_family == AF_UNIX:
        n = min(max(n, sizeof(sa.sa_family)), sizeof(sockaddr_un))
        return _unix.format_address((<sockaddr_un *>sa).sun_path[:n - sizeof(sa.sa_family)])
    return None


cdef bint _is_unix_socket(int fd) noexcept:
    cdef sockaddr_storage ss
    cdef socklen_t n = sizeof(ss)
    return getsockname(fd, <sockaddr *>&ss, &n) == 0 and ss.ss_family == AF_UNIX


cdef object _sock_address(int fd, bint peer):
    cdef sockaddr_storage ss
    cdef socklen_t n = sizeof(ss)
    cdef int rc
    if peer:
        rc = getpeername(fd, <sockaddr *>&ss, &n)
    else:
        rc = getsockname(fd, <sockaddr *>&ss, &n)
    if rc != 0:
        raise _net.os_error(rio_errno(), "getpeername" if peer else "getsockname")
    return _sockaddr_to_tuple(<sockaddr *>&ss, n)
