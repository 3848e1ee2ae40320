/*
 * soak.c - a load soak of one served parameter store over loopback:
 * CONNS client connections (default 200) keep WINDOW pipelined PS.Push and
 * PS.Pull calls each in flight for SECONDS (default 5; `make soak` runs 60),
 * then the store is checked against the sum of every acknowledged push.
 *
 * One process: a store of DIM floats (default 1000) served by an RPC server
 * that SERVER_THREADS threads run on 127.0.0.1:0, and CLIENT_THREADS
 * threads that each drive CONNS / CLIENT_THREADS connections round-robin:
 * at each connection, wait for the calls it started on the previous visit,
 * then start WINDOW new ones (80% pushes, 20% pulls) and flush them in one
 * write. The calls are the store's wire methods (docs/ps.md) through
 * dml_rpc_start / dml_rpc_pending_wait, since a dml_ps handle's calls are synchronous.
 *
 * Exactness. Connection c numbers its pushes 1, 2, 3, ... with its own
 * client id (op 0: add the delta). Every push adds 1 to coordinate c (a
 * per-connection counter) and +P or -P to the coordinates from CONNS on,
 * where P is one of NPAT fixed patterns of -1, 0, 1: odd pushes add a new
 * pattern, even ones take it back. All values are small integers, so float
 * sums are exact whatever the order (every partial sum stays below 2^24):
 * the counters are bounded by MAX_CONN_PUSHES, the rest by CONNS. At the end
 * the store must equal, coordinate for coordinate, the int64 sum of the
 * acknowledged pushes; counter c's difference says how many of connection
 * c's pushes were lost (< 0) or applied twice (> 0). The store's update count
 * must equal the number of acknowledged pushes.
 *
 * Pulls are checked as they come back: the values are integers, and a range
 * that covers the connection's own counter must show exactly the pushes
 * sent before it on that connection (a server handles a connection's
 * requests in order, docs/rpc.md), unless a push of it was resent.
 *
 * Latency is from dml_rpc_start to the return of its dml_rpc_pending_wait, so it
 * includes the time the client thread spends on its other connections.
 * Resident memory (/proc/self/statm, the whole process: server and clients)
 * is read after setup, every second, and at the end.
 * Every loop is bounded in time and in count; traffic stays on 127.0.0.1.
 *
 *     soak [seconds [conns [dim]]]   (default 5 200 1000)
 *
 * Exits 0 when the check holds and no call failed, else 1.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <distml.h>

#define SERVER_THREADS 2
#define CLIENT_THREADS 4
#define WINDOW 8            /* calls in flight per connection; <= 64, the
                               server's exactly-once window, so a resent
                               push is still recognised */
#define PUSH_PERCENT 80
#define PULL_MAX 256        /* floats per pull */
#define NPAT 32             /* delta patterns */
#define CALL_TIMEOUT_MS 10000
#define RETRIES 2           /* resends of a push that timed out */
#define MAX_SECONDS 3600
#define MAX_CONNS 1000
#define MAX_DIM (1 << 20)
#define MAX_CALLS 100000000ULL          /* all threads together */
#define MAX_CONN_PUSHES ((1ULL << 24) - 1) /* keeps each counter exact */
#define CLIENT_ID_BASE 0x50a4000000000000ULL

/* ---- wire messages: the store's own (lib/ps_wire.h, docs/ps.md) ------ */

#include "ps_wire.h"


/* ---- latency histogram: log-linear, 32 steps per power of two ------- */

#define HSUB 32
#define HBINS (HSUB + 40 * HSUB)

static int hist_bin(uint64_t ns)
{
	if (ns < HSUB)
		return (int)ns;
	int e = 63 - __builtin_clzll(ns); /* >= 5 */
	int b = HSUB + (e - 5) * HSUB + (int)((ns >> (e - 5)) & (HSUB - 1));
	return b < HBINS ? b : HBINS - 1;
}

