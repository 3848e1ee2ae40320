/*
 * ps_remote.c - a remote parameter store of either kind: the dml_ps_* calls
 * over RPC to one or more servers. A dense store's shards hold contiguous
 * ranges of the vector; a keyed store's shards hold ranges of a hash of the
 * keys (psw_shard_of). Every call is cut into jobs, one per frame: a shard's
 * part of the call, split further where it exceeds the frame limit. The
 * jobs run pipelined (at most INFLIGHT at once per call, all shards in
 * parallel), pushes numbered for the server's exactly-once window and
 * resent when their reply is lost. Large arrays travel without copies:
 * dense pushes are sent from the caller's vector, dense pulls land in the
 * caller's buffer.
 */
#define _GNU_SOURCE
#include "ps.h"
#include "ps_wire.h"
#include "compress.h"

#include "abi.h"
#include "sys.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <time.h>
#include <unistd.h>

#define MAX_SHARDS DML_PS_MAX_SHARDS
/* The wait between resends of a lost push, while retry_timeout lasts. */
#define RESEND_WAIT_MIN 10   /* ms */
#define RESEND_WAIT_MAX 1000 /* ms */

#define INFLIGHT 8 /* frames of one call in flight at once */
/* ... and bytes: a server queues the replies of pipelined pulls it cannot
 * send yet, so a call keeps at most this much in flight beyond one frame */
#define INFLIGHT_BYTES ((size_t)32 << 20)
/* A dense part larger than this travels in pieces of this size, however
 * large the frame limit: pieces in flight overlap the server's work on
 * one with the transfer of the next. */
#define PIECE_BYTES ((size_t)4 << 20)

struct dml__ps_remote {
	int n;
	int keyed;
	dml_rpc_client *c[MAX_SHARDS];
	size_t off[MAX_SHARDS + 1]; /* dense: shard i holds [off[i], off[i+1]) */
	size_t frame[MAX_SHARDS];   /* payload bytes per frame to shard i */
	int split[MAX_SHARDS];      /* the server has the 0.3 methods */
	dml_duration timeout;
	int retries;
	dml_duration retry_timeout; /* 0: none beyond retries; DML_INFINITE */
	dml_duration clock_timeout;
	uint64_t client_id;
	/* a push takes its number and is queued under its shard's lock, so
	 * that numbers go out in order (the server's window relies on it);
	 * fewer than PSW_WINDOW numbered pushes are unfinished at once, so
	 * that a resend always falls inside the window */
	pthread_mutex_t mu[MAX_SHARDS];
	pthread_cond_t room[MAX_SHARDS];
	uint64_t seq[MAX_SHARDS];
	int unfinished[MAX_SHARDS];
	/* compressed pushes: what each shard's store asks for (DML__GC_*);
	 * under gcmu, the random state and top-k's residual (what was not
	 * sent, dim floats, made at the first top-k push) */
	int codec[MAX_SHARDS];
	float topk[MAX_SHARDS];
	pthread_mutex_t gcmu;
	uint64_t rng;
	float *resid;
	uint64_t warmup[MAX_SHARDS]; /* top-k's warm-up, in pushes */
	uint64_t pushes;             /* top-k pushes so far, under gcmu */
};

static uint64_t fresh_id(void)
{
	uint64_t id = 0;
	if (dml__sys_random(&id, sizeof id) != 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		id = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^
		     (uint64_t)ts.tv_sec << 20 ^ (uint64_t)getpid();
	}
	return id ? id : 1; /* 0 means "no deduplication" on the wire */
}

/* The options with defaults in place; DML_EINVAL names the one wrong. */
static int remote_opts(dml_ps_remote_opts *o)
{
	if (dml__opt_duration(&o->timeout, DML_PS_DEFAULT_TIMEOUT) ||
	    dml__opt_duration(&o->retry_timeout, DML_PS_DEFAULT_RETRY_TIMEOUT) ||
	    dml__opt_duration(&o->clock_timeout, DML_PS_DEFAULT_CLOCK_TIMEOUT))
		return DML_EINVAL;
	if (o->retries < DML_PS_NO_RETRIES)
		return dml__fail(DML_EINVAL, "retries %d: 0 (default), > 0 or "
		                 "DML_PS_NO_RETRIES", o->retries);
	o->retries = !o->retries ? DML_PS_DEFAULT_RETRIES
	             : o->retries == DML_PS_NO_RETRIES ? 0 : o->retries;
	return 0;
}

/* Records the first failure among the calls to the shards: `rc` stays the
 * first error, and the error detail says which shard it came from (the
 * calls that follow it clear the detail). */
typedef struct first_error {
	int rc;
	char msg[DML_ERRMSG_MAX];
} first_error;

static void note_error(first_error *fe, int shard, int rc)
{
	if (!rc || fe->rc)
		return;
	fe->rc = rc;
	snprintf(fe->msg, sizeof fe->msg, "shard %d: %s", shard, dml_error_detail());
}

/* The first error, with its detail. */
static int first_error_return(const first_error *fe)
{
	return fe->rc ? dml__fail(fe->rc, "%s", fe->msg) : 0;
}

/* ---- jobs: one frame each ------------------------------------------ */

typedef struct job {
	int shard;
	const dml_rpc_method *m;
	union {
		psw_push push;
		psw_spush spush;
		psw_vec vec;
		psw_range range;
		psw_keys keys;
		psw_rpush rpush;
		psw_xpush xpush;
		psw_cpush cpush;
	} a;
	union {
		psw_vec vec;
		psw_status st;
	} rep;
	int has_reply;  /* rep is the reply */
	int status;     /* rep.st is a status reply */
	size_t expect;  /* rep.vec must hold this many values */
	uint64_t *seq;  /* a push: its number in a (resent when lost) */
	int numbered;
	int tries;
	int next;       /* the next job in a queue, -1 = none */
	size_t bytes;   /* the values it moves, either way */
	int rc;         /* once run: its result (-1 = not finished) */
	dml_rpc_pending *p;
} job;

