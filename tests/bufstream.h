/*
 * bufstream.h - a test-only stream (lib/stream.h) with TLS's two awkward
 * habits, to run the RPC suite over:
 *
 * - it holds input the descriptor no longer shows: it reads the socket in
 *   large pieces, decodes them, and hands them out in pieces, sometimes
 *   fewer bytes than it holds and than were asked for;
 * - a write may need a read first, and a read a write: every PING_EVERY
 *   bytes the writer sends a ping and writes no more until the peer's
 *   stream answers with a pong, which it sends when it reads the ping
 *   (as a TLS key update waits for the peer's).
 *   Bytes a write takes are framed into an output buffer that only a
 *   flush (or any later call) may push out.
 *
 * On the wire: frames of [type][length, 2 bytes big-endian][data], the
 * types D (data, 1 to 4096 bytes), P (ping) and Q (pong), both empty.
 * Anything else from the peer is a broken stream (DML_ECONNLOST).
 */
#ifndef BUFSTREAM_H
#define BUFSTREAM_H

#include "internal.h"
#include "stream.h"
#include "transport.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BS_RAW 8192              /* socket bytes read at once */
#define BS_TX 8192               /* framed output held */
#define BS_DATA_MAX 4096         /* data per frame */
#define BS_PING_EVERY (16 * 1024) /* data bytes between pings */

typedef struct bufstream {
	dml__stream base;
	uint8_t rx[BS_RAW];
	size_t rxlen;
	uint8_t *plain; /* decoded data held: [ppos, plen) */
	size_t ppos, plen, pcap;
	uint8_t tx[BS_TX];
	size_t txpos, txlen;
	size_t since_ping;
	int awaiting_pong;
	int pongs_owed;
	int eof;
	uint64_t rng;
} bufstream;

static size_t bs_held(const bufstream *b) { return b->plen - b->ppos; }

/* Pushes framed output: 0 when none is left, DML_EAGAIN, DML_ECONNLOST. */
static int bs_pump_out(bufstream *b)
{
	while (b->txpos < b->txlen) {
		struct iovec v = {b->tx + b->txpos, b->txlen - b->txpos};
		ssize_t w = dml__writev(b->base.fd, &v, 1);
		if (w < 0)
			return (int)w;
		b->txpos += (size_t)w;
	}
	b->txpos = b->txlen = 0;
	return 0;
}

static int bs_frame(bufstream *b, uint8_t type, const uint8_t *p, size_t n)
{
	if (b->txpos == b->txlen)
		b->txpos = b->txlen = 0;
	if (BS_TX - b->txlen < 3 + n)
		return -1;
	b->tx[b->txlen] = type;
	b->tx[b->txlen + 1] = (uint8_t)(n >> 8);
	b->tx[b->txlen + 2] = (uint8_t)n;
	if (n)
		memcpy(b->tx + b->txlen + 3, p, n);
	b->txlen += 3 + n;
	return 0;
}

/* Pongs owed go out as soon as there is room for them (as a TLS stream
 * answers a key update when it reads one, whether or not its reader has
 * taken the data before it). */
static void bs_queue_pongs(bufstream *b)
{
	while (b->pongs_owed && bs_frame(b, 'Q', NULL, 0) == 0)
		b->pongs_owed--;
}

/* Reads the socket once and decodes whole frames: > 0, DML_EAGAIN,
 * DML_ECONNLOST (end of stream: b->eof, or a broken frame). */
static ssize_t bs_pump_in(bufstream *b)
{
	ssize_t n = dml__read(b->base.fd, b->rx + b->rxlen, BS_RAW - b->rxlen);
	if (n == DML_ECONNLOST)
		b->eof = 1;
	if (n < 0)
		return n;
	b->rxlen += (size_t)n;
	size_t at = 0;
	while (b->rxlen - at >= 3) {
		uint8_t type = b->rx[at];
		size_t len = (size_t)b->rx[at + 1] << 8 | b->rx[at + 2];
		if ((type == 'D' && (len == 0 || len > BS_DATA_MAX)) ||
		    ((type == 'P' || type == 'Q') && len) ||
		    (type != 'D' && type != 'P' && type != 'Q'))
			return DML_ECONNLOST;
		if (b->rxlen - at < 3 + len)
			break;
		if (type == 'D') {
			if (b->ppos == b->plen)
				b->ppos = b->plen = 0;
			if (b->pcap - b->plen < len) {
				size_t cap = b->pcap ? b->pcap * 2 : 16384;
				while (cap - b->plen < len)
					cap *= 2;
				uint8_t *p = realloc(b->plain, cap);
				if (!p)
					return DML_ECONNLOST;
				b->plain = p;
				b->pcap = cap;
			}
			memcpy(b->plain + b->plen, b->rx + at + 3, len);
			b->plen += len;
		} else if (type == 'P') {
			b->pongs_owed++;
		} else {
			b->awaiting_pong = 0;
		}
		at += 3 + len;
	}
	memmove(b->rx, b->rx + at, b->rxlen - at);
	b->rxlen -= at;
	return n;
}

