/* sys.c - the platform calls of sys.h, the fast kind or the POSIX one. */
#define _GNU_SOURCE
#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#ifndef DML_PORTABLE
#if defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
#define HAVE_SOCK_FLAGS 1
#endif
#if defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
    defined(__OpenBSD__) || defined(__DragonFly__)
#define HAVE_ACCEPT4 1
#endif
#ifdef MSG_NOSIGNAL
#define HAVE_MSG_NOSIGNAL 1
#elif defined(SO_NOSIGPIPE)
#define HAVE_SO_NOSIGPIPE 1
#endif
#if defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
    defined(__OpenBSD__) || defined(__DragonFly__)
#define HAVE_PPOLL 1
#endif
#ifdef __linux__
#define HAVE_GETRANDOM 1
#define HAVE_EVENTFD 1
#include <sys/eventfd.h>
#include <sys/random.h>
#endif
#ifdef TCP_USER_TIMEOUT
#define HAVE_USER_TIMEOUT 1 /* Linux only */
#endif
#endif /* DML_PORTABLE */
/* Not Linux's alone (the BSDs and macOS have them): no fallback needed */
#if defined(TCP_KEEPIDLE) && defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT)
#define HAVE_KEEPALIVE_TIMES 1
#endif

#if !defined(HAVE_SOCK_FLAGS) || !defined(HAVE_ACCEPT4) || !defined(HAVE_EVENTFD)
/* Non-blocking and close-on-exec, after the fact. */
static int set_flags(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -1;
	int fdf = fcntl(fd, F_GETFD);
	if (fdf < 0 || fcntl(fd, F_SETFD, fdf | FD_CLOEXEC) < 0)
		return -1;
	return 0;
}
#endif

#if !defined(HAVE_SOCK_FLAGS) || !defined(HAVE_ACCEPT4)
static int flagged(int fd)
{
	if (fd < 0)
		return -1;
	if (set_flags(fd) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}
#endif

void dml__sys_nosigpipe(int fd)
{
#ifdef HAVE_SO_NOSIGPIPE
	int one = 1;
	(void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#else
	(void)fd;
#endif
}

int dml__sys_socket(int family, int type)
{
#ifdef HAVE_SOCK_FLAGS
	int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
#else
	int fd = flagged(socket(family, type, 0));
#endif
	if (fd >= 0)
		dml__sys_nosigpipe(fd);
	return fd;
}

int dml__sys_accept(int lfd, struct sockaddr *sa, socklen_t *len)
{
#ifdef HAVE_ACCEPT4
	int fd = accept4(lfd, sa, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
	int fd = flagged(accept(lfd, sa, len));
#endif
	if (fd >= 0)
		dml__sys_nosigpipe(fd);
	return fd;
}

#ifdef MSG_DONTWAIT
#define SEND_FLAGS MSG_DONTWAIT
#else
#define SEND_FLAGS 0 /* the library's sockets are non-blocking anyway */
#endif

ssize_t dml__sys_sendmsg(int fd, const struct msghdr *m)
{
#if defined(HAVE_MSG_NOSIGNAL)
	return sendmsg(fd, m, SEND_FLAGS | MSG_NOSIGNAL);
#elif defined(HAVE_SO_NOSIGPIPE)
	return sendmsg(fd, m, SEND_FLAGS);
#else
	/* POSIX: block SIGPIPE in this thread for the call, and take back the
	 * one the call raised, unless one was already pending (the host's) */
	sigset_t pipe_set, old, pending;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	sigpending(&pending);
	int was_pending = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	ssize_t w = sendmsg(fd, m, SEND_FLAGS);
	int e = errno;
	if (w < 0 && e == EPIPE && !was_pending) {
		struct timespec zero = {0, 0};
		while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = e;
	return w;
#endif
}

#ifdef HAVE_KEEPALIVE_TIMES
static int secs(int64_t ms)
{
	int64_t s = (ms + 999) / 1000;
	return s < 1 ? 1 : s > 32767 ? 32767 : (int)s;
}
#endif

int dml__sys_keepalive(int fd, int64_t idle_ms, int64_t interval_ms, int count,
                       int64_t user_timeout_ms)
{
	int on = idle_ms >= 0, rc = 0;
	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) != 0)
		return -1;
#ifdef HAVE_KEEPALIVE_TIMES
	if (on) {
		int idle = secs(idle_ms), intvl = secs(interval_ms), cnt = count;
		if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) != 0 ||
		    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl) != 0 ||
		    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) != 0)
			rc = -1;
	}
