/*
 * ps_serve.c - a local store's methods on an RPC server: pull, push (with
 * exactly-once deduplication), assign, info and clocks (deferred replies,
 * so waiting workers hold no server thread).
 */
#include "abi.h"
#include "ps.h"
#include "ps_wire.h"
#include "compress.h"

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
 * A client id is a claim: entries belong to the identity that pushed
 * (dml_rpc_ctx_identity, as a 64-bit hash), so a peer naming another's id
 * gets an entry of its own and cannot touch the other's; a number more
 * than `window` beyond its client's highest is refused (it would make a
 * window of later numbers look old); and one identity holds at most
 * max_per_peer clients: a new one beyond that replaces its own least
 * recently used, so no peer can fill the table.
 * The table holds DEDUP_CAP clients. A client is forgotten only after
 * DEDUP_TTL_MS without pushes (far beyond any retry); when the table is
 * full of active clients, pushes from new ones are refused.
 */
#define DEDUP_CAP 4096
#define DEDUP_TTL_MS (10 * 60 * 1000)

typedef struct dd_ent {
	uint64_t client; /* 0 = empty */
	uint64_t owner;  /* the identity's hash (0: from a 0.3 checkpoint) */
	uint64_t max, bits;
	uint64_t used; /* ms, monotonic */
} dd_ent;

/* A worker slot: who may advance that clock. */
typedef struct ws_ent {
	uint64_t owner;  /* identity hash; 0 = free */
	uint64_t conn;   /* the holder's connection, while open */
	int64_t free_at; /* ms: the holder's connection closed then (0: open) */
	int pinned;      /* opts.worker_ids named the owner: for good */
} ws_ent;

struct dml__ps_dedup {
	pthread_mutex_t mu;
	size_t max_frame; /* the server's, for the replies' size */
	dd_ent e[DEDUP_CAP * 2]; /* open addressing, at most half full */
	dd_ent keep[DEDUP_CAP];  /* scratch for dd_evict */
	size_t n;
	/* access (dml_ps_serve_with) */
	char **writers, **readers; /* NULL-terminated copies, or NULL */
	int max_per_peer;
	uint64_t window;
	dml_duration grace;
	int nslots;
	ws_ent *slots; /* per worker, under mu */
	/* compression asked of pushes (dml_ps_serve_with) */
	int codec;
	float topk;
	uint64_t warmup;
};

enum { DD_NEW = 0, DD_DUP = 1, DD_FULL = 2, DD_AHEAD = 3 };

/* An identity's 64-bit name in the tables (FNV-1a: stable across
 * restarts, so a checkpoint's table still matches). Never 0. */
static uint64_t ident_hash(const char *s)
{
	uint64_t h = dml__fnv1a(s);
	return h ? h : 1;
}

static size_t dd_hash(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return (size_t)(x % (DEDUP_CAP * 2));
}

static dd_ent *dd_slot(dml__ps_dedup *d, uint64_t owner, uint64_t client)
{
	size_t i = dd_hash(client ^ (owner * 0x9e3779b97f4a7c15ULL));
	while (d->e[i].client && (d->e[i].client != client || d->e[i].owner != owner))
		i = (i + 1) % (DEDUP_CAP * 2);
	return &d->e[i];
}

/* Forgets the clients idle for longer than DEDUP_TTL_MS, and `drop`. */
static void dd_evict(dml__ps_dedup *d, uint64_t now, const dd_ent *drop)
{
	dd_ent *keep = d->keep; /* d->n <= DEDUP_CAP entries */
	size_t k = 0;
	for (size_t i = 0; i < DEDUP_CAP * 2; i++)
		if (d->e[i].client && now - d->e[i].used < DEDUP_TTL_MS && &d->e[i] != drop)
			keep[k++] = d->e[i];
	memset(d->e, 0, sizeof d->e);
	d->n = 0;
	for (size_t i = 0; i < k; i++) {
		*dd_slot(d, keep[i].owner, keep[i].client) = keep[i];
		d->n++;
	}
}