typedef struct queue {
	int head, tail;
} queue;

static void q_push(job *jb, queue *q, int k)
{
	jb[k].next = -1;
	if (q->tail >= 0)
		jb[q->tail].next = k;
	else
		q->head = k;
	q->tail = k;
}

static int q_pop(job *jb, queue *q)
{
	int k = q->head;
	if (k >= 0) {
		q->head = jb[k].next;
		if (q->head < 0)
			q->tail = -1;
	}
	return k;
}

static int lost(int rc)
{
	return rc == DML_ETIMEDOUT || rc == DML_ECONNLOST;
}

/* A numbered job is finished (acknowledged or given up): its number no
 * longer holds room in the window. */
static void release(dml__ps_remote *r, job *j)
{
	if (!j->numbered)
		return;
	j->numbered = 0;
	int i = j->shard;
	pthread_mutex_lock(&r->mu[i]);
	r->unfinished[i]--;
	pthread_cond_signal(&r->room[i]);
	pthread_mutex_unlock(&r->mu[i]);
}

/* The result of a finished job's call: the RPC's, the reply's status, or
 * a count that does not match; the detail says what. */
static int job_result(job *j, int e)
{
	if (e)
		return e;
	if (j->status && j->rep.st.code) {
		char shown[DML_ERRMSG_MAX];
		dml__escape(shown, sizeof shown, j->rep.st.msg.data, j->rep.st.msg.n);
		int code = j->rep.st.code;
		/* a code this library does not know is the server's failure */
		if (code > 0 || code < DML_EDIVERGED)
			code = DML_EHANDLER;
		return dml__fail(code, "%s", shown);
	}
	if (j->has_reply && !j->status && j->rep.vec.v.n != j->expect)
		return dml__fail(DML_EPROTO, "%zu values in the reply for %zu asked",
		                 j->rep.vec.v.n, j->expect);
	return 0;
}

/* Whether a push lost with `e` (timed out, connection lost) is sent again:
 * `retries` times, then while retry_timeout lasts (waiting between
 * attempts while the server is away). */
static int resend(dml__ps_remote *r, job *j, int e, int64_t start,
                  dml__backoff *wait)
{
	if (!lost(e) || !j->seq)
		return 0;
	int forever = r->retry_timeout == DML_INFINITE;
	if (j->tries >= r->retries && !forever &&
	    (r->retry_timeout == 0 || dml__now_ms() - start >= r->retry_timeout))
		return 0;
	j->tries++;
	if (e == DML_ECONNLOST && r->retry_timeout != 0)
		dml__sleep_ms(dml__backoff_next(wait));
	return 1;
}

/* Writes what the clients of the shards marked in dirty have queued (an
 * error breaks the connection, and the calls' waits report it). */
static void flush_dirty(dml__ps_remote *r, int *dirty)
{
	for (int i = 0; i < r->n; i++)
		if (dirty[i]) {
			dirty[i] = 0;
			(void)dml_rpc_flush(r->c[i], r->timeout);
		}
}

/* Runs jobs[0..n) to completion, pipelined, and returns the first error
 * (with its shard in the detail). Lost pushes are resent with their
 * numbers, which the server applies once: up to `retries` times, and
 * beyond that while `retry_timeout` lasts, waiting between attempts
 * (RESEND_WAIT_MIN doubling to RESEND_WAIT_MAX) so that a client with
 * reconnect can dial a restarted server. Jobs that are not pushes (pulls)
 * are not resent. */
static int run_jobs(dml__ps_remote *r, job *jb, int n)
{
	queue todo = {-1, -1}, flying = {-1, -1};
	for (int k = 0; k < n; k++) {
		jb[k].p = NULL;
		jb[k].numbered = 0;
		jb[k].tries = 0;
		jb[k].rc = -1;
		q_push(jb, &todo, k);
	}
	first_error fe = {0};
	int inflight = 0, dirty[MAX_SHARDS] = {0};
	size_t inbytes = 0;
	int64_t start = dml__now_ms();
	dml__backoff wait;
	dml__backoff_init(&wait, RESEND_WAIT_MIN, RESEND_WAIT_MAX);
	for (;;) {
		while (todo.head >= 0 && inflight < INFLIGHT && !fe.rc) {
			job *j = &jb[todo.head];
			int i = j->shard, rc;
			if (inflight && inbytes + j->bytes > INFLIGHT_BYTES)
				break;
			pthread_mutex_lock(&r->mu[i]);
			if (j->seq && !j->numbered) {
				if (r->unfinished[i] >= PSW_WINDOW - 1 && inflight) {
					pthread_mutex_unlock(&r->mu[i]);
					break; /* finish one of ours first */
				}
				while (r->unfinished[i] >= PSW_WINDOW - 1)
					pthread_cond_wait(&r->room[i], &r->mu[i]);
				r->unfinished[i]++;
				j->numbered = 1;
				*j->seq = ++r->seq[i];
			}
			rc = dml_rpc_start(&j->p, r->c[i], j->m, &j->a,
			                   j->has_reply ? (void *)&j->rep : NULL, r->timeout);
			pthread_mutex_unlock(&r->mu[i]);
			int k = q_pop(jb, &todo);
			if (!rc) {
				q_push(jb, &flying, k);
				inflight++;
				inbytes += j->bytes;
				dirty[i] = 1;
				continue;
			}
			j->p = NULL;
			if (resend(r, j, rc, start, &wait)) { /* not sent whole */
				q_push(jb, &todo, k);
				continue;
			}
			note_error(&fe, i, rc);
			j->rc = rc;
			release(r, j);
		}
		/* A client queues small requests to write them together, until
		 * a wait on it or more of them: what was started on the other
		 * shards' clients is written now, or each shard would wait for
		 * the one before it (the shards' calls would run one by one). */
		flush_dirty(r, dirty);
		int k = q_pop(jb, &flying);
		if (k < 0) {
			if (todo.head < 0 || fe.rc)
				break;
			continue;
		}
		inflight--;
		job *j = &jb[k];
		inbytes -= j->bytes;
		int e = job_result(j, dml_rpc_pending_wait(j->p));
		dml_rpc_pending_free(j->p);
		j->p = NULL;
		if (!fe.rc && resend(r, j, e, start, &wait)) {
			q_push(jb, &todo, k);
			continue;
		}
		note_error(&fe, j->shard, e);
		j->rc = e;
		release(r, j);
	}
	/* after a failure: what was never sent gives its number back */
	for (int k; (k = q_pop(jb, &todo)) >= 0;)
		release(r, &jb[k]);
	return first_error_return(&fe);
}