/* The middle of bin b, ns. */
static double hist_value(int b)
{
	if (b < HSUB)
		return b;
	int e = (b - HSUB) / HSUB + 5, sub = (b - HSUB) % HSUB;
	double lo = (double)((uint64_t)(HSUB + sub) << (e - 5));
	return lo + (double)(1ULL << (e - 5)) / 2;
}

static double hist_quantile(const uint64_t *h, double q)
{
	uint64_t total = 0, seen = 0;
	for (int b = 0; b < HBINS; b++)
		total += h[b];
	if (!total)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)(total - 1)) + 1;
	for (int b = 0; b < HBINS; b++)
		if ((seen += h[b]) >= rank)
			return hist_value(b);
	return hist_value(HBINS - 1);
}

/* ---- state -------------------------------------------------------- */

enum { K_PUSH = 1, K_PULL = 2 };

typedef struct slot {
	dml_rpc_pending *k;
	int kind;
	int pat, sign;        /* push: the delta */
	int tries;
	uint64_t seq;         /* push */
	int64_t expect;       /* pull: own counter's value, or -1 */
	int64_t t0;           /* ns */
	psw_range range;
	psw_vec reply;
	float *buf;           /* PULL_MAX */
} slot;

typedef struct conn {
	dml_rpc_client *c;
	int id;               /* its counter coordinate */
	uint64_t client_id;
	uint64_t sent;        /* pushes numbered so far */
	int pat;              /* pattern of the last odd push */
	int dead, resent;
	int n;                /* slots in flight */
	slot s[WINDOW];
} conn;

typedef struct worker {
	conn *conns;
	int nconns;
	uint64_t max_calls;
	uint64_t rng;
	float *delta;         /* dim */
	int64_t *sum;         /* dim: acknowledged pushes, summed */
	uint64_t hist[HBINS];
	uint64_t calls, pushes, pulls, acked, errors, retries, stale, badval;
	int first_err;
	char errmsg[DML_RPC_ERRMSG_MAX + 64];
	pthread_t t;
} worker;

static size_t dim = 1000;
static int nconns = 200;
static int64_t deadline_ns;
static float *pattern[NPAT]; /* dim each; zero on the counters */
static pthread_barrier_t start;
static atomic_int running;

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t rnd(uint64_t *s) /* xorshift64* */
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "soak: %s: %s\n", what, rc < 0 ? dml_strerror(rc) : "failed");
	exit(1);
}

/* Resident memory in MB. */
static double rss_mb(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return (double)resident * (double)sysconf(_SC_PAGESIZE) / 1e6;
}

static void note_error(worker *w, const char *what, int rc, const char *msg)
{
	w->errors++;
	if (!w->first_err) {
		w->first_err = rc;
		snprintf(w->errmsg, sizeof w->errmsg, "%s: %s%s%s", what, dml_strerror(rc),
		         msg && *msg ? ": " : "", msg ? msg : "");
	}
}

/* ---- calls -------------------------------------------------------- */

static int go_push(worker *w, conn *cn, slot *s)
{
	const float *p = pattern[s->pat];
	float sign = (float)s->sign;
	for (size_t i = 0; i < dim; i++)
		w->delta[i] = sign * p[i];
	w->delta[cn->id] = 1;
	psw_push a = {cn->client_id, s->seq, 0, {w->delta, dim, dim}};
	return dml_rpc_start(&s->k, cn->c, &psw_m_push, &a, NULL, CALL_TIMEOUT_MS);
}