/* Makes room for a new client of `owner`: its own least recently used
 * goes when it holds max_per_peer; idle ones when the table is full. */
static void dd_room(dml__ps_dedup *d, uint64_t owner, uint64_t now)
{
	int mine = 0;
	const dd_ent *old = NULL;
	for (size_t i = 0; i < DEDUP_CAP * 2; i++) {
		const dd_ent *x = &d->e[i];
		if (x->client && x->owner == owner) {
			mine++;
			if (!old || x->used < old->used)
				old = x;
		}
	}
	if (mine >= d->max_per_peer)
		dd_evict(d, now, old);
	else if (d->n >= DEDUP_CAP)
		dd_evict(d, now, NULL);
}

static int dd_check(dml__ps_dedup *d, uint64_t owner, uint64_t client, uint64_t seq)
{
	if (!client) /* no id: the client asked for at-least-once */
		return DD_NEW;
	uint64_t now = (uint64_t)dml__now_ms();
	pthread_mutex_lock(&d->mu);
	dd_ent *e = dd_slot(d, owner, client);
	if (!e->client) {
		dd_room(d, owner, now);
		e = dd_slot(d, owner, client);
		if (d->n >= DEDUP_CAP) {
			pthread_mutex_unlock(&d->mu);
			return DD_FULL;
		}
		e->client = client;
		e->owner = owner;
		e->max = 0;
		e->bits = 0;
		d->n++;
	}
	e->used = now;
	if (seq > e->max && seq - e->max > d->window) {
		pthread_mutex_unlock(&d->mu);
		return DD_AHEAD;
	}
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
static void dd_undo(dml__ps_dedup *d, uint64_t owner, uint64_t client, uint64_t seq)
{
	if (!client)
		return;
	pthread_mutex_lock(&d->mu);
	dd_ent *e = dd_slot(d, owner, client);
	if (e->client && seq <= e->max && e->max - seq < PSW_WINDOW)
		e->bits &= ~((uint64_t)1 << (e->max - seq));
	pthread_mutex_unlock(&d->mu);
}

static dml__ps_dedup *dd_new(void)
{
	dml__ps_dedup *d = calloc(1, sizeof *d);
	if (d) {
		pthread_mutex_init(&d->mu, NULL);
		d->max_per_peer = DML_PS_DEFAULT_CLIENTS_PER_PEER;
		d->window = DML_PS_DEFAULT_SEQ_WINDOW;
		d->grace = DML_PS_DEFAULT_WORKER_GRACE;
	}
	return d;
}

/* The table on disk: a count (its top bit set: records of 0.4, with the
 * owner), then per client its id, max, bits, how long ago it last pushed
 * (ms) and (0.4) its owner, all u64 little-endian. */
#define DD_REC 40
#define DD_REC_0_3 32
#define DD_V2 ((uint64_t)1 << 63)

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
		dml__put_u64(q + 32, e->owner);
		n++;
	}
	pthread_mutex_unlock(&d->mu);
	dml__put_u64(p, n | DD_V2);
	*out = p;
	*len = 8 + n * DD_REC;
	return 0;
}

/* The record size of a table on disk, and its count. */
static size_t dd_rec(const uint8_t *p, uint64_t *n)
{
	uint64_t h = dml__get_u64(p);
	*n = h & ~DD_V2;
	return h & DD_V2 ? DD_REC : DD_REC_0_3;
}

