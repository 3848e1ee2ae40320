/*
 * ps_remote.c - a remote parameter store: the dml_ps_* calls over RPC to one
 * or more servers, each holding a contiguous range of the keys. Every call
 * goes to all the shards it touches at once (asynchronous calls, then one
 * wait each), and large arrays travel without copies: pushes are sent from
 * the caller's vector, pulls land in the caller's buffer.
 */
#define _GNU_SOURCE
#include "ps.h"
#include "ps_wire.h"

#include "abi.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define MAX_SHARDS DML_PS_MAX_SHARDS
/* The wait between resends of a lost push, while retry_timeout lasts. */
#define RESEND_WAIT_MIN 10   /* ms */
#define RESEND_WAIT_MAX 1000 /* ms */

struct dml__ps_remote {
	int n;
	dml_rpc_client *c[MAX_SHARDS];
	size_t off[MAX_SHARDS + 1]; /* shard i holds [off[i], off[i+1]) */
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
};

static uint64_t fresh_id(void)
{
	uint64_t id = 0;
	if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id) {
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
	if (!ps || !r) {
		free(ps);
		free(r);
		return DML_ENOMEM;
	}
	r->n = n;
	r->timeout = o.timeout;
	r->retries = o.retries;
	r->retry_timeout = o.retry_timeout;
	r->clock_timeout = o.clock_timeout;
	r->client_id = fresh_id();
	dml_rpc_pending *p[MAX_SHARDS];
	psw_info info[MAX_SHARDS];
	first_error fe = {0};
	int started = 0;
	for (int i = 0; i < n && !fe.rc; i++, started++) {
		r->c[i] = clients[i];
		note_error(&fe, i, dml_rpc_start(&p[i], clients[i], &psw_m_info, NULL,
		                                 &info[i], r->timeout));
		if (fe.rc)
			break;
	}
	for (int i = 0; i < started; i++) {
		note_error(&fe, i, dml_rpc_pending_wait(p[i]));
		dml_rpc_pending_free(p[i]);
	}
	for (int i = 0; i < n && !fe.rc; i++) {
		if (!info[i].dim || r->off[i] + info[i].dim < r->off[i]) {
			dml__detail_set("dimension %llu", (unsigned long long)info[i].dim);
			note_error(&fe, i, DML_EPROTO);
		}
		r->off[i + 1] = r->off[i] + info[i].dim;
	}
	if (fe.rc) {
		free(r);
		free(ps);
		return first_error_return(&fe);
	}
	for (int i = 0; i < n; i++) {
		pthread_mutex_init(&r->mu[i], NULL);
		pthread_cond_init(&r->room[i], NULL);
	}
	ps->dim = r->off[n];
	ps->remote = r;
	ps->workers = (int)info[0].workers;
	ps->staleness = (int)info[0].staleness;
	*out = ps;
	return 0;
}

dml_duration dml__psr_clock_timeout(const dml_ps *ps)
{
	return ps->remote->clock_timeout;
}

void dml__psr_free(dml_ps *ps)
{
	for (int i = 0; i < ps->remote->n; i++) {
		pthread_mutex_destroy(&ps->remote->mu[i]);
		pthread_cond_destroy(&ps->remote->room[i]);
	}
	free(ps->remote);
}

/* Waits for every started call; the first error wins, with its detail. */
static int wait_all(dml_rpc_pending **p, int n, first_error *fe)
{
	for (int i = 0; i < n; i++) {
		if (!p[i])
			continue;
		note_error(fe, i, dml_rpc_pending_wait(p[i]));
		dml_rpc_pending_free(p[i]);
		p[i] = NULL;
	}
	return first_error_return(fe);
}

_Static_assert(offsetof(psw_push, seq) == offsetof(psw_spush, seq),
               "both push messages keep seq at one offset");

static int push_tries(dml__ps_remote *r, const dml_rpc_method *m, void *args,
                      size_t args_size, const int *want, int *numbered);

/* Sends push `args[i]` to shard i for each i with want[i], numbering each
 * as it is queued. Pushes whose reply is lost (timeout, connection lost)
 * are resent with the same number, which the server applies once: up to
 * `retries` times, and beyond that while `retry_timeout` lasts, waiting
 * between attempts (RESEND_WAIT_MIN doubling to RESEND_WAIT_MAX) so that a
 * client with reconnect can dial a restarted server. A push waits for its
 * number while PSW_WINDOW - 1 numbered pushes to that shard are
 * unfinished. */
