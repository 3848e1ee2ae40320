/*
 * rpc_client.c - the RPC client: many calls in flight over one connection,
 * matched to replies by sequence number (as Go's net/rpc does).
 *
 * There is no reader thread. A thread waiting for a call takes the reader
 * role when nobody holds it, reads replies for everyone and hands the role to
 * another waiter once its own call is done ("leader/followers").
 *
 * Small replies are read into a shared buffer and decoded under the lock.
 * Large ones (more than READ_BUF bytes) are received straight into their
 * call: into the caller's array buffer when the reply type allows it (see
 * dml__bulk_plan), else into the call's payload buffer. While the reader
 * writes into a call without the lock, the call is marked in_use; a waiter
 * whose deadline passes then raises abandon_req and waits until the reader
 * lets go (it looks at the flag after every read, and a read blocks at most
 * READER_TICK_MS), so no caller buffer is written after its call ended.
 *
 * The connection is a stream (stream.h). A plain socket is DUPLEX: its
 * descriptor is made blocking, the reader blocks in recv() while writers
 * write. Any other stream (TLS) serves one thread at a time: reads and
 * writes then take `smu`, the descriptor stays non-blocking, and both
 * wait in poll() without the lock: a writer whose write took input in (a
 * stream's write may read) wakes the reader through `wake`, and a reader
 * whose read took in what a waiting writer waited for (a TLS key update)
 * wakes it through `wwake`.
 *
 * A failed call keeps a message in its handle (errmsg: the peer's, escaped,
 * or what went wrong here), which dml_rpc_pending_wait copies into the
 * calling thread's error detail.
 */
#define _GNU_SOURCE
#include "abi.h"
#include "sys.h"
#include "codec.h"
#include "frame.h"
#include "rpc_wire.h"
#include "stream.h"
#include "transport.h"

#include <stdio.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define READ_BUF (64 * 1024)
#define QUEUE_FLUSH (64 * 1024) /* flush queued requests beyond this */
#define EXT_MIN (64 * 1024)     /* arrays at least this large go by reference */
#define NBUCKETS 1024
#define FREE_KEEP 256               /* call handles kept for reuse */
#define FREE_KEEP_PAYLOAD (1u << 20) /* ... if their payload buffer is no larger */
#define ENCODE_GUESS 256            /* bytes tried for an encoding at first */

enum { CALL_PENDING = 1, CALL_DONE = 2 };

struct dml_rpc_pending {
	dml_rpc_client *c;
	dml_rpc_pending *hnext;        /* hash chain of pending calls */
	dml_rpc_pending *wnext, *wprev;/* threads waiting (not reading) */
	dml_rpc_pending *all_next, *all_prev; /* every live handle */
	uint64_t seq;
	const dml_type *rtype;
	void *reply;
	int64_t deadline;    /* ms, rounded up: for writes and reconnects */
	int64_t deadline_us; /* the call's own, to the us: when it times out */
	dml_duration timeout; /* as given: for the message of a timeout */
	atomic_int state;
	int result;
	int in_use;  /* the reader is writing into this call unlocked */
	int abandon; /* its waiter gave up: reader must let go */
	pthread_cond_t cv;
	dml_rpc_done_fn cb;  /* dml_rpc_pending_on_done, run by dml_rpc_client_poll */
	void *cb_user;
	dml_rpc_pending *dnext; /* finished calls whose callbacks are due */
	int in_done;            /* on that list */
	dml__buf payload; /* reply payload: views point here */
	char errmsg[DML_RPC_ERRMSG_MAX];
};

/* State of a large frame being received (reader role only). */
typedef struct big {
	int active;
	dml__frame fr;
	dml_rpc_pending *k;     /* NULL: discard */
	int bulk;            /* receiving an array straight into the caller's buffer */
	int phase;           /* bulk: 0 prefix, 1 array data, 2 rest */
	uint8_t *dst;        /* current segment (NULL: discard) */
	size_t need, got;    /* current segment */
	size_t left;         /* frame body bytes not yet received */
	int field;
	size_t count_off, esize, n;
	size_t shift;        /* bulk: where the prefix sits in the payload buffer */
	int result;          /* error decided before the body arrived */
} big;

struct dml_rpc_client {
	dml__stream *st;
	int fd;       /* st->fd */
	int locked;   /* the stream is not DUPLEX: smu, wake */
	pthread_mutex_t smu; /* a locked stream's reads and writes */
	int wake[2];  /* a locked stream: wakes the reader waiting in poll() */
	int wwake[2]; /* ... and writers waiting in poll() */
	int wwaiting; /* writers wait for wwake (under smu) */
	int rcvtimeo; /* SO_RCVTIMEO now set on fd, ms */
	atomic_int abandon_req; /* a waiter wants the reader to let go */
	atomic_int queued;      /* requests wait in `out` */
	_Atomic(const dml_rpc_method *) checked[16]; /* methods with valid types */
	dml_rpc_client_opts o;
	pthread_mutex_t mu; /* everything below but the write side */
	uint64_t next_seq;
	dml_rpc_pending *table[NBUCKETS];
	size_t inflight; /* calls in the table */
	dml_rpc_pending *waiters;
	dml_rpc_pending *all;
	dml_rpc_pending *freelist;
	int nfree;
	int reader;
	int broken; /* 0 or the error every call now gets */
	/* reconnecting (under mu) */
	char addr[300];
	int reconnecting;
	int64_t next_dial;    /* ms, monotonic: no attempt before */
	dml__backoff backoff; /* waits between failed attempts */
	char errmsg[DML_RPC_ERRMSG_MAX]; /* for dml_rpc_client_errmsg */
	/* reader-role state */
	dml__buf in;
	size_t rpos;
	big bg;
	int64_t rx_at;   /* ms : bytes last received; the heartbeat's */
	int64_t ping_at; /* ms : a heartbeat last sent */
	int hb_lost;     /* the connection was given up for silence */
	int reader_hb;   /* the event loop's reader role: heartbeats are due */
	/* a host's event loop (dml_rpc_client_poll; under mu) */
	atomic_int hosted;       /* it drives the client: requests are queued,
	                            written by the loop without waiting */
	uint64_t finished;       /* calls finished so far */
	int64_t next_expiry_us;  /* no pending deadline before (INT64_MAX: none) */
	dml_rpc_pending *done_head, *done_tail; /* callbacks due */
	int in_callbacks;        /* dml_rpc_client_poll is running them */
	/* write side */
	pthread_mutex_t wmu;
	dml__buf out;    /* bytes [opos, len) are unwritten */
	size_t opos;
	int out_held;    /* the stream holds written bytes it could not flush */
	char *token;     /* opts.token's copy (o.token points here) */
};

/* ---- pending-call table (under mu) -------------------------------- */

static void table_add(dml_rpc_client *c, dml_rpc_pending *k)
{
	dml_rpc_pending **b = &c->table[k->seq % NBUCKETS];
	k->hnext = *b;
	*b = k;
	c->inflight++;
}

static dml_rpc_pending *table_find(dml_rpc_client *c, uint64_t seq)
{
	dml_rpc_pending *k = c->table[seq % NBUCKETS];
	while (k && k->seq != seq)
		k = k->hnext;
	return k;
}

static void table_remove(dml_rpc_client *c, dml_rpc_pending *k)
{
	for (dml_rpc_pending **p = &c->table[k->seq % NBUCKETS]; *p; p = &(*p)->hnext)
		if (*p == k) {
			*p = k->hnext;
			c->inflight--;
			return;
		}
}

/* Puts a finished call with a callback on the list dml_rpc_client_poll
 * runs (under mu). */
static void done_push(dml_rpc_client *c, dml_rpc_pending *k)
{
	k->dnext = NULL;
	k->in_done = 1;
	if (c->done_tail)
		c->done_tail->dnext = k;
	else
		c->done_head = k;
	c->done_tail = k;
}

static void done_remove(dml_rpc_client *c, dml_rpc_pending *k)
{
	dml_rpc_pending *prev = NULL;
	for (dml_rpc_pending *p = c->done_head; p; prev = p, p = p->dnext)
		if (p == k) {
			if (prev)
				prev->dnext = k->dnext;
			else
				c->done_head = k->dnext;
			if (c->done_tail == k)
				c->done_tail = prev;
			break;
		}
	k->in_done = 0;
	k->dnext = NULL;
}

/* Marks a pending call finished and wakes its waiter (under mu). */
static void call_finish(dml_rpc_client *c, dml_rpc_pending *k, int result)
{
	table_remove(c, k);
	k->result = result;
	atomic_store_explicit(&k->state, CALL_DONE, memory_order_release);
	c->finished++;
	if (k->cb)
		done_push(c, k);
	pthread_cond_signal(&k->cv);
}

/* A reply status as an error code. A status this client does not know
 * comes from a newer peer: DML_EVERSION (docs/protocol.md, section 11). */
