/*
 * ps_bench.c - the parameter store's speed, each figure beside a baseline
 * measured in the same run:
 *   1. local dense updates/s, dim = 1M, with 1 and 2 threads: dml_ps (striped
 *      locks) beside the seed's design (one global mutex around the loop)
 *      and beside a plain `p[i] += d[i]` loop on one thread (the memory
 *      bandwidth limit);
 *   2. remote push then pull of dim = 10M over loopback, MB/s moved, beside
 *      raw TCP: 40 MB sent and 40 MB sent back on one connection.
 * Each figure is the median of ROUNDS rounds, alternating with its
 * baseline. Loops are bounded in count and time; traffic stays on 127.0.0.1.
 *
 *     ps_bench [seconds-per-measurement]   (default 0.3)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <distml.h>

#include "bench.h"

#define ROUNDS 5
#define LOCAL_DIM (1000 * 1000)
#define REMOTE_DIM (10 * 1000 * 1000)
#define MAX_ITERS 100000

static double secs = 0.3;

_Noreturn static void die(const char *what, int rc)
{
	fprintf(stderr, "ps_bench: %s: %s\n", what, rc < 0 ? dml_strerror(rc) : "failed");
	exit(1);
}

/* ---- 1. local updates ----------------------------------------------- */

typedef struct global_ps { /* the seed's design: one mutex for everything */
	pthread_mutex_t mu;
	float *p;
} global_ps;

enum { KIND_PLAIN, KIND_GLOBAL, KIND_DML };

typedef struct upd_job {
	int kind;
	float *plain;
	global_ps *g;
	dml_ps *ps;
	float *delta;
	pthread_barrier_t *start;
	long n;
	double t;
} upd_job;

static void plain_add(float *restrict p, const float *restrict d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] += d[i];
}

static void *updater(void *arg)
{
	upd_job *j = arg;
	pthread_barrier_wait(j->start);
	double t0 = now();
	long n = 0;
	do {
		for (int k = 0; k < 4; k++, n++) {
			if (j->kind == KIND_PLAIN) {
				plain_add(j->plain, j->delta, LOCAL_DIM);
			} else if (j->kind == KIND_GLOBAL) {
				pthread_mutex_lock(&j->g->mu);
				plain_add(j->g->p, j->delta, LOCAL_DIM);
				pthread_mutex_unlock(&j->g->mu);
			} else {
				int rc = dml_ps_update(j->ps, j->delta);
				if (rc)
					die("dml_ps_update", rc);
			}
		}
		j->t = now() - t0;
	} while (j->t < secs && n < MAX_ITERS);
	j->n = n;
	return NULL;
}

/* Updates per second, all threads together. */
static double run_updaters(int kind, int threads, float *plain, global_ps *g,
                           dml_ps *ps, float **delta)
{
	pthread_t t[2];
	upd_job j[2];
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, (unsigned)threads);
	for (int i = 0; i < threads; i++) {
		j[i] = (upd_job){kind, plain, g, ps, delta[i], &start, 0, 0};
		pthread_create(&t[i], NULL, updater, &j[i]);
	}
	double total = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		total += j[i].n / j[i].t;
	}
	pthread_barrier_destroy(&start);
	return total;
}

/* ---- 2. remote push + pull vs raw TCP ------------------------------- */

/* The raw peer: reads a 40 MB message and sends 40 MB back. */
static void *raw_server(void *arg)
{
	int lfd = *(int *)arg;
	int fd = accept(lfd, NULL, NULL);
	nodelay(fd);
	size_t bytes = REMOTE_DIM * sizeof(float);
	char *buf = malloc(bytes);
	while (buf && read_all(fd, buf, bytes) == 0 && write_all(fd, buf, bytes) == 0)
		;
	free(buf);
	close(fd);
	return NULL;
}

static double raw_roundtrip(int fd, float *v)
{
	size_t bytes = REMOTE_DIM * sizeof(float);
	int n = 0;
	double t0 = now(), t;
	do {
		if (write_all(fd, v, bytes) || read_all(fd, v, bytes))
			die("raw", 1);
		n++;
		t = now() - t0;
	} while ((t < secs || n < 2) && n < 1000);
	return n * 2.0 * bytes / 1e6 / t;
}

static double dml_roundtrip(dml_ps *ps, float *g, float *out)
{
	size_t bytes = REMOTE_DIM * sizeof(float);
	int n = 0;
	double t0 = now(), t;
	do {
		int rc = dml_ps_push(ps, g);
		if (!rc)
			rc = dml_ps_pull(ps, out);
		if (rc)
			die("remote push/pull", rc);
		n++;
		t = now() - t0;
	} while ((t < secs || n < 2) && n < 1000);
	return n * 2.0 * bytes / 1e6 / t;
}