static int push_all(dml__ps_remote *r, const dml_rpc_method *m, void *args,
                    size_t args_size, const int *want)
{
	int numbered[MAX_SHARDS] = {0};
	int rc = push_tries(r, m, args, args_size, want, numbered);
	for (int i = 0; i < r->n; i++) /* finished: acknowledged or given up */
		if (numbered[i]) {
			pthread_mutex_lock(&r->mu[i]);
			r->unfinished[i]--;
			pthread_cond_signal(&r->room[i]);
			pthread_mutex_unlock(&r->mu[i]);
		}
	return rc;
}

static int push_tries(dml__ps_remote *r, const dml_rpc_method *m, void *args,
                      size_t args_size, const int *want, int *numbered)
{
	first_error last = {DML_ETIMEDOUT, "no reply"}; /* a lost push's */
	int todo[MAX_SHARDS];
	for (int i = 0; i < r->n; i++)
		todo[i] = want[i];
	int64_t start = dml__now_ms();
	dml__backoff wait;
	dml__backoff_init(&wait, RESEND_WAIT_MIN, RESEND_WAIT_MAX);
	for (int attempt = 0;; attempt++) {
		dml_rpc_pending *p[MAX_SHARDS] = {0};
		first_error fe = {0};
		int again = 0;
		for (int i = 0; i < r->n && !fe.rc; i++) {
			if (!todo[i])
				continue;
			char *a = (char *)args + (size_t)i * args_size;
			uint64_t *seq = (uint64_t *)(a + offsetof(psw_push, seq));
			pthread_mutex_lock(&r->mu[i]);
			if (!attempt) {
				while (r->unfinished[i] >= PSW_WINDOW - 1)
					pthread_cond_wait(&r->room[i], &r->mu[i]);
				r->unfinished[i]++;
				numbered[i] = 1;
				*seq = ++r->seq[i];
			}
			int rc = dml_rpc_start(&p[i], r->c[i], m, a, NULL, r->timeout);
			pthread_mutex_unlock(&r->mu[i]);
			if (rc == DML_ECONNLOST || rc == DML_ETIMEDOUT) { /* not sent whole: again */
				last.rc = 0;
				note_error(&last, i, rc);
				again = 1;
			} else {
				note_error(&fe, i, rc);
			}
		}
		for (int i = 0; i < r->n; i++) {
			if (!p[i])
				continue;
			int e = dml_rpc_pending_wait(p[i]);
			todo[i] = e == DML_ETIMEDOUT || e == DML_ECONNLOST;
			if (todo[i]) {
				last.rc = 0;
				note_error(&last, i, e);
			} else {
				note_error(&fe, i, e);
			}
			dml_rpc_pending_free(p[i]);
			again |= todo[i];
		}
		if (fe.rc || !again)
			return first_error_return(&fe);
		int forever = r->retry_timeout == DML_INFINITE;
		if (attempt >= r->retries && !forever &&
		    (r->retry_timeout == 0 || dml__now_ms() - start >= r->retry_timeout))
			return first_error_return(&last);
		if (last.rc == DML_ECONNLOST && r->retry_timeout != 0)
			dml__sleep_ms(dml__backoff_next(&wait)); /* the server is away */
	}
}

int dml__psr_update(dml_ps *ps, int op, const float *v)
{
	dml__ps_remote *r = ps->remote;
	psw_push args[MAX_SHARDS];
	int want[MAX_SHARDS];
	for (int i = 0; i < r->n; i++) {
		args[i].client = r->client_id;
		args[i].seq = 0; /* numbered by push_all */
		args[i].op = op;
		args[i].v.data = (float *)v + r->off[i];
		args[i].v.n = r->off[i + 1] - r->off[i];
		args[i].v.cap = 0;
		want[i] = 1;
	}
	return push_all(r, &psw_m_push, args, sizeof args[0], want);
}