static int status_error(uint32_t st)
{
	switch (st) {
	case DML__ST_NOMETHOD: return DML_ENOMETHOD;
	case DML__ST_HANDLER: return DML_EHANDLER;
	case DML__ST_BADARGS: return DML_EPROTO;
	case DML__ST_TOOBIG: return DML_ETOOBIG;
	case DML__ST_AUTH: return DML_EAUTH;
	case DML__ST_PERM: return DML_EPERM;
	default: return DML_EVERSION;
	}
}

/* The peer's message, escaped: it came from the wire. */
static void set_errmsg(dml_rpc_pending *k, uint32_t status, const uint8_t *p,
                       size_t n)
{
	int at = 0;
	if (status > DML__ST_MAX)
		at = snprintf(k->errmsg, sizeof k->errmsg,
		              "reply status %u unknown to this client: ", (unsigned)status);
	dml__escape(k->errmsg + at, sizeof k->errmsg - (size_t)at, p, n);
}

/* Finishes call k from a whole frame body (name + payload) at `body`. */
static void finish_from_body(dml_rpc_client *c, dml_rpc_pending *k,
                             const dml__frame *fr, const uint8_t *body,
                             int copy)
{
	if (fr->status != DML__ST_OK) {
		set_errmsg(k, fr->status, body, fr->name_len);
		call_finish(c, k, status_error(fr->status));
		return;
	}
	const uint8_t *p = body + fr->name_len;
	if (copy) {
		if (dml__buf_grow(&k->payload, fr->payload_len + 1)) {
			call_finish(c, k, DML_ENOMEM);
			return;
		}
		memcpy(k->payload.data, p, fr->payload_len);
		p = k->payload.data;
	}
	int rc = dml__decode_h(dml__type_or_empty(k->rtype), k->reply, p,
	                       fr->payload_len, -1);
	call_finish(c, k, rc);
}

/* Fails every pending call, the one being received included (under mu, and
 * only when no other thread holds the reader role). */
static void fail_all(dml_rpc_client *c, int err)
{
	if (!c->broken)
		c->broken = err;
	if (c->bg.active && c->bg.k) {
		c->bg.k->in_use = 0;
		pthread_cond_signal(&c->bg.k->cv);
	}
	c->bg.active = 0;
	c->bg.k = NULL;
	c->in.len = c->rpos = 0;
	for (int i = 0; i < NBUCKETS; i++)
		while (c->table[i])
			call_finish(c, c->table[i], c->broken);
}

/* Shuts the connection down with `err` (under mu); the reader, if any,
 * notices and fails the calls itself. */
static void conn_break(dml_rpc_client *c, int err)
{
	if (!c->broken) {
		c->broken = err;
		dml__stream_shutdown(c->st); /* wakes a reader blocked in recv */
	}
	if (!c->reader)
		fail_all(c, err);
}

/* ---- the stream ---------------------------------------------------- */

/* One read (under smu for a locked stream). */
static ssize_t c_read(dml_rpc_client *c, void *buf, size_t len)
{
	if (!c->locked)
		return dml__stream_read(c->st, buf, len);
	pthread_mutex_lock(&c->smu);
	ssize_t n = dml__stream_read(c->st, buf, len);
	int wake_writers = c->wwaiting; /* the read may have taken their input */
	c->wwaiting = 0;
	pthread_mutex_unlock(&c->smu);
	if (wake_writers)
		dml__sys_wake_signal(c->wwake);
	return n;
}

/* A locked stream's reader, after DML_EAGAIN: waits up to timeout_us for
 * what the stream wants, or a writer's wake-up. 0, or DML_ECONNLOST. */
static int c_wait_input(dml_rpc_client *c, int64_t timeout_us)
{
	pthread_mutex_lock(&c->smu);
	size_t held = dml__stream_pending(c->st);
	unsigned w = dml__stream_wants(c->st, DML__EV_IN);
	pthread_mutex_unlock(&c->smu);
	if (held)
		return 0;
	short ev = dml__poll_events(w);
	int n = dml__wait_us(c->fd, ev, c->wake[0], timeout_us);
	dml__sys_wake_drain(c->wake);
	return n < 0 ? DML_ECONNLOST : 0;
}

/* Writes all of iov and flushes, before `deadline` (ms). */
static int c_write_all(dml_rpc_client *c, struct iovec *iov, int n, int64_t deadline)
{
	if (!c->locked)
		return dml__stream_write_all(c->st, iov, n, deadline);
	for (;;) {
		pthread_mutex_lock(&c->smu);
		int rc = dml__stream_write_step(c->st, &iov, &n);
		size_t held = dml__stream_pending(c->st);
		unsigned w = dml__stream_wants(c->st, DML__EV_OUT);
		if (rc == DML_EAGAIN)
			c->wwaiting = 1;
		pthread_mutex_unlock(&c->smu);
		if (held) /* the write took input in: the reader must see it */
			dml__sys_wake_signal(c->wake);
		if (rc != DML_EAGAIN)
			return rc;
		short ev = dml__poll_events(w);
		int left = dml__remaining_ms(deadline);
		if (left == 0)
			return DML_ETIMEDOUT;
		/* the reader may take what the stream waits for: it wakes us */
		if (dml__wait_us(c->fd, ev, c->wwake[0], left < 0 ? -1 : (int64_t)left * 1000) < 0)
			return DML_ESYS;
		dml__sys_wake_drain(c->wwake);
	}
}

/* The host of a dialed address, for TLS to verify ("" over unix:). */
static void addr_host(const char *addr, char *buf, size_t cap)
{
	buf[0] = 0;
	if (!strncmp(addr, "unix:", 5))
		return;
	const char *p = addr, *end;
	if (*p == '[') {
		p++;
		end = strchr(p, ']');
	} else {
		end = strrchr(p, ':');
	}
	size_t n = end ? (size_t)(end - p) : strlen(p);
	if (n >= cap)
		n = cap - 1;
	memcpy(buf, p, n);
	buf[n] = 0;
}

/* Takes a dialed socket as the connection's stream (closing fd on
 * failure); with TLS, its handshake before `deadline` (ms). */
/* Presents the token on a new stream, before anything else is sent: one
 * RPC.Auth request (sequence number 0) and its reply, read here. */
static int present_token(dml_rpc_client *c, dml__stream *st, int64_t deadline)
{
	const char *name = rpcw_m_auth.name;
	size_t nl = strlen(name);
	rpcw_auth q = {{c->o.token, strlen(c->o.token), 0}};
	uint8_t buf[DML__FRAME_HDR + 32 + DML_RPC_MAX_TOKEN + 32];
	dml__writer w;
	memset(&w, 0, sizeof w);
	w.p = buf + DML__FRAME_HDR + nl;
	w.cap = sizeof buf - DML__FRAME_HDR - nl;
	w.ext_min = SIZE_MAX;
	int rc = dml__encode_w(&rpcw_auth_t, &q, &w);
	if (rc)
		return rc;
	dml__frame_header(buf, DML__KIND_REQUEST, 0, 0, nl, w.pos);
	memcpy(buf + DML__FRAME_HDR, name, nl);
	struct iovec iov = {buf, DML__FRAME_HDR + nl + w.pos};
	rc = dml__stream_write_all(st, &iov, 1, deadline);
	uint8_t r[DML__FRAME_HDR + DML_RPC_ERRMSG_MAX + 64];
	dml__frame fr;
	if (!rc)
		rc = dml__stream_read_all(st, r, DML__FRAME_HDR, deadline);
	if (!rc && (dml__frame_parse(r, DML__FRAME_HDR, sizeof r, &fr) ||
	            fr.kind != DML__KIND_REPLY || fr.seq != 0))
		rc = DML_EPROTO;
	if (!rc)
		rc = dml__stream_read_all(st, r + DML__FRAME_HDR, fr.total - DML__FRAME_HDR,
		                          deadline);
	memset(buf, 0, sizeof buf); /* the secret */
	if (rc)
		return dml__fail(rc, "%s: presenting the token: %s", c->addr,
		                 dml_strerror(rc));
	if (fr.status == DML__ST_OK)
		return 0;
	char msg[DML_RPC_ERRMSG_MAX];
	dml__escape(msg, sizeof msg, r + DML__FRAME_HDR, fr.name_len);
	if (fr.status == DML__ST_NOMETHOD)
		return dml__fail(DML_EAUTH, "%s takes no tokens", c->addr);
	return dml__fail(DML_EAUTH, "%s refused the token: %s", c->addr, msg);
}

