/*
 * ps_serve.c - a local store's methods on an RPC server: pull, push (with
 * exactly-once deduplication), assign, info and clocks (deferred replies,
 * so waiting workers hold no server thread).
 */
#include "ps.h"
#include "ps_wire.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- exactly once ------------------------------------------------- */

/*
 * Per client id: the highest sequence number applied and a 64-bit window
 * of the ones below it (as IPsec's anti-replay window). A remote handle
 * numbers its pushes in the order it sends them on its connection, so a
 * number below the window arrived earlier and was handled then: it is a
 * late retry, answered without applying it again.
 * The table holds DEDUP_CAP clients. A client is forgotten only after
 * DEDUP_TTL_MS without pushes (far beyond any retry); when the table is
 * full of active clients, pushes from new ones are refused.
 */
#define DEDUP_CAP 4096
#define DEDUP_TTL_MS (10 * 60 * 1000)

typedef struct dd_ent {
	uint64_t client; /* 0 = empty */
	uint64_t max, bits;
	uint64_t used; /* ms, monotonic */
} dd_ent;

struct dml__ps_dedup {
	pthread_mutex_t mu;
	size_t max_frame; /* the server's, for the replies' size */
	dd_ent e[DEDUP_CAP * 2]; /* open addressing, at most half full */
	dd_ent keep[DEDUP_CAP];  /* scratch for dd_evict */
	size_t n;
};

enum { DD_NEW = 0, DD_DUP = 1, DD_FULL = 2 };

static size_t dd_hash(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return (size_t)(x % (DEDUP_CAP * 2));
}

static dd_ent *dd_slot(dml__ps_dedup *d, uint64_t client)
{
	size_t i = dd_hash(client);
	while (d->e[i].client && d->e[i].client != client)
		i = (i + 1) % (DEDUP_CAP * 2);
	return &d->e[i];
}

/* Forgets the clients idle for longer than DEDUP_TTL_MS. */
static void dd_evict(dml__ps_dedup *d, uint64_t now)
{
	dd_ent *keep = d->keep; /* d->n <= DEDUP_CAP entries */
	size_t k = 0;
	for (size_t i = 0; i < DEDUP_CAP * 2; i++)
		if (d->e[i].client && now - d->e[i].used < DEDUP_TTL_MS)
			keep[k++] = d->e[i];
	memset(d->e, 0, sizeof d->e);
	d->n = 0;
	for (size_t i = 0; i < k; i++) {
		*dd_slot(d, keep[i].client) = keep[i];
		d->n++;
	}
}

static int dd_check(dml__ps_dedup *d, uint64_t client, uint64_t seq)
{
	if (!client) /* no id: the client asked for at-least-once */
		return DD_NEW;
	uint64_t now = (uint64_t)dml__now_ms();
	pthread_mutex_lock(&d->mu);
	dd_ent *e = dd_slot(d, client);
	if (!e->client) {
		if (d->n >= DEDUP_CAP) {
			dd_evict(d, now);
			e = dd_slot(d, client);
		}
		if (d->n >= DEDUP_CAP) {
			pthread_mutex_unlock(&d->mu);
			return DD_FULL;
		}
		e->client = client;
		e->max = 0;
		e->bits = 0;
		d->n++;
	}
	e->used = now;
	int r = DD_NEW;
	if (seq > e->max) {
		uint64_t shift = seq - e->max;
		e->bits = shift >= PSW_WINDOW ? 0 : e->bits << shift;
		e->bits |= 1;
		e->max = seq;
	} else if (e->max - seq >= PSW_WINDOW) {
		r = DD_DUP; /* sent before the window: a late retry */
	} else {
		uint64_t bit = (uint64_t)1 << (e->max - seq);
		if (e->bits & bit)
			r = DD_DUP;
		else
			e->bits |= bit;
	}
	pthread_mutex_unlock(&d->mu);
	return r;
}

/* Forgets that seq was seen (its push was refused: a resend of it must
 * be applied, not taken for a duplicate). */
static void dd_undo(dml__ps_dedup *d, uint64_t client, uint64_t seq)
{
	if (!client)
		return;
	pthread_mutex_lock(&d->mu);
	dd_ent *e = dd_slot(d, client);
	if (e->client && seq <= e->max && e->max - seq < PSW_WINDOW)
		e->bits &= ~((uint64_t)1 << (e->max - seq));
	pthread_mutex_unlock(&d->mu);
}