static job *jobs_new(size_t n)
{
	if (n > (size_t)INT32_MAX || n > SIZE_MAX / sizeof(job))
		return NULL;
	return calloc(n ? n : 1, sizeof(job));
}

/* ---- connecting: sizes from a peer are claims ---------------------- */

/* What shard i says it is, checked; fills r's limits for it. */
static int shard_check(dml__ps_remote *r, int i, const psw_desc *d)
{
	size_t mine = dml__rpc_client_max_frame(r->c[i]);
	if (d->kind != PSW_KIND_DENSE && d->kind != PSW_KIND_KEYED)
		return dml__fail(DML_EPROTO, "store kind %d unknown", (int)d->kind);
	if (d->kind == PSW_KIND_DENSE && (d->dim == 0 || d->dim > DML_PS_MAX_DIM))
		return dml__fail(DML_EPROTO, "dimension %llu: 1 to 2^40",
		                 (unsigned long long)d->dim);
	if (d->kind == PSW_KIND_KEYED && (d->width == 0 || d->width > DML_PS_MAX_WIDTH))
		return dml__fail(DML_EPROTO, "row width %llu: 1 to 2^20",
		                 (unsigned long long)d->width);
	if (d->workers < 0 || d->workers > DML_PS_MAX_WORKERS ||
	    d->staleness < DML_PS_ASYNC || d->staleness > INT32_MAX)
		return dml__fail(DML_EPROTO, "%lld workers, staleness %lld",
		                 (long long)d->workers, (long long)d->staleness);
	size_t theirs = d->max_frame ? (size_t)d->max_frame : mine;
	if (d->max_frame && d->max_frame < 4 * PSW_FRAME_SLACK)
		return dml__fail(DML_EPROTO, "frame limit %llu",
		                 (unsigned long long)d->max_frame);
	size_t f = mine < theirs ? mine : theirs;
	r->frame[i] = f > 2 * PSW_FRAME_SLACK ? f - PSW_FRAME_SLACK : f / 2;
	return 0;
}