static int c_open(dml_rpc_client *c, int fd, dml__stream **out, int64_t deadline)
{
	int rc = dml__stream_open(out, fd, 0);
	if (rc)
		return rc;
	if (c->o.tls) {
		char host[256];
		addr_host(c->addr, host, sizeof host);
		if ((rc = dml__stream_tls(out, c->o.tls, host, deadline))) {
			dml__stream_close(*out);
			return rc;
		}
	}
	int locked = !((*out)->flags & DML__STREAM_DUPLEX);
	if (locked && c->wake[0] < 0 && dml__sys_wake_new(c->wake))
		rc = DML_ESYS;
	if (!rc && locked && c->wwake[0] < 0 && dml__sys_wake_new(c->wwake))
		rc = DML_ESYS;
	if (!rc && c->o.token)
		rc = present_token(c, *out, deadline);
	/* a plain socket's reads block (bounded by SO_RCVTIMEO); writes pass
	 * MSG_DONTWAIT */
	if (!rc && !locked)
		rc = dml__set_blocking(fd, 1);
	if (rc) {
		dml__stream_close(*out);
		return rc;
	}
	return 0;
}

/* ---- large frames (reader role; takes mu briefly) ----------------- */

static void big_segment(big *b, uint8_t *dst, size_t need)
{
	b->dst = dst;
	b->need = need;
	b->got = 0;
}

/* Starts receiving a large frame whose header has been parsed. */
static void big_start(dml_rpc_client *c, const dml__frame *fr, int too_big)
{
	big *b = &c->bg;
	memset(b, 0, sizeof *b);
	b->active = 1;
	b->fr = *fr;
	b->left = fr->total - DML__FRAME_HDR;
	pthread_mutex_lock(&c->mu);
	dml_rpc_pending *k = fr->kind == DML__KIND_REPLY ? table_find(c, fr->seq) : NULL;
	if (k && too_big) {
		call_finish(c, k, DML_ETOOBIG);
		k = NULL;
	}
	if (k) {
		if (fr->status == DML__ST_OK && fr->name_len == 0 && k->rtype &&
		    dml__bulk_plan(k->rtype, k->reply, &b->field, &b->count_off,
		                   &b->esize) == 0 &&
		    b->count_off + 8 <= fr->payload_len)
			b->bulk = 1;
		size_t want = b->bulk ? b->count_off + 8 : b->left;
		if (dml__buf_grow(&k->payload, want + 1)) {
			call_finish(c, k, DML_ENOMEM);
			k = NULL;
		} else {
			k->in_use = 1;
			b->k = k;
			big_segment(b, k->payload.data, want);
		}
	}
	if (!k)
		big_segment(b, NULL, b->left);
	pthread_mutex_unlock(&c->mu);
}

/* Stops receiving into the current call (it fails with `err`, unless its
 * waiter gave up already) and discards the rest of the frame. */
static void big_drop(dml_rpc_client *c, int err)
{
	big *b = &c->bg;
	pthread_mutex_lock(&c->mu);
	b->k->in_use = 0;
	if (b->k->abandon)
		pthread_cond_signal(&b->k->cv);
	else
		call_finish(c, b->k, err);
	b->k = NULL;
	pthread_mutex_unlock(&c->mu);
	b->bulk = 0;
	big_segment(b, NULL, b->left);
}

/* Finishes the call of a completely received large frame. */
static void big_finish(dml_rpc_client *c)
{
	big *b = &c->bg;
	pthread_mutex_lock(&c->mu);
	dml_rpc_pending *k = b->k;
	b->active = 0;
	b->k = NULL;
	if (k) {
		k->in_use = 0;
		if (k->abandon) {
			pthread_cond_signal(&k->cv);
		} else if (!b->bulk || b->phase == 0) {
			finish_from_body(c, k, &b->fr, k->payload.data, 0);
		} else {
			dml__array_set_n(k->rtype, k->reply, b->field, b->n);
			size_t len = b->fr.payload_len - b->n * b->esize;
			int rc = dml__decode_h(k->rtype, k->reply, k->payload.data + b->shift,
			                       len, b->field);
			call_finish(c, k, rc);
		}
	}
	pthread_mutex_unlock(&c->mu);
}

/*
 * The current segment is complete: move to the next, or finish. In bulk
 * mode the payload is received as [prefix][array][rest]: the prefix (up to
 * the element count) into the call's buffer, the array into the caller's,
 * the rest after the prefix. The prefix is moved by `shift` bytes so that
 * the rest keeps its alignment modulo 8 (later arrays may be views).
 */
static void big_advance(dml_rpc_client *c)
{
	big *b = &c->bg;
	if (b->left == 0) {
		big_finish(c);
		return;
	}
	if (!b->k || !b->bulk) /* discarding, or one segment for everything */
		return;
	dml__buf *pl = &b->k->payload;
	size_t pre = b->count_off + 8;
	if (b->phase == 0) {
		uint64_t n = dml__get_u64(pl->data + b->count_off);
		void *data;
		size_t cap;
		dml__array_dest(b->k->rtype, b->k->reply, b->field, &data, &cap);
		pl->len = pre; /* keep the prefix when growing */
		uint8_t tag = pl->data[b->count_off - 1];
		if (tag != (uint8_t)b->k->rtype->fields[b->field].kind || n > cap ||
		    n > b->left / b->esize) {
			/* not what the plan expected: take it whole, decode says why */
			if (dml__buf_grow(pl, b->fr.payload_len + 1)) {
				big_drop(c, DML_ENOMEM);
				return;
			}
			b->bulk = 0;
			big_segment(b, pl->data + pre, b->left);
			return;
		}
		b->n = (size_t)n;
		size_t rest = b->left - b->n * b->esize;
		b->shift = (b->n * b->esize) % 8;
		if (dml__buf_grow(pl, b->shift + pre + rest + 1)) {
			big_drop(c, DML_ENOMEM);
			return;
		}
		memmove(pl->data + b->shift, pl->data, pre);
		b->phase = 1;
		big_segment(b, data, b->n * b->esize);
		if (b->need)
			return;
	}
	b->phase = 2;
	big_segment(b, pl->data + b->shift + pre, b->left);
}

/* Feeds bytes already read into the current large frame. */
static void big_feed(dml_rpc_client *c, const uint8_t *p, size_t n)
{
	big *b = &c->bg;
	while (n && b->active) {
		size_t take = b->need - b->got;
		if (take > n)
			take = n;
		if (b->dst && take)
			memcpy(b->dst + b->got, p, take);
		b->got += take;
		b->left -= take;
		p += take;
		n -= take;
		if (b->got == b->need)
			big_advance(c);
	}
}

/* One read for the current large frame: straight into its segment. */
static int big_read(dml_rpc_client *c)
{
	big *b = &c->bg;
	if (b->need == b->got) { /* empty segment */
		big_advance(c);
		return 0;
	}
	size_t want = b->need - b->got;
	uint8_t *dst = b->dst ? b->dst + b->got : c->in.data;
	if (!b->dst && want > c->in.cap)
		want = c->in.cap;
	ssize_t n = c_read(c, dst, want);
	if (n < 0)
		return (int)n;
	b->got += (size_t)n;
	b->left -= (size_t)n;
	if (b->got == b->need)
		big_advance(c);
	return 0;
}

/* ---- reading (reader role) ---------------------------------------- */

/* Handles complete small frames buffered in c->in; starts a large one. */
static int parse_buffered(dml_rpc_client *c)
{
	int locked = 0;
	while (!c->bg.active && c->in.len - c->rpos >= DML__FRAME_HDR) {
		const uint8_t *f = c->in.data + c->rpos;
		size_t have = c->in.len - c->rpos;
		dml__frame fr;
		int rc = dml__frame_parse(f, have, c->o.max_frame, &fr);
		if (!rc || rc == DML_ETOOBIG)
			rc = fr.kind == DML__KIND_REPLY ? rc : DML_EPROTO;
		if (rc && rc != DML_ETOOBIG) {
			if (locked)
				pthread_mutex_unlock(&c->mu);
			return rc;
		}
		if (rc == 0 && have >= fr.total) {
			if (!locked) { /* one lock for a run of small replies */
				pthread_mutex_lock(&c->mu);
				locked = 1;
			}
			dml_rpc_pending *k = table_find(c, fr.seq);
			if (k)
				finish_from_body(c, k, &fr, f + DML__FRAME_HDR, 1);
			c->rpos += fr.total;
			continue;
		}
		if (locked) {
			pthread_mutex_unlock(&c->mu);
			locked = 0;
		}
		if (rc == 0 && fr.total <= c->in.cap) {
			/* fits the buffer: compact and read on */
			if (c->rpos + fr.total > c->in.cap) {
				memmove(c->in.data, f, have);
				c->rpos = 0;
				c->in.len = have;
			}
			return 0;
		}
		/* large (or over the limit): receive it on its own */
		big_start(c, &fr, rc == DML_ETOOBIG);
		c->rpos += DML__FRAME_HDR;
		size_t body = c->in.len - c->rpos;
		if (body > c->bg.left)
			body = c->bg.left;
		big_feed(c, c->in.data + c->rpos, body);
		c->rpos += body;
	}
	if (locked)
		pthread_mutex_unlock(&c->mu);
	if (c->rpos == c->in.len)
		c->rpos = c->in.len = 0;
	else if (c->in.cap - c->in.len < DML__FRAME_HDR) {
		size_t have = c->in.len - c->rpos;
		memmove(c->in.data, c->in.data + c->rpos, have);
		c->rpos = 0;
		c->in.len = have;
	}
	return 0;
}