int dml__ps_dedup_valid(const uint8_t *p, size_t len)
{
	if (len < 8)
		return DML_EFORMAT;
	uint64_t n;
	size_t rec = dd_rec(p, &n);
	if (n > DEDUP_CAP || len != 8 + n * rec)
		return DML_EFORMAT;
	for (uint64_t k = 0; k < n; k++)
		if (!dml__get_u64(p + 8 + k * rec))
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
	uint64_t n, now = (uint64_t)dml__now_ms();
	size_t rec = dd_rec(p, &n);
	pthread_mutex_lock(&d->mu);
	memset(d->e, 0, sizeof d->e);
	d->n = 0;
	for (uint64_t k = 0; k < n; k++) {
		const uint8_t *q = p + 8 + k * rec;
		uint64_t client = dml__get_u64(q), age = dml__get_u64(q + 24);
		uint64_t owner = rec == DD_REC ? dml__get_u64(q + 32) : 0;
		dd_ent *e = dd_slot(d, owner, client);
		if (e->client)
			continue; /* a repeated id: keep the first */
		e->client = client;
		e->owner = owner;
		e->max = dml__get_u64(q + 8);
		e->bits = dml__get_u64(q + 16);
		e->used = age < now ? now - age : 0;
		d->n++;
	}
	pthread_mutex_unlock(&d->mu);
	return 0;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

void dml__ps_serve_free(dml_ps *ps)
{
	if (ps->dedup) {
		strv_free(ps->dedup->writers);
		strv_free(ps->dedup->readers);
		free(ps->dedup->slots);
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

/* ---- access: who may read, write, and hold a worker's clock -------- */

static int in_list(char *const *v, const char *id)
{
	for (; v && *v; v++)
		if (!strcmp(*v, id))
			return 1;
	return 0;
}

/* Whether the caller may change the store (`write`) or read it: 0, or
 * DML_EPERM with the reason in msg. *owner gets the identity's hash. */
static int may(dml_rpc_ctx *ctx, const dml__ps_dedup *d, int write,
               const char *what, uint64_t *owner, char *msg, size_t cap)
{
	const char *id = dml_rpc_ctx_identity(ctx, NULL);
	if (owner)
		*owner = ident_hash(id);
	if (!d->writers && !d->readers)
		return 0;
	int w = d->writers ? in_list(d->writers, id) : !in_list(d->readers, id);
	if (write ? w : w || in_list(d->readers, id))
		return 0;
	char shown[80];
	dml__escape(shown, sizeof shown, id, strlen(id));
	snprintf(msg, cap, "%s: %s may not %s this store", what, shown,
	         write ? "change" : "read");
	return DML_EPERM;
}

/* may() for handlers that answer with the message (ctx_errorf). */
static int may_call(dml_rpc_ctx *ctx, const dml_ps *ps, int write, const char *what,
                    uint64_t *owner)
{
	char msg[160];
	int rc = may(ctx, ps->dedup, write, what, owner, msg, sizeof msg);
	if (rc)
		dml_rpc_ctx_errorf(ctx, "%s", msg);
	return rc;
}

/* The caller (identity `owner`, on connection `conn`) takes or holds
 * worker w's slot: 0, or DML_EPERM while another identity holds it (its
 * connection open, or closed less than `grace` ago). */
static int slot_claim(dml__ps_dedup *d, int w, uint64_t owner, uint64_t conn)
{
	int64_t now = dml__now_ms();
	pthread_mutex_lock(&d->mu);
	ws_ent *s = &d->slots[w];
	int held = s->owner && s->owner != owner &&
	           (s->pinned || !s->free_at || now - s->free_at < d->grace);
	if (!held) {
		s->owner = owner;
		s->conn = conn;
		s->free_at = 0;
	}
	pthread_mutex_unlock(&d->mu);
	return held ? DML_EPERM : 0;
}

/* The first non-finite value of a peer's array, or -1. */
static long long bad_value(const float *v, size_t n)
{
	size_t at;
	return dml__all_finite(v, n, &at) ? -1 : (long long)at;
}

static int h_describe(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)a;
	dml_ps *ps = u;
	int rc = may_call(ctx, ps, 0, "PS.Describe", NULL);
	if (rc)
		return rc;
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
	(void)a;
	dml_ps *ps = u;
	int rc = may_call(ctx, ps, 0, "PS.Info", NULL);
	if (rc)
		return rc;
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
	int rc = may_call(ctx, ps, 0, "PS.Pull", NULL);
	if (rc)
		return rc;
	if (ps->kv)
		return dml_rpc_ctx_errorf(ctx, "PS.Pull: a keyed store (PS.PullRows, PS.PushRows)");
	if (q->off > ps->dim || q->n > ps->dim - q->off)
		return dml_rpc_ctx_errorf(ctx, "PS.Pull: range %llu+%llu outside dimension %zu",
		                      (unsigned long long)q->off,
		                      (unsigned long long)q->n, ps->dim);
	dml_rpc_deferred *d;
	if ((rc = dml_rpc_deferred_new(&d, ctx)))
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
	uint64_t owner;
	int rc = may_call(ctx, ps, 1, "PS.Push", &owner);
	if (rc)
		return rc;
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
	switch (dd_check(ps->dedup, owner, q->client, q->seq)) {
	case DD_DUP:
		return 0;
	case DD_FULL:
		return dml_rpc_ctx_errorf(ctx, "PS.Push: too many active clients");
	case DD_AHEAD:
		return dml_rpc_ctx_errorf(ctx, "PS.Push: sequence number %llu too far "
		                          "ahead of its client's", (unsigned long long)q->seq);
	}
	dml__ps_apply_dense(ps, q->op, q->v.data);
	return 0;
}

static int h_spush(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)r;
	dml_ps *ps = u;
	const psw_spush *q = a;
	uint64_t owner;
	int rc = may_call(ctx, ps, 1, "PS.PushSparse", &owner);
	if (rc)
		return rc;
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
	switch (dd_check(ps->dedup, owner, q->client, q->seq)) {
	case DD_DUP:
		return 0;
	case DD_FULL:
		return dml_rpc_ctx_errorf(ctx, "PS.PushSparse: too many active clients");
	case DD_AHEAD:
		return dml_rpc_ctx_errorf(ctx, "PS.PushSparse: sequence number %llu too "
		                          "far ahead of its client's", (unsigned long long)q->seq);
	}
	dml__ps_apply_sparse(ps, q->op, q->idx.data, q->v.data, q->v.n);
	return 0;
}

static int h_assign(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)r;
	dml_ps *ps = u;
	const psw_vec *q = a;
	int rc = may_call(ctx, ps, 1, "PS.Assign", NULL);
	if (rc)
		return rc;
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

/* The exactly-once check of a push that answers with a status (the 0.3
 * and 0.4 pushes): 0 to apply it, 1 when the reply is set already (a
 * duplicate, answered with success, or a refusal). */
static int dd_status(dml__ps_dedup *d, uint64_t owner, uint64_t client, uint64_t seq,
                     psw_status *st, const char *what)
{
	switch (dd_check(d, owner, client, seq)) {
	case DD_DUP:
		return 1;
	case DD_FULL:
		refuse(st, DML_EBUSY, "%s: too many active clients", what);
		return 1;
	case DD_AHEAD:
		refuse(st, DML_EINVAL, "%s: sequence number %llu too far ahead of "
		       "its client's", what, (unsigned long long)seq);
		return 1;
	}
	return 0;
}

static int h_push_range(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	dml_ps *ps = u;
	const psw_xpush *q = a;
	psw_status *st = r;
	uint64_t owner;
	char msg[160]; /* not st->buf: refuse formats into it */
	if (may(ctx, ps->dedup, 1, "PS.PushRange", &owner, msg, sizeof msg))
		return refuse(st, DML_EPERM, "%s", msg);
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
	if (dd_status(ps->dedup, owner, q->client, q->seq, st, "PS.PushRange"))
		return 0;
	dml__ps_apply_range(ps, frame_op(q->op, q->start), (size_t)q->off,
	                    q->v.data, q->v.n);
	return 0;
}

static int h_compression(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)a;
	dml_ps *ps = u;
	int rc = may_call(ctx, ps, 0, "PS.Compression", NULL);
	if (rc)
		return rc;
	psw_codec *rep = r;
	rep->codec = ps->kv ? DML__GC_NONE : ps->dedup->codec;
	rep->topk = ps->dedup->topk;
	rep->warmup = ps->dedup->warmup;
	return 0;
}

