/*
 * sparse_floor.c - the floor of a distributed sparse step on this machine:
 * the shape of sparse_train's (c) run (W worker threads, S store threads,
 * each worker pulling its rows from every shard, computing, pushing its
 * gradient rows to every shard) with the library taken out. Workers and
 * stores exchange raw bytes over loopback TCP, the same bytes per call as
 * the library's payload, and stand for the work they would do by spinning:
 * a worker for COMPUTE_US per step (one process's step, measured by
 * bench/sparse_bench.sh), a store for TABLE_US per step split over its
 * shards and over pull and push (the keyed table's cost, measured the same
 * way). What this takes is what any implementation of the step over TCP
 * takes here, at least.
 *
 *     sparse_floor [W S STEPS KEYS COMPUTE_US TABLE_US]
 *
 * STEPS steps in all (STEPS / W per worker), KEYS distinct keys per step,
 * rows of one float; without arguments, the sparse demo's shape as
 * measured on the development VM (2 2 7820 1812 83 39). Prints
 *     floor seconds T cpu_seconds C one_process_seconds B ratio R
 * the wall time of the steps, the CPU time of the process meanwhile, and
 * beside them STEPS x COMPUTE_US (one process doing the steps' work, (b))
 * and T / B: the least (c) / (b) can be here.
 * Traffic stays on 127.0.0.1; every loop is bounded by STEPS.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

#define MAX_W 16
#define MAX_S 16
#define ROUNDS 3
#define HDR 64 /* a call's header and fixed fields, roughly the library's */

static int W, S;
static long steps;
static size_t keys;
static double compute_s, table_s;

_Noreturn static void die(const char *what)
{
	fprintf(stderr, "sparse_floor: %s\n", what);
	exit(1);
}

static void spin(double s)
{
	double end = now() + s;
	while (now() < end)
		;
}

/* Bytes of each call to one shard: a pull's request and reply, a push's. */
static size_t per_shard(void) { return (keys + (size_t)S - 1) / (size_t)S; }
static size_t pull_up(void) { return HDR + 8 * per_shard(); }
static size_t pull_down(void) { return HDR / 2 + 4 * per_shard(); }
static size_t push_up(void) { return HDR + 12 * per_shard(); }
static size_t push_down(void) { return HDR / 2; }

typedef struct store {
	int lfd;
	pthread_t t;
} store;

/* A store: one thread, epoll over its W connections; each connection
 * alternates a pull and a push, and a store answers each whole. */
static void *store_main(void *p)
{
	store *st = p;
	int fd[MAX_W], phase[MAX_W] = {0}, ep = epoll_create1(0), open = W;
	size_t big = pull_up() > push_up() ? pull_up() : push_up();
	char *buf = calloc(1, big);
	if (ep < 0 || !buf)
		die("store setup");
	for (int i = 0; i < W; i++) {
		if ((fd[i] = accept(st->lfd, NULL, NULL)) < 0)
			die("accept");
		nodelay(fd[i]);
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
		epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev);
	}
	while (open > 0) {
		struct epoll_event ev[MAX_W];
		int n = epoll_wait(ep, ev, MAX_W, -1);
		for (int k = 0; k < n; k++) {
			int i = (int)ev[k].data.u32, pull = phase[i] == 0;
			if (read_all(fd[i], buf, pull ? pull_up() : push_up())) {
				epoll_ctl(ep, EPOLL_CTL_DEL, fd[i], NULL);
				close(fd[i]);
				open--;
				continue;
			}
			spin(table_s / S / 2);
			if (write_all(fd[i], buf, pull ? pull_down() : push_down()))
				die("store write");
			phase[i] ^= 1;
		}
	}
	close(ep);
	free(buf);
	return NULL;
}

typedef struct worker {
	struct sockaddr_in sa[MAX_S];
	long steps;
	pthread_t t;
} worker;

/* A worker: per step, a pull from every shard (sent to all, then the
 * replies), the computation, a push to every shard. */
