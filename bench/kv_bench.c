/*
 * kv_bench.c - keyed stores and split dense calls, each figure beside a
 * baseline measured in the same run:
 *   1. keyed push+pull, rows/s, with 1k and 10k keys per call (rows of 1
 *      float: logistic regression's), locally and over loopback RPC, the
 *      remote figure beside raw TCP moving the same bytes in the same
 *      round trips (the keys and values of a push, a one-byte answer; the
 *      keys of a pull, the values back);
 *      and the local figure beside a bare single-threaded hash table doing
 *      the same AdaGrad pushes and pulls (the memory traffic's floor);
 *      and the floor of the remote figure: raw TCP again, its server
 *      spending the bare table's time on each request (a spin) before it
 *      answers, as any server must do the table's work between a request
 *      and its answer. On a VM, a server that works before it answers is
 *      woken on the other core, and a cross-core wake-up costs tens of
 *      microseconds; raw TCP with no work ping-pongs on one core;
 *   2. a dense push+pull of 100M floats (400 MB) on one shard, split into
 *      frames of the 64 MiB limit, MB/s beside raw TCP sending 400 MB and
 *      400 MB back on one connection.
 * Medians of ROUNDS rounds, alternating with the baseline. Loops are
 * bounded in count and time; traffic stays on 127.0.0.1.
 *
 *     kv_bench [seconds-per-measurement]   (default 0.3)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <distml.h>

#include "bench.h"

#define ROUNDS 5
#define KEYSPACE (1 << 20) /* distinct keys the calls draw from */
#define BIG_DIM ((size_t)100 * 1000 * 1000)
#define MAX_ITERS 1000000

static double secs = 0.3;

_Noreturn static void die(const char *what, int rc)
{
	fprintf(stderr, "kv_bench: %s: %s\n", what, rc < 0 ? dml_strerror(rc) : "failed");
	exit(1);
}

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Rows pushed and pulled per second with n keys per call. */
static double kv_rate(dml_ps *ps, size_t n, uint64_t *keys, float *g, float *out)
{
	long it = 0;
	double t0 = now(), t;
	uint64_t s = 1;
	do {
		for (size_t i = 0; i < n; i++)
			keys[i] = mix(mix(s++) % KEYSPACE);
		int rc = dml_ps_push_rows(ps, keys, n, g);
		if (!rc)
			rc = dml_ps_pull_rows(ps, keys, n, out);
		if (rc)
			die("push/pull rows", rc);
		it++;
		t = now() - t0;
	} while ((t < secs || it < 2) && it < MAX_ITERS);
	return (double)it * (double)n / t;
}

/* ---- the floor: a bare hash table ------------------------------------ */

/* One thread's open-addressing table, key -> (w, G), with no locks, no
 * stripes and no checks: the same pushes (AdaGrad) and pulls of the same
 * keys cost at least this much in memory traffic. */
typedef struct bare {
	uint64_t *key;
	float *row; /* w, G */
	unsigned char *used;
	size_t cap;
} bare;

static float *bare_row(bare *b, uint64_t k)
{
	size_t i = (size_t)mix(k) & (b->cap - 1);
	while (b->used[i] && b->key[i] != k)
		i = (i + 1) & (b->cap - 1);
	if (!b->used[i]) {
		b->used[i] = 1;
		b->key[i] = k;
		b->row[2 * i] = b->row[2 * i + 1] = 0;
	}
	return &b->row[2 * i];
}

static double bare_rate(bare *b, size_t n, uint64_t *keys, const float *g, float *out)
{
	long it = 0;
	double t0 = now(), t;
	uint64_t s = 1;
	do {
		for (size_t i = 0; i < n; i++)
			keys[i] = mix(mix(s++) % KEYSPACE);
		for (size_t i = 0; i < n; i++) {
			float *r = bare_row(b, keys[i]);
			r[1] += g[i] * g[i];
			r[0] -= 0.01f * g[i] / (sqrtf(r[1]) + 1e-8f);
		}
		for (size_t i = 0; i < n; i++)
			out[i] = bare_row(b, keys[i])[0];
		it++;
		t = now() - t0;
	} while ((t < secs || it < 2) && it < MAX_ITERS);
	return (double)it * (double)n / t;
}

/* ---- raw TCP peers -------------------------------------------------- */

typedef struct raw_peer {
	int lfd;
	size_t up1, down1, up2, down2; /* bytes of each half of a round */
	_Atomic double work;           /* seconds of work per request */
	pthread_t t;
} raw_peer;

static void spin(double s)
{
	if (s <= 0)
		return;
	double end = now() + s;
	while (now() < end)
		;
}

static void *raw_main(void *p)
{
	raw_peer *r = p;
	int fd = accept(r->lfd, NULL, NULL);
	nodelay(fd);
	size_t big = r->up1 > r->down2 ? r->up1 : r->down2;
	if (r->up2 > big)
		big = r->up2;
	char *buf = malloc(big ? big : 1);
	while (buf && read_all(fd, buf, r->up1) == 0 && (spin(r->work), 1) &&
	       write_all(fd, buf, r->down1) == 0 &&
	       (!r->up2 || (read_all(fd, buf, r->up2) == 0 && (spin(r->work), 1) &&
	                    write_all(fd, buf, r->down2) == 0)))
		;
	free(buf);
	close(fd);
	return NULL;
}