int dml_ps_connect_abi(dml_ps **out, dml_rpc_client *const *clients, int n,
                       const dml_ps_remote_opts *opts, int abi)
{
	dml__detail_clear();
	dml_ps_remote_opts o;
	int rc = dml__abi_in(&o, sizeof o, opts, DML__L_PS_REMOTE_OPTS, abi);
	if (rc)
		return rc;
	if (!out || !clients || n < 1 || n > MAX_SHARDS)
		return dml__fail(DML_EINVAL, "%d shards: 1 to %d", n, MAX_SHARDS);
	for (int i = 0; i < n; i++)
		if (!clients[i])
			return dml__fail(DML_EINVAL, "client %d is NULL", i);
	if ((rc = remote_opts(&o)))
		return rc;
	dml_ps *ps = calloc(1, sizeof *ps);
	dml__ps_remote *r = calloc(1, sizeof *r);
	psw_desc *d = calloc((size_t)n, sizeof *d);
	if (!ps || !r || !d) {
		free(ps);
		free(r);
		free(d);
		return DML_ENOMEM;
	}
	r->n = n;
	r->timeout = o.timeout;
	r->retries = o.retries;
	r->retry_timeout = o.retry_timeout;
	r->clock_timeout = o.clock_timeout;
	r->client_id = fresh_id();
	first_error fe = {0};
	for (int i = 0; i < n && !fe.rc; i++) {
		r->c[i] = clients[i];
		rc = dml_rpc_call(clients[i], &psw_m_describe, NULL, &d[i], r->timeout);
		r->split[i] = !rc;
		if (rc == DML_ENOMETHOD) { /* a 0.2 server: dense only */
			psw_info info;
			rc = dml_rpc_call(clients[i], &psw_m_info, NULL, &info, r->timeout);
			d[i] = (psw_desc){PSW_KIND_DENSE, info.dim, 0, 0, 0, info.optim,
			                  info.workers, info.staleness, info.updates, 0};
		}
		if (!rc)
			rc = shard_check(r, i, &d[i]);
		if (!rc && r->split[i] && d[i].kind == PSW_KIND_DENSE) {
			psw_codec c;
			rc = dml_rpc_call(clients[i], &psw_m_compression, NULL, &c, r->timeout);
			if (rc == DML_ENOMETHOD) { /* a 0.3 server: plain pushes */
				c = (psw_codec){DML__GC_NONE, 0, 0};
				rc = 0;
			}
			if (!rc && (c.codec < DML__GC_NONE || c.codec >= DML__GC_COUNT ||
			            (c.codec == DML__GC_TOPK && !(c.topk > 0 && c.topk <= 1))))
				rc = dml__fail(DML_EPROTO, "compression %d (top-k %g) unknown",
				               (int)c.codec, (double)c.topk);
			if (!rc) {
				r->codec[i] = c.codec;
				r->topk[i] = c.topk;
				r->warmup[i] = c.warmup;
			}
		}
		if (!rc && i && (d[i].kind != d[0].kind || d[i].width != d[0].width))
			rc = dml__fail(DML_EINVAL, "a %s store beside a %s one",
			               d[i].kind ? "keyed" : "dense",
			               d[0].kind ? "keyed" : "dense");
		if (!rc && !d[i].kind && r->off[i] > DML_PS_MAX_DIM * MAX_SHARDS - d[i].dim)
			rc = dml__fail(DML_EPROTO, "dimensions overflow");
		note_error(&fe, i, rc);
		r->off[i + 1] = r->off[i] + (d[i].kind ? 0 : (size_t)d[i].dim);
	}
	if (fe.rc) {
		free(d);
		free(r);
		free(ps);
		return first_error_return(&fe);
	}
	for (int i = 0; i < n; i++) {
		pthread_mutex_init(&r->mu[i], NULL);
		pthread_cond_init(&r->room[i], NULL);
	}
	pthread_mutex_init(&r->gcmu, NULL);
	r->rng = fresh_id();
	r->keyed = d[0].kind == PSW_KIND_KEYED;
	ps->ops = r->keyed ? &dml__psr_keyed_ops : &dml__psr_dense_ops;
	ps->dim = r->off[n];
	ps->width = r->keyed ? (size_t)d[0].width : 0;
	ps->remote = r;
	ps->workers = (int)d[0].workers;
	ps->staleness = (int)d[0].staleness;
	free(d);
	*out = ps;
	return 0;
}

dml_duration dml__psr_clock_timeout(const dml_ps *ps)
{
	return ps->remote->clock_timeout;
}

static void psr_free(dml_ps *ps)
{
	for (int i = 0; i < ps->remote->n; i++) {
		pthread_mutex_destroy(&ps->remote->mu[i]);
		pthread_cond_destroy(&ps->remote->room[i]);
	}
	pthread_mutex_destroy(&ps->remote->gcmu);
	free(ps->remote->resid);
	free(ps->remote);
}

/* ---- dense --------------------------------------------------------- */

/* Frames of at most `per` values in a range of `len`: at least 1. */
static size_t frames_of(size_t len, size_t per)
{
	return len <= per ? 1 : (len + per - 1) / per;
}

/* ---- compressed pushes -------------------------------------------- */

static size_t align8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

/* Top-k's fraction for shard i at push p (0, 1, ...): during the warm-up
 * it falls geometrically from 1 (everything) to topk (DGC's warm-up). */
static float topk_frac(const dml__ps_remote *r, int i, uint64_t p)
{
	if (p >= r->warmup[i])
		return r->topk[i];
	return (float)pow((double)r->topk[i], (double)p / (double)r->warmup[i]);
}

/* What a coded frame of m values of shard i takes in a call's arena: its
 * data, scales and indices, and (top-k) the m values it sends back into
 * the residual if it fails. `p` is the push's top-k number. */
static size_t coded_bytes(const dml__ps_remote *r, int i, size_t m, uint64_t p,
                          size_t *nb, size_t *ns, size_t *ni, size_t *k)
{
	*k = r->codec[i] == DML__GC_TOPK ? dml__gc_topk_k(m, topk_frac(r, i, p)) : 0;
	dml__gc_sizes(r->codec[i], m, *k, nb, ns, ni);
	return align8(*nb) + align8(4 * *ns) + align8(4 * *ni) +
	       (r->codec[i] == DML__GC_TOPK ? align8(4 * m) : 0);
}

/* Codes the frame [at, at + m) of shard i of the gradient v into jb and
 * the arena at *ap, under gcmu: top-k sends the largest of the gradient
 * plus the residual and keeps the rest as the new residual. `e` and `tmp`
 * are m floats of scratch. */
static void code_frame(dml__ps_remote *r, job *j, int i, size_t at, size_t m,
                       uint64_t p, const float *v, uint8_t **ap, float *e, float *tmp)
{
	size_t k, nb, ns, ni;
	(void)coded_bytes(r, i, m, p, &nb, &ns, &ni, &k);
	uint8_t *a = *ap;
	dml__gc_piece pc = {a, nb, (float *)(void *)(a + align8(nb)), ns,
	                    (uint32_t *)(void *)(a + align8(nb) + align8(4 * ns)), ni};
	a += align8(nb) + align8(4 * ns) + align8(4 * ni);
	size_t g = r->off[i] + at; /* in the whole vector */
	if (r->codec[i] == DML__GC_TOPK) {
		float *back = (float *)(void *)a;
		a += align8(4 * m);
		for (size_t t = 0; t < m; t++)
			e[t] = v[g + t] + r->resid[g + t];
		dml__gc_encode(DML__GC_TOPK, e, m, k, &r->rng, &pc, back, tmp);
		for (size_t t = 0; t < m; t++) /* back stays: a failed frame adds it back */
			r->resid[g + t] = e[t] - back[t];
	} else {
		dml__gc_encode(r->codec[i], v + g, m, 0, &r->rng, &pc, NULL, NULL);
	}
	*ap = a;
	j->shard = i;
	j->m = &psw_m_push_coded;
	j->a.cpush = (psw_cpush){r->client_id, 0, DML__PS_STEP, at == 0, at, m,
	                         r->codec[i], {pc.scales, ns, 0}, {pc.idx, ni, 0},
	                         {pc.data, nb, 0}};
	j->bytes = nb + 4 * (ns + ni);
	j->seq = &j->a.cpush.seq;
	j->has_reply = j->status = 1;
}

