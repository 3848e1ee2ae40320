/* transport.c - sockets: addresses, listen, accept, dial, deadline I/O. */
#define _GNU_SOURCE
#include "transport.h"
#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024 /* connections the kernel queues before accept */

typedef struct addr {
	struct sockaddr_storage ss;
	socklen_t len;
} addr;

static int parse_unix(const char *path, addr *a)
{
	struct sockaddr_un *un = (struct sockaddr_un *)&a->ss;
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof un->sun_path)
		return DML_EADDR;
	memset(a, 0, sizeof *a);
	un->sun_family = AF_UNIX;
	memcpy(un->sun_path, path, n + 1);
	a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

#define MAX_ADDRS 16 /* addresses of a name a dial tries, in order */

/* Splits "host:port" or "[v6]:port" and resolves it: up to `max`
 * addresses into a[], in getaddrinfo's order; *n says how many. */
static int resolve(const char *s, addr *a, int max, int *n, int passive)
{
	*n = 0;
	if (!s)
		return DML_EINVAL;
	if (strncmp(s, "unix:", 5) == 0) {
		int rc = parse_unix(s + 5, a);
		*n = !rc;
		return rc;
	}
	if (strncmp(s, "tcp://", 6) == 0)
		s += 6;
	char host[256];
	const char *port;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof host)
			return DML_EADDR;
		memcpy(host, s + 1, (size_t)(end - s - 1));
		host[end - s - 1] = 0;
		port = end + 2;
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof host)
			return DML_EADDR;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = 0;
		port = colon + 1;
	}
	if (!*port)
		return DML_EADDR;
	for (const char *c = port; *c; c++)
		if (*c < '0' || *c > '9')
			return DML_EADDR;
	if (atol(port) > 65535) /* UINT16_MAX: the largest port */
		return DML_EADDR;
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	int e = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (e != 0 || !res) {
		char h[128];
		dml__escape(h, sizeof h, host, strlen(host));
		return dml__fail(DML_EADDR, "cannot resolve %s: %s", h,
		                 e ? gai_strerror(e) : "no address");
	}
	for (struct addrinfo *r = res; r && *n < max; r = r->ai_next) {
		if ((size_t)r->ai_addrlen > sizeof a[*n].ss)
			continue;
		memset(&a[*n], 0, sizeof a[*n]);
		memcpy(&a[*n].ss, r->ai_addr, r->ai_addrlen);
		a[*n].len = r->ai_addrlen;
		(*n)++;
	}
	freeaddrinfo(res);
	return *n ? 0 : DML_EADDR;
}

static int parse_addr(const char *s, addr *a, int passive)
{
	int n;
	return resolve(s, a, 1, &n, passive);
}

/* The text of a socket address, as dml__listen takes it. */
static int format_addr(const struct sockaddr_storage *ss, socklen_t len, char *buf,
                       size_t cap)
{
	int n;
	if (ss->ss_family == AF_UNIX) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)ss;
		size_t pl = len > offsetof(struct sockaddr_un, sun_path)
		                ? strnlen(un->sun_path, len - offsetof(struct sockaddr_un, sun_path))
		                : 0;
		n = snprintf(buf, cap, "unix:%.*s", (int)pl, un->sun_path);
	} else {
		char host[INET6_ADDRSTRLEN + 1], port[16];
		if (getnameinfo((const struct sockaddr *)ss, len, host, sizeof host, port,
		                sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
			return DML_ESYS;
		n = snprintf(buf, cap, ss->ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
		             host, port);
	}
	return (n < 0 || (size_t)n >= cap) ? DML_ETOOBIG : 0;
}

static void tune(int fd, int family)
{
	if (family != AF_UNIX) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
}

static int sys_err(int e)
{
	switch (e) {
	case ECONNREFUSED: case ENOENT: return DML_ECONNREFUSED;
	case EADDRINUSE: case EADDRNOTAVAIL: case EAFNOSUPPORT: return DML_EADDR;
	case ENOMEM: case ENOBUFS: return DML_ENOMEM;
	case ETIMEDOUT: return DML_ETIMEDOUT;
	case ECONNRESET: case EPIPE: case ENOTCONN: return DML_ECONNLOST;
	default: return DML_ESYS;
	}
}

int dml__listen(const char *s, int *out)
{
	addr a;
	int rc = parse_addr(s, &a, 1);
	if (rc)
		return rc;
	int fd = dml__sys_socket(a.ss.ss_family, SOCK_STREAM);
	if (fd < 0)
		return sys_err(errno);
	int one = 1;
	if (a.ss.ss_family != AF_UNIX)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&a.ss, a.len) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
		rc = sys_err(errno);
		close(fd);
		return rc;
	}
	*out = fd;
	return 0;
}

int dml__accept(int lfd, int *out)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	int fd = dml__sys_accept(lfd, (struct sockaddr *)&ss, &len);
	if (fd < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
		    errno == ECONNABORTED)
			return DML_EAGAIN;
		return sys_err(errno);
	}
	tune(fd, ss.ss_family);
	*out = fd;
	return 0;
}

int dml__wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = {fd, events, 0};
		int n = poll(&p, 1, dml__remaining_ms(deadline));
		if (n > 0)
			return 0;
		if (n == 0)
			return DML_ETIMEDOUT;
		if (errno != EINTR)
			return DML_ESYS;
	}
}

