/* reactio_udp.h: the datagram calls of both backends.  epoll: recvmmsg / sendmmsg, as a batch
 * of rio_dgram records over one receive buffer (ENOSYS stubs on Windows, never called there).
 * IOCP: WSARecvFrom / WSASendTo and SIO_UDP_CONNRESET (stubs elsewhere, never called there);
 * rio_sendto is the real non-blocking sendto on both.
 */
#ifndef REACTIO_UDP_H
#define REACTIO_UDP_H

#include "reactio_sys.h"

#if defined(_WIN32)
struct iovec { void *iov_base; size_t iov_len; };
struct msghdr { void *msg_name; int msg_namelen; struct iovec *msg_iov; size_t msg_iovlen;
                void *msg_control; size_t msg_controllen; int msg_flags; };
struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; };
#  ifndef MSG_TRUNC
#    define MSG_TRUNC 0x100
#  endif
#  define MSG_DONTWAIT 0
#  ifndef EMSGSIZE
#    define EMSGSIZE WSAEMSGSIZE
#  endif
/* Python's errno.EMSGSIZE on Windows is the WSA code (mingw's errno.h has its own 115) */
#  define RIO_EMSGSIZE WSAEMSGSIZE
#  ifndef ECONNREFUSED
#    define ECONNREFUSED WSAECONNREFUSED
#  endif
static inline int rio_recvmmsg(rio_sock_t s, struct mmsghdr *m, unsigned n) {
    (void)s; (void)m; (void)n; errno = ENOSYS; return -1; }
static inline int rio_sendmmsg(rio_sock_t s, struct mmsghdr *m, unsigned n) {
    (void)s; (void)m; (void)n; errno = ENOSYS; return -1; }
static inline ssize_t rio_recvfrom(rio_sock_t s, char *buf, size_t n, struct sockaddr_storage *sa,
                                   socklen_t *salen, int *flags) {
    (void)s; (void)buf; (void)n; (void)sa; (void)salen; (void)flags; errno = ENOSYS; return -1; }
/* The socket is non-blocking: WSAEWOULDBLOCK / WSAENOBUFS come back through rio_errno(). */
static inline ssize_t rio_sendto(rio_sock_t s, const char *buf, size_t n,
                                 const struct sockaddr *sa, socklen_t salen) {
    return sendto(s, buf, (int)n, 0, sa, (int)salen);
}
#  ifndef SIO_UDP_CONNRESET
#    define SIO_UDP_CONNRESET _WSAIOW(IOC_VENDOR, 12)
#  endif
/* report != 0: an ICMP port unreachable fails the next WSARecvFrom with WSAECONNRESET (the
 * Windows default); 0: it is ignored, as Linux ignores it on an unconnected socket. */
static inline int rio_udp_connreset(rio_sock_t s, int report) {
    BOOL on = report ? TRUE : FALSE;
    DWORD got = 0;
    return WSAIoctl(s, SIO_UDP_CONNRESET, &on, sizeof on, NULL, 0, &got, NULL, NULL);
}
#else
#  define WSAEMSGSIZE 10040
#  define WSAECONNREFUSED 10061
#  define WSAEWOULDBLOCK 10035
#  define WSAENOBUFS 10055
static inline int WSARecvFrom(SOCKET s, WSABUF *b, DWORD c, DWORD *n, DWORD *f,
                              struct sockaddr *from, int *fromlen, LPOVERLAPPED o, void *r) {
    (void)s; (void)b; (void)c; (void)n; (void)f; (void)from; (void)fromlen; (void)o; (void)r;
    return SOCKET_ERROR; }
static inline int WSASendTo(SOCKET s, WSABUF *b, DWORD c, DWORD *n, DWORD f,
                            const struct sockaddr *to, int tolen, LPOVERLAPPED o, void *r) {
    (void)s; (void)b; (void)c; (void)n; (void)f; (void)to; (void)tolen; (void)o; (void)r;
    return SOCKET_ERROR; }
static inline int rio_udp_connreset(rio_sock_t s, int report) { (void)s; (void)report; return 0; }
#  include <sys/uio.h>
#  define RIO_EMSGSIZE EMSGSIZE
static inline int rio_recvmmsg(rio_sock_t s, struct mmsghdr *m, unsigned n) {
    return recvmmsg(s, m, n, MSG_DONTWAIT, NULL);
}
static inline int rio_sendmmsg(rio_sock_t s, struct mmsghdr *m, unsigned n) {
    return sendmmsg(s, m, n, MSG_DONTWAIT | MSG_NOSIGNAL);
}
/* One datagram with recvmsg (the batch-of-one path): *flags gets msg_flags (MSG_TRUNC). */
static inline ssize_t rio_recvfrom(rio_sock_t s, char *buf, size_t n, struct sockaddr_storage *sa,
                                   socklen_t *salen, int *flags) {
    struct iovec iov = { buf, n };
    struct msghdr h;
    ssize_t r;
    memset(&h, 0, sizeof h);
    h.msg_name = sa;
    h.msg_namelen = sizeof *sa;
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    r = recvmsg(s, &h, MSG_DONTWAIT);
    *salen = h.msg_namelen;
    *flags = h.msg_flags;
    return r;
}
static inline ssize_t rio_sendto(rio_sock_t s, const char *buf, size_t n,
                                 const struct sockaddr *sa, socklen_t salen) {
    return sendto(s, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL, sa, salen);
}
#endif

/* Point a batch of n receive records at n slots of `slot` bytes of buf, each with its own
 * address; run before every recvmmsg (the kernel overwrites msg_namelen and msg_flags). */
static inline void rio_dgram_prepare(struct mmsghdr *m, struct iovec *iov,
                                     struct sockaddr_storage *sa, char *buf, size_t slot,
                                     unsigned n) {
    unsigned i;
    for (i = 0; i < n; i++) {
        iov[i].iov_base = buf + (size_t)i * slot;
        iov[i].iov_len = slot;
        memset(&m[i].msg_hdr, 0, sizeof m[i].msg_hdr);
        m[i].msg_hdr.msg_name = &sa[i];
        m[i].msg_hdr.msg_namelen = sizeof sa[i];
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
        m[i].msg_len = 0;
    }
}

/* A send record: datagram at buf[off:off+len] to sa (salen 0: the connected peer). */
static inline void rio_dgram_out(struct mmsghdr *m, struct iovec *iov, struct sockaddr_storage *sa,
                                 socklen_t salen, char *data, size_t len) {
    iov->iov_base = data;
    iov->iov_len = len;
    memset(&m->msg_hdr, 0, sizeof m->msg_hdr);
    m->msg_hdr.msg_name = salen ? (void *)sa : NULL;
    m->msg_hdr.msg_namelen = salen;
    m->msg_hdr.msg_iov = iov;
    m->msg_hdr.msg_iovlen = 1;
    m->msg_len = 0;
}

/* A small hash of a socket address (the addr cache of a datagram endpoint). */
static inline unsigned rio_sa_hash(const void *sa, socklen_t len) {
    const unsigned char *p = (const unsigned char *)sa;
    uint32_t h = 2166136261u;
    socklen_t i;
    for (i = 0; i < len; i++) { h ^= p[i]; h *= 16777619u; }
    return (unsigned)(h ^ (h >> 16));
}

#endif /* REACTIO_UDP_H */