/* A push whose shards ask for compression (those that do not get plain
 * frames): coded frame by frame as PS.PushRange splits it. */
static int psr_push_coded(dml_ps *ps, const float *v)
{
	dml__ps_remote *r = ps->remote;
	size_t total = 0, arena = 0, most = 1, per[MAX_SHARDS];
	int topk = 0;
	pthread_mutex_lock(&r->gcmu); /* this push's number, for the warm-up */
	uint64_t p = r->pushes;
	pthread_mutex_unlock(&r->gcmu);
	for (int i = 0; i < r->n; i++) {
		size_t len = r->off[i + 1] - r->off[i], k;
		per[i] = r->frame[i] / sizeof(float);
		if (per[i] > PIECE_BYTES / sizeof(float))
			per[i] = PIECE_BYTES / sizeof(float);
		total += frames_of(len, per[i]);
		if (!r->codec[i])
			continue;
		topk |= r->codec[i] == DML__GC_TOPK;
		for (size_t at = 0; at < len; at += per[i]) {
			size_t m = len - at < per[i] ? len - at : per[i];
			size_t nb, ns, ni;
			arena += coded_bytes(r, i, m, p, &nb, &ns, &ni, &k);
			most = m > most ? m : most;
		}
	}
	job *jb = jobs_new(total);
	uint8_t *mem = malloc(arena ? arena : 1);
	float *e = topk ? malloc(2 * most * sizeof *e) : NULL;
	int rc = !jb || !mem || (topk && !e) ? DML_ENOMEM : 0;
	pthread_mutex_lock(&r->gcmu);
	if (!rc && topk && !r->resid && !(r->resid = calloc(ps->dim, sizeof(float))))
		rc = DML_ENOMEM;
	if (p != r->pushes) /* another thread's push came between: size again */
		rc = rc ? rc : 1;
	if (!rc && topk)
		r->pushes++;
	int k = 0;
	uint8_t *ap = mem;
	for (int i = 0; i < r->n && !rc; i++) {
		size_t len = r->off[i + 1] - r->off[i];
		for (size_t at = 0; at < len; at += per[i]) {
			size_t m = len - at < per[i] ? len - at : per[i];
			job *j = &jb[k++];
			if (r->codec[i]) {
				code_frame(r, j, i, at, m, p, v, &ap, e, e ? e + most : NULL);
				continue;
			}
			j->shard = i;
			j->m = &psw_m_push_range;
			j->a.xpush = (psw_xpush){r->client_id, 0, DML__PS_STEP, at == 0, at,
			                         {(float *)v + r->off[i] + at, m, 0}};
			j->bytes = m * sizeof(float);
			j->seq = &j->a.xpush.seq;
			j->has_reply = j->status = 1;
		}
	}
	pthread_mutex_unlock(&r->gcmu);
	if (rc == 1) {
		free(e);
		free(mem);
		free(jb);
		return psr_push_coded(ps, v);
	}
	if (!rc)
		rc = run_jobs(r, jb, k);
	if (rc && topk && r->resid) {
		/* a top-k frame that was not applied gives back what it took from
		 * the residual (sent, or lost and maybe applied: not known) */
		pthread_mutex_lock(&r->gcmu);
		for (int q = 0; q < k; q++) {
			const psw_cpush *c = &jb[q].a.cpush;
			if (jb[q].m != &psw_m_push_coded || c->codec != DML__GC_TOPK || !jb[q].rc)
				continue;
			size_t g = r->off[jb[q].shard] + (size_t)c->off;
			const float *back = (const float *)(const void *)((const uint8_t *)c->idx.data +
			                                                  align8(4 * c->idx.n));
			for (size_t t = 0; t < (size_t)c->n; t++)
				r->resid[g + t] += back[t];
		}
		pthread_mutex_unlock(&r->gcmu);
	}
	free(e);
	free(mem);
	free(jb);
	return rc;
}