static int raw_start(raw_peer *r)
{
	r->lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof sa;
	if (bind(r->lfd, (struct sockaddr *)&sa, sizeof sa) || listen(r->lfd, 1) ||
	    getsockname(r->lfd, (struct sockaddr *)&sa, &sl))
		die("raw listen", 1);
	pthread_create(&r->t, NULL, raw_main, r);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa))
		die("raw connect", 1);
	nodelay(fd);
	return fd;
}

static void raw_stop(raw_peer *r, int fd)
{
	close(fd);
	pthread_join(r->t, NULL);
	close(r->lfd);
}

/* Rounds of the peer's shape per second, times `per` (rows or bytes). */
static double raw_rate(const raw_peer *r, int fd, char *buf, double per)
{
	long it = 0;
	double t0 = now(), t;
	do {
		if (write_all(fd, buf, r->up1) || read_all(fd, buf, r->down1) ||
		    (r->up2 && (write_all(fd, buf, r->up2) || read_all(fd, buf, r->down2))))
			die("raw", 1);
		it++;
		t = now() - t0;
	} while ((t < secs || it < 2) && it < MAX_ITERS);
	return (double)it * per / t;
}

static void *run_server(void *s)
{
	dml_rpc_server_run(s);
	return NULL;
}

typedef struct served {
	dml_rpc_server *srv;
	pthread_t t;
	char addr[64];
} served;

static void serve(served *s, dml_ps *ps)
{
	int rc;
	if ((rc = dml_rpc_server_new(&s->srv, NULL)) || (rc = dml_ps_serve(ps, s->srv)) ||
	    (rc = dml_rpc_server_listen(s->srv, "127.0.0.1:0")) ||
	    (rc = dml_rpc_server_addr(s->srv, 0, s->addr, sizeof s->addr)))
		die("server", rc);
	pthread_create(&s->t, NULL, run_server, s->srv);
}

static void unserve(served *s)
{
	dml_rpc_server_stop(s->srv);
	pthread_join(s->t, NULL);
	dml_rpc_server_free(s->srv);
}