static dml__ps_dedup *dd_new(void)
{
	dml__ps_dedup *d = calloc(1, sizeof *d);
	if (d)
		pthread_mutex_init(&d->mu, NULL);
	return d;
}

/* The table on disk: a count, then per client its id, max, bits, and
 * how long ago it last pushed (ms), all u64 little-endian. */
#define DD_REC 32

int dml__ps_dedup_export(dml_ps *ps, uint8_t **out, size_t *len)
{
	*out = NULL;
	*len = 0;
	dml__ps_dedup *d = ps->dedup;
	if (!d)
		return 0;
	uint8_t *p = malloc(8 + (size_t)DEDUP_CAP * DD_REC);
	if (!p)
		return DML_ENOMEM;
	uint64_t now = (uint64_t)dml__now_ms(), n = 0;
	pthread_mutex_lock(&d->mu);
	for (size_t i = 0; i < DEDUP_CAP * 2; i++) {
		const dd_ent *e = &d->e[i];
		if (!e->client)
			continue;
		uint8_t *q = p + 8 + n * DD_REC;
		dml__put_u64(q, e->client);
		dml__put_u64(q + 8, e->max);
		dml__put_u64(q + 16, e->bits);
		dml__put_u64(q + 24, now - e->used);
		n++;
	}
	pthread_mutex_unlock(&d->mu);
	dml__put_u64(p, n);
	*out = p;
	*len = 8 + n * DD_REC;
	return 0;
}

int dml__ps_dedup_valid(const uint8_t *p, size_t len)
{
	if (len < 8)
		return DML_EFORMAT;
	uint64_t n = dml__get_u64(p);
	if (n > DEDUP_CAP || len != 8 + n * DD_REC)
		return DML_EFORMAT;
	for (uint64_t k = 0; k < n; k++)
		if (!dml__get_u64(p + 8 + k * DD_REC))
			return DML_EFORMAT;
	return 0;
}

int dml__ps_dedup_import(dml_ps *ps, const uint8_t *p, size_t len)
{
	int rc = dml__ps_dedup_valid(p, len);
	if (rc)
		return rc;
	if (!ps->dedup && !(ps->dedup = dd_new()))
		return DML_ENOMEM;
	dml__ps_dedup *d = ps->dedup;
	uint64_t n = dml__get_u64(p), now = (uint64_t)dml__now_ms();
	pthread_mutex_lock(&d->mu);
	memset(d->e, 0, sizeof d->e);
	d->n = 0;
	for (uint64_t k = 0; k < n; k++) {
		const uint8_t *q = p + 8 + k * DD_REC;
		uint64_t client = dml__get_u64(q), age = dml__get_u64(q + 24);
		dd_ent *e = dd_slot(d, client);
		if (e->client)
			continue; /* a repeated id: keep the first */
		e->client = client;
		e->max = dml__get_u64(q + 8);
		e->bits = dml__get_u64(q + 16);
		e->used = age < now ? now - age : 0;
		d->n++;
	}
	pthread_mutex_unlock(&d->mu);
	return 0;
}

void dml__ps_serve_free(dml_ps *ps)
{
	if (ps->dedup) {
		pthread_mutex_destroy(&ps->dedup->mu);
		free(ps->dedup);
		ps->dedup = NULL;
	}
}

/* ---- handlers ----------------------------------------------------- */

/* A refusal the client gets as a code of its own (psw_status). */
static int refuse(psw_status *st, int code, const char *fmt, ...) DML_PRINTF(3, 4);
static int refuse(psw_status *st, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(st->buf, sizeof st->buf, fmt, ap);
	va_end(ap);
	st->code = code;
	st->msg = (dml_str){st->buf, strlen(st->buf), 0};
	return 0;
}

/* The first non-finite value of a peer's array, or -1. */
static long long bad_value(const float *v, size_t n)
{
	size_t at;
	return dml__all_finite(v, n, &at) ? -1 : (long long)at;
}

static int h_describe(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)a;
	dml_ps *ps = u;
	psw_desc *rep = r;
	rep->kind = ps->kv ? PSW_KIND_KEYED : PSW_KIND_DENSE;
	rep->dim = ps->dim;
	rep->width = ps->width;
	rep->rows = ps->kv ? dml__kv_rows(ps) : 0;
	rep->max_rows = 0;
	rep->optim = ps->optim.kind;
	rep->workers = ps->workers;
	rep->staleness = ps->staleness;
	rep->updates = atomic_load(&ps->updates);
	rep->max_frame = ps->dedup->max_frame;
	return 0;
}

