/*
 * ps_seed.c - the seed article's ParamServer experiment, done right.
 *
 * The Go original starts 10 goroutines that each apply 100 random updates
 * to one parameter, sleeps 100 ms instead of waiting for them, and its Get
 * adds every update a second time. Here 10 threads each apply 100 random
 * deltas, the main thread joins them (no sleep), and the final value is
 * checked against the exact sum: first on a local store, then on the same
 * store served over RPC on 127.0.0.1, each thread with its own client.
 *
 * The deltas are multiples of 1/1024 in [-1, 1], so every partial sum is
 * exact in float32 whatever the order: the check is equality, not "close".
 *
 *     ps_seed [threads] [updates]      (default 10 100)
 */
#include <distml.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct worker {
	dml_ps *ps;         /* local store, or NULL to dial `addr` */
	const char *addr;
	int id, updates;
	double sum;         /* of the deltas this thread applied */
	int rc;
} worker;

static uint64_t next(uint64_t *s) /* splitmix64 */
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void *run(void *p)
{
	worker *w = p;
	dml_rpc_client *c = NULL;
	dml_ps *ps = w->ps;
	if (!ps) {
		w->rc = dml_rpc_dial(&c, w->addr, NULL);
		if (!w->rc)
			w->rc = dml_ps_connect(&ps, &c, 1, NULL);
	}
	uint64_t seed = (uint64_t)w->id + 1;
	for (int t = 0; t < w->updates && !w->rc; t++) {
		float delta = (float)((int)(next(&seed) % 2049) - 1024) / 1024.0f;
		w->rc = dml_ps_update(ps, &delta);
		if (!w->rc)
			w->sum += delta;
	}
	if (!w->ps)
		dml_ps_free(ps);
	dml_rpc_free(c);
	return NULL;
}

/* Runs the threads against a local store (addr NULL) or a served one;
 * returns 0 when the store holds exactly the sum of every update. */
static int experiment(const char *what, dml_ps *local, const char *addr,
                      dml_ps *check, int nthreads, int updates)
{
	pthread_t *t = calloc((size_t)nthreads, sizeof *t);
	worker *w = calloc((size_t)nthreads, sizeof *w);
	if (!t || !w) {
		fprintf(stderr, "ps_seed: out of memory\n");
		return 1;
	}
	for (int i = 0; i < nthreads; i++) {
		w[i] = (worker){local, addr, i, updates, 0, 0};
		pthread_create(&t[i], NULL, run, &w[i]);
	}
	double want = 0;
	int failed = 0;
	for (int i = 0; i < nthreads; i++) {
		pthread_join(t[i], NULL);
		if (w[i].rc) {
			fprintf(stderr, "ps_seed: thread %d: %s\n", i, dml_strerror(w[i].rc));
			failed = 1;
		}
		want += w[i].sum;
	}
	float got;
	uint64_t applied;
	dml_ps_pull(check, &got);
	dml_ps_updates(check, &applied);
	int ok = !failed && (double)got == want &&
	         applied == (uint64_t)nthreads * (uint64_t)updates;
	printf("%-7s %d threads x %d updates: value %.6f, exact sum %.6f, %llu updates applied: %s\n",
	       what, nthreads, updates, got, want, (unsigned long long)applied,
	       ok ? "exact" : "WRONG");
	free(t);
	free(w);
	return !ok;
}

static void *serve(void *s)
{
	dml_rpc_server_run(s);
	return NULL;
}

int main(int argc, char **argv)
{
	int nthreads = argc > 1 ? atoi(argv[1]) : 10;
	int updates = argc > 2 ? atoi(argv[2]) : 100;
	if (nthreads < 1 || nthreads > 1000 || updates < 0 || updates > 1000000) {
		fprintf(stderr, "usage: ps_seed [threads 1..1000] [updates 0..1000000]\n");
		return 2;
	}
	dml_ps *ps;
	int rc = dml_ps_new(&ps, 1, NULL);
	if (rc) {
		fprintf(stderr, "ps_seed: %s\n", dml_strerror(rc));
		return 1;
	}
	int bad = experiment("local", ps, NULL, ps, nthreads, updates);
	dml_ps_free(ps);

	/* the same over RPC: a served store, one client per thread */
	dml_rpc_server *srv;
	char addr[64];
	pthread_t st;
	if ((rc = dml_ps_new(&ps, 1, NULL)) || (rc = dml_rpc_server_new(&srv, NULL))) {
		fprintf(stderr, "ps_seed: %s\n", dml_strerror(rc));
		return 1;
	}
	if ((rc = dml_ps_serve(ps, srv)) || (rc = dml_rpc_server_listen(srv, "127.0.0.1:0")) ||
	    (rc = dml_rpc_server_addr(srv, 0, addr, sizeof addr))) {
		fprintf(stderr, "ps_seed: serve: %s\n", dml_strerror(rc));
		return 1;
	}
	pthread_create(&st, NULL, serve, srv);
	bad |= experiment("remote", NULL, addr, ps, nthreads, updates);
	dml_rpc_server_stop(srv);
	pthread_join(st, NULL);
	dml_rpc_server_free(srv);
	dml_ps_free(ps);
	return bad;
}