int main(int argc, char **argv)
{
	if (argc > 1)
		secs = atof(argv[1]);
	if (secs <= 0 || secs > 10)
		secs = 0.3;
	int rc;

	/* ---- 1: keyed rows ---- */
	enum { NMAX = 10000 };
	uint64_t *keys = malloc(NMAX * sizeof *keys);
	float *g = malloc(NMAX * sizeof *g), *out = malloc(NMAX * sizeof *out);
	char *buf = malloc(NMAX * 16 + 16);
	if (!keys || !g || !out || !buf)
		die("alloc", 1);
	for (int i = 0; i < NMAX; i++)
		g[i] = 1e-3f;
	dml_ps_opts po = {0};
	po.optim.kind = DML_OPTIM_ADAGRAD;
	dml_ps *local, *store, *remote;
	if ((rc = dml_ps_new_keyed(&local, 1, &po)) || (rc = dml_ps_new_keyed(&store, 1, &po)))
		die("keyed store", rc);
	served sv;
	serve(&sv, store);
	dml_rpc_client *c;
	if ((rc = dml_rpc_dial(&c, sv.addr, NULL)) || (rc = dml_ps_connect(&remote, &c, 1, NULL)))
		die("connect", rc);
	size_t ns[2] = {1000, 10000};
	double loc[2], rem[2], raw[2], flo[2], wrk[2];
	bare bt = {0};
	bt.cap = (size_t)4 << 20; /* 4 slots per key of the key space */
	bt.key = malloc(bt.cap * sizeof *bt.key);
	bt.row = malloc(bt.cap * 2 * sizeof *bt.row);
	bt.used = calloc(bt.cap, 1);
	if (!bt.key || !bt.row || !bt.used)
		die("alloc", 1);
	for (int k = 0; k < 2; k++) {
		size_t n = ns[k];
		raw_peer rp = {0};
		rp.up1 = n * (8 + 4); /* a push: keys and values */
		rp.down1 = 1;
		rp.up2 = n * 8;       /* a pull: keys, values back */
		rp.down2 = n * 4;
		int fd = raw_start(&rp);
		double l[ROUNDS], r[ROUNDS], w[ROUNDS], f[ROUNDS], x[ROUNDS];
		kv_rate(local, n, keys, g, out); /* warm up: the rows exist */
		kv_rate(remote, n, keys, g, out);
		bare_rate(&bt, n, keys, g, out);
		for (int q = 0; q < ROUNDS; q++) {
			l[q] = kv_rate(local, n, keys, g, out);
			r[q] = kv_rate(remote, n, keys, g, out);
			w[q] = raw_rate(&rp, fd, buf, (double)n);
			f[q] = bare_rate(&bt, n, keys, g, out);
			rp.work = (double)n / f[q] / 2; /* the pair's table work, per request */
			x[q] = raw_rate(&rp, fd, buf, (double)n);
			rp.work = 0;
		}
		wrk[k] = median(x, ROUNDS);
		flo[k] = median(f, ROUNDS);
		loc[k] = median(l, ROUNDS);
		rem[k] = median(r, ROUNDS);
		raw[k] = median(w, ROUNDS);
		raw_stop(&rp, fd);
	}
	uint64_t rows;
	dml_ps_rows(local, &rows);
	dml_ps_free(remote);
	dml_rpc_free(c);
	unserve(&sv);
	dml_ps_free(store);
	dml_ps_free(local);
	free(keys);
	free(g);
	free(out);
	free(buf);

	/* ---- 2: 100M floats on one shard ---- */
	dml_ps *big, *bigr;
	if ((rc = dml_ps_new(&big, BIG_DIM, NULL)))
		die("dense store", rc);
	serve(&sv, big);
	if ((rc = dml_rpc_dial(&c, sv.addr, NULL)) || (rc = dml_ps_connect(&bigr, &c, 1, NULL)))
		die("connect", rc);
	float *v = malloc(BIG_DIM * sizeof *v), *o2 = malloc(BIG_DIM * sizeof *o2);
	if (!v || !o2)
		die("alloc", 1);
	for (size_t i = 0; i < BIG_DIM; i++)
		v[i] = 1.0f / 1024;
	raw_peer rp = {0};
	rp.up1 = BIG_DIM * sizeof(float);
	rp.down1 = BIG_DIM * sizeof(float);
	int fd = raw_start(&rp);
	double bm[3], bw[3], bytes = 2.0 * (double)BIG_DIM * sizeof(float);
	for (int q = 0; q < 3; q++) { /* one round trip each: 800 MB moved */
		double t0 = now();
		if ((rc = dml_ps_push(bigr, v)) || (rc = dml_ps_pull(bigr, o2)))
			die("100M push/pull", rc);
		bm[q] = bytes / 1e6 / (now() - t0);
		t0 = now();
		if (write_all(fd, v, rp.up1) || read_all(fd, o2, rp.down1))
			die("raw", 1);
		bw[q] = bytes / 1e6 / (now() - t0);
	}
	double mbm = median(bm, 3), mbw = median(bw, 3);
	raw_stop(&rp, fd);
	dml_ps_free(bigr);
	dml_rpc_free(c);
	unserve(&sv);
	dml_ps_free(big);
	free(v);
	free(o2);

	printf("# keyed stores and split calls, median of %d rounds of %.1f s\n", ROUNDS, secs);
	printf("%-48s %12s %12s %7s %7s\n", "figure", "value", "baseline", "ratio", "target");
	for (int k = 0; k < 2; k++) {
		char name[64];
		snprintf(name, sizeof name, "1. keyed push+pull rows/s, %zuk keys, remote", ns[k] / 1000);
		printf("%-48s %12.0f %12.0f %7.2f %7s\n", name, rem[k], raw[k], rem[k] / raw[k], ">=0.5");
		snprintf(name, sizeof name, "   local rows/s, %zuk keys (vs remote)", ns[k] / 1000);
		printf("%-48s %12.0f %12.0f %7.2f\n", name, loc[k], rem[k], loc[k] / rem[k]);
		snprintf(name, sizeof name, "   local rows/s, %zuk keys (vs a bare table)", ns[k] / 1000);
		printf("%-48s %12.0f %12.0f %7.2f\n", name, loc[k], flo[k], loc[k] / flo[k]);
		snprintf(name, sizeof name, "   remote rows/s, %zuk keys (vs a bare table)", ns[k] / 1000);
		printf("%-48s %12.0f %12.0f %7.2f\n", name, rem[k], flo[k], rem[k] / flo[k]);
		snprintf(name, sizeof name, "   floor: raw TCP + table work, %zuk (vs raw)", ns[k] / 1000);
		printf("%-48s %12.0f %12.0f %7.2f\n", name, wrk[k], raw[k], wrk[k] / raw[k]);
		snprintf(name, sizeof name, "   remote rows/s, %zuk keys (vs the floor)", ns[k] / 1000);
		printf("%-48s %12.0f %12.0f %7.2f\n", name, rem[k], wrk[k], rem[k] / wrk[k]);
	}
	printf("%-48s %12.0f %12.0f %7.2f %7s\n", "3. dense 100M push+pull, MB/s vs raw TCP",
	       mbm, mbw, mbm / mbw, ">=0.6");
	printf("RESULT kv local1k=%.0f remote1k=%.0f raw1k=%.0f bare1k=%.0f floor1k=%.0f "
	       "local10k=%.0f remote10k=%.0f raw10k=%.0f bare10k=%.0f floor10k=%.0f "
	       "big_MB_per_s=%.0f big_raw_MB_per_s=%.0f rows=%llu\n",
	       loc[0], rem[0], raw[0], flo[0], wrk[0], loc[1], rem[1], raw[1], flo[1], wrk[1],
	       mbm, mbw, (unsigned long long)rows);
	free(bt.key);
	free(bt.row);
	free(bt.used);
	return 0;
}
