/*
 * poller.h - readiness of many descriptors at once, for the RPC server:
 * one interface, two backends chosen at build time (make POLLER=epoll or
 * POLLER=poll; epoll on Linux by default, poll() elsewhere and with
 * PORTABLE=1):
 *
 * - epoll: connections are edge-triggered, registered once; dml__poller_want
 *   does nothing; dml__poller_fd is the epoll descriptor itself, which a
 *   host's own poll() can watch.
 * - poll(): a table of descriptors polled by whichever threads wait.
 *   A connection is one-shot: once reported it is not reported again until
 *   its owner says what it waits for next (dml__poller_want), which the
 *   server does whenever it lets a connection go. A host watches the
 *   table's descriptors (dml__poller_pollfds).
 *
 * Either way an event may be reported to several waiting threads, or once
 * more than needed: the server's ownership word absorbs it. Every call is
 * thread-safe. Not installed.
 */
#ifndef DISTML_POLLER_H
#define DISTML_POLLER_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

/* The backend of this build: 1 for poll() (one-shot connections, which
 * need dml__poller_want), 0 for epoll. */
#if defined(DML_POLLER_POLL) || defined(DML_PORTABLE) || !defined(__linux__)
#define DML__POLLER_ONESHOT 1
#else
#define DML__POLLER_ONESHOT 0
#endif

#define DML__EV_IN 1u   /* readable (a listener: a connection waits) */
#define DML__EV_OUT 2u  /* writable */

/* The poll() events of DML__EV_* bits. */
static inline short dml__poll_events(unsigned ev)
{
	return (short)((ev & DML__EV_IN ? POLLIN : 0) | (ev & DML__EV_OUT ? POLLOUT : 0));
}
#define DML__EV_HUP 4u  /* the peer's end of stream, a hang-up or an error */

/* What a descriptor is to the poller. */
enum {
	DML__POLL_LEVEL = 0, /* reported while readable (listeners, wake-ups) */
	DML__POLL_CONN = 1,  /* a connection: edge (epoll) or one-shot (poll) */
};

typedef struct dml__poller dml__poller;

typedef struct dml__poll_event {
	uint64_t data;
	unsigned events;
} dml__poll_event;

/* A new poller, or DML_ENOMEM / DML_ESYS. */
int dml__poller_new(dml__poller **out);
void dml__poller_free(dml__poller *p);

/* The backend's name: "epoll" or "poll". */
const char *dml__poller_backend(void);

/* Watches fd (kind DML__POLL_LEVEL for input, or DML__POLL_CONN for input
 * and output); events carry `data`. 0, DML_ENOMEM or DML_ESYS. */
int dml__poller_add(dml__poller *p, int fd, int kind, uint64_t data);

/* Stops watching fd; call it before closing fd. */
void dml__poller_del(dml__poller *p, int fd);

/* A connection's owner lets it go, waiting for `events` (DML__EV_IN and/or
 * DML__EV_OUT; a hang-up is always reported). */
void dml__poller_want(dml__poller *p, int fd, unsigned events);

/* Makes a connection (watched with `data`) reported again soon, though no
 * new edge may come: a stream holds input its descriptor does not show
 * (stream.h), read by a thread that is not its owner. It is reported once
 * it is writable or readable (epoll re-arms it: EPOLL_CTL_MOD; poll()
 * waits for output too). */
void dml__poller_kick(dml__poller *p, int fd, uint64_t data);

/* Waits up to timeout_ms (-1: no limit, 0: do not wait) for events, fills
 * up to `max` of them: their count, 0 on a timeout or an interruption,
 * DML_ESYS. */
int dml__poller_wait(dml__poller *p, dml__poll_event *ev, int max, int timeout_ms);

/* One descriptor readable when events are waiting (epoll), or -1 (poll). */
int dml__poller_fd(const dml__poller *p);

/* The descriptors a host's poll() should watch to know when to call the
 * server: up to cap of them into fds; their count (which may exceed cap:
 * then call again with more room). */
size_t dml__poller_pollfds(dml__poller *p, struct pollfd *fds, size_t cap);

#endif
