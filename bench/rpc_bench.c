/*
 * rpc_bench.c - RPC throughput over loopback, each figure beside a plain-C
 * raw-TCP baseline measured in the same run:
 *   1. sequential small calls/s (Arith.Multiply, one in flight) vs a raw
 *      ping-pong of the same byte counts;
 *   2. pipelined calls/s, windows of 64 in flight on one connection, vs raw
 *      windows of 64 messages sent in one write(); on two cores, and on
 *      one (client and server threads pinned together: the CPU cost of a
 *      call, the steadiest figure on a noisy machine);
 *   3. a 40 MB float32 argument, MB/s, vs a raw 40 MB send.
 * Each figure is the median of ROUNDS rounds, ours and raw alternating.
 *
 * Thread placement decides a ping-pong's speed on a VM more than anything
 * the code does: waking a thread on another vCPU costs tens of
 * microseconds there, on the same vCPU a few. The scheduler picks a
 * placement per run, so the client and both servers are pinned, the same
 * way for ours and raw: figure 1 is given for client and server on one core
 * and on two cores; figures 2 and 3 use two cores.
 * Every loop is bounded in count and time; everything is on 127.0.0.1.
 *
 *     rpc_bench [seconds-per-measurement]   (default 0.4)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <distml.h>

#include "bench.h"

#include "../examples/arith.h"

#define ROUNDS 5

static double secs = 0.4;
static int ncpu = 1;

/* Pins thread `t` to CPU `cpu`, or lets it run anywhere when cpu < 0. */
static void pin(pthread_t t, int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	for (int i = 0; i < CPU_SETSIZE && i < ncpu; i++)
		if (cpu < 0 || i == cpu)
			CPU_SET(i, &set);
	pthread_setaffinity_np(t, sizeof set, &set);
}

/* Client (this thread) on CPU 0; the servers on CPU 0 (same) or 1. */
static void place(pthread_t dml_srv, pthread_t raw_srv, int same)
{
	int scpu = same || ncpu < 2 ? 0 : 1;
	pin(pthread_self(), 0);
	pin(dml_srv, scpu);
	pin(raw_srv, scpu);
}

_Noreturn static void die(const char *what, int rc)
{
	fprintf(stderr, "rpc_bench: %s: %s\n", what, rc < 0 ? dml_strerror(rc) : "failed");
	exit(1);
}

#include "rpc_calls.h" /* the libdistml side: handlers and call loops */

/* ---- raw TCP baseline ----------------------------------------------- */
/* Messages are a u32 length (of what follows) and a body, of the same byte
 * counts as the RPC frames. The server answers every complete message with
 * a reply of REP bytes, all replies for one read() in one write(). */

static size_t REQ, REP; /* bytes of a Multiply request / reply frame */
#define RAW_BUF ((size_t)48 << 20)

static int raw_listen(int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof sa;
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 4) ||
	    getsockname(fd, (struct sockaddr *)&sa, &len))
		die("raw listen", 1);
	*port = ntohs(sa.sin_port);
	return fd;
}

typedef struct raw_srv { int lfd, spin; } raw_srv;

#define SPIN_US 50 /* spin_us of the spinning figure */

/* Receives what is there, at least one byte; with `spin`, first polls
 * without sleeping for up to SPIN_US, then reads (as spin_us does). */
static ssize_t raw_recv(int fd, void *p, size_t n, int spin)
{
	if (spin) {
		double until = now() + SPIN_US * 1e-6;
		struct pollfd pf = {fd, POLLIN, 0};
		while (poll(&pf, 1, 0) == 0 && now() < until)
			;
	}
	return recv(fd, p, n, 0);
}

static void *raw_server(void *arg)
{
	raw_srv *rs = arg;
	int fd = accept(rs->lfd, NULL, NULL);
	nodelay(fd);
	uint8_t *in = malloc(RAW_BUF), *out = malloc(WINDOW * 64);
	memset(out, 0, WINDOW * 64);
	size_t have = 0;
	for (;;) {
		ssize_t r = raw_recv(fd, in + have, RAW_BUF - have, rs->spin);
		if (r <= 0)
			break;
		have += (size_t)r;
		size_t pos = 0, nrep = 0;
		while (have - pos >= 4) {
			uint32_t len;
			memcpy(&len, in + pos, 4);
			if (have - pos < 4 + (size_t)len)
				break;
			pos += 4 + len;
			nrep++;
		}
		if (nrep) {
			for (size_t i = 0; i < nrep; i += WINDOW) {
				size_t k = nrep - i < WINDOW ? nrep - i : WINDOW;
				if (write_all(fd, out, k * REP))
					goto done;
			}
			memmove(in, in + pos, have - pos);
			have -= pos;
		}
	}
done:
	free(in);
	free(out);
	close(fd);
	return NULL;
}