static void *worker_main(void *p)
{
	worker *wk = p;
	int fd[MAX_S];
	size_t big = pull_up() > push_up() ? pull_up() : push_up();
	char *buf = calloc(1, big);
	if (!buf)
		die("alloc");
	for (int s = 0; s < S; s++) {
		fd[s] = socket(AF_INET, SOCK_STREAM, 0);
		if (fd[s] < 0 || connect(fd[s], (struct sockaddr *)&wk->sa[s], sizeof wk->sa[s]))
			die("connect");
		nodelay(fd[s]);
	}
	for (long i = 0; i < wk->steps; i++) {
		for (int s = 0; s < S; s++)
			if (write_all(fd[s], buf, pull_up()))
				die("pull");
		for (int s = 0; s < S; s++)
			if (read_all(fd[s], buf, pull_down()))
				die("pull reply");
		spin(compute_s);
		for (int s = 0; s < S; s++)
			if (write_all(fd[s], buf, push_up()))
				die("push");
		for (int s = 0; s < S; s++)
			if (read_all(fd[s], buf, push_down()))
				die("push reply");
	}
	for (int s = 0; s < S; s++)
		close(fd[s]);
	free(buf);
	return NULL;
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* One run of the steps: its wall and CPU seconds. */
static void once(double *wall, double *cpu)
{
	store st[MAX_S];
	worker wk[MAX_W];
	for (int s = 0; s < S; s++) {
		struct sockaddr_in sa = {0};
		sa.sin_family = AF_INET;
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t sl = sizeof sa;
		st[s].lfd = socket(AF_INET, SOCK_STREAM, 0);
		if (st[s].lfd < 0 || bind(st[s].lfd, (struct sockaddr *)&sa, sizeof sa) ||
		    listen(st[s].lfd, MAX_W) ||
		    getsockname(st[s].lfd, (struct sockaddr *)&sa, &sl))
			die("listen");
		for (int w = 0; w < W; w++)
			wk[w].sa[s] = sa;
		pthread_create(&st[s].t, NULL, store_main, &st[s]);
	}
	double c0 = cpu_s(), t0 = now();
	for (int w = 0; w < W; w++) {
		wk[w].steps = steps / W + (w < steps % W);
		pthread_create(&wk[w].t, NULL, worker_main, &wk[w]);
	}
	for (int w = 0; w < W; w++)
		pthread_join(wk[w].t, NULL);
	*wall = now() - t0;
	*cpu = cpu_s() - c0;
	for (int s = 0; s < S; s++) {
		pthread_join(st[s].t, NULL);
		close(st[s].lfd);
	}
}

int main(int argc, char **argv)
{
	static char *dflt[] = {"sparse_floor", "2", "2", "7820", "1812", "83", "39", NULL};
	if (argc == 1)
		argv = dflt, argc = 7;
	if (argc != 7)
		die("usage: sparse_floor [W S STEPS KEYS COMPUTE_US TABLE_US]");
	W = atoi(argv[1]);
	S = atoi(argv[2]);
	steps = atol(argv[3]);
	keys = (size_t)atol(argv[4]);
	compute_s = atof(argv[5]) * 1e-6;
	table_s = atof(argv[6]) * 1e-6;
	if (W < 1 || W > MAX_W || S < 1 || S > MAX_S || steps < W || steps > 10000000 ||
	    keys < 1 || keys > 1000000 || !(compute_s >= 0 && compute_s < 0.1) ||
	    !(table_s >= 0 && table_s < 0.1))
		die("W 1..16, S 1..16, STEPS W..1e7, KEYS 1..1e6, times 0..1e5 us");
	double tw[ROUNDS], tc[ROUNDS];
	for (int q = 0; q < ROUNDS; q++)
		once(&tw[q], &tc[q]);
	double t = median(tw, ROUNDS), c = median(tc, ROUNDS), b = (double)steps * compute_s;
	printf("floor seconds %.4f cpu_seconds %.4f one_process_seconds %.4f ratio %.2f\n",
	       t, c, b, b > 0 ? t / b : 0);
	return 0;
}