static int psr_update(dml_ps *ps, int op, const float *v)
{
	dml__ps_remote *r = ps->remote;
	size_t total = 0, per[MAX_SHARDS];
	if (op == DML__PS_STEP)
		for (int i = 0; i < r->n; i++)
			if (r->codec[i])
				return psr_push_coded(ps, v);
	for (int i = 0; i < r->n; i++) {
		per[i] = r->frame[i] / sizeof(float);
		size_t len = r->off[i + 1] - r->off[i];
		if (len > per[i] && !r->split[i])
			return dml__fail(DML_ETOOBIG, "shard %d: %zu values exceed its "
			                 "frame limit, and its server (0.2) cannot take "
			                 "them split", i, len);
		if (r->split[i] && per[i] > PIECE_BYTES / sizeof(float))
			per[i] = PIECE_BYTES / sizeof(float);
		total += frames_of(len, per[i]);
	}
	job *jb = jobs_new(total);
	if (!jb)
		return DML_ENOMEM;
	int k = 0;
	for (int i = 0; i < r->n; i++) {
		size_t len = r->off[i + 1] - r->off[i];
		const float *base = v + r->off[i];
		if (len <= per[i]) { /* one frame: the 0.2 methods */
			job *j = &jb[k++];
			j->shard = i;
			if (op == DML__PS_SET) {
				j->m = &psw_m_assign;
				j->a.vec.v = (dml_f32s){(float *)base, len, 0};
			} else {
				j->m = &psw_m_push;
				j->a.push = (psw_push){r->client_id, 0, op,
				                       {(float *)base, len, 0}};
				j->seq = &j->a.push.seq;
			}
			continue;
		}
		for (size_t at = 0; at < len; at += per[i]) {
			job *j = &jb[k++];
			size_t m = len - at < per[i] ? len - at : per[i];
			j->shard = i;
			j->m = &psw_m_push_range;
			j->a.xpush = (psw_xpush){r->client_id, 0, op, at == 0, at,
			                         {(float *)base + at, m, 0}};
			j->bytes = m * sizeof(float);
			j->seq = &j->a.xpush.seq;
			j->has_reply = j->status = 1;
		}
	}
	int rc = run_jobs(r, jb, k);
	free(jb);
	return rc;
}

static int psr_update_sparse(dml_ps *ps, int op, const uint32_t *idx,
                             const float *val, size_t nnz)
{
	dml__ps_remote *r = ps->remote;
	size_t cnt[MAX_SHARDS] = {0};
	uint32_t *lidx = malloc((nnz ? nnz : 1) * sizeof *lidx);
	float *lval = malloc((nnz ? nnz : 1) * sizeof *lval);
	int *shard = malloc((nnz ? nnz : 1) * sizeof *shard);
	job *jb = jobs_new((size_t)r->n);
	int rc = 0;
	if (!lidx || !lval || !shard || !jb) {
		rc = DML_ENOMEM;
		goto out;
	}
	for (size_t k = 0; k < nnz; k++) { /* binary search over the offsets */
		int lo = 0, hi = r->n - 1;
		while (lo < hi) {
			int mid = (lo + hi + 1) / 2;
			if (r->off[mid] <= idx[k])
				lo = mid;
			else
				hi = mid - 1;
		}
		shard[k] = lo;
		cnt[lo]++;
	}
	size_t start[MAX_SHARDS + 1] = {0}, fill[MAX_SHARDS];
	for (int i = 0; i < r->n; i++) {
		start[i + 1] = start[i] + cnt[i];
		fill[i] = start[i];
		if (cnt[i] * 8 > r->frame[i]) {
			rc = dml__fail(DML_ETOOBIG, "shard %d: a sparse push of %zu "
			               "entries exceeds its frame limit", i, cnt[i]);
			goto out;
		}
	}
	for (size_t k = 0; k < nnz; k++) {
		size_t at = fill[shard[k]]++;
		lidx[at] = idx[k] - (uint32_t)r->off[shard[k]];
		lval[at] = val[k];
	}
	/* every shard takes the step, touched or not, so that step counts
	 * (Adam, schedules) agree with a single store */
	for (int i = 0; i < r->n; i++) {
		job *j = &jb[i];
		j->shard = i;
		j->m = &psw_m_spush;
		j->a.spush = (psw_spush){r->client_id, 0, op,
		                         {lidx + start[i], cnt[i], 0},
		                         {lval + start[i], cnt[i], 0}};
		j->seq = &j->a.spush.seq;
	}
	rc = run_jobs(r, jb, r->n);
out:
	free(jb);
	free(shard);
	free(lidx);
	free(lval);
	return rc;
}

/* The jobs of a pull of [off, off + n) into out: *k of them. */
static job *pull_jobs(dml__ps_remote *r, size_t off, size_t n, float *out, int *nk)
{
	size_t end = off + n, total = 0, per[MAX_SHARDS];
	for (int i = 0; i < r->n; i++) {
		size_t lo = off > r->off[i] ? off : r->off[i];
		size_t hi = end < r->off[i + 1] ? end : r->off[i + 1];
		per[i] = r->frame[i] / sizeof(float);
		if (per[i] > PIECE_BYTES / sizeof(float))
			per[i] = PIECE_BYTES / sizeof(float);
		if (lo < hi)
			total += frames_of(hi - lo, per[i]);
	}
	job *jb = jobs_new(total);
	if (!jb)
		return NULL;
	int k = 0;
	for (int i = 0; i < r->n; i++) {
		size_t lo = off > r->off[i] ? off : r->off[i];
		size_t hi = end < r->off[i + 1] ? end : r->off[i + 1];
		for (size_t at = lo; at < hi; at += per[i]) {
			job *j = &jb[k++];
			size_t m = hi - at < per[i] ? hi - at : per[i];
			j->shard = i;
			j->m = &psw_m_pull;
			j->a.range = (psw_range){at - r->off[i], m};
			j->rep.vec.v = (dml_f32s){out + (at - off), 0, m};
			j->has_reply = 1;
			j->expect = m;
			j->bytes = m * sizeof(float);
		}
	}
	*nk = k;
	return jb;
}

static int psr_pull(dml_ps *ps, size_t off, size_t n, float *out)
{
	int k;
	job *jb = pull_jobs(ps->remote, off, n, out, &k);
	if (!jb)
		return DML_ENOMEM;
	int rc = run_jobs(ps->remote, jb, k);
	free(jb);
	return rc;
}

/* ---- a pull in flight (the worker loop's overlap) ------------------- */

struct dml__ps_pull_op {
	dml__ps_remote *r;
	job *jb;
	int n;
};

