/*
 * rpc_server.c - the RPC server: an epoll set of listeners and connections,
 * driven by whichever host threads call run/poll. Connections are armed
 * EPOLLONESHOT, so one thread at a time owns a connection between an event
 * and its re-arm; no per-connection lock is needed.
 */
#define _GNU_SOURCE
#include "codec.h"
#include "frame.h"
#include "transport.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MAX_LISTENERS 8
#define READ_CHUNK (16 * 1024)
#define EVENTS_PER_POLL 8
#define ACCEPTS_PER_EVENT 64
#define OUT_HIGH (4u << 20) /* unsent reply bytes before a connection stops reading */

enum { SRC_STOP = 1, SRC_LISTEN, SRC_CONN };

typedef struct method_ent {
	const dml_rpc_method *m;
	dml_rpc_handler h;
	void *user;
	size_t name_len;
	int has_arrays;
} method_ent;

typedef struct listener {
	int type;
	int fd;
	char unix_path[108];
} listener;

typedef struct conn conn;
struct conn {
	int type;
	int fd;
	uint64_t id;
	conn *prev, *next;
	dml__buf in; /* bytes [rpos, in.len) are unparsed */
	size_t rpos;
	dml__buf out; /* bytes [opos, out.len) are unsent */
	size_t opos;
	dml__buf scratch; /* argument/reply structs, aligned payload copies */
	method_ent *last; /* the method of the previous request */
};

struct dml_rpc_ctx {
	uint64_t conn_id;
	int has_msg;
	char msg[DML_RPC_ERRMSG_MAX];
};

struct dml_rpc_server {
	dml_rpc_server_opts o;
	int epfd;
	int evfd;
	int stop_type; /* epoll cookie for the stop eventfd */
	listener ls[MAX_LISTENERS];
	int nls;
	method_ent *methods;
	size_t nmethods;
	uint32_t *index; /* open-addressing hash: method slot + 1, 0 = empty */
	size_t index_cap;
	pthread_mutex_t mu; /* guards the connection list */
	conn *conns;
	int nconns;
	atomic_int stopped;
	atomic_uint_fast64_t next_id;
};

/* ---- method table ------------------------------------------------- */

static uint32_t name_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)s[i]) * 16777619u;
	return h;
}

static method_ent *method_find(dml_rpc_server *s, const char *name, size_t n)
{
	if (!s->index_cap)
		return NULL;
	size_t mask = s->index_cap - 1;
	for (size_t i = name_hash(name, n) & mask;; i = (i + 1) & mask) {
		uint32_t slot = s->index[i];
		if (!slot)
			return NULL;
		method_ent *e = &s->methods[slot - 1];
		if (e->name_len == n && memcmp(e->m->name, name, n) == 0)
			return e;
	}
}

static int index_rebuild(dml_rpc_server *s, size_t cap)
{
	uint32_t *idx = calloc(cap, sizeof *idx);
	if (!idx)
		return DML_ENOMEM;
	for (size_t k = 0; k < s->nmethods; k++) {
		method_ent *e = &s->methods[k];
		size_t i = name_hash(e->m->name, e->name_len) & (cap - 1);
		while (idx[i])
			i = (i + 1) & (cap - 1);
		idx[i] = (uint32_t)k + 1;
	}
	free(s->index);
	s->index = idx;
	s->index_cap = cap;
	return 0;
}

int dml_rpc_server_register(dml_rpc_server *s, const dml_rpc_method *m,
                            dml_rpc_handler h, void *user)
{
	if (!s || !m || !m->name || !h)
		return DML_EINVAL;
	size_t n = strlen(m->name);
	if (n == 0 || n > DML_RPC_MAX_METHOD)
		return DML_EINVAL;
	if ((m->args && dml_type_check(m->args)) ||
	    (m->reply && dml_type_check(m->reply)))
		return DML_EINVAL;
	if (method_find(s, m->name, n))
		return DML_EEXIST;
	method_ent *ms = realloc(s->methods, (s->nmethods + 1) * sizeof *ms);
	if (!ms)
		return DML_ENOMEM;
	s->methods = ms;
	ms[s->nmethods] = (method_ent){m, h, user, n, dml__type_has_arrays(m->args)};
	s->nmethods++;
	if (s->nmethods * 2 > s->index_cap) {
		size_t cap = s->index_cap ? s->index_cap : 16;
		while (s->nmethods * 2 > cap)
			cap *= 2;
		if (index_rebuild(s, cap)) {
			s->nmethods--;
			return DML_ENOMEM;
		}
	} else {
		size_t mask = s->index_cap - 1, i = name_hash(m->name, n) & mask;
		while (s->index[i])
			i = (i + 1) & mask;
		s->index[i] = (uint32_t)s->nmethods;
	}
	return 0;
}

