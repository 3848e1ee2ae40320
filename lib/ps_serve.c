/*
 * ps_serve.c - a local store's methods on an RPC server: pull, push (with
 * exactly-once deduplication), assign, info and clocks (deferred replies,
 * so waiting workers hold no server thread).
 */
#include "ps.h"
#include "ps_wire.h"

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

void dml__ps_serve_free(dml_ps *ps)
{
	if (ps->dedup) {
		pthread_mutex_destroy(&ps->dedup->mu);
		free(ps->dedup);
		ps->dedup = NULL;
	}
}

/* ---- handlers ----------------------------------------------------- */

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
	if (q->v.n != ps->dim)
		return dml_rpc_ctx_errorf(ctx, "PS.Push: %zu values for dimension %zu",
		                      q->v.n, ps->dim);
	if (q->op != PSW_OP_UPDATE && q->op != PSW_OP_PUSH)
		return dml_rpc_ctx_errorf(ctx, "PS.Push: unknown op %d", (int)q->op);
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
	if (q->idx.n != q->v.n)
		return dml_rpc_ctx_errorf(ctx, "PS.PushSparse: %zu indices, %zu values",
		                      q->idx.n, q->v.n);
	if (q->op != PSW_OP_UPDATE && q->op != PSW_OP_PUSH)
		return dml_rpc_ctx_errorf(ctx, "PS.PushSparse: unknown op %d", (int)q->op);
	for (size_t i = 0; i < q->idx.n; i++)
		if (q->idx.data[i] >= ps->dim)
			return dml_rpc_ctx_errorf(ctx, "PS.PushSparse: index %u outside dimension %zu",
			                      (unsigned)q->idx.data[i], ps->dim);
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
	if (!ps->dedup) {
		ps->dedup = calloc(1, sizeof *ps->dedup);
		if (!ps->dedup)
			return DML_ENOMEM;
		pthread_mutex_init(&ps->dedup->mu, NULL);
	}
	static const struct {
		const dml_rpc_method *m;
		dml_rpc_handler h;
	} tab[] = {{&psw_m_info, h_info},     {&psw_m_pull, h_pull},
	           {&psw_m_push, h_push},     {&psw_m_spush, h_spush},
	           {&psw_m_assign, h_assign}, {&psw_m_clock, h_clock},
	           {&psw_m_clock_get, h_clock_get}};
	for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
		int rc = dml_rpc_server_register(server, tab[i].m, tab[i].h, ps);
		if (rc)
			return rc; /* registrations so far stay; the server is unusable */
	}
	/* clock waits over RPC hold no thread: the server's tick drops dead
	 * workers for them */
	if (ps->worker_timeout > 0)
		return dml_rpc_server_tick(server, ps->worker_timeout / 4 + 1, tick, ps);
	return 0;
}
