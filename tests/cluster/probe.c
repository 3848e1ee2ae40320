/*
 * probe.c - measures what a cluster link does, so that the harness checks
 * each emulated property before the scenarios run on it:
 *
 *   probe serve PORT SECONDS      TCP echo/sink and UDP echo on PORT (all
 *                                 addresses of the namespace), for SECONDS
 *   probe rtt HOST PORT N         median and p90 TCP round trip of 1 byte,
 *                                 over N round trips (us)
 *   probe rate HOST PORT MB [CC]  TCP goodput of MB megabytes (Mbit/s),
 *                                 with congestion control CC if given
 *   probe rr HOST PORT N BYTES GAP_MS [CC]
 *                                 TCP exchanges of BYTES each way (echoed),
 *                                 one every GAP_MS: median and p90 of N (us),
 *                                 the library's calls without the library
 *   probe loss HOST PORT N        UDP: N datagrams at 2000/s, echoed; the
 *                                 one-way loss p from the round trip's
 *                                 (1 - p)^2 (per mille)
 *
 * Each prints one "RESULT name=value" line. Every loop is bounded in count
 * and time. Test harness code.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
	fprintf(stderr, "probe: %s: %s\n", what, strerror(errno));
	exit(1);
}

static struct sockaddr_in addr_of(const char *host, int port)
{
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "probe: bad address %s\n", host);
		exit(2);
	}
	return sa;
}

static int tcp_dial(const char *host, int port)
{
	struct sockaddr_in sa = addr_of(host, port);
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa))
		die("connect");
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct timeval tv = {30, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	return fd;
}

/* ---- the server: a TCP connection's first byte says what it wants ---- */

static void *tcp_conn(void *arg)
{
	int fd = (int)(intptr_t)arg, one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct timeval tv = {60, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	char mode;
	if (recv(fd, &mode, 1, MSG_WAITALL) == 1) {
		static __thread char buf[1 << 16];
		if (mode == 'e') { /* echo */
			ssize_t n;
			while ((n = recv(fd, buf, sizeof buf, 0)) > 0)
				if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
					break;
		} else if (mode == 's') { /* sink: then the byte count back */
			uint64_t total = 0;
			ssize_t n;
			while ((n = recv(fd, buf, sizeof buf, 0)) > 0)
				total += (uint64_t)n;
			send(fd, &total, sizeof total, MSG_NOSIGNAL);
		}
	}
	close(fd);
	return NULL;
}

static void *udp_echo(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[2048];
	for (;;) {
		struct sockaddr_in from;
		socklen_t fl = sizeof from;
		ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
		if (n > 0)
			sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
	}
	return NULL;
}

static int serve(int port, double secs)
{
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 64))
		die("listen");
	int ufd = socket(AF_INET, SOCK_DGRAM, 0);
	if (bind(ufd, (struct sockaddr *)&sa, sizeof sa))
		die("udp bind");
	pthread_t t;
	pthread_create(&t, NULL, udp_echo, (void *)(intptr_t)ufd);
	pthread_detach(t);
	printf("probe: serving on port %d\n", port);
	fflush(stdout);
	double end = now_s() + secs;
	for (;;) {
		double left = end - now_s();
		if (left <= 0)
			return 0;
		struct pollfd p = {lfd, POLLIN, 0};
		if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			continue;
		pthread_create(&t, NULL, tcp_conn, (void *)(intptr_t)fd);
		pthread_detach(t);
	}
}

/* ---- the measurements ------------------------------------------------ */

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int rtt(const char *host, int port, int n)
{
	int fd = tcp_dial(host, port);
	if (send(fd, "e", 1, 0) != 1)
		die("send");
	double *v = malloc(sizeof *v * (size_t)n);
	for (int i = 0; i < n; i++) {
		char b = 'x';
		double t0 = now_s();
		if (send(fd, &b, 1, 0) != 1 || recv(fd, &b, 1, MSG_WAITALL) != 1)
			die("ping");
		v[i] = (now_s() - t0) * 1e6;
	}
	qsort(v, (size_t)n, sizeof *v, cmp_d);
	printf("RESULT rtt_median_us=%.0f rtt_p10_us=%.0f rtt_p90_us=%.0f\n", v[n / 2], v[n / 10],
	       v[n * 9 / 10]);
	close(fd);
	free(v);
	return 0;
}

