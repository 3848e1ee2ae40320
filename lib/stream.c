/*
 * stream.c - the plain socket stream (TCP or Unix domain: the socket calls
 * of transport.c, nothing held inside), the test wrap hook, and writing a
 * whole message to any stream.
 */
#include "stream.h"
#include "internal.h"
#include "transport.h"

#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static ssize_t sock_read(dml__stream *st, void *buf, size_t len)
{
	return dml__read(st->fd, buf, len);
}

static ssize_t sock_writev(dml__stream *st, const struct iovec *iov, int n)
{
	return dml__writev(st->fd, iov, n);
}

static void sock_shutdown(dml__stream *st) { (void)shutdown(st->fd, SHUT_RDWR); }

static void sock_close(dml__stream *st)
{
	close(st->fd);
	free(st);
}

static const dml__stream_ops sock_ops = {
	.read = sock_read,
	.writev = sock_writev,
	.shutdown = sock_shutdown,
	.close = sock_close,
};

int dml__stream_socket(dml__stream **out, int fd)
{
	dml__stream *st = malloc(sizeof *st);
	if (!st) {
		close(fd);
		return DML_ENOMEM;
	}
	st->ops = &sock_ops;
	st->fd = fd;
	st->flags = DML__STREAM_DUPLEX | DML__STREAM_SHORT_DRAINS;
	*out = st;
	return 0;
}

void dml__stream_release(dml__stream *st) { free(st); }

static dml__stream_wrap_fn wrap_fn;

void dml__stream_set_wrap(dml__stream_wrap_fn wrap) { wrap_fn = wrap; }

int dml__stream_open(dml__stream **out, int fd, int server)
{
	dml__stream *st;
	int rc = dml__stream_socket(&st, fd);
	if (rc)
		return rc;
	if (wrap_fn && (rc = wrap_fn(&st, server))) {
		dml__stream_close(st);
		return rc;
	}
	*out = st;
	return 0;
}

int dml__stream_peer(const dml__stream *st, char *buf, size_t cap)
{
	return st->ops->peer ? st->ops->peer(st, buf, cap) : dml__peer_addr(st->fd, buf, cap);
}

/* Waits for what the stream wants besides `asked`. */
static int wait_for(dml__stream *st, unsigned asked, int64_t deadline)
{
	unsigned w = dml__stream_wants(st, asked);
	short ev = dml__poll_events(w);
	return dml__wait_fd(st->fd, ev, deadline);
}

int dml__stream_write_step(dml__stream *st, struct iovec **iovp, int *np)
{
	struct iovec *iov = *iovp;
	int n = *np, rc = 0;
	while (n > 0) {
		if (iov->iov_len == 0) {
			iov++;
			n--;
			continue;
		}
		ssize_t w = dml__stream_writev(st, iov, n > 64 ? 64 : n);
		if (w < 0) {
			rc = (int)w;
			break;
		}
		size_t left = (size_t)w;
		while (n > 0 && left >= iov->iov_len) {
			left -= iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + left;
			iov->iov_len -= left;
		}
	}
	*iovp = iov;
	*np = n;
	return rc ? rc : dml__stream_flush(st);
}

int dml__stream_read_all(dml__stream *st, void *buf, size_t n, int64_t deadline)
{
	uint8_t *p = buf;
	while (n) {
		ssize_t k = dml__stream_read(st, p, n);
		if (k > 0) {
			p += k;
			n -= (size_t)k;
			continue;
		}
		if (k != DML_EAGAIN)
			return DML_ECONNLOST;
		int rc = wait_for(st, DML__EV_IN, deadline);
		if (rc)
			return rc;
	}
	return 0;
}

int dml__stream_write_all(dml__stream *st, struct iovec *iov, int n, int64_t deadline)
{
	for (;;) {
		int rc = dml__stream_write_step(st, &iov, &n);
		if (rc != DML_EAGAIN)
			return rc;
		if ((rc = wait_for(st, DML__EV_OUT, deadline)))
			return rc;
	}
}
