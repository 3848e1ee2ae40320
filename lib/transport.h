/*
 * transport.h - byte streams: address parsing, listen/accept/dial and
 * deadline-bounded I/O on non-blocking sockets (TCP over IPv4/IPv6, Unix
 * domain). The RPC layer reaches the network only through these functions
 * and the streams over them (stream.h), where another transport (TLS)
 * slots in. Not installed.
 */
#ifndef DISTML_TRANSPORT_H
#define DISTML_TRANSPORT_H

#include <sys/types.h>
#include <sys/uio.h>

#include "internal.h"

/* Opens a non-blocking listening socket on `addr` ("host:port",
 * "[v6]:port", "unix:/path"). Port 0 picks an ephemeral port. */
int dml__listen(const char *addr, int *fd);

/* Closes a listening socket so that it refuses connections at once, even
 * while another thread's poll() still holds it (Linux: shutdown() ends
 * the listen; elsewhere it may take until that poll() returns). */
void dml__listen_close(int fd);

/* Accepts one connection (non-blocking, close-on-exec, TCP_NODELAY).
 * DML_EAGAIN when none is pending. */
int dml__accept(int lfd, int *fd);

/* Connects to `addr` before `deadline` (dml__deadline), trying every
 * address the name resolves to, in order; the error detail names each
 * address tried and why it failed. The socket is non-blocking,
 * close-on-exec, TCP_NODELAY. */
int dml__dial(const char *addr, int64_t deadline, int *fd);

/* Formats the local address of a socket as dml__listen accepts it. */
int dml__local_addr(int fd, char *buf, size_t cap);

/* Formats the peer's address of a connected socket the same way
 * ("unix:" for an unnamed Unix-domain peer). */
int dml__peer_addr(int fd, char *buf, size_t cap);

/* If `fd` is a Unix-domain socket bound to a path, copies the path. */
int dml__unix_path(int fd, char *buf, size_t cap);

/* Makes the next close of fd reset the connection (SO_LINGER 0), so that
 * the kernel drops unsent data at once. */
void dml__reset_on_close(int fd);

/* One read: bytes read (> 0), DML_EAGAIN, DML_ECONNLOST on EOF/reset. */
ssize_t dml__read(int fd, void *buf, size_t len);

/* One gather write: bytes written (>= 0), DML_EAGAIN or DML_ECONNLOST.
 * Never raises SIGPIPE. */
ssize_t dml__writev(int fd, const struct iovec *iov, int n);

/* Waits until fd has `events` (POLLIN/POLLOUT) or the deadline passes:
 * 0, DML_ETIMEDOUT, or DML_ESYS. */
int dml__wait_fd(int fd, short events, int64_t deadline);

/* Waits up to timeout_us (-1: no limit, 0: not at all) until fd has
 * `events` (POLLIN/POLLOUT) or wake_fd (-1: none) is readable: 1, 0 on a
 * timeout or an interruption, DML_ESYS. An error on fd counts as ready. */
int dml__wait_us(int fd, short events, int wake_fd, int64_t timeout_us);

/* Makes fd blocking (on) or non-blocking. 0 or DML_ESYS. */
int dml__set_blocking(int fd, int on);

/* Bounds a blocking receive on fd (SO_RCVTIMEO) to ms (> 0). */
void dml__set_recv_timeout(int fd, int ms);

#endif