static int rr(const char *host, int port, int n, size_t bytes, double gap_ms, const char *cc)
{
	int fd = tcp_dial(host, port);
	if (cc && setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, (socklen_t)strlen(cc)))
		die("TCP_CONGESTION");
	if (send(fd, "e", 1, 0) != 1 || n < 1 || n > 100000 || bytes < 1 || bytes > (1 << 24))
		die("rr");
	char *buf = malloc(bytes);
	double *v = malloc(sizeof *v * (size_t)n);
	if (!buf || !v)
		die("malloc");
	memset(buf, 'x', bytes);
	for (int i = 0; i < n; i++) {
		double t0 = now_s();
		if (send(fd, buf, bytes, MSG_NOSIGNAL) != (ssize_t)bytes ||
		    recv(fd, buf, bytes, MSG_WAITALL) != (ssize_t)bytes)
			die("exchange");
		double t = now_s() - t0;
		v[i] = t * 1e6;
		if (gap_ms * 1e-3 > t) {
			struct timespec ts = {0, (long)((gap_ms * 1e-3 - t) * 1e9)};
			while (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			nanosleep(&ts, NULL);
		}
	}
	qsort(v, (size_t)n, sizeof *v, cmp_d);
	printf("RESULT rr_median_us=%.0f rr_p10_us=%.0f rr_p90_us=%.0f\n", v[n / 2], v[n / 10],
	       v[n * 9 / 10]);
	close(fd);
	free(v);
	free(buf);
	return 0;
}

static int rate(const char *host, int port, double mb, const char *cc)
{
	int fd = tcp_dial(host, port);
	if (cc && setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, (socklen_t)strlen(cc)))
		die("TCP_CONGESTION");
	if (send(fd, "s", 1, 0) != 1)
		die("send");
	static char buf[1 << 16];
	uint64_t total = (uint64_t)(mb * 1e6), sent = 0;
	double t0 = now_s();
	while (sent < total) {
		size_t k = total - sent < sizeof buf ? (size_t)(total - sent) : sizeof buf;
		ssize_t w = send(fd, buf, k, MSG_NOSIGNAL);
		if (w <= 0)
			die("send");
		sent += (uint64_t)w;
	}
	shutdown(fd, SHUT_WR);
	uint64_t got = 0;
	if (recv(fd, &got, sizeof got, MSG_WAITALL) != sizeof got)
		die("recv count");
	double t = now_s() - t0;
	printf("RESULT rate_mbit_s=%.1f bytes=%llu seconds=%.3f\n", got * 8 / t / 1e6,
	       (unsigned long long)got, t);
	close(fd);
	return got == total ? 0 : 1;
}

static int loss(const char *host, int port, int n)
{
	struct sockaddr_in sa = addr_of(host, port);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa))
		die("udp connect");
	char *got = calloc((size_t)n, 1);
	int back = 0;
	double t0 = now_s(), end_send = t0 + n / 2000.0;
	for (int i = 0; i < n || now_s() < end_send + 1.0;) {
		double now = now_s();
		if (i < n && now >= t0 + i / 2000.0) {
			char b[64] = {0};
			memcpy(b, &i, sizeof i);
			send(fd, b, sizeof b, 0);
			i++;
			continue;
		}
		if (i >= n && now >= end_send + 1.0)
			break;
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, 1) == 1) {
			char b[64];
			int k;
			if (recv(fd, b, sizeof b, 0) >= (ssize_t)sizeof k) {
				memcpy(&k, b, sizeof k);
				if (k >= 0 && k < n && !got[k]) {
					got[k] = 1;
					back++;
				}
			}
		}
	}
	double rt = 1.0 - (double)back / n;
	double p = 1.0 - sqrt((double)back / n);
	printf("RESULT loss_oneway_permille=%.2f loss_roundtrip_permille=%.2f sent=%d back=%d\n",
	       p * 1000, rt * 1000, n, back);
	free(got);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "serve"))
		return serve(atoi(argv[2]), atof(argv[3]));
	if (argc == 5 && !strcmp(argv[1], "rtt"))
		return rtt(argv[2], atoi(argv[3]), atoi(argv[4]) > 0 ? atoi(argv[4]) : 1);
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "rate"))
		return rate(argv[2], atoi(argv[3]), atof(argv[4]), argc == 6 ? argv[5] : NULL);
	if ((argc == 7 || argc == 8) && !strcmp(argv[1], "rr"))
		return rr(argv[2], atoi(argv[3]), atoi(argv[4]), (size_t)atol(argv[5]), atof(argv[6]),
		          argc == 8 ? argv[7] : NULL);
	if (argc == 5 && !strcmp(argv[1], "loss"))
		return loss(argv[2], atoi(argv[3]), atoi(argv[4]) > 0 ? atoi(argv[4]) : 1);
	fprintf(stderr, "usage: probe serve PORT SECONDS | rtt HOST PORT N | rate HOST PORT MB [CC] | "
	                "loss HOST PORT N\n");
	return 2;
}