/* Starts one call on slot s; 0 or an error (nothing to wait for). */
static int start_call(worker *w, conn *cn, slot *s)
{
	uint64_t r = rnd(&w->rng);
	s->tries = 0;
	s->t0 = now_ns();
	if (r % 100 < PUSH_PERCENT && cn->sent < MAX_CONN_PUSHES) {
		s->kind = K_PUSH;
		s->seq = ++cn->sent;
		if (s->seq % 2) { /* odd: a new pattern; even: take it back */
			cn->pat = (int)((r >> 8) % NPAT);
			s->sign = 1;
		} else {
			s->sign = -1;
		}
		s->pat = cn->pat;
		w->pushes++;
		return go_push(w, cn, s);
	}
	s->kind = K_PULL;
	size_t off, n;
	if (r & (1u << 20)) { /* a range over the connection's own counter */
		off = (size_t)cn->id - (size_t)((r >> 24) % (cn->id < 16 ? cn->id + 1 : 16));
		n = 16 + (r >> 32) % (PULL_MAX - 16);
	} else {
		off = (r >> 24) % dim;
		n = 1 + (r >> 44) % PULL_MAX;
	}
	if (n > dim - off)
		n = dim - off;
	s->range = (psw_range){off, n};
	s->expect = (size_t)cn->id >= off && (size_t)cn->id < off + n && !cn->resent
	                    ? (int64_t)cn->sent : -1;
	s->reply.v = (dml_f32s){s->buf, 0, PULL_MAX};
	w->pulls++;
	return dml_rpc_start(&s->k, cn->c, &psw_m_pull, &s->range, &s->reply, CALL_TIMEOUT_MS);
}

static void check_pull(worker *w, conn *cn, slot *s)
{
	const psw_vec *v = &s->reply;
	if (v->v.n != s->range.n) {
		w->badval++;
		return;
	}
	for (size_t i = 0; i < v->v.n; i++) {
		float x = v->v.data[i];
		if (x != (float)(int64_t)x)
			w->badval++;
	}
	if (s->expect >= 0 && !cn->resent &&
	    (int64_t)v->v.data[cn->id - s->range.off] != s->expect)
		w->stale++;
}

static void ack_push(worker *w, conn *cn, slot *s)
{
	const float *p = pattern[s->pat];
	int64_t sign = s->sign;
	for (size_t i = (size_t)nconns; i < dim; i++)
		w->sum[i] += sign * (int64_t)p[i];
	w->sum[cn->id]++;
	w->acked++;
}

/* Waits for slot s until it is answered or given up (a push that timed out
 * is resent with its number, up to RETRIES times). */
static void finish_call(worker *w, conn *cn, slot *s)
{
	for (;;) {
		int rc = dml_rpc_pending_wait(s->k);
		int64_t t = now_ns();
		if (rc == DML_ETIMEDOUT && s->kind == K_PUSH && s->tries < RETRIES) {
			dml_rpc_pending_free(s->k);
			s->k = NULL;
			s->tries++;
			w->retries++;
			cn->resent = 1;
			if ((rc = go_push(w, cn, s)) == 0)
				continue;
			note_error(w, "resend PS.Push", rc, NULL);
			cn->dead = 1;
			return;
		}
		if (rc == 0) {
			w->hist[hist_bin((uint64_t)(t - s->t0))]++;
			w->calls++;
			if (s->kind == K_PUSH)
				ack_push(w, cn, s);
			else
				check_pull(w, cn, s);
		} else {
			note_error(w, s->kind == K_PUSH ? "PS.Push" : "PS.Pull", rc,
			           dml_rpc_pending_errmsg(s->k));
			if (rc == DML_ECONNLOST || rc == DML_ECLOSED)
				cn->dead = 1;
		}
		dml_rpc_pending_free(s->k);
		s->k = NULL;
		return;
	}
}

/* One visit: finish the calls started last time, start a new window. */
static void visit(worker *w, conn *cn, int more)
{
	for (int i = 0; i < cn->n; i++)
		finish_call(w, cn, &cn->s[i]);
	cn->n = 0;
	if (!more || cn->dead)
		return;
	for (int i = 0; i < WINDOW; i++) {
		int rc = start_call(w, cn, &cn->s[cn->n]);
		if (rc) {
			note_error(w, "dml_rpc_start", rc, NULL);
			if (cn->s[cn->n].kind == K_PUSH)
				cn->dead = 1; /* its number is used: later ones would be out of order */
			break;
		}
		cn->n++;
	}
	int rc = dml_rpc_flush(cn->c, CALL_TIMEOUT_MS);
	if (rc) {
		note_error(w, "dml_rpc_flush", rc, NULL);
		cn->dead = 1;
	}
}