/* Lets go of a call whose waiter gave up (under mu). */
static void release_abandoned(dml_rpc_client *c)
{
	big *b = &c->bg;
	if (b->active && b->k && b->k->abandon) {
		b->k->in_use = 0;
		pthread_cond_signal(&b->k->cv);
		b->k = NULL;
		b->bulk = 0;
		big_segment(b, NULL, b->left);
	}
}

/* How long one blocking read may last before the reader looks at its
 * deadline and at waiters that gave up (see abandon()). */
#define READER_TICK_MS 50

/* One step of the reader: one blocking read (bounded by the deadline and the
 * tick), then dispatch. 0, DML_ETIMEDOUT, or a connection error. The socket
 * is blocking for reads, so a reply wakes the reader inside recv() directly:
 * no poll() per reply. Within a tick of the deadline, the reader waits in
 * poll() first instead: the receive timeout counts in the kernel's timer
 * ticks (4 ms at HZ 250) and would make the call that late, poll()'s in
 * high-resolution time. */
static int heartbeat(dml_rpc_client *c);
static void conn_setup(dml_rpc_client *c, int fd);

/* Whether the deadline (us) is more than `margin_ms` away (none is). */
static int far_from(int64_t deadline_us, int64_t margin_ms)
{
	return deadline_us < 0 || dml__now_us() + margin_ms * 1000 < deadline_us;
}

/* Whether a call's deadline (us) has passed. */
static int expired(int64_t deadline_us)
{
	return deadline_us >= 0 && dml__now_us() >= deadline_us;
}

static int read_step(dml_rpc_client *c, int64_t deadline_us)
{
	int hb = heartbeat(c);
	if (hb)
		return hb;
	int64_t left_us = far_from(deadline_us, READER_TICK_MS)
	                      ? (deadline_us < 0 ? -1 : INT64_MAX / 2) /* a tick at least */
	                      : dml__remaining_us(deadline_us);
	if (left_us == 0)
		return DML_ETIMEDOUT;
	int left = left_us < 0 ? -1 : (int)((left_us + 999) / 1000 > DML__MAX_WAIT_MS
	                                        ? DML__MAX_WAIT_MS : (left_us + 999) / 1000);
	if (!c->locked && left > 0 && left <= READER_TICK_MS) {
		int n = dml__wait_us(c->fd, POLLIN, -1, left_us);
		if (n == 0)
			return 0; /* the deadline (or a signal): the caller sees it */
		if (n < 0)
			return DML_ECONNLOST;
	}
	int tmo = (left < 0 || left > READER_TICK_MS) ? READER_TICK_MS : left;
	if (!c->locked && tmo != c->rcvtimeo) {
		dml__set_recv_timeout(c->fd, tmo);
		c->rcvtimeo = tmo;
	}
	int rc;
	if (c->bg.active) {
		rc = big_read(c);
	} else {
		if (c->o.spin_us && !c->locked) { /* busy-poll first, bounded (the
		                       deadline may pass by up to spin_us); poll()
		                       does not lock the socket against arriving data */
			int64_t until = dml__now_us() + c->o.spin_us;
			while (dml__wait_us(c->fd, POLLIN, -1, 0) == 0 && dml__now_us() < until)
				;
		}
		ssize_t r = c_read(c, c->in.data + c->in.len, c->in.cap - c->in.len);
		if (r > 0)
			c->in.len += (size_t)r;
		rc = r > 0 ? 0 : (int)r;
	}
	if (rc == DML_EAGAIN && c->locked) { /* non-blocking: wait a tick at most */
		int w = c_wait_input(c, left_us < 0 || left_us > READER_TICK_MS * 1000
		                            ? READER_TICK_MS * 1000 : left_us);
		if (w)
			rc = w;
	}
	if (atomic_load_explicit(&c->abandon_req, memory_order_relaxed)) {
		pthread_mutex_lock(&c->mu);
		atomic_store(&c->abandon_req, 0);
		release_abandoned(c);
		pthread_mutex_unlock(&c->mu);
	}
	if (rc == DML_EAGAIN) /* the tick passed */
		return 0;
	if (rc)
		return rc;
	c->rx_at = dml__now_ms(); /* bytes came: the server lives */
	return parse_buffered(c);
}

/* ---- writing ------------------------------------------------------ */

static int write_queue(dml_rpc_client *c, const dml__writer *w, size_t base,
                       int64_t deadline);

/* Writes queued requests. A write cut short leaves a partial frame on the
 * stream, so any failure here breaks the connection. */
static int flush(dml_rpc_client *c, int64_t deadline)
{
	if (!atomic_load_explicit(&c->queued, memory_order_acquire))
		return 0;
	pthread_mutex_lock(&c->wmu);
	int rc = c->out.len || c->out_held ? write_queue(c, NULL, 0, deadline) : 0;
	pthread_mutex_unlock(&c->wmu);
	if (rc) {
		pthread_mutex_lock(&c->mu);
		conn_break(c, rc == DML_ETIMEDOUT ? DML_ECONNLOST : rc);
		pthread_mutex_unlock(&c->mu);
	}
	return rc;
}

/* Encodes one request onto the queue (under wmu). Large arrays are only
 * referenced, in *w. Fails only before anything is queued. */
static int queue_request(dml_rpc_client *c, uint64_t seq, const dml_rpc_method *m,
                         size_t name_len, const void *args, dml__writer *w,
                         size_t *base)
{
	const dml_type *t = dml__type_or_empty(m->args);
	size_t hdr = DML__FRAME_HDR + name_len, guess = ENCODE_GUESS;
	int rc;
	for (;;) { /* one pass when the guess fits; a sized second one if not */
		if (c->opos && hdr + guess > c->out.cap - c->out.len) {
			/* an event loop's queue never drained: drop what was
			 * written rather than grow the buffer for it */
			memmove(c->out.data, c->out.data + c->opos, c->out.len - c->opos);
			c->out.len -= c->opos;
			c->opos = 0;
		}
		if ((rc = dml__buf_reserve(&c->out, hdr + guess)))
			return rc;
		memset(w, 0, sizeof *w);
		w->p = c->out.data + c->out.len + hdr;
		w->cap = guess;
		/* an event loop's requests are copied: nothing is written
		 * before dml_rpc_start returns */
		w->ext_min = atomic_load_explicit(&c->hosted, memory_order_relaxed) ? SIZE_MAX
		                                                                  : EXT_MIN;
		rc = dml__encode_w(t, args, w);
		if (rc != DML_ETOOBIG || w->pos <= guess)
			break;
		guess = w->pos;
	}
	if (rc)
		return rc;
	if (w->off > c->o.max_frame || hdr + w->off > c->o.max_frame)
		return DML_ETOOBIG;
	uint8_t *p = c->out.data + c->out.len;
	dml__frame_header(p, DML__KIND_REQUEST, seq, 0, name_len, w->off);
	memcpy(p + DML__FRAME_HDR, m->name, name_len);
	*base = c->out.len + hdr;
	c->out.len += hdr + w->pos;
	return 0;
}

/* Writes the queue, with the arrays referenced by w (may be NULL) gathered
 * in at their places; `base` is where w's inline bytes start (under wmu). */
static int write_queue(dml_rpc_client *c, const dml__writer *w, size_t base,
                       int64_t deadline)
{
	struct iovec iov[2 * DML__MAX_EXT + 1];
	int niov = 0;
	size_t from = c->opos; /* what an event loop's write left */
	for (int i = 0; w && i < w->next; i++) {
		size_t at = base + w->ext[i].at;
		iov[niov++] = (struct iovec){c->out.data + from, at - from};
		iov[niov++] = (struct iovec){(void *)(uintptr_t)w->ext[i].ptr, w->ext[i].len};
		from = at;
	}
	iov[niov++] = (struct iovec){c->out.data + from, c->out.len - from};
	int rc = c_write_all(c, iov, niov, deadline);
	c->out.len = c->opos = 0;
	c->out_held = 0;
	atomic_store_explicit(&c->queued, 0, memory_order_relaxed);
	return rc;
}

/* Writes what the stream takes of the queue now, without waiting (an event
 * loop's write; under wmu). 0 (the rest, if any, waits for the stream's
 * readiness), or a connection error. */