int dml__psr_update_sparse(dml_ps *ps, int op, const uint32_t *idx,
                           const float *val, size_t nnz)
{
	dml__ps_remote *r = ps->remote;
	psw_spush args[MAX_SHARDS];
	int want[MAX_SHARDS] = {0};
	size_t cnt[MAX_SHARDS] = {0};
	uint32_t *lidx = NULL;
	float *lval = NULL;
	if (r->n == 1) { /* the one shard's keys are the global keys */
		cnt[0] = nnz;
	} else {
		lidx = malloc((nnz ? nnz : 1) * sizeof *lidx);
		lval = malloc((nnz ? nnz : 1) * sizeof *lval);
		if (!lidx || !lval) {
			free(lidx);
			free(lval);
			return DML_ENOMEM;
		}
	}
	/* shard of each key: binary search over the offsets */
	int *shard = NULL;
	if (r->n > 1) {
		shard = malloc((nnz ? nnz : 1) * sizeof *shard);
		if (!shard) {
			free(lidx);
			free(lval);
			return DML_ENOMEM;
		}
		for (size_t k = 0; k < nnz; k++) {
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
	}
	size_t start[MAX_SHARDS + 1] = {0};
	for (int i = 0; i < r->n; i++)
		start[i + 1] = start[i] + cnt[i];
	if (r->n > 1) {
		size_t fill[MAX_SHARDS];
		memcpy(fill, start, sizeof fill);
		for (size_t k = 0; k < nnz; k++) {
			size_t at = fill[shard[k]]++;
			lidx[at] = idx[k] - (uint32_t)r->off[shard[k]];
			lval[at] = val[k];
		}
	}
	for (int i = 0; i < r->n; i++) {
		args[i].client = r->client_id;
		args[i].op = op;
		args[i].idx.data = r->n == 1 ? (uint32_t *)idx : lidx + start[i];
		args[i].idx.n = cnt[i];
		args[i].idx.cap = 0;
		args[i].v.data = r->n == 1 ? (float *)val : lval + start[i];
		args[i].v.n = cnt[i];
		args[i].v.cap = 0;
		/* every shard takes the step, touched or not, so that step
		 * counts (Adam, schedules) agree with a single store */
		want[i] = 1;
		args[i].seq = 0; /* numbered by push_all */
	}
	int rc = push_all(r, &psw_m_spush, args, sizeof args[0], want);
	free(shard);
	free(lidx);
	free(lval);
	return rc;
}

int dml__psr_pull(dml_ps *ps, size_t off, size_t n, float *out)
{
	dml__ps_remote *r = ps->remote;
	psw_range q[MAX_SHARDS];
	psw_vec rep[MAX_SHARDS];
	dml_rpc_pending *p[MAX_SHARDS] = {0};
	size_t end = off + n;
	first_error fe = {0};
	int rc = 0;
	for (int i = 0; i < r->n && !rc; i++) {
		size_t lo = off > r->off[i] ? off : r->off[i];
		size_t hi = end < r->off[i + 1] ? end : r->off[i + 1];
		if (lo >= hi)
			continue;
		q[i].off = lo - r->off[i];
		q[i].n = hi - lo;
		rep[i].v.data = out + (lo - off);
		rep[i].v.n = 0;
		rep[i].v.cap = hi - lo;
		rc = dml_rpc_start(&p[i], r->c[i], &psw_m_pull, &q[i], &rep[i], r->timeout);
		note_error(&fe, i, rc);
	}
	rc = wait_all(p, r->n, &fe);
	for (int i = 0; i < r->n && !rc; i++) {
		size_t lo = off > r->off[i] ? off : r->off[i];
		size_t hi = end < r->off[i + 1] ? end : r->off[i + 1];
		if (lo < hi && rep[i].v.n != hi - lo)
			rc = dml__fail(DML_EPROTO, "shard %d: %zu values for a range of %zu",
			               i, rep[i].v.n, hi - lo);
	}
	return rc;
}

int dml__psr_assign(dml_ps *ps, const float *v)
{
	dml__ps_remote *r = ps->remote;
	psw_vec args[MAX_SHARDS];
	dml_rpc_pending *p[MAX_SHARDS] = {0};
	first_error fe = {0};
	for (int i = 0; i < r->n && !fe.rc; i++) {
		args[i].v.data = (float *)v + r->off[i];
		args[i].v.n = r->off[i + 1] - r->off[i];
		args[i].v.cap = 0;
		note_error(&fe, i, dml_rpc_start(&p[i], r->c[i], &psw_m_assign,
		                                 &args[i], NULL, r->timeout));
	}
	return wait_all(p, r->n, &fe);
}

int dml__psr_updates(dml_ps *ps, uint64_t *count)
{
	dml__ps_remote *r = ps->remote;
	psw_info info;
	int rc = dml_rpc_call(r->c[0], &psw_m_info, NULL, &info, r->timeout);
	if (!rc)
		*count = info.updates;
	return rc;
}

int dml__psr_clock(dml_ps *ps, int worker, dml_duration timeout,
                   dml_ps_clock_info *info)
{
	dml__ps_remote *r = ps->remote;
	psw_worker q = {worker};
	psw_clock rep = {0, 0, 0};
	int rc = dml_rpc_call(r->c[0], &psw_m_clock, &q, &rep, timeout);
	if (!rc && info)
		*info = (dml_ps_clock_info){rep.clock, rep.min, rep.waited != 0};
	return rc;
}

int dml__psr_clock_get(dml_ps *ps, int worker, int64_t *clock, int64_t *min)
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