/* ---- lifecycle ---------------------------------------------------- */

int dml_rpc_server_new(dml_rpc_server **out, const dml_rpc_server_opts *opts)
{
	if (!out)
		return DML_EINVAL;
	dml_rpc_server *s = calloc(1, sizeof *s);
	if (!s)
		return DML_ENOMEM;
	if (opts)
		s->o = *opts;
	if (s->o.codec != DML_CODEC_BINARY || s->o.max_conns < 0 ||
	    (s->o.max_frame && s->o.max_frame < 64) ||
	    s->o.max_frame > (size_t)UINT32_MAX) {
		free(s);
		return DML_EINVAL;
	}
	if (!s->o.max_frame)
		s->o.max_frame = DML_RPC_DEFAULT_MAX_FRAME;
	if (!s->o.max_conns)
		s->o.max_conns = DML_RPC_DEFAULT_MAX_CONNS;
	s->stop_type = SRC_STOP;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	s->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->stop_type};
	if (s->epfd < 0 || s->evfd < 0 ||
	    epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->evfd, &ev) != 0) {
		if (s->epfd >= 0)
			close(s->epfd);
		if (s->evfd >= 0)
			close(s->evfd);
		free(s);
		return DML_ESYS;
	}
	pthread_mutex_init(&s->mu, NULL);
	atomic_init(&s->stopped, 0);
	atomic_init(&s->next_id, 1);
	*out = s;
	return 0;
}

int dml_rpc_server_listen(dml_rpc_server *s, const char *addr)
{
	if (!s || !addr)
		return DML_EINVAL;
	if (s->nls == MAX_LISTENERS)
		return DML_EBUSY;
	listener *l = &s->ls[s->nls];
	int rc = dml__listen(addr, &l->fd);
	if (rc)
		return rc;
	l->type = SRC_LISTEN;
	l->unix_path[0] = 0;
	dml__unix_path(l->fd, l->unix_path, sizeof l->unix_path);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, l->fd, &ev) != 0) {
		if (l->unix_path[0])
			unlink(l->unix_path);
		close(l->fd);
		return DML_ESYS;
	}
	s->nls++;
	return 0;
}

int dml_rpc_server_addr(dml_rpc_server *s, int i, char *buf, size_t cap)
{
	if (!s || !buf || i < 0)
		return DML_EINVAL;
	if (i >= s->nls)
		return DML_ENOTFOUND;
	return dml__local_addr(s->ls[i].fd, buf, cap);
}

int dml_rpc_server_port(dml_rpc_server *s, int i)
{
	char buf[128];
	int rc = dml_rpc_server_addr(s, i, buf, sizeof buf);
	if (rc)
		return rc;
	const char *colon = strrchr(buf, ':');
	if (strncmp(buf, "unix:", 5) == 0 || !colon)
		return DML_ENOTFOUND;
	return atoi(colon + 1);
}

int dml_rpc_server_fd(dml_rpc_server *s) { return s ? s->epfd : DML_EINVAL; }

void dml_rpc_server_stop(dml_rpc_server *s)
{
	if (!s)
		return;
	atomic_store(&s->stopped, 1);
	uint64_t one = 1;
	ssize_t w = write(s->evfd, &one, sizeof one);
	(void)w; /* a full counter already wakes everyone */
}

static void conn_free(conn *c)
{
	close(c->fd);
	dml__buf_free(&c->in);
	dml__buf_free(&c->out);
	dml__buf_free(&c->scratch);
	free(c);
}

