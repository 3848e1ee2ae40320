/* poller_poll.c - the poll() backend of poller.h: a table of descriptors
 * under a mutex, polled by whichever threads wait. A connection reported
 * is disarmed (one-shot) until dml__poller_want arms it again; threads in
 * poll() then are woken (an internal wake-up descriptor) so that they poll
 * the new table. */
#define _GNU_SOURCE
#include "poller.h"

#include "internal.h"

#if DML__POLLER_ONESHOT

#include "sys.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct entry {
	int fd;
	int kind;
	uint64_t data;
	unsigned want;   /* DML__EV_IN | DML__EV_OUT */
	int armed;       /* polled (a connection: until it is reported) */
} entry;

struct dml__poller {
	pthread_mutex_t mu;
	entry *e;
	size_t n, cap;
	int *at;         /* at[fd] = index in e + 1; 0 = not watched */
	size_t at_cap;
	int wake[2];
	int waiters;     /* threads in poll() */
};

const char *dml__poller_backend(void) { return "poll"; }

int dml__poller_new(dml__poller **out)
{
	dml__poller *p = calloc(1, sizeof *p);
	if (!p)
		return DML_ENOMEM;
	if (dml__sys_wake_new(p->wake) != 0) {
		int e = errno;
		free(p);
		errno = e;
		return DML_ESYS;
	}
	pthread_mutex_init(&p->mu, NULL);
	*out = p;
	return 0;
}

void dml__poller_free(dml__poller *p)
{
	if (!p)
		return;
	dml__sys_wake_close(p->wake);
	pthread_mutex_destroy(&p->mu);
	free(p->e);
	free(p->at);
	free(p);
}

static entry *find(dml__poller *p, int fd)
{
	if (fd < 0 || (size_t)fd >= p->at_cap || !p->at[fd])
		return NULL;
	return &p->e[p->at[fd] - 1];
}

/* Under mu: waiting threads poll an old table; wake them to take the new. */
static void changed(dml__poller *p)
{
	if (p->waiters)
		dml__sys_wake_signal(p->wake);
}

int dml__poller_add(dml__poller *p, int fd, int kind, uint64_t data)
{
	if (fd < 0)
		return DML_EINVAL;
	pthread_mutex_lock(&p->mu);
	int rc = 0;
	if ((size_t)fd >= p->at_cap) {
		size_t cap = p->at_cap ? p->at_cap : 64;
		while (cap <= (size_t)fd)
			cap *= 2;
		int *at = realloc(p->at, cap * sizeof *at);
		if (!at) {
			rc = DML_ENOMEM;
			goto out;
		}
		memset(at + p->at_cap, 0, (cap - p->at_cap) * sizeof *at);
		p->at = at;
		p->at_cap = cap;
	}
	if (p->at[fd]) {
		rc = DML_EEXIST;
		goto out;
	}
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 16;
		entry *e = realloc(p->e, cap * sizeof *e);
		if (!e) {
			rc = DML_ENOMEM;
			goto out;
		}
		p->e = e;
		p->cap = cap;
	}
	p->e[p->n] = (entry){fd, kind, data, DML__EV_IN, 1};
	p->at[fd] = (int)++p->n;
	changed(p);
out:
	pthread_mutex_unlock(&p->mu);
	return rc;
}

void dml__poller_del(dml__poller *p, int fd)
{
	pthread_mutex_lock(&p->mu);
	entry *x = find(p, fd);
	if (x) {
		size_t i = (size_t)(x - p->e);
		p->at[fd] = 0;
		if (i != p->n - 1) { /* the last one takes its place */
			p->e[i] = p->e[p->n - 1];
			p->at[p->e[i].fd] = (int)i + 1;
		}
		p->n--;
		/* a thread in poll() holds a reference to the descriptor's file:
		 * until it wakes, a close would not end the connection (no FIN,
		 * no reset) */
		changed(p);
	}
	pthread_mutex_unlock(&p->mu);
}

void dml__poller_want(dml__poller *p, int fd, unsigned events)
{
	pthread_mutex_lock(&p->mu);
	entry *x = find(p, fd);
	if (x) {
		unsigned old = x->want;
		x->want = events & (DML__EV_IN | DML__EV_OUT);
		if (!x->armed || x->want != old) {
			x->armed = 1;
			changed(p);
		}
	}
	pthread_mutex_unlock(&p->mu);
}

void dml__poller_kick(dml__poller *p, int fd, uint64_t data)
{
	(void)data;
	dml__poller_want(p, fd, DML__EV_IN | DML__EV_OUT);
}

static short poll_events(const entry *x)
{
	return dml__poll_events(x->want);
}

/* Under mu: the table to poll (the wake-up first) into fds/data. */
static size_t snapshot(dml__poller *p, struct pollfd *fds, uint64_t *data, size_t cap)
{
	size_t k = 0;
	if (cap)
		fds[k] = (struct pollfd){p->wake[0], POLLIN, 0};
	k++;
	for (size_t i = 0; i < p->n; i++) {
		const entry *x = &p->e[i];
		if (!x->armed)
			continue;
		if (k < cap) {
			fds[k] = (struct pollfd){x->fd, poll_events(x), 0};
			if (data)
				data[k] = x->data;
		}
		k++;
	}
	return k;
}

int dml__poller_wait(dml__poller *p, dml__poll_event *ev, int max, int timeout_ms)
{
	pthread_mutex_lock(&p->mu);
	size_t cap = p->n + 1;
	struct pollfd *fds = malloc(cap * sizeof *fds);
	uint64_t *data = malloc(cap * sizeof *data);
	if (!fds || !data) {
		pthread_mutex_unlock(&p->mu);
		free(fds);
		free(data);
		return DML_ENOMEM;
	}
	size_t k = snapshot(p, fds, data, cap);
	p->waiters++;
	pthread_mutex_unlock(&p->mu);

	int n = poll(fds, (nfds_t)k, timeout_ms);
	int e = errno;

	pthread_mutex_lock(&p->mu);
	p->waiters--;
	int got = 0;
	if (n > 0) {
		if (fds[0].revents)
			dml__sys_wake_drain(p->wake);
		for (size_t i = 1; i < k && got < max; i++) {
			short r = fds[i].revents;
			entry *x = find(p, fds[i].fd);
			/* gone, replaced by another registration, or taken by
			 * another thread's poll meanwhile */
			if (!r || !x || x->data != data[i] || !x->armed || (r & POLLNVAL))
				continue;
			if (x->kind == DML__POLL_CONN)
				x->armed = 0; /* one-shot: its owner arms it again */
			ev[got].data = x->data;
			ev[got].events = (r & POLLIN ? DML__EV_IN : 0) | (r & POLLOUT ? DML__EV_OUT : 0) |
			                 (r & (POLLHUP | POLLERR) ? DML__EV_HUP : 0);
			got++;
		}
	}
	pthread_mutex_unlock(&p->mu);
	free(fds);
	free(data);
	if (n < 0) {
		errno = e;
		return e == EINTR ? 0 : DML_ESYS;
	}
	return got;
}

int dml__poller_fd(const dml__poller *p)
{
	(void)p;
	return -1;
}

size_t dml__poller_pollfds(dml__poller *p, struct pollfd *fds, size_t cap)
{
	pthread_mutex_lock(&p->mu);
	size_t k = snapshot(p, fds, NULL, cap);
	pthread_mutex_unlock(&p->mu);
	return k;
}

#else
typedef int dml__poller_poll_unused; /* ISO C: no empty translation unit */
#endif