/* A coded frame of a dense push: checked whole, then decoded and applied
 * a part of CODED_PART values at a time, as PS.PushRange applies its
 * values, so that a few bytes that claim many values (top-k) never make
 * the server hold more than a part. */
#define CODED_PART 16384

static int h_push_coded(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	dml_ps *ps = u;
	const psw_cpush *q = a;
	psw_status *st = r;
	uint64_t owner;
	char msg[160]; /* not st->buf: refuse formats into it */
	if (may(ctx, ps->dedup, 1, "PS.PushCoded", &owner, msg, sizeof msg))
		return refuse(st, DML_EPERM, "%s", msg);
	if (ps->kv)
		return refuse(st, DML_EINVAL, "PS.PushCoded: a keyed store");
	if (q->op != PSW_OP_UPDATE && q->op != PSW_OP_PUSH)
		return refuse(st, DML_EINVAL, "PS.PushCoded: op %d (update or push)", (int)q->op);
	if (q->off > ps->dim || q->n > ps->dim - q->off)
		return refuse(st, DML_EINVAL, "PS.PushCoded: range %llu + %llu outside "
		              "dimension %zu", (unsigned long long)q->off,
		              (unsigned long long)q->n, ps->dim);
	if (q->n > ps->dedup->max_frame / sizeof(float))
		return refuse(st, DML_EINVAL, "PS.PushCoded: %llu values in a frame "
		              "(at most %zu, as in a plain frame)",
		              (unsigned long long)q->n, ps->dedup->max_frame / sizeof(float));
	size_t n = (size_t)q->n;
	dml__gc_piece p = {(uint8_t *)q->data.data, q->data.n, q->scales.data,
	                   q->scales.n, q->idx.data, q->idx.n};
	int rc = dml__gc_check(q->codec, n, &p, msg, sizeof msg);
	if (rc)
		return refuse(st, rc, "PS.PushCoded: %s; this frame changed nothing", msg);
	float *v = malloc((n < CODED_PART ? (n ? n : 1) : CODED_PART) * sizeof *v);
	if (!v)
		return DML_ENOMEM;
	if (dd_status(ps->dedup, owner, q->client, q->seq, st, "PS.PushCoded")) {
		free(v);
		return 0;
	}
	int op = frame_op(q->op, q->start);
	size_t lo = 0;
	do { /* an empty frame is applied too: it may begin a step */
		size_t hi = n - lo < CODED_PART ? n : lo + CODED_PART;
		dml__gc_decode_range(q->codec, &p, lo, hi, v);
		dml__ps_apply_range(ps, op, (size_t)q->off + lo, v, hi - lo);
		if (op == DML__PS_STEP) /* the parts after the first: the same step */
			op = DML__PS_STEP_MORE;
	} while ((lo += CODED_PART) < n);
	free(v);
	return 0;
}