static int h_info(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)a;
	dml_ps *ps = u;
	psw_info *rep = r;
	rep->dim = ps->dim;
	rep->optim = ps->optim.kind;
	rep->workers = ps->workers;
	rep->staleness = ps->staleness;
	rep->updates = atomic_load(&ps->updates);
	return 0;
}

/* The reply is encoded straight from the live vector while the stripes of
 * the range are held (one copy, and the range is seen whole); a deferred
 * reply lets the handler encode before it returns. */
static int h_pull(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)r;
	dml_ps *ps = u;
	const psw_range *q = a;
	if (ps->kv)
		return dml_rpc_ctx_errorf(ctx, "PS.Pull: a keyed store (PS.PullRows, PS.PushRows)");
	if (q->off > ps->dim || q->n > ps->dim - q->off)
		return dml_rpc_ctx_errorf(ctx, "PS.Pull: range %llu+%llu outside dimension %zu",
		                      (unsigned long long)q->off,
		                      (unsigned long long)q->n, ps->dim);
	dml_rpc_deferred *d;
	int rc = dml_rpc_deferred_new(&d, ctx);
	if (rc)
		return rc;
	size_t k0, k1;
	dml__ps_lock(ps, q->off, q->n, &k0, &k1);
	psw_vec rep = {{ps->w + q->off, q->n, 0}};
	dml_rpc_deferred_reply(d, 0, &rep, NULL);
	dml__ps_unlock(ps, k0, k1);
	return 0;
}

static int h_push(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)r;
	dml_ps *ps = u;
	const psw_push *q = a;
	if (ps->kv)
		return dml_rpc_ctx_errorf(ctx, "PS.Push: a keyed store (PS.PullRows, PS.PushRows)");
	if (q->v.n != ps->dim)
		return dml_rpc_ctx_errorf(ctx, "PS.Push: %zu values for dimension %zu",
		                      q->v.n, ps->dim);
	if (q->op != PSW_OP_UPDATE && q->op != PSW_OP_PUSH)
		return dml_rpc_ctx_errorf(ctx, "PS.Push: unknown op %d", (int)q->op);
	long long bad = bad_value(q->v.data, q->v.n);
	if (bad >= 0)
		return dml_rpc_ctx_errorf(ctx, "PS.Push: value %lld is not finite; "
		                          "nothing changed", bad);
	switch (dd_check(ps->dedup, q->client, q->seq)) {
	case DD_DUP:
		return 0;
	case DD_FULL:
		return dml_rpc_ctx_errorf(ctx, "PS.Push: too many active clients");
	}
	dml__ps_apply_dense(ps, q->op, q->v.data);
	return 0;
}

static int h_spush(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)r;
	dml_ps *ps = u;
	const psw_spush *q = a;
	if (ps->kv)
		return dml_rpc_ctx_errorf(ctx, "PS.PushSparse: a keyed store (PS.PullRows, PS.PushRows)");
	if (q->idx.n != q->v.n)
		return dml_rpc_ctx_errorf(ctx, "PS.PushSparse: %zu indices, %zu values",
		                      q->idx.n, q->v.n);
	if (q->op != PSW_OP_UPDATE && q->op != PSW_OP_PUSH)
		return dml_rpc_ctx_errorf(ctx, "PS.PushSparse: unknown op %d", (int)q->op);
	for (size_t i = 0; i < q->idx.n; i++)
		if (q->idx.data[i] >= ps->dim)
			return dml_rpc_ctx_errorf(ctx, "PS.PushSparse: index %u outside dimension %zu",
			                      (unsigned)q->idx.data[i], ps->dim);
	long long bad = bad_value(q->v.data, q->v.n);
	if (bad >= 0)
		return dml_rpc_ctx_errorf(ctx, "PS.PushSparse: value %lld is not "
		                          "finite; nothing changed", bad);
	switch (dd_check(ps->dedup, q->client, q->seq)) {
	case DD_DUP:
		return 0;
	case DD_FULL:
		return dml_rpc_ctx_errorf(ctx, "PS.PushSparse: too many active clients");
	}
	dml__ps_apply_sparse(ps, q->op, q->idx.data, q->v.data, q->v.n);
	return 0;
}