static void *client_main(void *arg)
{
	worker *w = arg;
	pthread_barrier_wait(&start);
	int more = 1;
	for (;;) {
		int busy = 0;
		for (int j = 0; j < w->nconns; j++) {
			conn *cn = &w->conns[j];
			if (more && (now_ns() >= deadline_ns ||
			             w->pushes + w->pulls + WINDOW > w->max_calls))
				more = 0;
			visit(w, cn, more);
			busy |= cn->n > 0;
		}
		if (!more && !busy)
			break;
	}
	atomic_fetch_sub(&running, 1);
	return NULL;
}

static void *server_main(void *srv)
{
	int rc = dml_rpc_server_run(srv);
	if (rc)
		fprintf(stderr, "soak: server thread: %s\n", dml_strerror(rc));
	return NULL;
}

/* ---- the final check ----------------------------------------------- */

typedef struct verdict {
	uint64_t lost, doubled;  /* pushes, from the counters */
	uint64_t bad_coords;     /* coordinates that differ */
} verdict;

static verdict check_store(const float *v, const int64_t *sum)
{
	verdict r = {0, 0, 0};
	int shown = 0;
	for (size_t i = 0; i < dim; i++) {
		int64_t got = (int64_t)v[i], d = got - sum[i];
		if ((float)got == v[i] && d == 0)
			continue;
		r.bad_coords++;
		if (i < (size_t)nconns) {
			if (d < 0)
				r.lost += (uint64_t)-d;
			else
				r.doubled += (uint64_t)d;
		}
		if (shown++ < 10)
			printf("# coordinate %zu (%s): store %.1f, acknowledged pushes %lld, difference %+.1f\n",
			       i, i < (size_t)nconns ? "counter" : "pattern", (double)v[i],
			       (long long)sum[i], (double)v[i] - (double)sum[i]);
	}
	return r;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 5;
	if (argc > 2)
		nconns = atoi(argv[2]);
	if (argc > 3)
		dim = (size_t)atol(argv[3]);
	if (argc > 4 || !(secs > 0 && secs <= MAX_SECONDS) || nconns < 1 ||
	    nconns > MAX_CONNS || dim <= (size_t)nconns || dim > MAX_DIM) {
		fprintf(stderr, "usage: soak [seconds (0..%d] [conns (1..%d) [dim (conns+1..%d)]]]\n",
		        MAX_SECONDS, MAX_CONNS, MAX_DIM);
		return 2;
	}

	/* the patterns: -1, 0, 1 on the coordinates from nconns on */
	uint64_t seed = 0x9e3779b97f4a7c15ULL;
	for (int p = 0; p < NPAT; p++) {
		if (!(pattern[p] = calloc(dim, sizeof(float))))
			die("alloc", 1);
		for (size_t i = (size_t)nconns; i < dim; i++)
			pattern[p][i] = (float)((int)(rnd(&seed) % 3) - 1);
	}

	/* the store and its server */
	dml_ps *store;
	dml_rpc_server *srv;
	char addr[64];
	int rc;
	if ((rc = dml_ps_new(&store, dim, NULL)) || (rc = dml_rpc_server_new(&srv, NULL)) ||
	    (rc = dml_ps_serve(store, srv)) || (rc = dml_rpc_server_listen(srv, "127.0.0.1:0")) ||
	    (rc = dml_rpc_server_addr(srv, 0, addr, sizeof addr)))
		die("server", rc);
	pthread_t st[SERVER_THREADS];
	for (int i = 0; i < SERVER_THREADS; i++)
		if (pthread_create(&st[i], NULL, server_main, srv))
			die("pthread_create", 1);

	/* the connections, dealt out to the client threads */
	conn *conns = calloc((size_t)nconns, sizeof *conns);
	float *bufs = malloc((size_t)nconns * WINDOW * PULL_MAX * sizeof(float));
	if (!conns || !bufs)
		die("alloc", 1);
	for (int i = 0; i < nconns; i++) {
		conn *cn = &conns[i];
		if ((rc = dml_rpc_dial(&cn->c, addr, NULL)))
			die("dml_rpc_dial", rc);
		cn->id = i;
		cn->client_id = CLIENT_ID_BASE + (uint64_t)i + 1;
		for (int k = 0; k < WINDOW; k++)
			cn->s[k].buf = bufs + ((size_t)i * WINDOW + (size_t)k) * PULL_MAX;
	}
	int nthreads = nconns < CLIENT_THREADS ? nconns : CLIENT_THREADS;
	worker *ws = calloc((size_t)nthreads, sizeof *ws);
	if (!ws)
		die("alloc", 1);
	for (int t = 0, first = 0; t < nthreads; t++) {
		worker *w = &ws[t];
		int n = nconns / nthreads + (t < nconns % nthreads);
		w->conns = conns + first;
		w->nconns = n;
		first += n;
		w->max_calls = MAX_CALLS / (uint64_t)nthreads;
		w->rng = 0x853c49e6748fea9bULL * (uint64_t)(t + 1);
		w->delta = malloc(dim * sizeof(float));
		w->sum = calloc(dim, sizeof(int64_t));
		if (!w->delta || !w->sum)
			die("alloc", 1);
	}

	/* run */
	pthread_barrier_init(&start, NULL, (unsigned)nthreads + 1);
	atomic_store(&running, nthreads);
	for (int t = 0; t < nthreads; t++)
		if (pthread_create(&ws[t].t, NULL, client_main, &ws[t]))
			die("pthread_create", 1);
	double rss_start = rss_mb(), rss_max = rss_start;
	int64_t t0 = now_ns();
	deadline_ns = t0 + (int64_t)(secs * 1e9);
	pthread_barrier_wait(&start);
	printf("# soak: %d connections (%d client threads, %d in flight each), %d server threads, "
	       "dim %zu, %d%% pushes, %.0f s on %s\n",
	       nconns, nthreads, WINDOW, SERVER_THREADS, dim, PUSH_PERCENT, secs, addr);
	int every = secs < 15 ? 1 : (int)(secs / 10 + 0.5); /* print about 10 samples */
	printf("# rss MB every %d s:", every);
	/* sample memory once a second until every client thread is done
	 * (bounded: the threads stop at the deadline plus their last replies) */
	for (int tick = 1; atomic_load(&running) > 0 && tick <= 10 * (MAX_SECONDS + 60); tick++) {
		nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
		if (tick % 10 == 0) {
			double r = rss_mb();
			rss_max = r > rss_max ? r : rss_max;
			if (tick % (10 * every) == 0)
				printf(" %.1f", r);
		}
	}
	printf("\n");
	for (int t = 0; t < nthreads; t++)
		pthread_join(ws[t].t, NULL);
	double elapsed = (double)(now_ns() - t0) / 1e9;
	double rss_end = rss_mb();
	rss_max = rss_end > rss_max ? rss_end : rss_max;

	/* totals */
	static uint64_t hist[HBINS];
	int64_t *sum = calloc(dim, sizeof *sum);
	float *v = malloc(dim * sizeof *v), *vr = malloc(dim * sizeof *vr);
	if (!sum || !v || !vr)
		die("alloc", 1);
	uint64_t calls = 0, pushes = 0, pulls = 0, acked = 0, errors = 0, retries = 0, stale = 0,
	         badval = 0;
	for (int t = 0; t < nthreads; t++) {
		worker *w = &ws[t];
		for (int b = 0; b < HBINS; b++)
			hist[b] += w->hist[b];
		for (size_t i = 0; i < dim; i++)
			sum[i] += w->sum[i];
		calls += w->calls;
		pushes += w->pushes;
		pulls += w->pulls;
		acked += w->acked;
		errors += w->errors;
		retries += w->retries;
		stale += w->stale;
		badval += w->badval;
		if (w->first_err)
			printf("# client thread %d: %llu errors, first: %s\n", t,
			       (unsigned long long)w->errors, w->errmsg);
	}
	int dead = 0;
	for (int i = 0; i < nconns; i++)
		dead += conns[i].dead;

	/* the store, read locally and over RPC on a fresh connection */
	uint64_t applied = 0;
	if ((rc = dml_ps_pull(store, v)) || (rc = dml_ps_updates(store, &applied)))
		die("local pull", rc);
	dml_rpc_client *vc = NULL;
	dml_ps *remote = NULL;
	if ((rc = dml_rpc_dial(&vc, addr, NULL)) || (rc = dml_ps_connect(&remote, &vc, 1, NULL)) ||
	    (rc = dml_ps_pull(remote, vr)))
		die("remote pull", rc);
	int remote_same = memcmp(v, vr, dim * sizeof *v) == 0;
	dml_ps_free(remote);
	dml_rpc_free(vc);
	verdict vd = check_store(v, sum);

	double p50 = hist_quantile(hist, 0.50) / 1e3, p90 = hist_quantile(hist, 0.90) / 1e3;
	double p99 = hist_quantile(hist, 0.99) / 1e3, p999 = hist_quantile(hist, 0.999) / 1e3;
	double pmax = 0;
	for (int b = HBINS - 1; b >= 0; b--)
		if (hist[b]) {
			pmax = hist_value(b) / 1e3;
			break;
		}
	printf("# calls: %llu answered (%llu pushes started, %llu acknowledged; %llu pulls), "
	       "%llu failed, %llu pushes resent, %d connections broken\n",
	       (unsigned long long)calls, (unsigned long long)pushes, (unsigned long long)acked,
	       (unsigned long long)pulls, (unsigned long long)errors, (unsigned long long)retries,
	       dead);
	printf("# latency us: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f\n", p50, p90,
	       p99, p999, pmax);
	printf("# rss MB: start %.1f  end %.1f  max %.1f\n", rss_start, rss_end, rss_max);
	printf("# store: %llu updates applied for %llu acknowledged pushes; %llu coordinates differ "
	       "from the acknowledged sum; remote pull %s the local one\n",
	       (unsigned long long)applied, (unsigned long long)acked,
	       (unsigned long long)vd.bad_coords, remote_same ? "equals" : "DIFFERS FROM");
	printf("# pulls: %llu saw their own connection's pushes out of order, %llu values not integers\n",
	       (unsigned long long)stale, (unsigned long long)badval);
	printf("RESULT soak seconds=%.1f conns=%d calls_per_s=%.0f p50_us=%.0f p99_us=%.0f "
	       "rss_start_mb=%.1f rss_end_mb=%.1f lost=%llu doubled=%llu\n",
	       elapsed, nconns, (double)calls / elapsed, p50, p99, rss_start, rss_end,
	       (unsigned long long)vd.lost, (unsigned long long)vd.doubled);
	int ok = vd.bad_coords == 0 && applied == acked && remote_same && errors == 0 &&
	         stale == 0 && badval == 0;
	printf("%s\n", ok ? "# soak: OK, lost 0, doubled 0" : "# soak: FAILED");

	/* teardown: clients, then the server, then the store */
	for (int i = 0; i < nconns; i++)
		dml_rpc_free(conns[i].c);
	dml_rpc_server_stop(srv);
	for (int i = 0; i < SERVER_THREADS; i++)
		pthread_join(st[i], NULL);
	dml_rpc_server_free(srv);
	dml_ps_free(store);
	for (int t = 0; t < nthreads; t++) {
		free(ws[t].delta);
		free(ws[t].sum);
	}
	for (int p = 0; p < NPAT; p++)
		free(pattern[p]);
	free(ws);
	free(conns);
	free(bufs);
	free(sum);
	free(v);
	free(vr);
	pthread_barrier_destroy(&start);
	return ok ? 0 : 1;
}