/* Every frame of the pull is started at once when they fit what a call
 * keeps in flight (INFLIGHT frames, INFLIGHT_BYTES); a larger pull is
 * done at once, and *op is NULL. */
int dml__ps_pull_begin(dml_ps *ps, float *out, dml__ps_pull_op **op)
{
	*op = NULL;
	if (!ps->remote || ps->remote->keyed)
		return dml_ps_pull(ps, out);
	dml__ps_remote *r = ps->remote;
	int k;
	job *jb = pull_jobs(r, 0, ps->dim, out, &k);
	if (!jb)
		return DML_ENOMEM;
	size_t bytes = 0;
	for (int q = 0; q < k; q++)
		bytes += jb[q].bytes;
	if (k > INFLIGHT || bytes > INFLIGHT_BYTES) {
		int rc = run_jobs(r, jb, k);
		free(jb);
		return rc;
	}
	dml__ps_pull_op *o = malloc(sizeof *o);
	if (!o) {
		free(jb);
		return DML_ENOMEM;
	}
	first_error fe = {0};
	int started = 0, dirty[MAX_SHARDS] = {0};
	for (; started < k; started++) {
		job *j = &jb[started];
		int rc = dml_rpc_start(&j->p, r->c[j->shard], j->m, &j->a, &j->rep, r->timeout);
		if (rc) {
			note_error(&fe, j->shard, rc);
			break;
		}
		dirty[j->shard] = 1;
	}
	flush_dirty(r, dirty); /* on their way while the caller computes */
	if (fe.rc) { /* the frames started are waited for: they write to out */
		for (int q = 0; q < started; q++) {
			dml_rpc_pending_wait(jb[q].p);
			dml_rpc_pending_free(jb[q].p);
		}
		free(jb);
		free(o);
		return first_error_return(&fe);
	}
	*o = (dml__ps_pull_op){r, jb, k};
	*op = o;
	return 0;
}

int dml__ps_pull_end(dml__ps_pull_op *op)
{
	if (!op)
		return 0;
	first_error fe = {0};
	for (int q = 0; q < op->n; q++) {
		job *j = &op->jb[q];
		int e = job_result(j, dml_rpc_pending_wait(j->p));
		dml_rpc_pending_free(j->p);
		note_error(&fe, j->shard, e);
	}
	free(op->jb);
	free(op);
	return first_error_return(&fe);
}

/* ---- keyed --------------------------------------------------------- */

/* The keys of a call grouped by shard: keys of shard i are
 * sk[start[i] .. start[i + 1]), and pos[] says where each came from (one
 * shard: sk is the caller's array and pos NULL). */
typedef struct by_shard {
	uint64_t *sk;
	size_t *pos;
	size_t start[MAX_SHARDS + 1];
} by_shard;

static int group(const dml__ps_remote *r, const uint64_t *keys, size_t n,
                 by_shard *g)
{
	if (r->n == 1) { /* one shard: the caller's keys, in its order */
		g->sk = (uint64_t *)keys;
		g->pos = NULL;
		g->start[0] = 0;
		g->start[1] = n;
		return 0;
	}
	g->sk = malloc((n ? n : 1) * sizeof *g->sk);
	g->pos = malloc((n ? n : 1) * sizeof *g->pos);
	int *sh = malloc((n ? n : 1) * sizeof *sh);
	if (!g->sk || !g->pos || !sh) {
		free(g->sk);
		free(g->pos);
		free(sh);
		return DML_ENOMEM;
	}
	size_t cnt[MAX_SHARDS] = {0}, fill[MAX_SHARDS];
	for (size_t k = 0; k < n; k++)
		cnt[sh[k] = psw_shard_of(keys[k], r->n)]++;
	g->start[0] = 0;
	for (int i = 0; i < r->n; i++) {
		g->start[i + 1] = g->start[i] + cnt[i];
		fill[i] = g->start[i];
	}
	for (size_t k = 0; k < n; k++) {
		size_t at = fill[sh[k]]++;
		g->sk[at] = keys[k];
		g->pos[at] = k;
	}
	free(sh);
	return 0;
}

static void group_free(const dml__ps_remote *r, by_shard *g)
{
	if (r->n == 1)
		return;
	free(g->sk);
	free(g->pos);
}

/* Rows per frame to shard i, each row costing `bytes` on the wire. */
static size_t rows_per(const dml__ps_remote *r, int i, size_t bytes)
{
	size_t m = r->frame[i] / bytes;
	return m ? m : 1;
}

static int psr_pull_rows(dml_ps *ps, const uint64_t *keys, size_t n, float *out)
{
	dml__ps_remote *r = ps->remote;
	size_t w = ps->width, total = 0;
	by_shard g;
	int rc = group(r, keys, n, &g);
	if (rc)
		return rc;
	size_t row_bytes = w * sizeof(float) > 8 ? w * sizeof(float) : 8;
	for (int i = 0; i < r->n; i++) {
		size_t len = g.start[i + 1] - g.start[i];
		if (len)
			total += frames_of(len, rows_per(r, i, row_bytes));
	}
	float *tmp = r->n > 1 ? malloc(n * w * sizeof(float)) : out;
	job *jb = jobs_new(total);
	if (!jb || !tmp) {
		rc = DML_ENOMEM;
		goto out;
	}
	int k = 0;
	for (int i = 0; i < r->n; i++) {
		size_t per = rows_per(r, i, row_bytes);
		for (size_t at = g.start[i]; at < g.start[i + 1]; at += per) {
			job *j = &jb[k++];
			size_t m = g.start[i + 1] - at < per ? g.start[i + 1] - at : per;
			j->shard = i;
			j->m = &psw_m_pull_rows;
			j->a.keys.keys = (dml_i64s){(int64_t *)(g.sk + at), m, 0};
			j->rep.vec.v = (dml_f32s){tmp + at * w, 0, m * w};
			j->has_reply = 1;
			j->expect = m * w;
			j->bytes = m * row_bytes;
		}
	}
	/* one shard: grouped in the caller's order, straight into out */
	if (!(rc = run_jobs(r, jb, k)) && r->n > 1)
		for (size_t at = 0; at < n; at++)
			memcpy(out + g.pos[at] * w, tmp + at * w, w * sizeof(float));
out:
	free(jb);
	if (tmp != out)
		free(tmp);
	group_free(r, &g);
	return rc;
}