static int raw_dial(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa))
		die("raw connect", 1);
	nodelay(fd);
	return fd;
}

static void raw_msg(uint8_t *p, size_t total)
{
	memset(p, 1, total);
	uint32_t len = (uint32_t)(total - 4);
	memcpy(p, &len, 4);
}

static double raw_seq(int fd, int spin)
{
	uint8_t req[256], rep[256];
	raw_msg(req, REQ);
	long n = 0;
	double t0 = now(), t;
	do {
		for (int i = 0; i < 100; i++, n++) {
			if (write_all(fd, req, REQ))
				die("raw seq", 1);
			for (size_t got = 0; got < REP;) {
				ssize_t r = raw_recv(fd, rep + got, REP - got, spin);
				if (r <= 0)
					die("raw seq", 1);
				got += (size_t)r;
			}
		}
		t = now() - t0;
	} while (t < secs && n < MAX_CALLS);
	return n / t;
}

static double raw_pipe(int fd)
{
	static uint8_t req[WINDOW * 256], rep[WINDOW * 256];
	for (int i = 0; i < WINDOW; i++)
		raw_msg(req + i * REQ, REQ);
	long n = 0;
	double t0 = now(), t;
	do {
		if (write_all(fd, req, WINDOW * REQ) || read_all(fd, rep, WINDOW * REP))
			die("raw pipe", 1);
		n += WINDOW;
		t = now() - t0;
	} while (t < secs && n < MAX_CALLS);
	return n / t;
}

static double raw_bulk(int fd, float *v)
{
	uint8_t rep[256];
	int n = -1; /* a warm-up message first, as for ours */
	double t0 = 0, t = 0;
	do {
		if (n == 0)
			t0 = now();
		uint32_t len = BULK_FLOATS * 4;
		if (write_all(fd, &len, 4) || write_all(fd, v, len) || read_all(fd, rep, REP))
			die("raw bulk", 1);
		n++;
		t = now() - t0;
	} while ((t < secs || n < 3) && n < 1000);
	return n * (BULK_FLOATS * 4.0 / 1e6) / t;
}

/* ---- main ------------------------------------------------------------ */

/* A libdistml server (spin_us = spin) on its own thread, and a client. */
typedef struct dml_pair {
	dml_rpc_server *srv;
	dml_rpc_client *c;
	pthread_t t;
} dml_pair;

static void dml_start(dml_pair *p, int spin)
{
	dml_rpc_server_opts so = {.spin_us = spin};
	int rc = dml_rpc_server_new(&p->srv, &so);
	if (!rc)
		rc = dml_rpc_server_register(p->srv, &arith_multiply, h_multiply, NULL);
	if (!rc)
		rc = dml_rpc_server_register(p->srv, &arith_sum, h_sum, NULL);
	if (!rc)
		rc = dml_rpc_server_listen(p->srv, "127.0.0.1:0");
	if (rc)
		die("server", rc);
	char addr[64];
	dml_rpc_server_addr(p->srv, 0, addr, sizeof addr);
	pthread_create(&p->t, NULL, run_server, p->srv);
	dml_rpc_client_opts co = {.spin_us = spin};
	if ((rc = dml_rpc_dial(&p->c, addr, &co)))
		die("dial", rc);
}

static void dml_end(dml_pair *p)
{
	dml_rpc_free(p->c);
	dml_rpc_server_stop(p->srv);
	pthread_join(p->t, NULL);
	dml_rpc_server_free(p->srv);
}

/* A raw server (spinning or not) on its own thread, and a connection. */
typedef struct raw_pair {
	raw_srv rs;
	int fd;
	pthread_t t;
} raw_pair;

static void raw_start(raw_pair *p, int spin)
{
	int port;
	p->rs.lfd = raw_listen(&port);
	p->rs.spin = spin;
	pthread_create(&p->t, NULL, raw_server, &p->rs);
	p->fd = raw_dial(port);
}

static void raw_end(raw_pair *p)
{
	close(p->fd);
	pthread_join(p->t, NULL);
	close(p->rs.lfd);
}