static int write_some(dml_rpc_client *c)
{
	struct iovec v = {c->out.data + c->opos, c->out.len - c->opos}, *iov = &v;
	int n = v.iov_len ? 1 : 0;
	if (c->locked)
		pthread_mutex_lock(&c->smu);
	int rc = dml__stream_write_step(c->st, &iov, &n);
	if (c->locked)
		pthread_mutex_unlock(&c->smu);
	if (rc && rc != DML_EAGAIN)
		return rc;
	c->opos = n ? c->out.len - iov->iov_len : c->out.len;
	c->out_held = rc == DML_EAGAIN && !n;
	if (c->opos == c->out.len) {
		c->out.len = c->opos = 0;
		if (!c->out_held)
			atomic_store_explicit(&c->queued, 0, memory_order_relaxed);
	}
	return 0;
}

/* ---- calls -------------------------------------------------------- */

static dml_rpc_pending *call_alloc(dml_rpc_client *c)
{
	dml_rpc_pending *k = c->freelist;
	if (k) {
		c->freelist = k->hnext;
		c->nfree--;
	} else {
		k = calloc(1, sizeof *k);
		if (!k)
			return NULL;
		pthread_condattr_t a;
		pthread_condattr_init(&a);
		pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
		pthread_cond_init(&k->cv, &a);
		pthread_condattr_destroy(&a);
		k->c = c;
	}
	k->hnext = k->wnext = k->wprev = NULL;
	k->all_prev = NULL;
	k->all_next = c->all;
	if (c->all)
		c->all->all_prev = k;
	c->all = k;
	k->state = CALL_PENDING;
	k->result = 0;
	k->in_use = k->abandon = 0;
	k->cb = NULL;
	k->cb_user = NULL;
	k->dnext = NULL;
	k->in_done = 0;
	k->errmsg[0] = 0;
	return k;
}

static void call_destroy(dml_rpc_pending *k)
{
	pthread_cond_destroy(&k->cv);
	dml__buf_free(&k->payload);
	free(k);
}

/* Returns a handle to the free list (under mu). */
static void call_release(dml_rpc_client *c, dml_rpc_pending *k)
{
	if (k->in_done)
		done_remove(c, k);
	if (k->all_prev)
		k->all_prev->all_next = k->all_next;
	else
		c->all = k->all_next;
	if (k->all_next)
		k->all_next->all_prev = k->all_prev;
	if (c->nfree >= FREE_KEEP || k->payload.cap > FREE_KEEP_PAYLOAD) {
		call_destroy(k);
		return;
	}
	k->hnext = c->freelist;
	c->freelist = k;
	c->nfree++;
}

/* A call's timeout, resolved: DML_DEFAULT is the client's call_timeout. */
static int call_timeout(dml_rpc_client *c, dml_duration timeout, dml_duration *t)
{
	return dml__call_timeout(timeout, c->o.call_timeout, t);
}

/* Checks a method's types once per client (a small cache of methods seen). */
static int method_check(dml_rpc_client *c, const dml_rpc_method *m)
{
	size_t slot = ((uintptr_t)m >> 4) % 16;
	if (atomic_load_explicit(&c->checked[slot], memory_order_relaxed) == m)
		return 0;
	if ((m->args && dml__type_valid(m->args)) || (m->reply && dml__type_valid(m->reply)))
		return DML_EINVAL;
	atomic_store_explicit(&c->checked[slot], m, memory_order_relaxed);
	return 0;
}

/* Under mu, with the connection lost: dials again if the backoff allows
 * (mu is released meanwhile, and other calls fail fast). 0 when connected
 * again, else the error the call gets. */
static int reconnect(dml_rpc_client *c, int64_t deadline)
{
	int64_t now = dml__now_ms();
	if (c->broken != DML_ECONNLOST || c->reconnecting || c->reader || now < c->next_dial)
		return c->broken;
	c->reconnecting = 1;
	pthread_mutex_unlock(&c->mu);
	int64_t dl = dml__deadline(c->o.dial_timeout);
	if (deadline >= 0 && (dl < 0 || deadline < dl))
		dl = deadline;
	int fd = -1;
	dml__stream *st = NULL;
	int rc = dml__dial(c->addr, dl, &fd);
	if (!rc) {
		conn_setup(c, fd);
		rc = c_open(c, fd, &st, dl);
	}
	pthread_mutex_lock(&c->wmu); /* order: wmu, then mu */
	pthread_mutex_lock(&c->mu);
	c->reconnecting = 0;
	if (rc) {
		c->next_dial = dml__now_ms() + dml__backoff_next(&c->backoff);
		pthread_mutex_unlock(&c->wmu);
		return DML_ECONNLOST;
	}
	/* nobody reads or writes the old socket: no reader (checked above,
	 * and none starts while broken), writers wait for wmu */
	dml__stream_close(c->st);
	c->st = st;
	c->fd = fd;
	c->locked = !(st->flags & DML__STREAM_DUPLEX);
	c->rcvtimeo = 0;
	c->out.len = c->opos = 0; /* may end in a partial frame of the old stream */
	c->out_held = 0;
	atomic_store(&c->queued, 0);
	c->in.len = c->rpos = 0;
	c->broken = 0;
	dml__backoff_reset(&c->backoff);
	c->next_dial = 0;
	pthread_mutex_unlock(&c->wmu);
	return 0;
}

/* The message of a connection-level error (lost, closed, another frame
 * version) into buf; 0 if rc is not one of them. */
static int conn_problem(const dml_rpc_client *c, int rc, char *buf, size_t cap)
{
	char addr[128];
	dml__escape(addr, sizeof addr, c->addr, strlen(c->addr));
	switch (rc) {
	case DML_ECONNLOST:
		if (c->hb_lost)
			snprintf(buf, cap, "connection to %s lost: nothing from the server "
			         "for %lld ms (heartbeat_timeout)", addr,
			         (long long)c->o.heartbeat_timeout);
		else
			snprintf(buf, cap, "connection to %s lost", addr);
		return 1;
	case DML_ECLOSED:
		snprintf(buf, cap, "client closed");
		return 1;
	case DML_EVERSION:
		snprintf(buf, cap, "%s speaks a frame version this client "
		         "(protocol %d) does not", addr, DML_RPC_PROTOCOL);
		return 1;
	default:
		return 0;
	}
}

/* The detail of a call that failed before it was started. */
static int start_failed(dml_rpc_client *c, int rc)
{
	char msg[DML_ERRMSG_MAX];
	if (conn_problem(c, rc, msg, sizeof msg))
		return dml__fail(rc, "%s", msg);
	if (rc == DML_EPROTO)
		return dml__fail(rc, "the server sent a malformed frame");
	return rc;
}

int dml_rpc_start(dml_rpc_pending **out, dml_rpc_client *c,
                  const dml_rpc_method *m, const void *args, void *reply,
                  dml_duration timeout)
{
	dml__detail_clear();
	if (!c || !m || !m->name || !out || (m->reply && m->reply->nfields && !reply))
		return DML_EINVAL;
	size_t name_len = strnlen(m->name, DML_RPC_MAX_METHOD + 1);
	if (name_len == 0 || name_len > DML_RPC_MAX_METHOD)
		return dml__fail(DML_EINVAL, "method names are 1 to %d bytes",
		                 DML_RPC_MAX_METHOD);
	dml_duration tmo;
	int rc = call_timeout(c, timeout, &tmo);
	if (rc || (rc = method_check(c, m)))
		return rc;
	if (tmo == 0)
		return dml__fail(DML_ETIMEDOUT, "timeout 0: nothing sent");
	int64_t deadline_us = dml__deadline_us(tmo); /* one clock read per call */
	int64_t deadline = deadline_us < 0 ? -1 : (deadline_us + 999) / 1000;
	pthread_mutex_lock(&c->mu);
	if (c->broken && (!c->o.reconnect || (rc = reconnect(c, deadline)))) {
		rc = rc ? rc : c->broken;
		pthread_mutex_unlock(&c->mu);
		return start_failed(c, rc);
	}
	if (c->inflight >= (size_t)c->o.max_in_flight) {
		pthread_mutex_unlock(&c->mu);
		return dml__fail(DML_EBUSY, "%d calls in flight (max_in_flight)",
		                 c->o.max_in_flight);
	}
	dml_rpc_pending *k = call_alloc(c);
	if (!k) {
		pthread_mutex_unlock(&c->mu);
		return DML_ENOMEM;
	}
	k->seq = c->next_seq++;
	k->rtype = m->reply;
	k->reply = reply;
	k->deadline = deadline;
	k->deadline_us = deadline_us;
	k->timeout = tmo;
	table_add(c, k);
	if (deadline_us >= 0 && deadline_us < c->next_expiry_us)
		c->next_expiry_us = deadline_us;
	pthread_mutex_unlock(&c->mu);

	dml__writer w;
	size_t base;
	int wrc = 0;
	pthread_mutex_lock(&c->wmu);
	rc = queue_request(c, k->seq, m, name_len, args, &w, &base);
	if (!rc && (w.next || c->out.len >= QUEUE_FLUSH) && !atomic_load(&c->hosted))
		wrc = write_queue(c, &w, base, k->deadline);
	else if (!rc)
		atomic_store_explicit(&c->queued, 1, memory_order_release);
	pthread_mutex_unlock(&c->wmu);

	if (rc || wrc) {
		pthread_mutex_lock(&c->mu);
		if (wrc) { /* the stream may hold a partial frame */
			conn_break(c, DML_ECONNLOST);
			rc = wrc;
		}
		if (k->state == CALL_PENDING)
			table_remove(c, k);
		call_release(c, k);
		pthread_mutex_unlock(&c->mu);
		if (rc == DML_ETOOBIG)
			return dml__fail(rc, "request larger than the frame limit (%zu bytes)",
			                 c->o.max_frame);
		return start_failed(c, rc);
	}
	*out = k;
	return 0;
}