void dml_rpc_server_free(dml_rpc_server *s)
{
	if (!s)
		return;
	for (conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		conn_free(c);
	}
	for (int i = 0; i < s->nls; i++) {
		if (s->ls[i].unix_path[0])
			unlink(s->ls[i].unix_path);
		close(s->ls[i].fd);
	}
	close(s->epfd);
	close(s->evfd);
	pthread_mutex_destroy(&s->mu);
	free(s->methods);
	free(s->index);
	free(s);
}

/* ---- handler context ---------------------------------------------- */

int dml_rpc_errorf(dml_rpc_ctx *ctx, const char *fmt, ...)
{
	if (!ctx || !fmt)
		return DML_EHANDLER;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ctx->msg, sizeof ctx->msg, fmt, ap);
	va_end(ap);
	ctx->has_msg = 1;
	return DML_EHANDLER;
}

uint64_t dml_rpc_ctx_conn(const dml_rpc_ctx *ctx) { return ctx ? ctx->conn_id : 0; }

/* ---- connections -------------------------------------------------- */

static void conn_close(dml_rpc_server *s, conn *c)
{
	pthread_mutex_lock(&s->mu);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	pthread_mutex_unlock(&s->mu);
	conn_free(c); /* closing the fd removes it from the epoll set */
}

static void accept_all(dml_rpc_server *s, listener *l)
{
	for (int k = 0; k < ACCEPTS_PER_EVENT; k++) {
		int fd;
		if (dml__accept(l->fd, &fd))
			return;
		conn *c = calloc(1, sizeof *c);
		pthread_mutex_lock(&s->mu);
		int full = s->nconns >= s->o.max_conns;
		if (c && !full) {
			c->type = SRC_CONN;
			c->fd = fd;
			c->id = atomic_fetch_add(&s->next_id, 1);
			c->next = s->conns;
			if (s->conns)
				s->conns->prev = c;
			s->conns = c;
			s->nconns++;
		}
		pthread_mutex_unlock(&s->mu);
		if (!c || full) {
			free(c);
			close(fd);
			continue;
		}
		struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = c};
		if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
			conn_close(s, c);
	}
}

/* Appends a reply frame with an error status and message. */
static int reply_error(conn *c, uint64_t seq, uint32_t status, const char *msg)
{
	size_t n = strlen(msg);
	if (n > UINT16_MAX)
		n = UINT16_MAX;
	int rc = dml__buf_reserve(&c->out, DML__FRAME_HDR + n);
	if (rc)
		return rc;
	uint8_t *p = c->out.data + c->out.len;
	dml__frame_header(p, DML__KIND_REPLY, seq, status, n, 0);
	memcpy(p + DML__FRAME_HDR, msg, n);
	c->out.len += DML__FRAME_HDR + n;
	return 0;
}

/* Appends an OK reply encoding `reply` of type t. */
static int reply_ok(dml_rpc_server *s, conn *c, uint64_t seq, const dml_type *t,
                    const void *reply)
{
	t = dml__type_or_empty(t);
	dml__writer w;
	size_t limit = s->o.max_frame - DML__FRAME_HDR;
	size_t guess = limit < 256 ? limit : 256;
	int rc;
	for (;;) { /* one pass when the guess fits; a sized second one if not */
		if ((rc = dml__buf_reserve(&c->out, DML__FRAME_HDR + guess)))
			return rc;
		memset(&w, 0, sizeof w);
		w.p = c->out.data + c->out.len + DML__FRAME_HDR;
		w.cap = guess;
		w.ext_min = SIZE_MAX;
		rc = dml__encode_w(t, reply, &w);
		if (rc != DML_ETOOBIG || w.pos <= guess)
			break;
		if (w.pos > limit)
			return reply_error(c, seq, DML__ST_TOOBIG, "reply larger than the frame limit");
		guess = w.pos;
	}
	if (rc)
		return reply_error(c, seq, DML__ST_HANDLER, "reply could not be encoded");
	dml__frame_header(c->out.data + c->out.len, DML__KIND_REPLY, seq, 0, 0, w.pos);
	c->out.len += DML__FRAME_HDR + w.pos;
	return 0;
}

static size_t align_up(size_t n) { return (n + 15) & ~(size_t)15; }

