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

#include <stddef.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define MAX_SHARDS 64
#define DEFAULT_TIMEOUT 30000

struct dml__ps_remote {
	int n;
	dml_rpc_client *c[MAX_SHARDS];
	size_t off[MAX_SHARDS + 1]; /* shard i holds [off[i], off[i+1]) */
	dml_duration timeout;
	int retries;
	dml_duration retry_timeout;
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

int dml_ps_connect(dml_ps **out, dml_rpc_client *const *clients, int n,
                   const dml_ps_remote_opts *opts)
{
	if (!out || !clients || n < 1 || n > MAX_SHARDS)
		return DML_EINVAL;
	for (int i = 0; i < n; i++)
		if (!clients[i])
			return DML_EINVAL;
	dml_ps *ps = calloc(1, sizeof *ps);
	dml__ps_remote *r = calloc(1, sizeof *r);
	if (!ps || !r) {
		free(ps);
		free(r);
		return DML_ENOMEM;
	}
	r->n = n;
	r->timeout = opts && opts->timeout ? opts->timeout : DEFAULT_TIMEOUT;
	r->retries = !opts || !opts->retries ? 1 : opts->retries < 0 ? 0 : opts->retries;
	r->retry_timeout = opts && opts->retry_timeout > 0 ? opts->retry_timeout : 0;
	r->client_id = fresh_id();
	dml_rpc_pending *p[MAX_SHARDS];
	psw_info info[MAX_SHARDS];
	int rc = 0, started = 0;
	for (int i = 0; i < n && !rc; i++, started++) {
		r->c[i] = clients[i];
		rc = dml_rpc_go(clients[i], &psw_m_info, NULL, &info[i], r->timeout, &p[i]);
		if (rc)
			break;
	}
	for (int i = 0; i < started; i++) {
		int e = dml_rpc_wait(p[i]);
		dml_rpc_pending_free(p[i]);
		if (!rc)
			rc = e;
	}
	for (int i = 0; i < n && !rc; i++) {
		if (!info[i].dim || r->off[i] + info[i].dim < r->off[i])
			rc = DML_EPROTO;
		r->off[i + 1] = r->off[i] + info[i].dim;
	}
	if (rc) {
		free(r);
		free(ps);
		return rc;
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

void dml__psr_free(dml_ps *ps)
{
	for (int i = 0; i < ps->remote->n; i++) {
		pthread_mutex_destroy(&ps->remote->mu[i]);
		pthread_cond_destroy(&ps->remote->room[i]);
	}
	free(ps->remote);
}

/* Waits for every started call; the first error wins. */
static int wait_all(dml_rpc_pending **p, int n, int rc)
{
	for (int i = 0; i < n; i++) {
		if (!p[i])
			continue;
		int e = dml_rpc_wait(p[i]);
		dml_rpc_pending_free(p[i]);
		p[i] = NULL;
		if (!rc)
			rc = e;
	}
	return rc;
}

_Static_assert(offsetof(psw_push, seq) == offsetof(psw_spush, seq),
               "both push messages keep seq at one offset");

static int push_tries(dml__ps_remote *r, const dml_rpc_method *m, void *args,
                      size_t args_size, const int *want, int *numbered);

/* Sends push `args[i]` to shard i for each i with want[i], numbering each
 * as it is queued. Pushes whose reply is lost (timeout, connection lost)
 * are resent with the same number, which the server applies once: up to
 * `retries` times, and beyond that while `retry_timeout` lasts, waiting
 * between attempts (10 ms doubling to 1 s) so that a client with
 * reconnect can dial a restarted server. A push waits for its number
 * while PSW_WINDOW - 1 numbered pushes to that shard are unfinished. */
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
	int last = DML_ETIMEDOUT;
	int todo[MAX_SHARDS];
	for (int i = 0; i < r->n; i++)
		todo[i] = want[i];
	int64_t start = dml__now_ms();
	long delay_ms = 10;
	for (int attempt = 0;; attempt++) {
		dml_rpc_pending *p[MAX_SHARDS] = {0};
		int rc = 0, again = 0;
		for (int i = 0; i < r->n && !rc; i++) {
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
			rc = dml_rpc_go(r->c[i], m, a, NULL, r->timeout, &p[i]);
			pthread_mutex_unlock(&r->mu[i]);
			if (rc == DML_ECONNLOST || rc == DML_ETIMEDOUT) { /* not sent whole: again */
				last = rc;
				again = 1;
				rc = 0;
			}
		}
		for (int i = 0; i < r->n; i++) {
			if (!p[i])
				continue;
			int e = dml_rpc_wait(p[i]);
			dml_rpc_pending_free(p[i]);
			todo[i] = e == DML_ETIMEDOUT || e == DML_ECONNLOST;
			if (todo[i])
				last = e;
			again |= todo[i];
			if (!rc && !todo[i])
				rc = e;
		}
		if (rc || !again)
			return rc;
		int64_t now = dml__now_ms();
		if (attempt >= r->retries && (r->retry_timeout <= 0 || now - start >= r->retry_timeout))
			return last;
		if (last == DML_ECONNLOST && r->retry_timeout > 0) {
			struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
			nanosleep(&ts, NULL); /* a backoff while the server is away */
			delay_ms = delay_ms * 2 > 1000 ? 1000 : delay_ms * 2;
		}
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
		rc = dml_rpc_go(r->c[i], &psw_m_pull, &q[i], &rep[i], r->timeout, &p[i]);
	}
	rc = wait_all(p, r->n, rc);
	for (int i = 0; i < r->n && !rc; i++) {
		size_t lo = off > r->off[i] ? off : r->off[i];
		size_t hi = end < r->off[i + 1] ? end : r->off[i + 1];
		if (lo < hi && rep[i].v.n != hi - lo)
			rc = DML_EPROTO;
	}
	return rc;
}

int dml__psr_assign(dml_ps *ps, const float *v)
{
	dml__ps_remote *r = ps->remote;
	psw_vec args[MAX_SHARDS];
	dml_rpc_pending *p[MAX_SHARDS] = {0};
	int rc = 0;
	for (int i = 0; i < r->n && !rc; i++) {
		args[i].v.data = (float *)v + r->off[i];
		args[i].v.n = r->off[i + 1] - r->off[i];
		args[i].v.cap = 0;
		rc = dml_rpc_go(r->c[i], &psw_m_assign, &args[i], NULL, r->timeout, &p[i]);
	}
	return wait_all(p, r->n, rc);
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
	if (!ps->workers || worker < 0 || worker >= ps->workers)
		return DML_EINVAL;
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
	if (!ps->workers || worker < 0 || worker >= ps->workers)
		return DML_EINVAL;
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