int dml_rpc_flush(dml_rpc_client *c, dml_duration timeout)
{
	dml__detail_clear();
	if (!c)
		return DML_EINVAL;
	dml_duration tmo;
	int rc = call_timeout(c, timeout, &tmo);
	if (rc)
		return rc;
	if (tmo == 0)
		return atomic_load(&c->queued) ? dml__fail(DML_ETIMEDOUT,
		                                           "timeout 0: nothing written")
		                               : 0;
	return start_failed(c, flush(c, dml__deadline(tmo)));
}

static void waiter_add(dml_rpc_client *c, dml_rpc_pending *k)
{
	k->wprev = NULL;
	k->wnext = c->waiters;
	if (c->waiters)
		c->waiters->wprev = k;
	c->waiters = k;
}

static void waiter_remove(dml_rpc_client *c, dml_rpc_pending *k)
{
	if (k->wprev)
		k->wprev->wnext = k->wnext;
	else
		c->waiters = k->wnext;
	if (k->wnext)
		k->wnext->wprev = k->wprev;
	k->wnext = k->wprev = NULL;
}

static void cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu,
                            int64_t deadline_us)
{
	if (deadline_us < 0) {
		pthread_cond_wait(cv, mu);
		return;
	}
	struct timespec ts = {(time_t)(deadline_us / 1000000),
	                      (long)(deadline_us % 1000000) * 1000};
	pthread_cond_timedwait(cv, mu, &ts);
}

/* Gives a call up at its deadline (under mu). If the reader is receiving
 * into the call's buffers, waits until it has let go, so that nothing is
 * written into them after this returns. */
static int abandon(dml_rpc_client *c, dml_rpc_pending *k)
{
	while (k->in_use) {
		k->abandon = 1;
		if (!c->reader) {
			release_abandoned(c);
			break;
		}
		/* the reader lets go after its current read (one tick at most) */
		atomic_store(&c->abandon_req, 1);
		pthread_cond_wait(&k->cv, &c->mu);
	}
	if (k->state == CALL_PENDING)
		call_finish(c, k, DML_ETIMEDOUT);
	return k->result;
}

/* Gives the reader role back after a step that returned rc (under mu). */
static void reader_done(dml_rpc_client *c, int rc)
{
	c->reader = 0;
	/* a waiter may have given up after the read: let go now */
	atomic_store(&c->abandon_req, 0);
	release_abandoned(c);
	if (rc && rc != DML_ETIMEDOUT)
		conn_break(c, rc);
}

/* Waits for k under mu, reading for everyone when nobody else does. */
static int wait_locked(dml_rpc_client *c, dml_rpc_pending *k)
{
	while (k->state != CALL_DONE) {
		if (expired(k->deadline_us)) {
			abandon(c, k);
			break;
		}
		if (!c->reader) {
			if (c->broken) {
				fail_all(c, c->broken);
				continue;
			}
			c->reader = 1;
			pthread_mutex_unlock(&c->mu);
			int rc = read_step(c, k->deadline_us);
			pthread_mutex_lock(&c->mu);
			reader_done(c, rc);
			continue;
		}
		waiter_add(c, k);
		cond_wait_until(&k->cv, &c->mu, k->deadline_us);
		waiter_remove(c, k);
	}
	if (!c->reader && c->waiters)
		pthread_cond_signal(&c->waiters->cv);
	return k->result;
}

/* The message of a call that failed without one from the peer (under mu,
 * the call finished). */
static void describe(dml_rpc_client *c, dml_rpc_pending *k)
{
	if (!k->result || k->errmsg[0] ||
	    conn_problem(c, k->result, k->errmsg, sizeof k->errmsg))
		return;
	const char *what = NULL;
	switch (k->result) {
	case DML_ETIMEDOUT:
		snprintf(k->errmsg, sizeof k->errmsg, "no reply within %lld ms",
		         (long long)k->timeout);
		return;
	case DML_EPROTO: what = "malformed reply"; break;
	case DML_ETYPE: what = "a reply field of another kind than the method's type"; break;
	case DML_ETOOBIG: what = "reply larger than the frame limit or the reply buffer"; break;
	case DML_ENOMEM: what = "out of memory for the reply"; break;
	}
	if (what)
		snprintf(k->errmsg, sizeof k->errmsg, "%s", what);
}

int dml_rpc_pending_wait(dml_rpc_pending *k)
{
	dml__detail_clear();
	if (!k)
		return DML_EINVAL;
	dml_rpc_client *c = k->c;
	if (k->state != CALL_DONE) {
		if (k->deadline < 0 || dml__now_ms() < k->deadline)
			flush(c, k->deadline); /* an expired call must not break the rest */
		pthread_mutex_lock(&c->mu);
		wait_locked(c, k);
		describe(c, k);
		pthread_mutex_unlock(&c->mu);
	} else if (k->result && !k->errmsg[0]) { /* finished in an event loop */
		pthread_mutex_lock(&c->mu);
		describe(c, k);
		pthread_mutex_unlock(&c->mu);
	}
	if (k->result)
		dml__detail_set("%s", k->errmsg);
	return k->result;
}

const char *dml_rpc_pending_errmsg(const dml_rpc_pending *k)
{
	return k ? k->errmsg : "";
}

void dml_rpc_pending_free(dml_rpc_pending *k)
{
	if (!k)
		return;
	dml_rpc_client *c = k->c;
	pthread_mutex_lock(&c->mu);
	if (k->state == CALL_PENDING)
		abandon(c, k);
	if (!c->reader && c->waiters)
		pthread_cond_signal(&c->waiters->cv);
	call_release(c, k);
	pthread_mutex_unlock(&c->mu);
}

int dml_rpc_call(dml_rpc_client *c, const dml_rpc_method *m, const void *args,
                 void *reply, dml_duration timeout)
{
	dml__detail_clear();
	if (!c || !m)
		return DML_EINVAL;
	if (m->reply && reply && !dml__type_all_buffered(m->reply, reply))
		return dml__fail(DML_EINVAL, "dml_rpc_call: every string and array "
		                 "of the reply needs a buffer (data, cap)");
	dml_rpc_pending *k;
	int rc = dml_rpc_start(&k, c, m, args, reply, timeout);
	if (rc)
		return rc;
	rc = dml_rpc_pending_wait(k);
	if (rc == DML_EHANDLER || rc == DML_ENOMETHOD || rc == DML_ETOOBIG ||
	    rc == DML_EPROTO) { /* for the deprecated dml_rpc_client_errmsg */
		pthread_mutex_lock(&c->mu);
		memcpy(c->errmsg, k->errmsg, sizeof c->errmsg);
		pthread_mutex_unlock(&c->mu);
	}
	dml_rpc_pending_free(k);
	return rc;
}

int dml_rpc_has_method(dml_rpc_client *c, const char *name, dml_duration timeout)
{
	dml__detail_clear();
	if (!c || !name)
		return DML_EINVAL;
	const char *lib = dml_version();
	rpcw_hello q = {DML_RPC_PROTOCOL, {lib, strlen(lib), 0}, {name, strlen(name), 0}};
	rpcw_welcome w;
	memset(&w, 0, sizeof w);
	dml_rpc_pending *k;
	int rc = dml_rpc_start(&k, c, &rpcw_m_hello, &q, &w, timeout);
	if (rc)
		return rc;
	rc = dml_rpc_pending_wait(k);
	dml_rpc_pending_free(k);
	if (rc == DML_ENOMETHOD)
		return dml__fail(DML_EVERSION, "the server does not answer RPC.Hello "
		                 "(libdistml before 0.2, or another peer)");
	return rc ? rc : w.has ? 1 : 0;
}

/* ---- lifecycle ---------------------------------------------------- */

/* The options with defaults in place; DML_EINVAL names the one that is
 * wrong. */