#else
	(void)interval_ms;
	(void)count;
#endif
#ifdef HAVE_USER_TIMEOUT
	unsigned ut = user_timeout_ms < 0 ? 0
	              : user_timeout_ms > (int64_t)UINT32_MAX / 2 ? UINT32_MAX / 2
	                                                          : (unsigned)user_timeout_ms;
	if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut) != 0)
		rc = -1;
#else
	(void)user_timeout_ms;
#endif
	return rc;
}

int dml__sys_poll_us(struct pollfd *fds, unsigned long n, int64_t timeout_us)
{
#ifdef HAVE_PPOLL
	if (timeout_us < 0)
		return ppoll(fds, (nfds_t)n, NULL, NULL);
	struct timespec ts = {(time_t)(timeout_us / 1000000), (long)(timeout_us % 1000000) * 1000};
	return ppoll(fds, (nfds_t)n, &ts, NULL);
#else
	int64_t ms = timeout_us < 0 ? -1 : (timeout_us + 999) / 1000;
	return poll(fds, (nfds_t)n, ms > 1000000000 ? 1000000000 : (int)ms);
#endif
}

int dml__sys_random(void *buf, size_t n)
{
#ifdef HAVE_GETRANDOM
	uint8_t *p = buf;
	while (n > 0) {
		ssize_t r = getrandom(p, n, GRND_NONBLOCK);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
#else
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	uint8_t *p = buf;
	while (n > 0) {
		ssize_t r = read(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		p += r;
		n -= (size_t)r;
	}
	close(fd);
	return n ? -1 : 0;
#endif
}

int dml__sys_wake_new(int fd[2])
{
#ifdef HAVE_EVENTFD
	int e = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (e < 0)
		return -1;
	fd[0] = fd[1] = e;
	return 0;
#else
	if (pipe(fd) != 0)
		return -1;
	if (set_flags(fd[0]) != 0 || set_flags(fd[1]) != 0) {
		int e = errno;
		close(fd[0]);
		close(fd[1]);
		errno = e;
		return -1;
	}
	return 0;
#endif
}

void dml__sys_wake_signal(const int fd[2])
{
	int e = errno;
#ifdef HAVE_EVENTFD
	uint64_t one = 1;
	ssize_t w = write(fd[1], &one, sizeof one);
#else
	char one = 1;
	ssize_t w = write(fd[1], &one, 1); /* EAGAIN: a full pipe is signalled */
#endif
	(void)w;
	errno = e;
}

void dml__sys_wake_drain(const int fd[2])
{
	int e = errno;
	char buf[64];
	while (read(fd[0], buf, sizeof buf) > 0) /* eventfd: 8 bytes, then EAGAIN */
		;
	errno = e;
}

void dml__sys_wake_close(int fd[2])
{
	if (fd[0] >= 0)
		close(fd[0]);
	if (fd[1] >= 0 && fd[1] != fd[0])
		close(fd[1]);
	fd[0] = fd[1] = -1;
}

const char *dml__sys_kinds(void)
{
	return
#ifdef HAVE_ACCEPT4
	    "accept4"
#else
	    "accept+fcntl"
#endif
#ifdef HAVE_EVENTFD
	    " eventfd"
#else
	    " pipe"
#endif
#ifdef HAVE_GETRANDOM
	    " getrandom"
#else
	    " urandom"
#endif
#if defined(HAVE_MSG_NOSIGNAL)
	    " msg-nosignal"
#elif defined(HAVE_SO_NOSIGPIPE)
	    " so-nosigpipe"
#else
	    " sigpipe-mask"
#endif
#ifdef HAVE_PPOLL
	    " ppoll"
#else
	    " poll-ms"
#endif
#ifdef HAVE_KEEPALIVE_TIMES
	    " tcp-keepalive"
#else
	    " so-keepalive"
#endif
#ifdef HAVE_USER_TIMEOUT
	    " user-timeout"
#else
	    " no-user-timeout"
#endif
	    ;
}