static ssize_t bs_read(dml__stream *st, void *buf, size_t len)
{
	bufstream *b = (bufstream *)st;
	if (len == 0)
		return 0;
	while (!bs_held(b)) {
		if (b->eof)
			return DML_ECONNLOST;
		ssize_t n = bs_pump_in(b);
		if (n < 0)
			return n;
		bs_queue_pongs(b); /* pings answered even when no data came */
		int o = bs_pump_out(b);
		if (o && o != DML_EAGAIN)
			return o;
	}
	size_t n = bs_held(b) < len ? bs_held(b) : len;
	b->rng = b->rng * 6364136223846793005ull + 1442695040888963407ull;
	if (n > 1 && (b->rng >> 61) == 0) /* one read in 8: fewer bytes than could be */
		n = 1 + (size_t)(b->rng >> 33) % (n - 1);
	memcpy(buf, b->plain + b->ppos, n);
	b->ppos += n;
	bs_queue_pongs(b);
	int o = bs_pump_out(b);
	if (o && o != DML_EAGAIN)
		return o;
	return (ssize_t)n;
}

static ssize_t bs_writev(dml__stream *st, const struct iovec *iov, int niov)
{
	bufstream *b = (bufstream *)st;
	bs_queue_pongs(b);
	int o = bs_pump_out(b);
	if (o && o != DML_EAGAIN)
		return o;
	while (b->awaiting_pong) { /* the write needs a read */
		ssize_t n = bs_pump_in(b);
		if (n == DML_EAGAIN)
			return DML_EAGAIN;
		if (n < 0)
			return n;
		bs_queue_pongs(b);
		if ((o = bs_pump_out(b)) && o != DML_EAGAIN)
			return o;
	}
	size_t taken = 0;
	for (int i = 0; i < niov && !b->awaiting_pong; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t left = iov[i].iov_len;
		while (left && !b->awaiting_pong) {
			if (b->txpos == b->txlen)
				b->txpos = b->txlen = 0;
			size_t room = BS_TX - b->txlen;
			if (room < 3 + 1 + 3) /* a byte, and room for the ping */
				goto full;
			size_t k = room - 6;
			if (k > BS_DATA_MAX)
				k = BS_DATA_MAX;
			if (k > left)
				k = left;
			if (k > BS_PING_EVERY - b->since_ping)
				k = BS_PING_EVERY - b->since_ping;
			(void)bs_frame(b, 'D', p, k);
			p += k;
			left -= k;
			taken += k;
			if ((b->since_ping += k) == BS_PING_EVERY) {
				(void)bs_frame(b, 'P', NULL, 0);
				b->since_ping = 0;
				b->awaiting_pong = 1;
			}
		}
	}
full:
	o = bs_pump_out(b);
	if (o && o != DML_EAGAIN)
		return o;
	return taken ? (ssize_t)taken : DML_EAGAIN;
}

static int bs_flush(dml__stream *st)
{
	bufstream *b = (bufstream *)st;
	bs_queue_pongs(b);
	return bs_pump_out(b);
}

static size_t bs_pending(const dml__stream *st) { return bs_held((const bufstream *)st); }

/* A write waiting for a pong waits for input; held output for room. */
static unsigned bs_wants(const dml__stream *st, unsigned asked)
{
	const bufstream *b = (const bufstream *)st;
	unsigned w = asked;
	if (asked & DML__EV_OUT && b->awaiting_pong)
		w = (w & ~DML__EV_OUT) | DML__EV_IN;
	return w | (b->txpos < b->txlen ? DML__EV_OUT : 0u);
}

static void bs_shutdown(dml__stream *st) { (void)shutdown(st->fd, SHUT_RDWR); }

static void bs_close(dml__stream *st)
{
	bufstream *b = (bufstream *)st;
	close(st->fd);
	free(b->plain);
	free(b);
}

static const dml__stream_ops bs_ops = {
	.read = bs_read,
	.writev = bs_writev,
	.flush = bs_flush,
	.pending = bs_pending,
	.wants = bs_wants,
	.shutdown = bs_shutdown,
	.close = bs_close,
};

static _Atomic uint64_t bs_streams; /* made so far: the tests check it */

/* The wrap hook: every stream the library makes becomes a bufstream. */
static int bs_wrap(dml__stream **st, int server)
{
	bufstream *b = calloc(1, sizeof *b);
	if (!b)
		return DML_ENOMEM;
	b->base.ops = &bs_ops;
	b->base.fd = (*st)->fd;
	b->base.flags = 0; /* one thread at a time */
	b->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)b->base.fd ^ (uint64_t)server << 40 ^
	         ++bs_streams;
	dml__stream_release(*st);
	*st = &b->base;
	return 0;
}

#endif