static int h_pull_rows(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)r;
	dml_ps *ps = u;
	const psw_keys *q = a;
	int rc = may_call(ctx, ps, 0, "PS.PullRows", NULL);
	if (rc)
		return rc;
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
	if ((rc = dml_rpc_deferred_new(&d, ctx))) {
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
	uint64_t owner;
	char msg[160]; /* not st->buf: refuse formats into it */
	if (may(ctx, ps->dedup, 1, "PS.PushRows", &owner, msg, sizeof msg))
		return refuse(st, DML_EPERM, "%s", msg);
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
	if (dd_status(ps->dedup, owner, q->client, q->seq, st, "PS.PushRows"))
		return 0;
	int rc = ps->ops->apply_rows(ps, frame_op(q->op, q->start),
	                             (const uint64_t *)q->keys.data, q->keys.n,
	                             q->v.data);
	if (rc) {
		dd_undo(ps->dedup, owner, q->client, q->seq);
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
	uint64_t owner;
	int rc = may_call(ctx, ps, 1, "PS.Clock", &owner);
	if (rc)
		return rc;
	if (!ps->workers || q->worker < 0 || q->worker >= ps->workers)
		return dml_rpc_ctx_errorf(ctx, "PS.Clock: no worker %d (store has %d)",
		                      (int)q->worker, ps->workers);
	if (slot_claim(ps->dedup, q->worker, owner, dml_rpc_ctx_conn(ctx))) {
		dml_rpc_ctx_errorf(ctx, "PS.Clock: worker %d is another identity's "
		                   "(until %lld ms after its connection closes)",
		                   (int)q->worker, (long long)ps->dedup->grace);
		return DML_EPERM;
	}
	dml_rpc_deferred *d;
	if ((rc = dml_rpc_deferred_new(&d, ctx)))
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
	dml_ps *ps = user;
	dml__ps_dedup *d = ps->dedup;
	int64_t now = dml__now_ms();
	pthread_mutex_lock(&d->mu); /* its slots are kept for `grace` */
	for (int w = 0; w < d->nslots; w++)
		if (d->slots[w].owner && d->slots[w].conn == conn && !d->slots[w].free_at)
			d->slots[w].free_at = now;
	pthread_mutex_unlock(&d->mu);
	gone_conn g = {s, conn};
	dml__ps_drop_waiters(ps, on_conn, &g);
}

static int h_clock_get(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	dml_ps *ps = u;
	const psw_worker *q = a;
	psw_clock *rep = r;
	rep->waited = 0;
	int rc = may_call(ctx, ps, 0, "PS.ClockGet", NULL);
	if (rc)
		return rc;
	rc = dml_ps_clock_get(ps, q->worker, &rep->clock, &rep->min);
	if (rc)
		return dml_rpc_ctx_errorf(ctx, "PS.ClockGet: no worker %d (store has %d)",
		                      (int)q->worker, ps->workers);
	return 0;
}

static void tick(void *arg) { dml__ps_check_workers(arg); }

/* A NULL-terminated copy of v (NULL: NULL); *rc = DML_ENOMEM or
 * DML_EINVAL (more than 4096 names, an empty one, or one too long). */
static char **strv_copy(const char *const *v, int *rc)
{
	if (!v)
		return NULL;
	size_t n = 0;
	while (v[n] && n <= 4096)
		n++;
	char **c = n > 4096 ? NULL : calloc(n + 1, sizeof *c);
	*rc = n > 4096 ? DML_EINVAL : c ? 0 : DML_ENOMEM;
	for (size_t i = 0; c && i < n && !*rc; i++) {
		size_t len = strlen(v[i]);
		if (!len || len >= DML_RPC_MAX_IDENTITY)
			*rc = DML_EINVAL;
		else if (!(c[i] = strdup(v[i])))
			*rc = DML_ENOMEM;
	}
	if (*rc) {
		strv_free(c);
		return NULL;
	}
	return c;
}

int dml_ps_serve(dml_ps *ps, dml_rpc_server *server)
{
	return dml_ps_serve_with_abi(ps, server, NULL, DML_ABI);
}

int dml_ps_serve_with_abi(dml_ps *ps, dml_rpc_server *server,
                          const dml_ps_serve_opts *opts, int abi)
{
	dml__detail_clear();
	dml_ps_serve_opts o;
	int rc = dml__abi_in(&o, sizeof o, opts, DML__L_PS_SERVE_OPTS, abi);
	if (rc)
		return rc;
	if (!ps || !server)
		return DML_EINVAL;
	if (ps->remote)
		return dml__fail(DML_EINVAL, "a remote store cannot be served");
	if (ps->dedup && ps->dedup->max_frame)
		return dml__fail(DML_EEXIST, "the store is served already");
	if (o.compress < DML__GC_NONE || o.compress >= DML__GC_COUNT ||
	    !(o.topk >= 0 && o.topk <= 1))
		return dml__fail(DML_EINVAL, "compress: a DML_PS_COMPRESS_* (%d), topk "
		                 "0 to 1", o.compress);
	if (o.max_clients_per_peer < 0 || o.max_clients_per_peer > 4096 ||
	    (o.worker_grace < 0 && o.worker_grace != DML_INFINITE))
		return dml__fail(DML_EINVAL, "max_clients_per_peer 0 to 4096, "
		                 "worker_grace >= 0 or DML_INFINITE");
	if (!ps->dedup && !(ps->dedup = dd_new()))
		return DML_ENOMEM;
	dml__ps_dedup *d = ps->dedup;
	int rw = 0, rr = 0;
	char **writers = strv_copy(o.writers, &rw), **readers = strv_copy(o.readers, &rr);
	ws_ent *slots = ps->workers ? calloc((size_t)ps->workers, sizeof *slots) : NULL;
	if (rw || rr || (ps->workers && !slots)) {
		strv_free(writers);
		strv_free(readers);
		free(slots);
		return rw == DML_EINVAL || rr == DML_EINVAL
			? dml__fail(DML_EINVAL, "writers, readers: at most 4096 names of "
			            "1 to %d bytes", DML_RPC_MAX_IDENTITY - 1)
			: DML_ENOMEM;
	}
	for (int w = 0; o.worker_ids && w < ps->workers; w++) {
		if (!o.worker_ids[w] || !*o.worker_ids[w]) {
			strv_free(writers);
			strv_free(readers);
			free(slots);
			return dml__fail(DML_EINVAL, "worker_ids: an identity for each "
			                 "of the %d workers (%d is missing)", ps->workers, w);
		}
		slots[w].owner = ident_hash(o.worker_ids[w]);
		slots[w].pinned = 1;
	}
	d->writers = writers;
	d->readers = readers;
	d->slots = slots;
	d->nslots = ps->workers;
	if (o.max_clients_per_peer)
		d->max_per_peer = o.max_clients_per_peer;
	if (o.seq_window)
		d->window = o.seq_window;
	if (o.worker_grace)
		d->grace = o.worker_grace == DML_INFINITE ? INT64_MAX / 2 : o.worker_grace;
	d->max_frame = dml__rpc_server_max_frame(server);
	d->codec = o.compress;
	d->topk = o.topk ? o.topk : 0.01f;
	d->warmup = o.topk_warmup;
	static const struct {
		const dml_rpc_method *m;
		dml_rpc_handler h;
	} tab[] = {{&psw_m_info, h_info},     {&psw_m_pull, h_pull},
	           {&psw_m_push, h_push},     {&psw_m_spush, h_spush},
	           {&psw_m_assign, h_assign}, {&psw_m_clock, h_clock},
	           {&psw_m_clock_get, h_clock_get},
	           {&psw_m_describe, h_describe}, {&psw_m_pull_rows, h_pull_rows},
	           {&psw_m_push_rows, h_push_rows},
	           {&psw_m_push_range, h_push_range},
	           {&psw_m_compression, h_compression},
	           {&psw_m_push_coded, h_push_coded}};
	for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
		rc = dml_rpc_server_register(server, tab[i].m, tab[i].h, ps);
		if (rc)
			return rc; /* registrations so far stay; the server is unusable */
	}
	if (ps->workers && (rc = dml__rpc_server_on_close(server, conn_closed, ps)))
		return rc;
	/* clock waits over RPC hold no thread: the server's tick drops dead
	 * workers for them */
	if (ps->worker_timeout > 0)
		return dml_rpc_server_tick(server, ps->worker_timeout / 4 + 1, tick, ps);
	return 0;
}