int main(int argc, char **argv)
{
	if (argc > 1)
		secs = atof(argv[1]);
	if (secs <= 0 || secs > 10)
		secs = 0.4;
	ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpu < 1)
		ncpu = 1;
	/* the byte counts of one Multiply request and reply frame */
	Args a = {1, 2};
	Reply r = {2};
	size_t alen, rlen;
	dml_type_encode(&args_type, &a, NULL, 0, &alen);
	dml_type_encode(&reply_type, &r, NULL, 0, &rlen);
	REQ = 20 + strlen(arith_multiply.name) + alen;
	REP = 20 + rlen;

	dml_pair dm, dspin;
	raw_pair rw, rspin;
	dml_start(&dm, 0);
	raw_start(&rw, 0);
	int spin = ncpu > 1; /* spinning on one core only steals the peer's time */
	if (spin) {
		dml_start(&dspin, SPIN_US);
		raw_start(&rspin, 1);
		pin(dspin.t, 1); /* client on CPU 0, servers on CPU 1 */
		pin(rspin.t, 1);
	}

	float *v = malloc(BULK_FLOATS * sizeof *v);
	for (int i = 0; i < BULK_FLOATS; i++)
		v[i] = (float)i;

	double ds[ROUNDS], rs[ROUNDS], ds1[ROUNDS], rs1[ROUNDS], dss[ROUNDS], rss[ROUNDS];
	double dp[ROUNDS], rp[ROUNDS], dp1[ROUNDS], rp1[ROUNDS], db[ROUNDS], rb[ROUNDS];
	place(dm.t, rw.t, 0);
	dml_seq(dm.c); /* warm up */
	raw_seq(rw.fd, 0);
	for (int i = 0; i < ROUNDS; i++) {
		place(dm.t, rw.t, 1);
		ds1[i] = dml_seq(dm.c);
		rs1[i] = raw_seq(rw.fd, 0);
		dp1[i] = dml_pipe(dm.c); /* the CPU cost per call, both ends on one core */
		rp1[i] = raw_pipe(rw.fd);
		place(dm.t, rw.t, 0);
		ds[i] = dml_seq(dm.c);
		rs[i] = raw_seq(rw.fd, 0);
		if (spin) {
			dss[i] = dml_seq(dspin.c);
			rss[i] = raw_seq(rspin.fd, 1);
		}
		dp[i] = dml_pipe(dm.c);
		rp[i] = raw_pipe(rw.fd);
		db[i] = dml_bulk(dm.c, v);
		rb[i] = raw_bulk(rw.fd, v);
	}
	double mds = median(ds, ROUNDS), mrs = median(rs, ROUNDS);
	double mds1 = median(ds1, ROUNDS), mrs1 = median(rs1, ROUNDS);
	double mdss = spin ? median(dss, ROUNDS) : 0, mrss = spin ? median(rss, ROUNDS) : 0;
	double mdp = median(dp, ROUNDS), mrp = median(rp, ROUNDS);
	double mdp1 = median(dp1, ROUNDS), mrp1 = median(rp1, ROUNDS);
	double mdb = median(db, ROUNDS), mrb = median(rb, ROUNDS);
	printf("# RPC over loopback, median of %d rounds of %.1f s (request %zu B, reply %zu B)\n",
	       ROUNDS, secs, REQ, REP);
	printf("%-40s %14s %14s %7s %7s\n", "figure", "libdistml", "raw TCP", "ratio", "target");
	printf("%-40s %14.0f %14.0f %7.2f %7s\n", "1. sequential calls/s, one core", mds1, mrs1, mds1 / mrs1, ">=0.8");
	printf("%-40s %14.0f %14.0f %7.2f %7s\n", "1. sequential calls/s, two cores", mds, mrs, mds / mrs, ">=0.8");
	if (spin)
		printf("%-40s %14.0f %14.0f %7.2f %7s\n", "1. sequential calls/s, two cores, spin", mdss, mrss,
		       mdss / mrss, ">=0.8");
	printf("%-40s %14.0f %14.0f %7.2f %7s\n", "2. pipelined calls/s (64 in flight)", mdp, mrp, mdp / mrp, ">=0.3");
	printf("%-40s %14.0f %14.0f %7.2f %7s\n", "2. pipelined calls/s, one core", mdp1, mrp1, mdp1 / mrp1, "");
	printf("%-40s %14.0f %14.0f %7.2f %7s\n", "3. 40 MB float32 argument, MB/s", mdb, mrb, mdb / mrb, ">=0.7");
	printf("# spin: client and server spin_us=%d; the raw pair likewise polls (poll(), no timeout) for up to that long before each read\n", SPIN_US);
	printf("RESULT distml seq1_calls_per_s=%.0f seq_calls_per_s=%.0f seqspin_calls_per_s=%.0f "
	       "pipelined_calls_per_s=%.0f pipelined1_calls_per_s=%.0f bulk_MB_per_s=%.0f\n",
	       mds1, mds, mdss, mdp, mdp1, mdb);
	printf("RESULT raw seq1_calls_per_s=%.0f seq_calls_per_s=%.0f seqspin_calls_per_s=%.0f "
	       "pipelined_calls_per_s=%.0f pipelined1_calls_per_s=%.0f bulk_MB_per_s=%.0f\n",
	       mrs1, mrs, mrss, mrp, mrp1, mrb);

	raw_end(&rw);
	dml_end(&dm);
	if (spin) {
		raw_end(&rspin);
		dml_end(&dspin);
	}
	free(v);
	return 0;
}