static int client_opts(dml_rpc_client_opts *o)
{
	if (o->tls && dml__tls_role(o->tls) != DML_TLS_CLIENT)
		return dml__fail(DML_EINVAL, "opts.tls: a DML_TLS_CLIENT configuration");
	if (o->codec != DML_CODEC_BINARY)
		return dml__fail(DML_EINVAL, "codec %d unknown", (int)o->codec);
	if (dml__frame_limit(&o->max_frame))
		return DML_EINVAL;
	if (dml__opt_duration(&o->dial_timeout, DML_RPC_DEFAULT_DIAL_TIMEOUT) ||
	    dml__opt_duration(&o->call_timeout, DML_RPC_DEFAULT_CALL_TIMEOUT))
		return DML_EINVAL;
	if (o->backoff_min < 0 || o->backoff_max < 0)
		return dml__fail(DML_EINVAL, "backoff_min, backoff_max: 0 (default) "
		                 "or a positive number of ms");
	if (!o->backoff_min)
		o->backoff_min = DML_RPC_DEFAULT_BACKOFF_MIN;
	if (!o->backoff_max)
		o->backoff_max = DML_RPC_DEFAULT_BACKOFF_MAX;
	if (o->max_in_flight < 0 || o->spin_us < 0 || o->spin_us > DML_RPC_MAX_SPIN_US)
		return dml__fail(DML_EINVAL, "max_in_flight >= 0, spin_us 0 to %d",
		                 DML_RPC_MAX_SPIN_US);
	if (!o->max_in_flight)
		o->max_in_flight = DML_RPC_DEFAULT_MAX_IN_FLIGHT;
	if (o->heartbeat < 0 || o->heartbeat_timeout < 0)
		return dml__fail(DML_EINVAL, "heartbeat, heartbeat_timeout: 0 or a "
		                 "positive number of ms");
	if (o->heartbeat && !o->heartbeat_timeout)
		o->heartbeat_timeout = o->heartbeat > INT64_MAX / 8 ? INT64_MAX / 2
		                                                     : 4 * o->heartbeat;
	if (o->token && (strlen(o->token) < DML_RPC_MIN_TOKEN ||
	                 strlen(o->token) > DML_RPC_MAX_TOKEN))
		return dml__fail(DML_EINVAL, "token: %d to %d bytes", DML_RPC_MIN_TOKEN,
		                 DML_RPC_MAX_TOKEN);
	return dml__keepalive_opts(&o->keepalive, &o->keepalive_interval,
	                           &o->keepalive_count, &o->user_timeout);
}

/* A new connection's dead-peer options (TCP only) and heartbeat clock. */
static void conn_setup(dml_rpc_client *c, int fd)
{
	if (strncmp(c->addr, "unix:", 5) != 0)
		(void)dml__sys_keepalive(fd, c->o.keepalive, c->o.keepalive_interval,
		                         c->o.keepalive_count, c->o.user_timeout);
	c->rx_at = dml__now_ms();
	c->ping_at = 0;
	c->hb_lost = 0;
}

/* The reader's heartbeat (opts.heartbeat), before it waits: a ping when
 * nothing has come for `heartbeat` (one per heartbeat at most), and
 * DML_ECONNLOST when nothing has come for heartbeat_timeout. */
static int heartbeat(dml_rpc_client *c)
{
	if (!c->o.heartbeat)
		return 0;
	int64_t now = dml__now_ms(), quiet = now - c->rx_at;
	if (quiet > c->o.heartbeat_timeout) {
		c->hb_lost = 1;
		return DML_ECONNLOST;
	}
	if (quiet < c->o.heartbeat || now - c->ping_at < c->o.heartbeat)
		return 0;
	c->ping_at = now;
	dml__writer w;
	size_t base;
	pthread_mutex_lock(&c->wmu);
	int rc = queue_request(c, 0, &rpcw_m_ping, strlen(rpcw_m_ping.name), NULL, &w, &base);
	if (!rc && atomic_load(&c->hosted)) /* the loop writes it */
		atomic_store_explicit(&c->queued, 1, memory_order_release);
	else if (!rc)
		rc = write_queue(c, &w, base, dml__deadline(c->o.heartbeat));
	pthread_mutex_unlock(&c->wmu);
	/* nothing queued for want of memory: try at the next tick; a write
	 * that failed or was cut short breaks the stream */
	return rc == DML_ENOMEM && !c->out.len ? 0 : rc ? DML_ECONNLOST : 0;
}

int dml_rpc_dial_abi(dml_rpc_client **out, const char *addr,
                     const dml_rpc_client_opts *opts, int abi)
{
	dml__detail_clear();
	if (!out || !addr)
		return DML_EINVAL;
	dml_rpc_client_opts o;
	int rc = dml__abi_in(&o, sizeof o, opts, DML__L_RPC_CLIENT_OPTS, abi);
	if (rc)
		return rc;
	if ((rc = client_opts(&o)))
		return rc;
	if (strlen(addr) >= sizeof(((dml_rpc_client *)0)->addr))
		return dml__fail(DML_EADDR, "address longer than %zu bytes",
		                 sizeof(((dml_rpc_client *)0)->addr) - 1);
	dml_rpc_client *c = calloc(1, sizeof *c);
	if (!c)
		return DML_ENOMEM;
	c->o = o;
	if (o.token && !(c->token = strdup(o.token))) {
		free(c);
		return DML_ENOMEM;
	}
	c->o.token = c->token;
	c->next_seq = 1;
	strcpy(c->addr, addr);
	dml__backoff_init(&c->backoff, o.backoff_min, o.backoff_max);
	if (dml__buf_grow(&c->in, READ_BUF)) {
		free(c->token);
		free(c);
		return DML_ENOMEM;
	}
	c->wake[0] = c->wake[1] = c->wwake[0] = c->wwake[1] = -1;
	c->next_expiry_us = INT64_MAX;
	int64_t dl = dml__deadline(o.dial_timeout);
	rc = dml__dial(addr, dl, &c->fd);
	if (!rc) { /* else the detail names the addresses tried */
		conn_setup(c, c->fd);
		rc = c_open(c, c->fd, &c->st, dl);
	}
	if (rc) {
		if (c->wake[0] >= 0)
			dml__sys_wake_close(c->wake);
		if (c->wwake[0] >= 0)
			dml__sys_wake_close(c->wwake);
		dml__buf_free(&c->in);
		free(c->token);
		free(c);
		return rc;
	}
	c->locked = !(c->st->flags & DML__STREAM_DUPLEX);
	pthread_mutex_init(&c->smu, NULL);
	pthread_mutex_init(&c->mu, NULL);
	pthread_mutex_init(&c->wmu, NULL);
	*out = c;
	return 0;
}

void dml_rpc_close(dml_rpc_client *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	conn_break(c, DML_ECLOSED);
	pthread_mutex_unlock(&c->mu);
}

void dml_rpc_free(dml_rpc_client *c)
{
	if (!c)
		return;
	dml_rpc_close(c);
	while (c->all) {
		dml_rpc_pending *k = c->all;
		c->all = k->all_next;
		call_destroy(k);
	}
	while (c->freelist) {
		dml_rpc_pending *k = c->freelist;
		c->freelist = k->hnext;
		call_destroy(k);
	}
	dml__stream_close(c->st);
	if (c->wake[0] >= 0)
		dml__sys_wake_close(c->wake);
	if (c->wwake[0] >= 0)
		dml__sys_wake_close(c->wwake);
	pthread_mutex_destroy(&c->smu);
	pthread_mutex_destroy(&c->mu);
	pthread_mutex_destroy(&c->wmu);
	dml__buf_free(&c->in);
	dml__buf_free(&c->out);
	if (c->token) {
		memset(c->token, 0, strlen(c->token));
		free(c->token);
	}
	free(c);
}

/* ---- a host's event loop ------------------------------------------ */

/* What the stream needs to go on with the loop's reads and queued writes
 * (under mu), as poll() events. */
static short loop_events(dml_rpc_client *c)
{
	unsigned asked = DML__EV_IN;
	if (atomic_load_explicit(&c->queued, memory_order_acquire))
		asked |= DML__EV_OUT;
	if (c->locked)
		pthread_mutex_lock(&c->smu);
	unsigned w = dml__stream_wants(c->st, asked);
	if (c->locked)
		pthread_mutex_unlock(&c->smu);
	return dml__poll_events(w);
}

/* Writes what the stream takes now (an event loop's, so never waits). */
static int loop_write(dml_rpc_client *c)
{
	if (!atomic_load_explicit(&c->queued, memory_order_acquire))
		return 0;
	if (pthread_mutex_trylock(&c->wmu)) /* another thread writes: it finishes */
		return 0;
	int rc = write_some(c);
	pthread_mutex_unlock(&c->wmu);
	return rc;
}