static int psr_apply_rows(dml_ps *ps, int op, const uint64_t *keys, size_t n,
                          const float *v)
{
	dml__ps_remote *r = ps->remote;
	size_t w = ps->width, total = 0;
	by_shard g;
	int rc = group(r, keys, n, &g);
	if (rc)
		return rc;
	size_t row_bytes = 8 + w * sizeof(float);
	for (int i = 0; i < r->n; i++) {
		size_t len = g.start[i + 1] - g.start[i];
		/* every shard takes a step, touched or not (step counts agree) */
		if (len || op == DML__PS_STEP)
			total += frames_of(len, rows_per(r, i, row_bytes));
	}
	float *sv = r->n > 1 ? malloc((n ? n : 1) * w * sizeof(float)) : (float *)v;
	job *jb = jobs_new(total);
	if (!jb || !sv) {
		rc = DML_ENOMEM;
		goto out;
	}
	if (r->n > 1)
		for (size_t at = 0; at < n; at++)
			memcpy(sv + at * w, v + g.pos[at] * w, w * sizeof(float));
	int k = 0;
	for (int i = 0; i < r->n; i++) {
		size_t per = rows_per(r, i, row_bytes), lo = g.start[i], hi = g.start[i + 1];
		if (lo == hi && op != DML__PS_STEP)
			continue;
		size_t at = lo;
		do {
			job *j = &jb[k++];
			size_t m = hi - at < per ? hi - at : per;
			j->shard = i;
			j->m = &psw_m_push_rows;
			j->a.rpush = (psw_rpush){r->client_id, 0, op, at == lo,
			                         {(int64_t *)(g.sk + at), m, 0},
			                         {sv + at * w, m * w, 0}};
			j->seq = &j->a.rpush.seq;
			j->has_reply = j->status = 1;
			j->bytes = m * row_bytes;
			at += m;
		} while (at < hi);
	}
	rc = run_jobs(r, jb, k);
out:
	free(jb);
	if (sv != v)
		free(sv);
	group_free(r, &g);
	return rc;
}

/* ---- counts and clocks --------------------------------------------- */

static int psr_updates(dml_ps *ps, uint64_t *count)
{
	dml__ps_remote *r = ps->remote;
	psw_info info;
	int rc = dml_rpc_call(r->c[0], &psw_m_info, NULL, &info, r->timeout);
	if (!rc)
		*count = info.updates;
	return rc;
}

static int psr_rows(dml_ps *ps, uint64_t *count)
{
	dml__ps_remote *r = ps->remote;
	dml_rpc_pending *p[MAX_SHARDS] = {0};
	psw_desc d[MAX_SHARDS];
	first_error fe = {0};
	for (int i = 0; i < r->n && !fe.rc; i++)
		note_error(&fe, i, dml_rpc_start(&p[i], r->c[i], &psw_m_describe, NULL,
		                                 &d[i], r->timeout));
	uint64_t sum = 0;
	for (int i = 0; i < r->n; i++) {
		if (!p[i])
			continue;
		int e = dml_rpc_pending_wait(p[i]);
		dml_rpc_pending_free(p[i]);
		note_error(&fe, i, e);
		if (!e)
			sum += d[i].rows;
	}
	if (!fe.rc)
		*count = sum;
	return first_error_return(&fe);
}

static int psr_advance(dml_ps *ps, int worker, dml_duration timeout,
                       dml_ps_clock_info *info)
{
	dml__ps_remote *r = ps->remote;
	psw_worker q = {worker};
	psw_clock rep = {0, 0, 0};
	int rc = dml_rpc_call(r->c[0], &psw_m_clock, &q, &rep, timeout);
	if (!rc)
		*info = (dml_ps_clock_info){rep.clock, rep.min, rep.waited != 0};
	return rc;
}

static int psr_clock_get(dml_ps *ps, int worker, int64_t *clock, int64_t *min)
{
	dml__ps_remote *r = ps->remote;
	psw_worker q = {worker};
	psw_clock rep = {0, 0, 0};
	int rc = dml_rpc_call(r->c[0], &psw_m_clock_get, &q, &rep, r->timeout);
	if (!rc) {
		if (clock)
			*clock = rep.clock;
		if (min)
			*min = rep.min;
	}
	return rc;
}

const dml__ps_ops dml__psr_dense_ops = {
	.name = "a remote dense store",
	.update = psr_update,
	.update_sparse = psr_update_sparse,
	.pull = psr_pull,
	.updates = psr_updates,
	.advance = psr_advance,
	.clock_get = psr_clock_get,
	.free = psr_free,
};

const dml__ps_ops dml__psr_keyed_ops = {
	.name = "a remote keyed store",
	.pull_rows = psr_pull_rows,
	.apply_rows = psr_apply_rows,
	.updates = psr_updates,
	.rows = psr_rows,
	.advance = psr_advance,
	.clock_get = psr_clock_get,
	.free = psr_free,
};
