/* poller_epoll.c - the epoll backend of poller.h: connections
 * edge-triggered, registered once. */
#define _GNU_SOURCE
#include "poller.h"

#include "internal.h"

#if !DML__POLLER_ONESHOT

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

struct dml__poller {
	int epfd;
};

const char *dml__poller_backend(void) { return "epoll"; }

int dml__poller_new(dml__poller **out)
{
	dml__poller *p = malloc(sizeof *p);
	if (!p)
		return DML_ENOMEM;
	if ((p->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
		int e = errno;
		free(p);
		errno = e;
		return DML_ESYS;
	}
	*out = p;
	return 0;
}

void dml__poller_free(dml__poller *p)
{
	if (!p)
		return;
	close(p->epfd);
	free(p);
}

#define CONN_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

int dml__poller_add(dml__poller *p, int fd, int kind, uint64_t data)
{
	struct epoll_event ev = {.events = kind == DML__POLL_CONN ? CONN_EVENTS : EPOLLIN,
	                         .data.u64 = data};
	if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
		return 0;
	return errno == ENOMEM || errno == ENOSPC ? DML_ENOMEM : DML_ESYS;
}

void dml__poller_del(dml__poller *p, int fd)
{
	int e = errno;
	(void)epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
	errno = e;
}

void dml__poller_want(dml__poller *p, int fd, unsigned events)
{
	(void)p; /* edge-triggered: the kernel reports every new edge */
	(void)fd;
	(void)events;
}

void dml__poller_kick(dml__poller *p, int fd, uint64_t data)
{
	int e = errno;
	struct epoll_event ev = {.events = CONN_EVENTS, .data.u64 = data};
	(void)epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev); /* reports what is ready */
	errno = e;
}

int dml__poller_wait(dml__poller *p, dml__poll_event *ev, int max, int timeout_ms)
{
	struct epoll_event evs[64];
	if (max > 64)
		max = 64;
	int n = epoll_wait(p->epfd, evs, max, timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : DML_ESYS;
	for (int i = 0; i < n; i++) {
		uint32_t e = evs[i].events;
		ev[i].data = evs[i].data.u64;
		ev[i].events = (e & EPOLLIN ? DML__EV_IN : 0) | (e & EPOLLOUT ? DML__EV_OUT : 0) |
		               (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR) ? DML__EV_HUP : 0);
	}
	return n;
}

int dml__poller_fd(const dml__poller *p) { return p->epfd; }

size_t dml__poller_pollfds(dml__poller *p, struct pollfd *fds, size_t cap)
{
	if (cap >= 1)
		fds[0] = (struct pollfd){p->epfd, POLLIN, 0};
	return 1;
}

#else
typedef int dml__poller_epoll_unused; /* ISO C: no empty translation unit */
#endif
