/*
 * sys.h - the calls a port changes: everything the library needs from the
 * operating system beyond POSIX, each behind one name, with a POSIX
 * fallback beside the fast call:
 *
 *   call                 fast (Linux, BSDs)               fallback (POSIX)
 *   dml__sys_socket      SOCK_NONBLOCK | SOCK_CLOEXEC      socket + fcntl
 *   dml__sys_accept      accept4                           accept + fcntl
 *   dml__sys_sendmsg     MSG_NOSIGNAL (SO_NOSIGPIPE)       SIGPIPE blocked
 *                                                           in the thread
 *                                                           and consumed
 *   dml__sys_keepalive   TCP_USER_TIMEOUT (Linux)          none: keepalive
 *                                                           (TCP_KEEPIDLE,
 *                                                           ..., also BSD)
 *   dml__sys_random      getrandom                         /dev/urandom
 *   dml__sys_poll_us     ppoll (a timeout in ns)           poll (in ms,
 *                                                           rounded up)
 *   dml__sys_wake_*      eventfd                           a pipe
 *
 * (Every time is POSIX's CLOCK_MONOTONIC, also activity stamps: Linux's
 * CLOCK_MONOTONIC_COARSE is 4x cheaper but was measured lagging by 7 ms at
 * a 4 ms resolution on a tickless VM kernel, so timeouts fired early.)
 *
 * Building with -DDML_PORTABLE (make PORTABLE=1) takes every fallback, so
 * that CI proves them on Linux. The fallbacks of socket and accept leave a
 * moment in which a descriptor lacks close-on-exec: a host that forks and
 * execs from another thread at that moment may leak it into the child.
 * Not installed.
 */
#ifndef DISTML_SYS_H
#define DISTML_SYS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* A non-blocking, close-on-exec socket; -1 with errno set. */
int dml__sys_socket(int family, int type);

/* Accepts a connection as a non-blocking, close-on-exec socket; -1 with
 * errno set (EAGAIN when none is pending). */
int dml__sys_accept(int lfd, struct sockaddr *sa, socklen_t *len);

/* A non-blocking sendmsg that never raises SIGPIPE: bytes sent, or -1 with
 * errno set (EPIPE for a closed peer). */
ssize_t dml__sys_sendmsg(int fd, const struct msghdr *m);

/* Makes the socket never raise SIGPIPE by itself where the platform can
 * (SO_NOSIGPIPE); a no-op elsewhere. dml__sys_socket and dml__sys_accept
 * call it. */
void dml__sys_nosigpipe(int fd);

/* TCP keepalive on a connected socket: probes after idle_ms of silence,
 * interval_ms apart, count unanswered drop it (idle_ms < 0: off); and
 * sent data unacknowledged for user_timeout_ms drops it (< 0: off). Where
 * the platform has no such knobs, keepalive with its own times, and no
 * user timeout. 0, or -1 (errno). Not for Unix-domain sockets. */
int dml__sys_keepalive(int fd, int64_t idle_ms, int64_t interval_ms, int count,
                       int64_t user_timeout_ms);

/* poll() with a timeout in microseconds (-1: none): what poll returns. */
struct pollfd;
int dml__sys_poll_us(struct pollfd *fds, unsigned long n, int64_t timeout_us);

/* Fills buf with n bytes from the system's random source: 0, or -1 when
 * there is none (the caller falls back to a clock). */
int dml__sys_random(void *buf, size_t n);

/* A wake-up descriptor: wake_new makes one (fd[0] becomes readable after
 * wake_signal, until wake_drain), non-blocking, close-on-exec; fd[1] is
 * the write end (the same as fd[0] for an eventfd). 0 or -1 (errno). */
int dml__sys_wake_new(int fd[2]);
void dml__sys_wake_signal(const int fd[2]);
void dml__sys_wake_drain(const int fd[2]);
void dml__sys_wake_close(int fd[2]);

/* Which kind each call uses in this build, for the tests and the README:
 * "accept4 eventfd getrandom msg-nosignal ppoll tcp-keepalive user-timeout"
 * or the fallbacks' names. */
const char *dml__sys_kinds(void);

#endif