/* Runs one request frame; appends its reply to c->out. */
static int dispatch(dml_rpc_server *s, conn *c, const uint8_t *f,
                    const dml__frame *fr)
{
	if (fr->kind != DML__KIND_REQUEST)
		return DML_EPROTO;
	const char *name = (const char *)f + DML__FRAME_HDR;
	const uint8_t *payload = f + DML__FRAME_HDR + fr->name_len;
	method_ent *e = c->last; /* connections mostly repeat one method */
	if (!e || e->name_len != fr->name_len || memcmp(e->m->name, name, e->name_len)) {
		e = fr->name_len <= DML_RPC_MAX_METHOD
			? method_find(s, name, fr->name_len) : NULL;
		c->last = e;
	}
	char msg[DML_RPC_ERRMSG_MAX];
	if (!e) {
		int shown = fr->name_len > 64 ? 64 : fr->name_len;
		dml__set_msg(msg, sizeof msg, "rpc: can't find method %.*s", shown, name);
		return reply_error(c, fr->seq, DML__ST_NOMETHOD, msg);
	}
	const dml_type *at = e->m->args, *rt = e->m->reply;
	size_t asz = at ? align_up(at->size) : 0, rsz = rt ? align_up(rt->size) : 0;
	int copy = e->has_arrays && ((uintptr_t)payload % 8) != 0;
	int rc = dml__buf_grow(&c->scratch, asz + rsz + (copy ? fr->payload_len : 0) + 16);
	if (rc)
		return rc;
	void *args = c->scratch.data, *reply = c->scratch.data + asz;
	memset(c->scratch.data, 0, asz + rsz);
	if (copy) {
		memcpy(c->scratch.data + asz + rsz, payload, fr->payload_len);
		payload = c->scratch.data + asz + rsz;
	}
	rc = dml__decode_h(dml__type_or_empty(at), args, payload, fr->payload_len, -1);
	if (rc) {
		dml__set_msg(msg, sizeof msg, "rpc: bad arguments for %s: %s",
		             e->m->name, dml_strerror(rc));
		return reply_error(c, fr->seq, DML__ST_BADARGS, msg);
	}
	dml_rpc_ctx ctx;
	ctx.conn_id = c->id;
	ctx.has_msg = 0;
	rc = e->h(&ctx, args, reply, e->user);
	if (rc)
		return reply_error(c, fr->seq, DML__ST_HANDLER,
		                   ctx.has_msg ? ctx.msg : dml_strerror(rc));
	return reply_ok(s, c, fr->seq, rt, reply);
}

/* Writes what it can of c->out. 0, or DML_ECONNLOST. */
static int conn_flush(conn *c)
{
	while (c->opos < c->out.len) {
		struct iovec iov = {c->out.data + c->opos, c->out.len - c->opos};
		ssize_t w = dml__writev(c->fd, &iov, 1);
		if (w == DML_EAGAIN)
			return 0;
		if (w < 0)
			return (int)w;
		c->opos += (size_t)w;
	}
	c->opos = c->out.len = 0;
	return 0;
}

/* Whether unsent replies are over the limit: the connection then stops
 * reading requests until the peer reads its replies. */
static int backlogged(const conn *c)
{
	return c->out.len - c->opos > OUT_HIGH;
}

/* Makes room to read the rest of a frame of `total` bytes whose first
 * bytes sit at rpos; places it so that its payload is 8-aligned. */
static int conn_make_room(conn *c, size_t total, size_t name_len)
{
	size_t have = c->in.len - c->rpos;
	size_t shift = (8 - (DML__FRAME_HDR + name_len) % 8) % 8;
	if (c->rpos == shift && c->in.cap >= shift + total)
		return 0;
	if (c->in.cap < shift + total) {
		dml__buf nb = {0};
		int rc = dml__buf_grow(&nb, shift + total);
		if (rc)
			return rc;
		memcpy(nb.data + shift, c->in.data + c->rpos, have);
		dml__buf_free(&c->in);
		c->in = nb;
	} else {
		memmove(c->in.data + shift, c->in.data + c->rpos, have);
	}
	c->rpos = shift;
	c->in.len = shift + have;
	return 0;
}

/* Serves every complete frame buffered in c->in. Sets *partial (and *fr)
 * when an incomplete frame's header has been parsed. */
