/*
 * nfq_delay.c - one-way delay and jitter for the packets a host sends, for
 * the cluster harness (this kernel has no netem qdisc). An iptables rule in
 * the host's namespace sends its outgoing packets to NFQUEUE queue Q; this
 * program, inside the same namespace, takes each packet's id (metadata
 * only: no payload is copied), holds it DELAY us (plus a uniform jitter of
 * up to +-JITTER us, never reordering: a packet leaves no earlier than the
 * one before it) and then lets it go on (NF_ACCEPT), so TCP sees the round
 * trip the profile asks for, unlike a relay that would end TCP itself.
 *
 *     nfq_delay QUEUE DELAY_US JITTER_US SECONDS
 *
 * Bounded: it exits after SECONDS, or on SIGTERM/SIGINT; the rule's
 * --queue-bypass and the queue's fail-open flag let packets through when
 * it is gone or its queue is full. Test harness code: it prints its counts
 * on exit.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { RING = 1 << 16 };

typedef struct held {
	uint32_t id;
	int64_t due; /* ns */
} held;

static held ring[RING];
static size_t head, tail; /* [head, tail) held */
static int64_t delay_ns, jitter_ns, last_due;
static uint64_t seen, passed_early, rng = 0x9e3779b97f4a7c15ull;
static volatile sig_atomic_t stop;

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
                     void *arg)
{
	(void)msg;
	(void)arg;
	struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
	if (!ph)
		return 0;
	uint32_t id = ntohl(ph->packet_id);
	seen++;
	if (tail - head == RING) { /* full: let it go now */
		passed_early++;
		return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
	}
	int64_t j = jitter_ns ? (int64_t)(next_rand() % (uint64_t)(2 * jitter_ns + 1)) - jitter_ns : 0;
	int64_t due = now_ns() + delay_ns + j;
	if (due < last_due)
		due = last_due; /* no reordering */
	last_due = due;
	ring[tail % RING] = (held){id, due};
	tail++;
	return 0;
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: nfq_delay QUEUE DELAY_US JITTER_US SECONDS\n");
		return 2;
	}
	int q = atoi(argv[1]);
	delay_ns = atoll(argv[2]) * 1000;
	jitter_ns = atoll(argv[3]) * 1000;
	int64_t end = now_ns() + (int64_t)(atof(argv[4]) * 1e9);
	if (jitter_ns > delay_ns)
		jitter_ns = delay_ns;
	rng ^= (uint64_t)getpid() << 20;
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);

	struct nfq_handle *h = nfq_open();
	if (!h) {
		perror("nfq_open");
		return 1;
	}
	struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)q, on_packet, NULL);
	if (!qh) {
		fprintf(stderr, "nfq_delay: cannot bind queue %d: %s\n", q, strerror(errno));
		nfq_close(h);
		return 1;
	}
	if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0 || nfq_set_queue_maxlen(qh, RING) < 0) {
		fprintf(stderr, "nfq_delay: cannot configure queue %d\n", q);
		return 1;
	}
	uint32_t flags = NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN;
	nfq_set_queue_flags(qh, flags, flags); /* older kernels: best effort */
	int fd = nfq_fd(h);
	int bufsz = 8 << 20, one = 1;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bufsz, sizeof bufsz);
	setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
	printf("nfq_delay: queue %d, delay %lld us, jitter %lld us\n", q,
	       (long long)(delay_ns / 1000), (long long)(jitter_ns / 1000));
	fflush(stdout);

	static char buf[1 << 16];
	while (!stop) {
		int64_t now = now_ns();
		if (now >= end)
			break;
		/* release what is due, in one batch verdict (ids rise in order) */
		size_t k = head;
		while (k < tail && ring[k % RING].due <= now)
			k++;
		if (k > head) {
			nfq_set_verdict_batch(qh, ring[(k - 1) % RING].id, NF_ACCEPT);
			head = k;
		}
		int64_t wait = end - now;
		if (head < tail && ring[head % RING].due - now < wait)
			wait = ring[head % RING].due - now;
		struct timespec ts = {(time_t)(wait / 1000000000), (long)(wait % 1000000000)};
		struct pollfd p = {fd, POLLIN, 0};
		int n = ppoll(&p, 1, &ts, NULL);
		if (n < 0 && errno != EINTR)
			break;
		for (;;) {
			ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
			if (r < 0)
				break;
			nfq_handle_packet(h, buf, (int)r);
		}
	}
	if (head < tail) /* let the rest go */
		nfq_set_verdict_batch(qh, ring[(tail - 1) % RING].id, NF_ACCEPT);
	printf("nfq_delay: %llu packets, %llu passed undelayed (ring full)\n",
	       (unsigned long long)seen, (unsigned long long)passed_early);
	nfq_destroy_queue(qh);
	nfq_close(h);
	return 0;
}