static int h_assign(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)r;
	dml_ps *ps = u;
	const psw_vec *q = a;
	if (q->v.n != ps->dim)
		return dml_rpc_ctx_errorf(ctx, "PS.Assign: %zu values for dimension %zu",
		                      q->v.n, ps->dim);
	return dml_ps_assign(ps, q->v.data);
}

/* The op of a frame of a split push: its first frame begins the step. */
static int frame_op(int32_t op, int32_t start)
{
	return op == PSW_OP_PUSH && !start ? DML__PS_STEP_MORE : op;
}

static int h_push_range(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	dml_ps *ps = u;
	const psw_xpush *q = a;
	psw_status *st = r;
	if (ps->kv)
		return refuse(st, DML_EINVAL, "PS.PushRange: a keyed store");
	if (q->op < PSW_OP_UPDATE || q->op > PSW_OP_ASSIGN)
		return refuse(st, DML_EINVAL, "PS.PushRange: unknown op %d", (int)q->op);
	if (q->off > ps->dim || q->v.n > ps->dim - q->off)
		return refuse(st, DML_EINVAL, "PS.PushRange: range %llu + %zu outside "
		              "dimension %zu", (unsigned long long)q->off, q->v.n,
		              ps->dim);
	long long bad = bad_value(q->v.data, q->v.n);
	if (bad >= 0)
		return refuse(st, DML_ENONFINITE, "PS.PushRange: value %lld of the "
		              "frame at %llu is not finite; this frame changed nothing",
		              bad, (unsigned long long)q->off);
	switch (dd_check(ps->dedup, q->client, q->seq)) {
	case DD_DUP:
		return 0;
	case DD_FULL:
		return refuse(st, DML_EBUSY, "PS.PushRange: too many active clients");
	}
	dml__ps_apply_range(ps, frame_op(q->op, q->start), (size_t)q->off,
	                    q->v.data, q->v.n);
	return 0;
}

static int h_pull_rows(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)r;
	dml_ps *ps = u;
	const psw_keys *q = a;
	if (!ps->kv)
		return dml_rpc_ctx_errorf(ctx, "PS.PullRows: a dense store");
	size_t n = q->keys.n, w = ps->width;
	/* the reply must fit in a frame: what a peer asks for is a claim */
	if (n > (ps->dedup->max_frame - PSW_FRAME_SLACK) / sizeof(float) / w)
		return dml_rpc_ctx_errorf(ctx, "PS.PullRows: %zu rows of %zu floats "
		                          "exceed the frame limit", n, w);
	float *out = malloc((n ? n : 1) * w * sizeof(float));
	if (!out)
		return DML_ENOMEM;
	dml_rpc_deferred *d;
	int rc = dml_rpc_deferred_new(&d, ctx);
	if (rc) {
		free(out);
		return rc;
	}
	ps->ops->pull_rows(ps, (const uint64_t *)q->keys.data, n, out);
	psw_vec rep = {{out, n * w, 0}};
	dml_rpc_deferred_reply(d, 0, &rep, NULL);
	free(out);
	return 0;
}

static int h_push_rows(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	dml_ps *ps = u;
	const psw_rpush *q = a;
	psw_status *st = r;
	if (!ps->kv)
		return refuse(st, DML_EINVAL, "PS.PushRows: a dense store");
	if (q->op < PSW_OP_UPDATE || q->op > PSW_OP_ASSIGN)
		return refuse(st, DML_EINVAL, "PS.PushRows: unknown op %d", (int)q->op);
	if (q->keys.n > SIZE_MAX / ps->width || q->v.n != q->keys.n * ps->width)
		return refuse(st, DML_EINVAL, "PS.PushRows: %zu values for %zu rows "
		              "of %zu", q->v.n, q->keys.n, ps->width);
	long long bad = bad_value(q->v.data, q->v.n);
	if (bad >= 0)
		return refuse(st, DML_ENONFINITE, "PS.PushRows: value %lld is not "
		              "finite; nothing changed", bad);
	switch (dd_check(ps->dedup, q->client, q->seq)) {
	case DD_DUP:
		return 0;
	case DD_FULL:
		return refuse(st, DML_EBUSY, "PS.PushRows: too many active clients");
	}
	int rc = ps->ops->apply_rows(ps, frame_op(q->op, q->start),
	                             (const uint64_t *)q->keys.data, q->keys.n,
	                             q->v.data);
	if (rc) {
		dd_undo(ps->dedup, q->client, q->seq);
		return refuse(st, rc, "PS.PushRows: %s", dml_error_detail()[0]
		              ? dml_error_detail() : dml_strerror(rc));
	}
	return 0;
}