static int serve_frames(dml_rpc_server *s, conn *c, dml__frame *fr, int *partial)
{
	*partial = 0;
	while (c->in.len - c->rpos >= DML__FRAME_HDR) {
		const uint8_t *f = c->in.data + c->rpos;
		int rc = dml__frame_parse(f, c->in.len - c->rpos, s->o.max_frame, fr);
		if (rc)
			return rc;
		if (c->in.len - c->rpos < fr->total) {
			*partial = 1;
			return 0;
		}
		if ((rc = dispatch(s, c, f, fr)))
			return rc;
		c->rpos += fr->total;
	}
	if (c->rpos == c->in.len)
		c->rpos = c->in.len = 0;
	return 0;
}

/* Reads and serves requests until the socket is drained. Returns 0 to keep
 * the connection, or an error to drop it. */
static int conn_read(dml_rpc_server *s, conn *c)
{
	if (!c->in.cap && dml__buf_grow(&c->in, READ_CHUNK))
		return DML_ENOMEM;
	for (;;) {
		dml__frame fr;
		int partial, rc = serve_frames(s, c, &fr, &partial);
		if (rc)
			return rc;
		if (partial) {
			if ((rc = conn_make_room(c, fr.total, fr.name_len)))
				return rc;
		} else if (c->in.cap - c->in.len < DML__FRAME_HDR * 4) {
			size_t have = c->in.len - c->rpos;
			memmove(c->in.data, c->in.data + c->rpos, have);
			c->rpos = 0;
			c->in.len = have;
		}
		/* Send replies before reading more; stop reading while the peer
		 * does not take them (re-armed for output only, see conn_event). */
		if ((rc = conn_flush(c)))
			return rc;
		if (backlogged(c))
			return 0;
		size_t room = c->in.cap - c->in.len;
		ssize_t n = dml__read(c->fd, c->in.data + c->in.len, room);
		if (n == DML_EAGAIN)
			return 0;
		if (n < 0)
			return (int)n;
		c->in.len += (size_t)n;
		if ((size_t)n < room) {
			/* Drained for now: serve what came and wait for the
			 * (level-triggered) re-arm instead of reading EAGAIN. */
			if ((rc = serve_frames(s, c, &fr, &partial)))
				return rc;
			return conn_flush(c);
		}
	}
}

static void conn_event(dml_rpc_server *s, conn *c, uint32_t events)
{
	int rc = 0;
	if (events & EPOLLOUT)
		rc = conn_flush(c);
	/* Read when asked to, or when output drained below the limit (input
	 * was not watched meanwhile). */
	if (!rc && !backlogged(c) && (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLOUT)))
		rc = conn_read(s, c);
	if (rc) {
		conn_close(s, c);
		return;
	}
	struct epoll_event ev = {.events = EPOLLONESHOT, .data.ptr = c};
	if (!backlogged(c))
		ev.events |= EPOLLIN;
	if (c->opos < c->out.len)
		ev.events |= EPOLLOUT;
	if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0)
		conn_close(s, c);
}

int dml_rpc_server_poll(dml_rpc_server *s, dml_duration timeout)
{
	if (!s)
		return DML_EINVAL;
	if (atomic_load(&s->stopped))
		return DML_ESTOPPED;
	struct epoll_event evs[EVENTS_PER_POLL];
	int tmo = timeout < 0 ? -1 : (timeout > 1000000000 ? 1000000000 : (int)timeout);
	int n = epoll_wait(s->epfd, evs, EVENTS_PER_POLL, tmo);
	if (n < 0)
		return errno == EINTR ? 0 : DML_ESYS;
	int handled = 0;
	for (int i = 0; i < n; i++) {
		int type = *(int *)evs[i].data.ptr;
		if (type == SRC_STOP)
			return DML_ESTOPPED;
		if (type == SRC_LISTEN)
			accept_all(s, evs[i].data.ptr);
		else
			conn_event(s, evs[i].data.ptr, evs[i].events);
		handled++;
	}
	return handled;
}

int dml_rpc_server_run(dml_rpc_server *s)
{
	if (!s)
		return DML_EINVAL;
	for (;;) {
		int rc = dml_rpc_server_poll(s, DML_INFINITE);
		if (rc == DML_ESTOPPED)
			return 0;
		if (rc < 0)
			return rc;
	}
}