/* Whether the stream has input to read without waiting. */
static int loop_readable(dml_rpc_client *c)
{
	if (c->locked) { /* non-blocking: a read says EAGAIN */
		pthread_mutex_lock(&c->smu);
		int held = dml__stream_pending(c->st) > 0;
		pthread_mutex_unlock(&c->smu);
		return held || dml__wait_us(c->fd, POLLIN, -1, 0) > 0;
	}
	return dml__wait_us(c->fd, POLLIN, -1, 0) > 0; /* blocking reads */
}

#define LOOP_READS 64 /* reads in one dml_rpc_client_poll at most */

/* The loop's step in the reader role: waits up to `wait_us` (-1: no limit)
 * for the stream, writes what it can, reads what has come. 0 or a
 * connection error. */
static int loop_step(dml_rpc_client *c, int64_t wait_us)
{
	int rc = loop_write(c);
	if (rc)
		return rc;
	if (c->reader_hb && (rc = heartbeat(c)))
		return rc;
	if (wait_us != 0 && !loop_readable(c)) {
		pthread_mutex_lock(&c->mu);
		short ev = loop_events(c);
		pthread_mutex_unlock(&c->mu);
		if (dml__wait_us(c->fd, ev, -1, wait_us) < 0)
			return DML_ESYS;
		if ((rc = loop_write(c)))
			return rc;
	}
	for (int i = 0; i < LOOP_READS; i++) {
		/* a large reply's empty segment goes on without input */
		if (!(c->bg.active && c->bg.need == c->bg.got) && !loop_readable(c))
			break;
		if (c->bg.active) {
			rc = big_read(c);
		} else {
			ssize_t r = c_read(c, c->in.data + c->in.len, c->in.cap - c->in.len);
			if (r > 0)
				c->in.len += (size_t)r;
			rc = r > 0 ? 0 : (int)r;
		}
		if (rc == DML_EAGAIN)
			break;
		if (rc)
			return rc;
		c->rx_at = dml__now_ms();
		if ((rc = parse_buffered(c)))
			return rc;
	}
	return loop_write(c); /* a read may have let a held write go on */
}

/* Fails the calls whose deadline passed (under mu, nobody in the reader
 * role), and notes when the next one passes. */
static void loop_expire(dml_rpc_client *c)
{
	int64_t now = dml__now_us();
	if (now < c->next_expiry_us)
		return;
	int64_t next = INT64_MAX;
	for (dml_rpc_pending *k = c->all; k; k = k->all_next) {
		if (k->state != CALL_PENDING || k->deadline_us < 0)
			continue;
		if (k->deadline_us > now) {
			if (k->deadline_us < next)
				next = k->deadline_us;
			continue;
		}
		if (k->in_use) { /* a large reply was coming into it */
			k->abandon = 1;
			release_abandoned(c);
		}
		call_finish(c, k, DML_ETIMEDOUT);
	}
	c->next_expiry_us = next;
}

/* When the loop's next step is due (us; INT64_MAX: nothing is timing;
 * under mu): the earliest call deadline, a heartbeat, callbacks to run or
 * calls a lost connection has yet to fail (now). */
static int64_t loop_due_us(const dml_rpc_client *c, int64_t now)
{
	int64_t due = c->next_expiry_us;
	if (c->o.heartbeat && c->inflight && !c->broken) {
		int64_t hb = (c->rx_at + c->o.heartbeat) * 1000;
		due = hb < due ? hb : due;
	}
	if (c->done_head || (c->broken && c->inflight))
		due = now;
	return due;
}

/* Runs the callbacks due (under mu, released around each). */
static void loop_callbacks(dml_rpc_client *c)
{
	c->in_callbacks = 1;
	while (c->done_head) {
		dml_rpc_pending *k = c->done_head;
		done_remove(c, k);
		describe(c, k);
		dml_rpc_done_fn fn = k->cb;
		void *user = k->cb_user;
		int result = k->result;
		pthread_mutex_unlock(&c->mu);
		fn(k, result, user); /* may free k, or start calls */
		pthread_mutex_lock(&c->mu);
	}
	c->in_callbacks = 0;
}

int dml_rpc_client_poll(dml_rpc_client *c, dml_duration timeout)
{
	dml__detail_clear();
	if (!c)
		return DML_EINVAL;
	if (timeout < 0 && timeout != DML_INFINITE)
		return dml__fail(DML_EINVAL, "poll: timeout 0, DML_INFINITE or a "
		                 "positive number of ms");
	atomic_store(&c->hosted, 1);
	pthread_mutex_lock(&c->mu);
	if (c->in_callbacks) {
		pthread_mutex_unlock(&c->mu);
		return dml__fail(DML_EBUSY, "dml_rpc_client_poll called from a callback");
	}
	uint64_t before = c->finished;
	if (!c->broken && !c->reader) {
		/* wait no longer than the next deadline, or a heartbeat's */
		int64_t wait_us = timeout == DML_INFINITE ? -1 : (int64_t)timeout * 1000;
		int64_t now = dml__now_us(), due = loop_due_us(c, now);
		if (due != INT64_MAX && (wait_us < 0 || due - now < wait_us))
			wait_us = due > now ? due - now : 0;
		c->reader = 1;
		c->reader_hb = c->inflight > 0;
		pthread_mutex_unlock(&c->mu);
		int rc = loop_step(c, wait_us);
		pthread_mutex_lock(&c->mu);
		reader_done(c, rc);
		if (c->waiters) /* a thread waits in dml_rpc_pending_wait: it reads */
			pthread_cond_signal(&c->waiters->cv);
	} else if (c->broken && !c->reader) {
		fail_all(c, c->broken);
	}
	if (!c->reader)
		loop_expire(c);
	int finished = (int)(c->finished - before);
	int broken = c->broken;
	loop_callbacks(c);
	pthread_mutex_unlock(&c->mu);
	if (finished)
		return finished;
	if (broken)
		return start_failed(c, broken);
	return 0;
}

int dml_rpc_client_pollfds(dml_rpc_client *c, struct pollfd *fds, size_t cap)
{
	dml__detail_clear();
	if (!c || !fds || !cap)
		return DML_EINVAL;
	atomic_store(&c->hosted, 1);
	pthread_mutex_lock(&c->mu);
	if (c->broken) {
		pthread_mutex_unlock(&c->mu);
		return 0;
	}
	fds[0] = (struct pollfd){c->fd, loop_events(c), 0};
	pthread_mutex_unlock(&c->mu);
	return 1;
}

int dml_rpc_client_next_timeout(dml_rpc_client *c, dml_duration *ms)
{
	dml__detail_clear();
	if (!c || !ms)
		return DML_EINVAL;
	pthread_mutex_lock(&c->mu);
	int64_t now = dml__now_us(), due = loop_due_us(c, now);
	pthread_mutex_unlock(&c->mu);
	if (due == INT64_MAX)
		*ms = DML_INFINITE;
	else
		*ms = due <= now ? 0 : (dml_duration)((due - now + 999) / 1000);
	return 0;
}

int dml_rpc_pending_done(const dml_rpc_pending *k)
{
	dml__detail_clear();
	if (!k)
		return DML_EINVAL;
	return atomic_load_explicit(&k->state, memory_order_acquire) == CALL_DONE;
}

int dml_rpc_pending_on_done(dml_rpc_pending *k, dml_rpc_done_fn fn, void *user)
{
	dml__detail_clear();
	if (!k)
		return DML_EINVAL;
	dml_rpc_client *c = k->c;
	pthread_mutex_lock(&c->mu);
	if (k->in_done && !fn)
		done_remove(c, k);
	k->cb = fn;
	k->cb_user = user;
	if (fn && k->state == CALL_DONE && !k->in_done)
		done_push(c, k); /* finished already: the next poll runs it */
	pthread_mutex_unlock(&c->mu);
	return 0;
}

/* ---- deprecated names (0.2; docs/api.md) -------------------------- */

int dml_rpc_go(dml_rpc_client *c, const dml_rpc_method *m, const void *args,
               void *reply, dml_duration timeout, dml_rpc_pending **out)
{
	return dml_rpc_start(out, c, m, args, reply, timeout);
}

int dml_rpc_wait(dml_rpc_pending *call) { return dml_rpc_pending_wait(call); }

void dml_rpc_client_errmsg(dml_rpc_client *c, char *buf, size_t cap)
{
	if (!c || !buf || !cap)
		return;
	pthread_mutex_lock(&c->mu);
	dml__set_msg(buf, cap, "%s", c->errmsg);
	pthread_mutex_unlock(&c->mu);
}

void dml_rpc_client_close(dml_rpc_client *c) { dml_rpc_close(c); }

void dml_rpc_client_free(dml_rpc_client *c) { dml_rpc_free(c); }

size_t dml__rpc_client_max_frame(const dml_rpc_client *c)
{
	return c->o.max_frame;
}