static void *run_server(void *s)
{
	dml_rpc_server_run(s);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		secs = atof(argv[1]);
	if (secs <= 0 || secs > 10)
		secs = 0.3;

	/* ---- 1 ---- */
	float *plain = calloc(LOCAL_DIM, sizeof *plain);
	global_ps g = {PTHREAD_MUTEX_INITIALIZER, calloc(LOCAL_DIM, sizeof(float))};
	float *delta[2] = {malloc(LOCAL_DIM * sizeof(float)), malloc(LOCAL_DIM * sizeof(float))};
	dml_ps *ps;
	int rc = dml_ps_new(&ps, LOCAL_DIM, NULL);
	if (rc || !plain || !g.p || !delta[0] || !delta[1])
		die("setup", rc ? rc : 1);
	for (int i = 0; i < LOCAL_DIM; i++)
		delta[0][i] = delta[1][i] = 1.0f / 1024;
	double pl[ROUNDS], g1[ROUNDS], g2[ROUNDS], d1[ROUNDS], d2[ROUNDS];
	run_updaters(KIND_DML, 1, plain, &g, ps, delta); /* warm up */
	for (int r = 0; r < ROUNDS; r++) {
		pl[r] = run_updaters(KIND_PLAIN, 1, plain, &g, ps, delta);
		d1[r] = run_updaters(KIND_DML, 1, plain, &g, ps, delta);
		d2[r] = run_updaters(KIND_DML, 2, plain, &g, ps, delta);
		g1[r] = run_updaters(KIND_GLOBAL, 1, plain, &g, ps, delta);
		g2[r] = run_updaters(KIND_GLOBAL, 2, plain, &g, ps, delta);
	}
	double mpl = median(pl, ROUNDS), md1 = median(d1, ROUNDS), md2 = median(d2, ROUNDS);
	double mg1 = median(g1, ROUNDS), mg2 = median(g2, ROUNDS);
	dml_ps_free(ps);
	free(plain);
	free(g.p);

	/* ---- 2 ---- */
	dml_rpc_server *srv;
	dml_ps *store;
	char addr[64];
	if ((rc = dml_ps_new(&store, REMOTE_DIM, NULL)) || (rc = dml_rpc_server_new(&srv, NULL)) ||
	    (rc = dml_ps_serve(store, srv)) || (rc = dml_rpc_server_listen(srv, "127.0.0.1:0")) ||
	    (rc = dml_rpc_server_addr(srv, 0, addr, sizeof addr)))
		die("server", rc);
	pthread_t st, rt;
	pthread_create(&st, NULL, run_server, srv);
	dml_rpc_client *c;
	dml_ps *remote;
	if ((rc = dml_rpc_dial(&c, addr, NULL)) || (rc = dml_ps_connect(&remote, &c, 1, NULL)))
		die("connect", rc);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof sa;
	if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 1) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl))
		die("raw listen", 1);
	pthread_create(&rt, NULL, raw_server, &lfd);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa))
		die("raw connect", 1);
	nodelay(fd);
	float *v = malloc(REMOTE_DIM * sizeof *v), *out = malloc(REMOTE_DIM * sizeof *out);
	if (!v || !out)
		die("alloc", 1);
	for (int i = 0; i < REMOTE_DIM; i++)
		v[i] = 1.0f / 1024;
	double rm[ROUNDS], rw[ROUNDS];
	dml_roundtrip(remote, v, out); /* warm up */
	for (int r = 0; r < ROUNDS; r++) {
		rm[r] = dml_roundtrip(remote, v, out);
		rw[r] = raw_roundtrip(fd, v);
	}
	double mrm = median(rm, ROUNDS), mrw = median(rw, ROUNDS);
	close(fd);
	pthread_join(rt, NULL);
	close(lfd);
	dml_ps_free(remote);
	dml_rpc_free(c);
	dml_rpc_server_stop(srv);
	pthread_join(st, NULL);
	dml_rpc_server_free(srv);
	dml_ps_free(store);
	free(v);
	free(out);

	printf("# parameter store, median of %d rounds of %.1f s\n", ROUNDS, secs);
	printf("%-44s %12s %12s %7s %7s\n", "figure", "value", "baseline", "ratio", "target");
	printf("%-44s %12.0f %12.0f %7.2f %7s\n", "1. dense updates/s, dim 1M, 1 thread",
	       md1, mpl, md1 / mpl, ">=0.7");
	printf("%-44s %12.0f %12.0f %7.2f %7s\n", "   dml_ps 2 threads vs dml_ps 1 thread",
	       md2, md1, md2 / md1, ">1");
	printf("%-44s %12.0f %12.0f %7.2f\n", "   dml_ps vs one global mutex, 1 thread", md1, mg1, md1 / mg1);
	printf("%-44s %12.0f %12.0f %7.2f\n", "   dml_ps vs one global mutex, 2 threads", md2, mg2, md2 / mg2);
	printf("%-44s %12.0f %12.0f %7.2f %7s\n", "2. remote push+pull dim 10M, MB/s vs raw TCP",
	       mrm, mrw, mrm / mrw, ">=0.6");
	printf("RESULT ps local1_per_s=%.0f local2_per_s=%.0f global1_per_s=%.0f global2_per_s=%.0f plain_per_s=%.0f remote_MB_per_s=%.0f raw_MB_per_s=%.0f\n",
	       md1, md2, mg1, mg2, mpl, mrm, mrw);
	return 0;
}