int dml__wait_us(int fd, short events, int wake_fd, int64_t timeout_us)
{
	struct pollfd p[2] = {{fd, events, 0}, {wake_fd, POLLIN, 0}};
	int n = dml__sys_poll_us(p, wake_fd >= 0 ? 2 : 1, timeout_us);
	if (n > 0)
		return 1; /* an error too: the next read or write reports it */
	return n == 0 || errno == EINTR ? 0 : DML_ESYS;
}

void dml__listen_close(int fd)
{
	(void)shutdown(fd, SHUT_RDWR);
	close(fd);
}

int dml__set_blocking(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, on ? fl & ~O_NONBLOCK : fl | O_NONBLOCK) < 0)
		return DML_ESYS;
	return 0;
}

void dml__set_recv_timeout(int fd, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* One address: a connected socket before `deadline`, or an error. */
static int dial_one(const addr *a, int64_t deadline, int *out)
{
	int fd = dml__sys_socket(a->ss.ss_family, SOCK_STREAM);
	if (fd < 0)
		return sys_err(errno);
	int rc = 0;
	if (connect(fd, (const struct sockaddr *)&a->ss, a->len) != 0) {
		if (errno != EINPROGRESS && errno != EAGAIN) {
			rc = sys_err(errno);
			goto fail;
		}
		if ((rc = dml__wait_fd(fd, POLLOUT, deadline)))
			goto fail;
		int err = 0;
		socklen_t el = sizeof err;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
			err = errno;
		if (err) {
			rc = sys_err(err);
			goto fail;
		}
	}
	tune(fd, a->ss.ss_family);
	*out = fd;
	return 0;
fail:;
	int e = errno;
	close(fd);
	errno = e;
	return rc;
}

/* Tries every address of the name in turn (as Go's dialer does, each with
 * its share of the time left, at least DIAL_SHARE_MIN ms of it); the
 * detail names every address tried and why it failed. */
#define DIAL_SHARE_MIN 2000
int dml__dial(const char *s, int64_t deadline, int *out)
{
	addr a[MAX_ADDRS];
	int n, rc = resolve(s, a, MAX_ADDRS, &n, 0);
	char name[128];
	dml__escape(name, sizeof name, s ? s : "", s ? strlen(s) : 0);
	if (rc) {
		char d[DML_ERRMSG_MAX];
		snprintf(d, sizeof d, "%s", dml_error_detail());
		return d[0] ? dml__fail(rc, "dial %s: %s", name, d)
		            : dml__fail(rc, "dial %s: not an address (host:port, "
		                        "[v6]:port or unix:/path)", name);
	}
	char why[DML_ERRMSG_MAX];
	size_t used = 0;
	why[0] = 0;
	for (int i = 0; i < n; i++) {
		int64_t dl = deadline;
		if (deadline >= 0 && i < n - 1) {
			int64_t left = deadline - dml__now_ms(), share = left / (n - i);
			if (share < DIAL_SHARE_MIN)
				share = DIAL_SHARE_MIN;
			if (share < left)
				dl = dml__now_ms() + share;
		}
		rc = dial_one(&a[i], dl, out);
		if (!rc)
			return 0;
		char at[80];
		if (format_addr(&a[i].ss, a[i].len, at, sizeof at))
			snprintf(at, sizeof at, "address %d", i + 1);
		int w = snprintf(why + used, sizeof why - used, "%s%s: %s", i ? "; " : "", at,
		                 rc == DML_ESYS ? strerror(errno) : dml_strerror(rc));
		if (w > 0)
			used = (size_t)w < sizeof why - used ? used + (size_t)w : sizeof why - 1;
		if (deadline >= 0 && dml__now_ms() >= deadline && rc == DML_ETIMEDOUT)
			break;
	}
	return dml__fail(rc, "dial %s: %s", name, why);
}

int dml__local_addr(int fd, char *buf, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return DML_ESYS;
	return format_addr(&ss, len, buf, cap);
}

int dml__peer_addr(int fd, char *buf, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
		return errno == ENOTCONN ? DML_ECONNLOST : DML_ESYS;
	return format_addr(&ss, len, buf, cap);
}

int dml__unix_path(int fd, char *buf, size_t cap)
{
	struct sockaddr_un un;
	socklen_t len = sizeof un;
	if (getsockname(fd, (struct sockaddr *)&un, &len) != 0 ||
	    un.sun_family != AF_UNIX || !un.sun_path[0])
		return DML_ENOTFOUND;
	size_t n = strnlen(un.sun_path, sizeof un.sun_path);
	if (n >= cap)
		return DML_ETOOBIG;
	memcpy(buf, un.sun_path, n);
	buf[n] = 0;
	return 0;
}

void dml__reset_on_close(int fd)
{
	struct linger l = {1, 0};
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

ssize_t dml__read(int fd, void *buf, size_t len)
{
	for (;;) {
		ssize_t n = recv(fd, buf, len, 0);
		if (n > 0)
			return n;
		if (n == 0)
			return DML_ECONNLOST;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return DML_EAGAIN;
		return DML_ECONNLOST;
	}
}

ssize_t dml__writev(int fd, const struct iovec *iov, int n)
{
	struct msghdr m;
	memset(&m, 0, sizeof m);
	m.msg_iov = (struct iovec *)(uintptr_t)iov;
	m.msg_iovlen = (size_t)n;
	for (;;) {
		ssize_t w = dml__sys_sendmsg(fd, &m);
		if (w >= 0)
			return w;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return DML_EAGAIN;
		return DML_ECONNLOST;
	}
}