static void clock_wake(void *arg, int err, const dml_ps_clock_info *info)
{
	psw_clock rep = {0, 0, 0};
	if (info)
		rep = (psw_clock){info->clock, info->min, info->waited};
	dml_rpc_deferred_reply(arg, err, &rep, err ? "PS.Clock: store closed" : NULL);
}

static int h_clock(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)r;
	dml_ps *ps = u;
	const psw_worker *q = a;
	if (!ps->workers || q->worker < 0 || q->worker >= ps->workers)
		return dml_rpc_ctx_errorf(ctx, "PS.Clock: no worker %d (store has %d)",
		                      (int)q->worker, ps->workers);
	dml_rpc_deferred *d;
	int rc = dml_rpc_deferred_new(&d, ctx);
	if (rc)
		return rc;
	dml_ps_clock_info info;
	rc = dml__ps_clock_async(ps, q->worker, &info, clock_wake, d);
	if (rc == 1) {
		clock_wake(d, 0, &info);
	} else if (rc < 0) {
		dml_rpc_deferred_reply(d, rc, NULL, "PS.Clock failed");
	}
	return 0;
}

/* A connection closed: the workers parked in clock calls on it have gone
 * (their host died, their link was cut, keepalive or a heartbeat said so):
 * drop them from the clocks, as worker_timeout drops a silent one, and
 * end their waits (the replies, owed on a closed connection, are
 * refused). */
typedef struct gone_conn {
	dml_rpc_server *s;
	uint64_t conn;
} gone_conn;

static int on_conn(void *arg, void *u)
{
	const gone_conn *g = u;
	dml_rpc_server *s;
	uint64_t conn;
	dml__rpc_deferred_of(arg, &s, &conn);
	return s == g->s && conn == g->conn;
}

static void conn_closed(void *user, dml_rpc_server *s, uint64_t conn)
{
	gone_conn g = {s, conn};
	dml__ps_drop_waiters(user, on_conn, &g);
}

static int h_clock_get(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	dml_ps *ps = u;
	const psw_worker *q = a;
	psw_clock *rep = r;
	rep->waited = 0;
	int rc = dml_ps_clock_get(ps, q->worker, &rep->clock, &rep->min);
	if (rc)
		return dml_rpc_ctx_errorf(ctx, "PS.ClockGet: no worker %d (store has %d)",
		                      (int)q->worker, ps->workers);
	return 0;
}

static void tick(void *arg) { dml__ps_check_workers(arg); }

int dml_ps_serve(dml_ps *ps, dml_rpc_server *server)
{
	dml__detail_clear();
	if (!ps || !server)
		return DML_EINVAL;
	if (ps->remote)
		return dml__fail(DML_EINVAL, "a remote store cannot be served");
	if (!ps->dedup && !(ps->dedup = dd_new()))
		return DML_ENOMEM;
	ps->dedup->max_frame = dml__rpc_server_max_frame(server);
	static const struct {
		const dml_rpc_method *m;
		dml_rpc_handler h;
	} tab[] = {{&psw_m_info, h_info},     {&psw_m_pull, h_pull},
	           {&psw_m_push, h_push},     {&psw_m_spush, h_spush},
	           {&psw_m_assign, h_assign}, {&psw_m_clock, h_clock},
	           {&psw_m_clock_get, h_clock_get},
	           {&psw_m_describe, h_describe}, {&psw_m_pull_rows, h_pull_rows},
	           {&psw_m_push_rows, h_push_rows},
	           {&psw_m_push_range, h_push_range}};
	for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
		int rc = dml_rpc_server_register(server, tab[i].m, tab[i].h, ps);
		if (rc)
			return rc; /* registrations so far stay; the server is unusable */
	}
	if (ps->workers) {
		int rc = dml__rpc_server_on_close(server, conn_closed, ps);
		if (rc)
			return rc;
	}
	/* clock waits over RPC hold no thread: the server's tick drops dead
	 * workers for them */
	if (ps->worker_timeout > 0)
		return dml_rpc_server_tick(server, ps->worker_timeout / 4 + 1, tick, ps);
	return 0;
}
