/*
 * rpc_server.c - the RPC server: a poller (poller.h: epoll or poll()) of
 * listeners and connections, driven by whichever host threads call
 * run/poll.
 *
 * Ownership: one thread at a time serves a connection. Connections are
 * registered once (with epoll, edge-triggered: no epoll call per request;
 * with poll(), one-shot, armed again by the owner as it lets go), and each
 * has an atomic word (generation << 32 | busy):
 * whoever raises busy from 0 owns the connection; anyone else who has news
 * for it (an event, a deferred reply that could not be written at once)
 * raises busy and leaves, and the owner, failing to bring busy back to 0,
 * goes round again. Connection slots live in chunks that are never freed
 * before the server, and events carry (generation, slot), so a stale event
 * or a late deferred reply for a closed connection is recognised and
 * dropped instead of touching freed memory.
 *
 * Each connection's output buffer and socket writes are guarded by its
 * `omu`, because deferred replies (dml_rpc_deferred_reply) are written from
 * any thread.
 */
#define _GNU_SOURCE
#include "abi.h"
#include "codec.h"
#include "frame.h"
#include "poller.h"
#include "rpc_wire.h"
#include "stream.h"
#include "sys.h"
#include "transport.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX_LISTENERS 8
#define ENCODE_GUESS 256 /* bytes tried for a reply's encoding at first */
#define MAX_TICKS 8
#define MAX_TICK_PERIOD ((dml_duration)3600000) /* 1 h */
#define READ_CHUNK (16 * 1024)
/* An input buffer grown past BIG_IN for a large frame is kept for the next
 * one, and freed once BIG_KEEP_MS pass without one (at once when others
 * wait for the byte budget): fresh pages for every large frame would cost
 * more than reading it. Such buffers, and unsent replies beyond OUT_ACCT,
 * count against the server's byte budget (max_buffered). */
#define BIG_IN READ_CHUNK
#define BIG_KEEP_MS 1000
#define OUT_ACCT (64 * 1024)
/* A connection waiting for the byte budget is looked at again this often
 * (and at once when bytes are released). */
#define STALL_RETRY_MS 50
/* A frame past BIG_IN must average min_frame_rate after this long. */
#define RATE_GRACE_MS 2000
#define STALLED 1 /* dispatch: not served, the budget is spent */
#define EVENTS_PER_POLL 8
#define ACCEPTS_PER_EVENT 64
#define OUT_HIGH (4u << 20) /* unsent reply bytes before a connection stops reading */
#define CHUNK 64            /* connection slots per chunk */
#define ID_KICK 9           /* event ids: 0 stop, 1..8 listeners, 9 kick, */
#define ID_CONN0 16         /* 16.. slots */
/* Out of descriptors (EMFILE, ENFILE), the listeners rest this long (or
 * until a connection closes) instead of failing to accept in a loop. */
#define ACCEPT_REST_MS 100
#define NEVER INT64_MAX     /* no timer */

/* A server's or a method's counters (dml_rpc_server_stats), relaxed
 * atomics: each is exact, a snapshot of several is not. */
typedef struct counters {
	_Atomic uint64_t calls, errors, bytes_in, bytes_out;
	_Atomic uint64_t latency[DML_RPC_LATENCY_BUCKETS];
} counters;

typedef struct method_ent {
	const dml_rpc_method *m;
	dml_rpc_handler h;
	void *user;
	size_t name_len;
	int has_arrays;
	counters *cnt; /* its own allocation: the table may move */
	int builtin;   /* RPC.Hello, RPC.Ping, RPC.Auth: no access checks */
} method_ent;

/* Open connections per address ("a" keys) and per authenticated identity
 * ("c" certificate, "t" token keys), for the per-peer budgets; a hash
 * table with linear probing, under the server's mu. */
typedef struct peer_ent {
	char *key;  /* kind letter, then the address or identity; NULL = empty */
	int conns;  /* open connections counted here */
	int unauth; /* address keys: those not authenticated */
} peer_ent;

typedef struct listener {
	int fd;
	char unix_path[108];
} listener;

typedef struct conn conn;
struct conn {
	_Atomic uint64_t state; /* generation << 32 | busy */
	uint32_t slot;
	int fd;               /* st->fd; -1 while the slot is free */
	uint64_t id;
	conn *next_free;
	dml__buf in; /* bytes [rpos, in.len) are unparsed */
	size_t rpos;
	pthread_mutex_t omu; /* guards out, opos, held and writes to st (and
	                        its reads, unless the stream is DUPLEX) */
	dml__buf out;        /* bytes [opos, out.len) are unsent */
	size_t opos;
	atomic_int over;     /* unsent bytes > OUT_HIGH (set under omu) */
	atomic_int hup;      /* the peer's end of stream (or an error) was
	                        reported: read on past short reads to see it */
	/* for the timeouts (ms, monotonic), read by the sweep */
	atomic_int open;            /* set up and in the poller */
	_Atomic int64_t rx_at;      /* bytes last received */
	_Atomic int64_t frame_at;   /* a partial frame began; 0 = none */
	_Atomic int64_t tx_at;      /* output last empty or progressing */
	atomic_int deferred;        /* deferred replies owed */
	dml__buf scratch; /* argument/reply structs, aligned payload copies */
	method_ent *last; /* the method of the previous request */
	int64_t big_at;   /* ms: in was last grown or used past BIG_IN; 0 = not */
	char peer[64];    /* the peer's address, for events (with on_event) */
	/* here, not among the fields above: their cache lines are as they
	 * were before these came (pipelined calls measured 8% slower so) */
	dml__stream *st;  /* the connection's bytes (stream.h) */
	int held;         /* the stream holds written bytes unflushed (omu) */
	int64_t rx_us;    /* us: the last read (its owner's): when the
	                     requests it completed were taken */
	dml_rpc_server *s;
	/* who the peer is (its owner's, set at accept and on the first
	 * request or RPC.Auth) */
	uint64_t acl_known, acl_ok; /* the authorize hook's answers so far,
	                               per method index below 64 */
	unsigned char auth;         /* dml_rpc_auth */
	unsigned char ident_known;  /* identity settled (certificate looked at) */
	unsigned char authed;       /* by certificate or token */
	unsigned char auth_tried;   /* an RPC.Auth came: no second one */
	unsigned char refused;      /* the hook refused the connection */
	char addr[48];              /* the peer's address alone, counted */
	char ident[DML_RPC_MAX_IDENTITY];
	/* the byte budget (its owner's; acct_out under omu) */
	int64_t acct_in;            /* bytes of `in` counted in s->held */
	int64_t acct_out;           /* unsent bytes counted in s->held */
	atomic_int stalled;         /* waits for the budget */
	_Atomic int64_t stall_at;   /* ms: since then */
	/* calls answered, not yet added to their counters (under omu): added
	 * before the replies are written, so a peer that has a reply finds it
	 * counted, at a few atomic adds per batch instead of per call */
	struct count_batch {
		struct counters *k; /* whose; NULL: empty */
		uint32_t calls, errors;
		uint64_t in, out;
		uint32_t lat_mask;  /* buckets below that are not 0 */
		uint16_t lat[DML_RPC_LATENCY_BUCKETS];
	} cb;
};

struct dml_rpc_ctx {
	dml_rpc_server *s;
	conn *c;
	uint32_t gen;
	uint64_t seq;
	const dml_type *rt;
	counters *cnt;     /* the method's */
	uint64_t in_bytes; /* the request frame's */
	int64_t t0;        /* us: the request was taken */
	int deferred;
	int has_msg;
	char msg[DML_RPC_ERRMSG_MAX];
};

/* Outlives the server while deferred replies are outstanding, so that one
 * sent after dml_rpc_server_free is dropped instead of touching freed
 * memory. Replies hold it shared; the server's free takes it exclusive. */
typedef struct hub {
	pthread_rwlock_t lock;
	int alive;
	atomic_int refs; /* the server's + one per outstanding deferred reply */
} hub;

static void hub_unref(hub *h)
{
	if (atomic_fetch_sub(&h->refs, 1) == 1) {
		pthread_rwlock_destroy(&h->lock);
		free(h);
	}
}

struct dml_rpc_deferred {
	hub *h;
	dml_rpc_server *s;
	uint64_t conn_id; /* c->id then: the slot may serve another later */
	conn *c;
	uint32_t gen;
	uint64_t seq;
	const dml_type *rt;
	counters *cnt;
	uint64_t in_bytes;
	int64_t t0;
};

struct dml_rpc_server {
	dml_rpc_server_opts o;
	dml__poller *poller;
	int evfd[2]; /* stop: readable once stopped, for good */
	int kick[2]; /* a timer moved forward from outside: sweep now */
	pthread_mutex_t lmu; /* the listeners' descriptors: accepting, closing */
	atomic_int draining;           /* dml_rpc_server_drain was called */
	_Atomic int64_t drain_at;      /* ms: the rest is closed then; NEVER */
	listener ls[MAX_LISTENERS];
	int nls;
	method_ent *methods;
	size_t nmethods;
	uint32_t *index; /* open-addressing hash: method slot + 1, 0 = empty */
	size_t index_cap;
	pthread_mutex_t mu; /* guards the slots' allocation and nconns */
	conn **chunks;      /* nchunks_cap pointers, filled as needed */
	size_t nchunks, nchunks_cap;
	conn *free_slots;
	int nconns;
	atomic_int stopped;
	_Atomic int64_t next_sweep; /* ms: the earliest timer (a connection's
	                               timeout, a tick, a large buffer to
	                               free, the listeners' rest); NEVER */
	int resting;                /* listeners out of the poller (under mu) */
	int64_t rest_until;         /* ms (under mu) */
	atomic_int sweeping;
	atomic_int spinning; /* a run thread busy-polls (opts.spin_us) */
	atomic_int nbig;     /* connections keeping a large input buffer */
	struct {
		dml_duration period;
		int64_t next; /* ms */
		void (*fn)(void *);
		void *arg;
	} ticks[MAX_TICKS];
	int nticks;
	struct {
		void (*fn)(void *user, dml_rpc_server *s, uint64_t id);
		void *user;
	} on_close[MAX_TICKS];
	int non_close;
	atomic_uint_fast64_t next_id;
	hub *hub;
	int gated;          /* require_auth or an authorize hook: check calls */
	dml_rpc_token *tokens; /* copies of opts.tokens (o.tokens points here) */
	size_t *token_len;
	peer_ent *peers;    /* per-peer counts (under mu) */
	_Atomic int64_t held_in;   /* bytes of large input buffers, and ... */
	_Atomic int64_t held_out;  /* ... of unsent replies: half of
	                              max_buffered each */
	atomic_int nstalled;       /* connections waiting for it */
	_Atomic int64_t unstall_at; /* ms: bytes were last released then */
	size_t peers_cap;   /* a power of two, at least 4 x max_conns */
	counters cnt; /* calls to no method (the rest count in theirs) */
	_Atomic uint64_t accepted, closed, shed;
};

static void listener_close(listener *l);

/* ---- method table ------------------------------------------------- */

static uint32_t name_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)s[i]) * 16777619u;
	return h;
}

static method_ent *method_find(dml_rpc_server *s, const char *name, size_t n)
{
	if (!s->index_cap)
		return NULL;
	size_t mask = s->index_cap - 1;
	for (size_t i = name_hash(name, n) & mask;; i = (i + 1) & mask) {
		uint32_t slot = s->index[i];
		if (!slot)
			return NULL;
		method_ent *e = &s->methods[slot - 1];
		if (e->name_len == n && memcmp(e->m->name, name, n) == 0)
			return e;
	}
}

static int index_rebuild(dml_rpc_server *s, size_t cap)
{
	uint32_t *idx = calloc(cap, sizeof *idx);
	if (!idx)
		return DML_ENOMEM;
	for (size_t k = 0; k < s->nmethods; k++) {
		method_ent *e = &s->methods[k];
		size_t i = name_hash(e->m->name, e->name_len) & (cap - 1);
		while (idx[i])
			i = (i + 1) & (cap - 1);
		idx[i] = (uint32_t)k + 1;
	}
	free(s->index);
	s->index = idx;
	s->index_cap = cap;
	return 0;
}

/* Adds a method whose name and types are valid and new. */
static int method_add(dml_rpc_server *s, const dml_rpc_method *m,
                      dml_rpc_handler h, void *user)
{
	size_t n = strlen(m->name);
	method_ent *ms = realloc(s->methods, (s->nmethods + 1) * sizeof *ms);
	if (!ms)
		return DML_ENOMEM;
	s->methods = ms;
	counters *cnt = calloc(1, sizeof *cnt);
	if (!cnt)
		return DML_ENOMEM;
	ms[s->nmethods] = (method_ent){m, h, user, n, dml__type_has_arrays(m->args), cnt, 0};
	s->nmethods++;
	if (s->nmethods * 2 > s->index_cap) {
		size_t cap = s->index_cap ? s->index_cap : 16;
		while (s->nmethods * 2 > cap)
			cap *= 2;
		if (index_rebuild(s, cap)) {
			s->nmethods--;
			free(cnt);
			return DML_ENOMEM;
		}
	} else {
		size_t mask = s->index_cap - 1, i = name_hash(m->name, n) & mask;
		while (s->index[i])
			i = (i + 1) & mask;
		s->index[i] = (uint32_t)s->nmethods;
	}
	return 0;
}

static void methods_free(dml_rpc_server *s)
{
	for (size_t i = 0; i < s->nmethods; i++)
		free(s->methods[i].cnt);
	free(s->methods);
}

int dml_rpc_server_register(dml_rpc_server *s, const dml_rpc_method *m,
                            dml_rpc_handler h, void *user)
{
	dml__detail_clear();
	if (!s || !m || !m->name || !h)
		return DML_EINVAL;
	size_t n = strlen(m->name);
	if (n == 0 || n > DML_RPC_MAX_METHOD)
		return dml__fail(DML_EINVAL, "method names are 1 to %d bytes",
		                 DML_RPC_MAX_METHOD);
	if (!strncmp(m->name, RPCW_PREFIX, strlen(RPCW_PREFIX)))
		return dml__fail(DML_EINVAL, "method names beginning \"%s\" belong "
		                 "to the library", RPCW_PREFIX);
	if ((m->args && dml__type_valid(m->args)) ||
	    (m->reply && dml__type_valid(m->reply)))
		return DML_EINVAL;
	if (method_find(s, m->name, n))
		return DML_EEXIST;
	return method_add(s, m, h, user);
}

/* RPC.Hello: the protocol and library this server speaks, and whether it
 * serves the method asked about (docs/protocol.md, section 11). */
static int h_hello(dml_rpc_ctx *ctx, const void *a, void *r, void *user)
{
	(void)ctx;
	dml_rpc_server *s = user;
	const rpcw_hello *q = a;
	rpcw_welcome *w = r;
	const char *lib = dml_version();
	w->proto = DML_RPC_PROTOCOL;
	w->lib = (dml_str){lib, strlen(lib), 0};
	w->has = q->method.n && q->method.n <= DML_RPC_MAX_METHOD &&
	         method_find(s, q->method.data, q->method.n) != NULL;
	return 0;
}

/* ---- lifecycle ---------------------------------------------------- */

/* The options with defaults in place; DML_EINVAL names the one that is
 * wrong. */
/* What the descriptor limit allows: the soft RLIMIT_NOFILE less a quarter
 * (at least 16) for the host's own, at most DML_RPC_DEFAULT_MAX_CONNS. */
static int default_max_conns(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur >= (rlim_t)DML_RPC_DEFAULT_MAX_CONNS * 2)
		return DML_RPC_DEFAULT_MAX_CONNS;
	rlim_t keep = rl.rlim_cur / 4 > 16 ? rl.rlim_cur / 4 : 16;
	rlim_t n = rl.rlim_cur > keep ? rl.rlim_cur - keep : 1;
	return n > DML_RPC_DEFAULT_MAX_CONNS ? DML_RPC_DEFAULT_MAX_CONNS : (int)n;
}

/* ---- identities, tokens and per-peer counts ------------------------ */

/* The entry of `kind` + `name`, created (count 0) if `create`; NULL when
 * absent, or out of memory. Under mu. */
static peer_ent *peer_get(dml_rpc_server *s, char kind, const char *name, int create)
{
	char key[DML_RPC_MAX_IDENTITY + 2];
	snprintf(key, sizeof key, "%c%s", kind, name);
	size_t mask = s->peers_cap - 1, i = (size_t)dml__fnv1a(key) & mask;
	while (s->peers[i].key) {
		if (!strcmp(s->peers[i].key, key))
			return &s->peers[i];
		i = (i + 1) & mask;
	}
	if (!create || !(s->peers[i].key = strdup(key)))
		return NULL;
	s->peers[i].conns = s->peers[i].unauth = 0;
	return &s->peers[i];
}

/* Removes an entry whose count fell to 0 (backward-shift deletion, so
 * that every other key stays reachable). Under mu. */
static void peer_put(dml_rpc_server *s, peer_ent *e)
{
	if (!e || e->conns)
		return;
	size_t mask = s->peers_cap - 1, i = (size_t)(e - s->peers), j = i;
	free(e->key);
	e->key = NULL;
	for (;;) {
		j = (j + 1) & mask;
		if (!s->peers[j].key)
			return;
		size_t h = (size_t)dml__fnv1a(s->peers[j].key) & mask;
		/* j stays if its home h lies cyclically in (i, j] */
		if (i <= j ? (h > i && h <= j) : (h > i || h <= j))
			continue;
		s->peers[i] = s->peers[j];
		s->peers[j].key = NULL;
		i = j;
	}
}

/* The address part of a peer's name: "1.2.3.4:5" -> "1.2.3.4",
 * "[::1]:5" -> "::1", "unix:..." -> "unix". */
static void addr_only(const char *peer, char *out, size_t cap)
{
	size_t n;
	if (!strncmp(peer, "unix:", 5) || !*peer) {
		snprintf(out, cap, "unix");
		return;
	}
	if (peer[0] == '[') {
		const char *e = strchr(peer, ']');
		n = e ? (size_t)(e - peer - 1) : strlen(peer + 1);
		peer++;
	} else {
		const char *e = strrchr(peer, ':');
		n = e ? (size_t)(e - peer) : strlen(peer);
	}
	if (n >= cap)
		n = cap - 1;
	memcpy(out, peer, n);
	out[n] = 0;
}

/* Asks the hook about c (method NULL: the connection): 0 = allowed. */
static int ask_hook(dml_rpc_server *s, conn *c, const char *method)
{
	dml_rpc_peer p = {(dml_rpc_auth)c->auth, c->ident, c->peer, c->id};
	return s->o.authorize(&p, method, s->o.authorize_user);
}

/* c's identity is known from here on: the hook says whether it may call
 * anything; later answers per method start afresh. */
static void conn_admit(dml_rpc_server *s, conn *c)
{
	c->ident_known = 1;
	c->acl_known = c->acl_ok = 0;
	c->refused = s->o.authorize && ask_hook(s, c, NULL) != 0;
}

/* c authenticated as `ident` (a certificate's subject or a token's name):
 * counted under it (DML_EBUSY past max_conns_per_peer), and no longer
 * among its address's unauthenticated connections. */
static int conn_authenticate(dml_rpc_server *s, conn *c, dml_rpc_auth auth,
                             const char *ident)
{
	char kind = auth == DML_RPC_AUTH_CERT ? 'c' : 't';
	pthread_mutex_lock(&s->mu);
	peer_ent *pi = peer_get(s, kind, ident, 1);
	int rc = !pi ? DML_ENOMEM : pi->conns >= s->o.max_conns_per_peer ? DML_EBUSY : 0;
	if (!rc) {
		pi->conns++;
		peer_ent *pa = peer_get(s, 'a', c->addr, 0);
		if (pa)
			pa->unauth--;
	} else {
		peer_put(s, pi);
	}
	pthread_mutex_unlock(&s->mu);
	if (rc)
		return rc;
	snprintf(c->ident, sizeof c->ident, "%s", ident);
	c->auth = (unsigned char)auth;
	c->authed = 1;
	return 0;
}

/* On the first request: a verified client certificate makes the identity
 * (over the per-identity budget the connection is refused); without one
 * the identity stays the address. */
static void conn_identify(dml_rpc_server *s, conn *c)
{
	char subj[DML_RPC_MAX_IDENTITY];
	if (s->o.tls && !dml__stream_tls_subject(c->st, subj, sizeof subj) &&
	    conn_authenticate(s, c, DML_RPC_AUTH_CERT, subj)) {
		c->ident_known = 1;
		c->refused = 1;
		return;
	}
	conn_admit(s, c);
}

/* Whether c may call e: 0, or the status to refuse it with (msg says
 * why). */
static uint32_t conn_gate(dml_rpc_server *s, conn *c, const method_ent *e,
                          char *msg, size_t cap)
{
	if (!c->ident_known)
		conn_identify(s, c);
	if (c->refused) {
		dml__set_msg(msg, cap, "rpc: %s may not call this server", c->ident);
		return DML__ST_PERM;
	}
	if (s->o.require_auth && !c->authed) {
		dml__set_msg(msg, cap, "rpc: not authenticated (%s): this server "
		             "requires a client certificate or a token", c->ident);
		return DML__ST_AUTH;
	}
	if (!s->o.authorize)
		return 0;
	size_t i = (size_t)(e - s->methods);
	uint64_t bit = i < 64 ? (uint64_t)1 << i : 0;
	int ok;
	if (c->acl_known & bit) {
		ok = (c->acl_ok & bit) != 0;
	} else {
		ok = ask_hook(s, c, e->m->name) == 0;
		c->acl_known |= bit;
		if (ok)
			c->acl_ok |= bit;
	}
	if (ok)
		return 0;
	dml__set_msg(msg, cap, "rpc: %s may not call %s", c->ident, e->m->name);
	return DML__ST_PERM;
}

/* The token whose secret is p (n bytes), or NULL; the time taken depends
 * on the tokens' lengths and n only, not on the bytes. */
static const dml_rpc_token *token_match(const dml_rpc_server *s, const char *p, size_t n)
{
	const dml_rpc_token *hit = NULL;
	for (size_t i = 0; i < s->o.ntokens; i++) {
		const volatile char *sec = s->tokens[i].secret;
		size_t m = s->token_len[i];
		unsigned d = m != n;
		for (size_t k = 0; k < m; k++)
			d |= (unsigned char)(sec[k] ^ (n ? p[k % n] : 0));
		if (!d)
			hit = &s->tokens[i];
	}
	return hit;
}

/* RPC.Auth: a token, once per connection, before it has an identity of
 * its own. */
static int h_auth(dml_rpc_ctx *ctx, const void *a, void *r, void *user)
{
	(void)r;
	dml_rpc_server *s = user;
	conn *c = ctx->c;
	const rpcw_auth *q = a;
	if (c->authed)
		return dml_rpc_ctx_errorf(ctx, "rpc: already authenticated as %s", c->ident);
	if (c->auth_tried) {
		dml_rpc_ctx_errorf(ctx, "rpc: one token per connection");
		return DML_EAUTH;
	}
	c->auth_tried = 1;
	const dml_rpc_token *t = token_match(s, q->token.data, q->token.n);
	if (!t) {
		dml_rpc_ctx_errorf(ctx, "rpc: unknown token");
		return DML_EAUTH;
	}
	int rc = conn_authenticate(s, c, DML_RPC_AUTH_TOKEN, t->name);
	if (rc == DML_EBUSY) {
		dml_rpc_ctx_errorf(ctx, "rpc: %d connections of %s open already "
		                   "(max_conns_per_peer)", s->o.max_conns_per_peer, t->name);
		return DML_EAUTH;
	}
	if (rc)
		return rc;
	conn_admit(s, c);
	return 0;
}

/* The options' tokens, checked and copied in one block. */
static int tokens_copy(dml_rpc_server *s)
{
	const dml_rpc_server_opts *o = &s->o;
	if (!o->ntokens)
		return 0;
	if (!o->tokens || o->ntokens > 4096)
		return dml__fail(DML_EINVAL, "tokens: %zu of them (1 .. 4096, with "
		                 "an array)", o->ntokens);
	size_t bytes = o->ntokens * (sizeof(dml_rpc_token) + sizeof(size_t));
	for (size_t i = 0; i < o->ntokens; i++) {
		const dml_rpc_token *t = &o->tokens[i];
		size_t nl = t->name ? strlen(t->name) : 0, sl = t->secret ? strlen(t->secret) : 0;
		if (!nl || nl >= DML_RPC_MAX_IDENTITY || sl < DML_RPC_MIN_TOKEN ||
		    sl > DML_RPC_MAX_TOKEN)
			return dml__fail(DML_EINVAL, "tokens[%zu]: a name of 1 to %d "
			                 "bytes and a secret of %d to %d", i,
			                 DML_RPC_MAX_IDENTITY - 1, DML_RPC_MIN_TOKEN,
			                 DML_RPC_MAX_TOKEN);
		for (size_t j = 0; j < i; j++)
			if (!strcmp(o->tokens[j].secret, t->secret))
				return dml__fail(DML_EINVAL, "tokens[%zu] and tokens[%zu] "
				                 "have one secret", j, i);
		bytes += nl + sl + 2;
	}
	char *block = malloc(bytes);
	if (!block)
		return DML_ENOMEM;
	s->tokens = (dml_rpc_token *)block;
	s->token_len = (size_t *)(s->tokens + o->ntokens);
	char *p = (char *)(s->token_len + o->ntokens);
	for (size_t i = 0; i < o->ntokens; i++) {
		size_t nl = strlen(o->tokens[i].name) + 1, sl = strlen(o->tokens[i].secret);
		memcpy(p, o->tokens[i].name, nl);
		s->tokens[i].name = p;
		p += nl;
		memcpy(p, o->tokens[i].secret, sl + 1);
		s->tokens[i].secret = p;
		s->token_len[i] = sl;
		p += sl + 1;
	}
	s->o.tokens = s->tokens;
	return 0;
}

static void tokens_free(dml_rpc_server *s)
{
	if (!s->tokens)
		return;
	for (size_t i = 0; i < s->o.ntokens; i++) /* secrets: not left in freed memory */
		memset((char *)s->tokens[i].secret, 0, s->token_len[i]);
	__asm__ __volatile__("" : : "r"(s->tokens) : "memory");
	free(s->tokens);
	s->tokens = NULL;
}

const char *dml_rpc_ctx_identity(const dml_rpc_ctx *ctx, dml_rpc_auth *auth)
{
	if (!ctx) {
		if (auth)
			*auth = DML_RPC_AUTH_ADDR;
		return "";
	}
	conn *c = ctx->c;
	if (!c->ident_known)
		conn_identify(ctx->s, c);
	if (auth)
		*auth = (dml_rpc_auth)c->auth;
	return c->ident;
}

/* RPC.Ping: a client's heartbeat; receiving it was the point. */
static int h_ping(dml_rpc_ctx *ctx, const void *a, void *r, void *user)
{
	(void)ctx;
	(void)a;
	(void)r;
	(void)user;
	return 0;
}

static int server_opts(dml_rpc_server_opts *o)
{
	if (o->tls && dml__tls_role(o->tls) != DML_TLS_SERVER)
		return dml__fail(DML_EINVAL, "opts.tls: a DML_TLS_SERVER configuration");
	if (o->codec != DML_CODEC_BINARY)
		return dml__fail(DML_EINVAL, "codec %d unknown", (int)o->codec);
	if (dml__frame_limit(&o->max_frame))
		return DML_EINVAL;
	if (o->max_conns < 0 || o->max_deferred < 0 || o->spin_us < 0 ||
	    o->spin_us > DML_RPC_MAX_SPIN_US)
		return dml__fail(DML_EINVAL, "max_conns, max_deferred >= 0; spin_us "
		                 "0 to %d", DML_RPC_MAX_SPIN_US);
	if (!o->max_conns)
		o->max_conns = default_max_conns();
	if (!o->max_deferred)
		o->max_deferred = DML_RPC_DEFAULT_MAX_DEFERRED;
	if (dml__opt_duration(&o->frame_timeout, DML_RPC_DEFAULT_FRAME_TIMEOUT) ||
	    dml__opt_duration(&o->write_timeout, DML_RPC_DEFAULT_WRITE_TIMEOUT) ||
	    dml__opt_duration(&o->idle_timeout, DML_RPC_DEFAULT_IDLE_TIMEOUT))
		return DML_EINVAL;
	if (o->max_conns_per_peer < 0 || o->max_unauth_conns < 0)
		return dml__fail(DML_EINVAL, "max_conns_per_peer, max_unauth_conns >= 0");
	if (!o->max_conns_per_peer)
		o->max_conns_per_peer = DML_RPC_DEFAULT_MAX_CONNS_PER_PEER;
	if (!o->max_unauth_conns)
		o->max_unauth_conns = DML_RPC_DEFAULT_MAX_UNAUTH_CONNS;
	if (!o->max_buffered)
		o->max_buffered = DML_RPC_DEFAULT_MAX_BUFFERED > 2 * o->max_frame
		                  ? DML_RPC_DEFAULT_MAX_BUFFERED : 2 * o->max_frame;
	if (o->max_buffered != (size_t)DML_INFINITE && o->max_buffered / 2 < o->max_frame)
		return dml__fail(DML_EINVAL, "max_buffered %zu: at least 2 x max_frame "
		                 "(%zu)", o->max_buffered, o->max_frame);
	if (!o->min_frame_rate)
		o->min_frame_rate = DML_RPC_DEFAULT_MIN_FRAME_RATE;
	if (o->min_frame_rate < 0 && o->min_frame_rate != DML_INFINITE)
		return dml__fail(DML_EINVAL, "min_frame_rate: bytes/s, or DML_INFINITE");
	if (!o->heartbeat_timeout)
		o->heartbeat_timeout = DML_INFINITE; /* off */
	if (dml__opt_duration(&o->heartbeat_timeout, DML_INFINITE))
		return DML_EINVAL;
	return dml__keepalive_opts(&o->keepalive, &o->keepalive_interval,
	                           &o->keepalive_count, &o->user_timeout);
}

int dml_rpc_server_new_abi(dml_rpc_server **out, const dml_rpc_server_opts *opts,
                           int abi)
{
	dml__detail_clear();
	if (!out)
		return DML_EINVAL;
	dml_rpc_server_opts o;
	int rc = dml__abi_in(&o, sizeof o, opts, DML__L_RPC_SERVER_OPTS, abi);
	if (rc)
		return rc;
	if ((rc = server_opts(&o)))
		return rc;
	dml_rpc_server *s = calloc(1, sizeof *s);
	if (!s)
		return DML_ENOMEM;
	s->o = o;
	if ((rc = tokens_copy(s))) {
		free(s);
		return rc;
	}
	s->gated = o.require_auth || o.authorize;
	s->nchunks_cap = ((size_t)s->o.max_conns + CHUNK - 1) / CHUNK;
	s->chunks = calloc(s->nchunks_cap, sizeof *s->chunks);
	s->hub = malloc(sizeof *s->hub);
	for (s->peers_cap = 16; s->peers_cap < 4 * (size_t)o.max_conns;)
		s->peers_cap *= 2;
	s->peers = calloc(s->peers_cap, sizeof *s->peers);
	if (!s->chunks || !s->hub || !s->peers || method_add(s, &rpcw_m_hello, h_hello, s) ||
	    method_add(s, &rpcw_m_ping, h_ping, s) ||
	    (o.ntokens && method_add(s, &rpcw_m_auth, h_auth, s))) {
		free(s->chunks);
		free(s->hub);
		free(s->peers);
		methods_free(s);
		free(s->index);
		tokens_free(s);
		free(s);
		return DML_ENOMEM;
	}
	for (size_t i = 0; i < s->nmethods; i++)
		s->methods[i].builtin = 1;
	pthread_rwlock_init(&s->hub->lock, NULL);
	s->hub->alive = 1;
	atomic_init(&s->hub->refs, 1);
	s->evfd[0] = s->evfd[1] = s->kick[0] = s->kick[1] = -1;
	int prc = dml__poller_new(&s->poller);
	if (prc || dml__sys_wake_new(s->evfd) != 0 || dml__sys_wake_new(s->kick) != 0 ||
	    (prc = dml__poller_add(s->poller, s->evfd[0], DML__POLL_LEVEL, 0)) ||
	    (prc = dml__poller_add(s->poller, s->kick[0], DML__POLL_LEVEL, ID_KICK))) {
		int e = errno;
		dml__poller_free(s->poller);
		dml__sys_wake_close(s->evfd);
		dml__sys_wake_close(s->kick);
		free(s->chunks);
		free(s->peers);
		methods_free(s);
		free(s->index);
		tokens_free(s);
		hub_unref(s->hub);
		free(s);
		errno = e;
		if (prc == DML_ENOMEM)
			return DML_ENOMEM;
		return dml__fail(DML_ESYS, "rpc server: %s poller or wake-up descriptor: %s",
		                 dml__poller_backend(), strerror(e));
	}
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->lmu, NULL);
	atomic_init(&s->stopped, 0);
	atomic_init(&s->next_id, 1);
	atomic_init(&s->next_sweep, NEVER);
	*out = s;
	return 0;
}

int dml_rpc_server_listen(dml_rpc_server *s, const char *addr)
{
	dml__detail_clear();
	if (!s || !addr)
		return DML_EINVAL;
	if (s->nls == MAX_LISTENERS)
		return dml__fail(DML_EBUSY, "%d listeners already", MAX_LISTENERS);
	listener *l = &s->ls[s->nls];
	int rc = dml__listen(addr, &l->fd);
	if (rc) {
		char a[128];
		dml__escape(a, sizeof a, addr, strlen(addr));
		return dml__fail(rc, "listen on %s: %s", a, dml_strerror(rc));
	}
	l->unix_path[0] = 0;
	dml__unix_path(l->fd, l->unix_path, sizeof l->unix_path);
	if ((rc = dml__poller_add(s->poller, l->fd, DML__POLL_LEVEL, (uint64_t)s->nls + 1))) {
		int e = errno;
		if (l->unix_path[0])
			unlink(l->unix_path);
		close(l->fd);
		errno = e;
		return rc;
	}
	s->nls++;
	return 0;
}

int dml_rpc_server_addr(dml_rpc_server *s, int i, char *buf, size_t cap)
{
	dml__detail_clear();
	if (!s || !buf || i < 0)
		return DML_EINVAL;
	if (i >= s->nls)
		return DML_ENOTFOUND;
	pthread_mutex_lock(&s->lmu);
	int rc = s->ls[i].fd < 0 ? dml__fail(DML_ECLOSED, "listener %d closed by a drain", i)
	                         : dml__local_addr(s->ls[i].fd, buf, cap);
	pthread_mutex_unlock(&s->lmu);
	return rc;
}

int dml_rpc_server_port(dml_rpc_server *s, int i)
{
	dml__detail_clear();
	char buf[128];
	int rc = dml_rpc_server_addr(s, i, buf, sizeof buf);
	if (rc)
		return rc;
	const char *colon = strrchr(buf, ':');
	if (strncmp(buf, "unix:", 5) == 0 || !colon)
		return DML_ENOTFOUND;
	return atoi(colon + 1);
}

int dml_rpc_server_fd(dml_rpc_server *s)
{
	dml__detail_clear();
	if (!s)
		return DML_EINVAL;
	int fd = dml__poller_fd(s->poller);
	return fd >= 0 ? fd
	               : dml__fail(DML_ENOTFOUND, "the %s backend has no single "
	                           "descriptor: watch dml_rpc_server_pollfds",
	                           dml__poller_backend());
}

int dml_rpc_server_pollfds(dml_rpc_server *s, struct pollfd *fds, size_t cap)
{
	dml__detail_clear();
	if (!s || (!fds && cap))
		return DML_EINVAL;
	size_t n = dml__poller_pollfds(s->poller, fds, cap);
	return n > (size_t)INT32_MAX ? DML_ETOOBIG : (int)n;
}

void dml_rpc_server_stop(dml_rpc_server *s)
{
	if (!s)
		return;
	atomic_store(&s->stopped, 1);
	dml__sys_wake_signal(s->evfd); /* never drained: wakes every poller */
}

/* Releases a connection's socket and buffers; the slot stays. */
static void conn_release_io(conn *c)
{
	dml__stream_close(c->st);
	c->st = NULL;
	c->fd = -1;
	c->held = 0;
	dml__buf_free(&c->in);
	dml__buf_free(&c->out);
	dml__buf_free(&c->scratch);
	c->rpos = c->opos = 0;
	c->last = NULL;
	c->big_at = 0;
}

void dml_rpc_server_free(dml_rpc_server *s)
{
	if (!s)
		return;
	pthread_rwlock_wrlock(&s->hub->lock); /* waits for replies in progress */
	s->hub->alive = 0;
	pthread_rwlock_unlock(&s->hub->lock);
	hub_unref(s->hub);
	for (size_t k = 0; k < s->nchunks; k++) {
		for (int i = 0; i < CHUNK; i++) {
			conn *c = &s->chunks[k][i];
			if (c->fd >= 0)
				conn_release_io(c);
			pthread_mutex_destroy(&c->omu);
		}
		free(s->chunks[k]);
	}
	free(s->chunks);
	for (int i = 0; i < s->nls; i++)
		listener_close(&s->ls[i]);
	dml__poller_free(s->poller);
	dml__sys_wake_close(s->evfd);
	dml__sys_wake_close(s->kick);
	pthread_mutex_destroy(&s->lmu);
	pthread_mutex_destroy(&s->mu);
	methods_free(s);
	free(s->index);
	for (size_t i = 0; i < s->peers_cap; i++)
		free(s->peers[i].key);
	free(s->peers);
	tokens_free(s);
	free(s);
}

/* ---- handler context ---------------------------------------------- */

/* The message of a handler's error (errorf's, and the deprecated name's). */
static int ctx_vmsg(dml_rpc_ctx *ctx, const char *fmt, va_list ap)
{
	if (!ctx || !fmt)
		return DML_EHANDLER;
	vsnprintf(ctx->msg, sizeof ctx->msg, fmt, ap);
	ctx->has_msg = 1;
	return DML_EHANDLER;
}

int dml_rpc_ctx_errorf(dml_rpc_ctx *ctx, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = ctx_vmsg(ctx, fmt, ap);
	va_end(ap);
	return rc;
}

int dml_rpc_errorf(dml_rpc_ctx *ctx, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = ctx_vmsg(ctx, fmt, ap);
	va_end(ap);
	return rc;
}

uint64_t dml_rpc_ctx_conn(const dml_rpc_ctx *ctx) { return ctx ? ctx->c->id : 0; }

int dml_rpc_ctx_peer(const dml_rpc_ctx *ctx, char *buf, size_t cap)
{
	dml__detail_clear();
	if (!ctx || !buf || !cap)
		return DML_EINVAL;
	int rc = dml__stream_peer(ctx->c->st, buf, cap);
	if (rc)
		buf[0] = 0;
	return rc;
}

/* ---- connections -------------------------------------------------- */

static uint32_t conn_gen(const conn *c) { return (uint32_t)(atomic_load(&c->state) >> 32); }

static uint64_t conn_cookie(const conn *c, uint32_t gen)
{
	return (uint64_t)gen << 32 | (c->slot + ID_CONN0);
}

/* Tells the host (opts.on_event), if it asked. */
static void emit(dml_rpc_server *s, dml_rpc_event_kind kind, conn *c, int reason,
                 const char *why)
{
	if (!s->o.on_event)
		return;
	dml_rpc_event ev = {kind, c ? c->id : 0, reason, why ? why : "", c ? c->peer : ""};
	s->o.on_event(&ev, s->o.event_user);
}

/* Brings the next sweep forward to `at` (ms) if that is earlier. */
static void sweep_by(dml_rpc_server *s, int64_t at)
{
	int64_t next = atomic_load(&s->next_sweep);
	while (at < next && !atomic_compare_exchange_weak(&s->next_sweep, &next, at))
		;
}

/* A deadline `limit` ms after `since`, or NEVER (no limit, or not timing). */
static int64_t after(int64_t since, dml_duration limit)
{
	return limit < 0 || !since ? NEVER : since + limit + 1;
}

/* The stamp of an activity: the precise clock in ms (a vDSO read of tens
 * of ns, a few times per request). Not the coarse clock: on a tickless
 * kernel in a VM it was measured lagging by 7 ms at a 4 ms resolution, so
 * no slack added to it could promise that a timeout never fires early. */
static int64_t stamp(void) { return dml__now_ms(); }

/* Closes a listener (its Unix-domain path removed); idempotent. */
static void listener_close(listener *l)
{
	if (l->fd < 0)
		return;
	if (l->unix_path[0])
		unlink(l->unix_path);
	dml__listen_close(l->fd);
	l->fd = -1;
}

/* ---- listeners resting while descriptors run out ------------------- */

static void listeners_rest(dml_rpc_server *s)
{
	pthread_mutex_lock(&s->mu);
	if (!s->resting) {
		emit(s, DML_RPC_EV_REST, NULL, DML_ESYS, strerror(errno));
		for (int i = 0; i < s->nls; i++)
			if (s->ls[i].fd >= 0)
				dml__poller_del(s->poller, s->ls[i].fd);
		s->resting = 1;
		s->rest_until = dml__now_ms() + ACCEPT_REST_MS;
		sweep_by(s, s->rest_until);
	}
	pthread_mutex_unlock(&s->mu);
}

/* After the rest (now >= rest_until), or at once (now < 0) when a
 * connection gives a descriptor back. */
static void listeners_wake(dml_rpc_server *s, int64_t now)
{
	pthread_mutex_lock(&s->mu);
	if (s->resting && (now < 0 || now >= s->rest_until)) {
		s->resting = 0;
		for (int i = 0; i < s->nls; i++)
			if (s->ls[i].fd >= 0 && dml__poller_add(s->poller, s->ls[i].fd, DML__POLL_LEVEL,
			                    (uint64_t)i + 1)) { /* try again later */
				for (int k = 0; k < i; k++)
					if (s->ls[k].fd >= 0)
						dml__poller_del(s->poller, s->ls[k].fd);
				s->resting = 1;
				s->rest_until = dml__now_ms() + ACCEPT_REST_MS;
				break;
			}
	}
	if (s->resting)
		sweep_by(s, s->rest_until);
	pthread_mutex_unlock(&s->mu);
}

static void budget_release_conn(dml_rpc_server *s, conn *c);
static int budget_over(const dml_rpc_server *s);

/* Closes the connection its owner serves: a new generation makes stale
 * events and deferred replies miss; the slot goes back to the free list. */
static void count_flush(conn *c);

static void conn_close(dml_rpc_server *s, conn *c, int reason, const char *why)
{
	uint64_t id = c->id;
	atomic_fetch_add_explicit(&s->closed, 1, memory_order_relaxed);
	char peer[sizeof c->peer]; /* the slot may be someone else's below */
	memcpy(peer, c->peer, sizeof peer);
	if (c->big_at)
		atomic_fetch_sub(&s->nbig, 1);
	pthread_mutex_lock(&c->omu);
	uint32_t gen = conn_gen(c) + 1;
	atomic_store(&c->open, 0);
	atomic_store(&c->state, (uint64_t)gen << 32);
	dml__poller_del(s->poller, c->fd);
	budget_release_conn(s, c);
	count_flush(c);
	conn_release_io(c);
	pthread_mutex_unlock(&c->omu);
	pthread_mutex_lock(&s->mu);
	peer_ent *pa = peer_get(s, 'a', c->addr, 0);
	if (pa) {
		pa->conns--;
		pa->unauth -= !c->authed;
		peer_put(s, pa);
	}
	peer_ent *pi = c->authed ? peer_get(s, c->auth == DML_RPC_AUTH_CERT ? 'c' : 't',
	                                    c->ident, 0) : NULL;
	if (pi) {
		pi->conns--;
		peer_put(s, pi);
	}
	s->nconns--;
	c->next_free = s->free_slots;
	s->free_slots = c;
	int resting = s->resting;
	pthread_mutex_unlock(&s->mu);
	if (resting) /* a descriptor came back */
		listeners_wake(s, -1);
	/* closed for good now (its deferred replies are refused): the layers
	 * above (a served store drops its parked workers) finish with it
	 * first, so a host told CLOSED sees their effects */
	for (int i = 0; i < s->non_close; i++)
		s->on_close[i].fn(s->on_close[i].user, s, id);
	if (s->o.on_event) {
		dml_rpc_event ev = {DML_RPC_EV_CLOSED, id, reason, why ? why : "", peer};
		s->o.on_event(&ev, s->o.event_user);
	}
}

/* A free slot, under s->mu; NULL when max_conns are open or memory is out. */
static conn *slot_take(dml_rpc_server *s)
{
	if (s->nconns >= s->o.max_conns)
		return NULL;
	if (!s->free_slots) {
		if (s->nchunks == s->nchunks_cap)
			return NULL;
		conn *chunk = calloc(CHUNK, sizeof *chunk);
		if (!chunk)
			return NULL;
		for (int i = CHUNK - 1; i >= 0; i--) {
			conn *c = &chunk[i];
			c->slot = (uint32_t)(s->nchunks * CHUNK + (size_t)i);
			c->s = s;
			c->fd = -1;
			atomic_init(&c->state, (uint64_t)1 << 32);
			pthread_mutex_init(&c->omu, NULL);
			c->next_free = s->free_slots;
			s->free_slots = c;
		}
		s->chunks[s->nchunks++] = chunk;
	}
	conn *c = s->free_slots;
	s->free_slots = c->next_free;
	s->nconns++;
	return c;
}

static conn *slot_at(dml_rpc_server *s, uint32_t slot)
{
	return &s->chunks[slot / CHUNK][slot % CHUNK];
}

static void conn_serve_owned(dml_rpc_server *s, conn *c, uint32_t gen, uint32_t events);

static void accept_some(dml_rpc_server *s, listener *l);

static void accept_all(dml_rpc_server *s, listener *l)
{
	pthread_mutex_lock(&s->lmu); /* a drain may close the listener */
	if (l->fd >= 0)
		accept_some(s, l);
	pthread_mutex_unlock(&s->lmu);
}

static void accept_some(dml_rpc_server *s, listener *l)
{
	for (int k = 0; k < ACCEPTS_PER_EVENT; k++) {
		int fd, rc = dml__accept(l->fd, &fd);
		if (rc == DML_EAGAIN)
			return;
		if (rc) { /* out of descriptors or memory: rest, do not spin */
			listeners_rest(s);
			return;
		}
		if (!l->unix_path[0] && s->o.keepalive >= 0) /* TCP: dead peers */
			(void)dml__sys_keepalive(fd, s->o.keepalive, s->o.keepalive_interval,
			                         s->o.keepalive_count, s->o.user_timeout);
		else if (!l->unix_path[0])
			(void)dml__sys_keepalive(fd, -1, 0, 0, s->o.user_timeout);
		dml__stream *st;
		if (dml__stream_open(&st, fd, 1)) /* closes fd */
			continue;
		if (s->o.tls && dml__stream_tls(&st, s->o.tls, NULL, -1)) {
			dml__stream_close(st);
			continue;
		}
		char peer[64] = "", addr[48];
		(void)dml__stream_peer(st, peer, sizeof peer);
		addr_only(peer, addr, sizeof addr);
		/* the budgets: max_conns in all, max_conns_per_peer from one
		 * address, and max_unauth_conns not yet authenticated */
		pthread_mutex_lock(&s->mu);
		peer_ent *pa = peer_get(s, 'a', addr, 1);
		int over = !pa ? 1 : pa->conns >= s->o.max_conns_per_peer ? 2
		         : s->o.require_auth && pa->unauth >= s->o.max_unauth_conns ? 3 : 0;
		conn *c = over ? NULL : slot_take(s);
		if (c) {
			pa->conns++;
			pa->unauth++;
		} else {
			peer_put(s, pa);
		}
		pthread_mutex_unlock(&s->mu);
		if (!c) {
			if (s->o.on_event) {
				char why[128];
				if (over == 2)
					snprintf(why, sizeof why, "%d connections from %s open "
					         "(max_conns_per_peer)", s->o.max_conns_per_peer, addr);
				else if (over == 3)
					snprintf(why, sizeof why, "%d connections from %s not "
					         "authenticated (max_unauth_conns)",
					         s->o.max_unauth_conns, addr);
				else
					snprintf(why, sizeof why, "%d connections open (max_conns)",
					         s->o.max_conns);
				dml_rpc_event ev = {DML_RPC_EV_SHED, 0, DML_EBUSY, why, peer};
				s->o.on_event(&ev, s->o.event_user);
			}
			dml__stream_close(st);
			atomic_fetch_add_explicit(&s->shed, 1, memory_order_relaxed);
			continue;
		}
		atomic_fetch_add_explicit(&s->accepted, 1, memory_order_relaxed);
		/* ours until added and set up: a sweep that sees `open` first
		 * finds it busy */
		uint32_t gen = conn_gen(c);
		atomic_store(&c->state, ((uint64_t)gen << 32) | 1);
		c->st = st;
		c->fd = fd;
		c->held = 0;
		c->id = atomic_fetch_add(&s->next_id, 1);
		memcpy(c->peer, peer, sizeof c->peer);
		memcpy(c->addr, addr, sizeof c->addr);
		memcpy(c->ident, addr, sizeof addr);
		c->auth = DML_RPC_AUTH_ADDR;
		c->ident_known = c->authed = c->auth_tried = c->refused = 0;
		c->acl_known = c->acl_ok = 0;
		int64_t now = stamp();
		atomic_store(&c->rx_at, now);
		atomic_store(&c->tx_at, now);
		sweep_by(s, after(now, s->o.idle_timeout));
		sweep_by(s, after(now, s->o.heartbeat_timeout));
		atomic_store(&c->frame_at, 0);
		atomic_store(&c->deferred, 0);
		atomic_store(&c->over, 0);
		atomic_store(&c->hup, 0);
		atomic_store(&c->open, 1);
		if (dml__poller_add(s->poller, fd, DML__POLL_CONN, conn_cookie(c, gen))) {
			conn_close(s, c, DML_ENOMEM, "cannot watch the connection");
			continue;
		}
		emit(s, DML_RPC_EV_ACCEPTED, c, 0, NULL);
		/* let go; events that came meanwhile found it busy: serve them */
		uint64_t mine = ((uint64_t)gen << 32) | 1;
		if (!atomic_compare_exchange_strong(&c->state, &mine, (uint64_t)gen << 32))
			conn_serve_owned(s, c, gen, 0);
	}
}

/* Adds c's batch of answered calls to their counters (under omu). */
static void count_flush(conn *c)
{
	struct count_batch *b = &c->cb;
	counters *k = b->k;
	if (!k)
		return;
	atomic_fetch_add_explicit(&k->calls, b->calls, memory_order_relaxed);
	if (b->errors)
		atomic_fetch_add_explicit(&k->errors, b->errors, memory_order_relaxed);
	atomic_fetch_add_explicit(&k->bytes_in, b->in, memory_order_relaxed);
	atomic_fetch_add_explicit(&k->bytes_out, b->out, memory_order_relaxed);
	for (uint32_t m = b->lat_mask; m; m &= m - 1) {
		int i = __builtin_ctz(m);
		atomic_fetch_add_explicit(&k->latency[i], b->lat[i], memory_order_relaxed);
		b->lat[i] = 0;
	}
	b->k = NULL;
	b->calls = b->errors = 0;
	b->in = b->out = 0;
	b->lat_mask = 0;
}

/* Counts a call answered on c (under omu), at `now` (us), for its
 * method's counters (NULL: the server's, for unknown methods; the server's
 * totals are their sum). Batched per connection and method: added at the
 * next write of c's replies (conn_flush_locked), or sooner. */
static void count_call(dml_rpc_server *s, conn *c, counters *m, int err, uint64_t in,
                       uint64_t out, int64_t t0, int64_t now)
{
	counters *k = m ? m : &s->cnt;
	struct count_batch *b = &c->cb;
	if (b->k != k || b->calls == UINT16_MAX) /* a bucket cannot overflow */
		count_flush(c);
	b->k = k;
	b->calls++;
	b->errors += err != 0;
	b->in += in;
	b->out += out;
	int64_t us = t0 && now > t0 ? now - t0 : 0;
	int i = 0; /* [0]: under 1 us; [i]: 2^(i-1) .. 2^i - 1 us; the last: more */
	if (us > 0)
		i = 64 - __builtin_clzll((unsigned long long)us);
	if (i >= DML_RPC_LATENCY_BUCKETS)
		i = DML_RPC_LATENCY_BUCKETS - 1;
	b->lat[i]++;
	b->lat_mask |= 1u << i;
}

/* Room for `need` more reply bytes in c->out (under omu). What was sent
 * already is dropped first if the buffer would have to grow: c->out only
 * empties when all is sent, and a peer that reads steadily but never
 * quite catches up would otherwise make it grow without end while the
 * unsent part stays within OUT_HIGH. */
static int out_reserve(conn *c, size_t need)
{
	if (c->opos && need > c->out.cap - c->out.len) {
		size_t left = c->out.len - c->opos;
		memmove(c->out.data, c->out.data + c->opos, left);
		c->out.len = left;
		c->opos = 0;
	}
	return dml__buf_reserve(&c->out, need);
}

/* Appends a reply frame with an error status and message. */
static int reply_error(conn *c, uint64_t seq, uint32_t status, const char *msg)
{
	size_t n = strlen(msg);
	if (n > UINT16_MAX)
		n = UINT16_MAX;
	int rc = out_reserve(c, DML__FRAME_HDR + n);
	if (rc)
		return rc;
	uint8_t *p = c->out.data + c->out.len;
	dml__frame_header(p, DML__KIND_REPLY, seq, status, n, 0);
	memcpy(p + DML__FRAME_HDR, msg, n);
	c->out.len += DML__FRAME_HDR + n;
	return 0;
}

/* Appends an OK reply encoding `reply` of type t, or an error reply if it
 * cannot be encoded (*err = 1). */
static int reply_ok(dml_rpc_server *s, conn *c, uint64_t seq, const dml_type *t,
                    const void *reply, int *err)
{
	t = dml__type_or_empty(t);
	dml__writer w;
	size_t limit = s->o.max_frame - DML__FRAME_HDR;
	size_t guess = limit < ENCODE_GUESS ? limit : ENCODE_GUESS;
	int rc;
	for (;;) { /* one pass when the guess fits; a sized second one if not */
		if ((rc = out_reserve(c, DML__FRAME_HDR + guess)))
			return rc;
		memset(&w, 0, sizeof w);
		w.p = c->out.data + c->out.len + DML__FRAME_HDR;
		w.cap = guess;
		w.ext_min = SIZE_MAX;
		rc = dml__encode_w(t, reply, &w);
		if (rc != DML_ETOOBIG || w.pos <= guess)
			break;
		if (w.pos > limit) {
			*err = 1;
			return reply_error(c, seq, DML__ST_TOOBIG, "reply larger than the frame limit");
		}
		guess = w.pos;
	}
	if (rc) {
		*err = 1;
		return reply_error(c, seq, DML__ST_HANDLER, "reply could not be encoded");
	}
	dml__frame_header(c->out.data + c->out.len, DML__KIND_REPLY, seq, 0, 0, w.pos);
	c->out.len += DML__FRAME_HDR + w.pos;
	return 0;
}

static size_t align_up(size_t n) { return (n + 15) & ~(size_t)15; }

static int note_backlog(conn *c);
static int note_backlog_at(conn *c, int64_t now);

/* The unsent bytes of c->out (under omu): a reply adds to them, and
 * out_reserve's compaction keeps them. */
static size_t unsent(const conn *c) { return c->out.len - c->opos; }

/* The bytes a reply appended to c->out (under omu), from unsent() before. */
static uint64_t appended(const conn *c, size_t before)
{
	return unsent(c) >= before ? unsent(c) - before : 0;
}

static int send_error(dml_rpc_server *s, conn *c, const dml_rpc_ctx *x, uint32_t status,
                      const char *msg)
{
	pthread_mutex_lock(&c->omu);
	size_t before = unsent(c);
	int rc = reply_error(c, x->seq, status, msg);
	/* counted before anyone may write the reply: a peer that has it
	 * finds it counted */
	int64_t now = dml__now_us();
	count_call(s, c, x->cnt, 1, x->in_bytes, appended(c, before), x->t0, now);
	note_backlog_at(c, now / 1000);
	pthread_mutex_unlock(&c->omu);
	return rc;
}

static int send_ok(dml_rpc_server *s, conn *c, const dml_rpc_ctx *x, const void *reply)
{
	pthread_mutex_lock(&c->omu);
	size_t before = unsent(c);
	int err = 0;
	int rc = reply_ok(s, c, x->seq, x->rt, reply, &err);
	int64_t now = dml__now_us();
	count_call(s, c, x->cnt, err || rc, x->in_bytes, appended(c, before), x->t0, now);
	note_backlog_at(c, now / 1000);
	pthread_mutex_unlock(&c->omu);
	return rc;
}

/* Runs one request frame; appends its reply to c->out. */
static int dispatch(dml_rpc_server *s, conn *c, uint32_t gen, const uint8_t *f,
                    const dml__frame *fr)
{
	if (fr->kind != DML__KIND_REQUEST)
		return DML_EPROTO;
	const char *name = (const char *)f + DML__FRAME_HDR;
	const uint8_t *payload = f + DML__FRAME_HDR + fr->name_len;
	method_ent *e = c->last; /* connections mostly repeat one method */
	if (!e || e->name_len != fr->name_len || memcmp(e->m->name, name, e->name_len)) {
		e = fr->name_len <= DML_RPC_MAX_METHOD
			? method_find(s, name, fr->name_len) : NULL;
		c->last = e;
	}
	/* unsent replies over their budget: the library's own small replies
	 * (a dial's token, hello, heartbeats) only */
	if (e && !e->builtin && budget_over(s))
		return STALLED;
	dml_rpc_ctx ctx;
	ctx.s = s;
	ctx.c = c;
	ctx.gen = gen;
	ctx.seq = fr->seq;
	ctx.rt = e ? e->m->reply : NULL;
	ctx.cnt = e ? e->cnt : NULL;
	ctx.in_bytes = fr->total;
	ctx.t0 = c->rx_us;
	ctx.deferred = 0;
	ctx.has_msg = 0;
	char msg[DML_RPC_ERRMSG_MAX];
	if (!e) {
		char shown[65]; /* what a peer sent: escaped, at most 64 bytes */
		dml__escape(shown, sizeof shown, name, fr->name_len);
		dml__set_msg(msg, sizeof msg, "rpc: can't find method %s", shown);
		return send_error(s, c, &ctx, DML__ST_NOMETHOD, msg);
	}
	if (s->gated && !e->builtin) {
		uint32_t st = conn_gate(s, c, e, msg, sizeof msg);
		if (st)
			return send_error(s, c, &ctx, st, msg);
	}
	const dml_type *at = e->m->args, *rt = e->m->reply;
	size_t asz = at ? align_up(at->size) : 0, rsz = rt ? align_up(rt->size) : 0;
	int copy = e->has_arrays && ((uintptr_t)payload % 8) != 0;
	int rc = dml__buf_grow(&c->scratch, asz + rsz + (copy ? fr->payload_len : 0) + 16);
	if (rc)
		return rc;
	void *args = c->scratch.data, *reply = c->scratch.data + asz;
	memset(c->scratch.data, 0, asz + rsz);
	if (copy) {
		memcpy(c->scratch.data + asz + rsz, payload, fr->payload_len);
		payload = c->scratch.data + asz + rsz;
	}
	rc = dml__decode_h(dml__type_or_empty(at), args, payload, fr->payload_len, -1);
	if (rc) {
		dml__set_msg(msg, sizeof msg, "rpc: bad arguments for %s: %s",
		             e->m->name, dml_strerror(rc));
		return send_error(s, c, &ctx, DML__ST_BADARGS, msg);
	}
	rc = e->h(&ctx, args, reply, e->user);
	if (ctx.deferred)
		return 0;
	if (rc) /* DML_EAUTH and DML_EPERM reach the client as themselves */
		return send_error(s, c, &ctx, rc == DML_EPERM ? DML__ST_PERM
		                  : rc == DML_EAUTH ? DML__ST_AUTH : DML__ST_HANDLER,
		                  ctx.has_msg ? ctx.msg : dml_strerror(rc));
	return send_ok(s, c, &ctx, reply);
}

/* Writes what it can of c->out, and pushes out what the stream holds,
 * under c->omu. 0, or DML_ECONNLOST. */
static int conn_flush_locked(conn *c)
{
	count_flush(c);
	while (c->opos < c->out.len) {
		struct iovec iov = {c->out.data + c->opos, c->out.len - c->opos};
		ssize_t w = dml__stream_writev(c->st, &iov, 1);
		if (w == DML_EAGAIN)
			return 0;
		if (w < 0)
			return (int)w;
		c->opos += (size_t)w;
		atomic_store(&c->tx_at, stamp());
	}
	c->opos = c->out.len = 0;
	int rc = dml__stream_flush(c->st); /* also what its reads left to send */
	if (rc && rc != DML_EAGAIN)
		return rc;
	c->held = rc == DML_EAGAIN;
	return 0;
}

/* Under omu: records whether unsent replies are over the limit; the owner
 * then stops serving requests until the peer reads them. */
/* Brings the next sweep forward to now, from any thread: a poller's
 * wait ends. */
static void kick(dml_rpc_server *s)
{
	sweep_by(s, 0);
	dml__sys_wake_signal(s->kick);
}

/* ---- the byte budget ---------------------------------------------- */

/* Half of max_buffered for large input frames, half for unsent replies
 * (so that peers holding unfinished frames cannot stop small requests). */
static int64_t budget_half(const dml_rpc_server *s)
{
	return s->o.max_buffered == (size_t)DML_INFINITE ? INT64_MAX
	                                                  : (int64_t)(s->o.max_buffered / 2);
}

/* Counts delta bytes more (or fewer) in *held; a release wakes the
 * connections that wait for the budget. */
static void budget_add(dml_rpc_server *s, _Atomic int64_t *held, int64_t delta)
{
	atomic_fetch_add(held, delta);
	if (delta < 0 && atomic_load(&s->nstalled)) {
		atomic_store(&s->unstall_at, stamp());
		kick(s);
	}
}

/* Whether unsent replies have spent their half: no more requests are
 * served until they drain. */
static int budget_over(const dml_rpc_server *s)
{
	return atomic_load_explicit(&s->held_out, memory_order_relaxed) > budget_half(s);
}

/* c waits for the budget: a sweep serves it again when bytes are released
 * (or every STALL_RETRY_MS). Its frame's timers stop meanwhile. */
static void stall(dml_rpc_server *s, conn *c)
{
	int64_t now = stamp();
	atomic_store(&c->stall_at, now);
	if (!atomic_exchange(&c->stalled, 1))
		atomic_fetch_add(&s->nstalled, 1);
	atomic_store(&c->frame_at, 0);
	sweep_by(s, now + STALL_RETRY_MS);
}

static void unstall(dml_rpc_server *s, conn *c)
{
	if (atomic_exchange(&c->stalled, 0))
		atomic_fetch_sub(&s->nstalled, 1);
}

/* Room in the input half for c's buffer to hold `cap` bytes: 0, or
 * DML_EAGAIN while it is spent (unless nothing at all is held: a frame up
 * to max_frame always gets through). */
static int in_reserve(dml_rpc_server *s, conn *c, size_t cap)
{
	int64_t want = cap > BIG_IN ? (int64_t)cap : 0, delta = want - c->acct_in;
	if (delta <= 0)
		return 0;
	int64_t held = atomic_load(&s->held_in);
	if (held > 0 && held + delta > budget_half(s))
		return DML_EAGAIN;
	atomic_fetch_add(&s->held_in, delta);
	c->acct_in = want;
	return 0;
}

static void in_release(dml_rpc_server *s, conn *c)
{
	if (c->acct_in) {
		budget_add(s, &s->held_in, -c->acct_in);
		c->acct_in = 0;
	}
}

/* Under omu, after output changed: unsent bytes beyond OUT_ACCT count. */
static void out_account(dml_rpc_server *s, conn *c)
{
	size_t owed = unsent(c);
	int64_t want = owed > OUT_ACCT ? (int64_t)owed : 0;
	if (want != c->acct_out) {
		int64_t delta = want - c->acct_out;
		c->acct_out = want;
		budget_add(s, &s->held_out, delta);
	}
}

/* Everything c counts against the budget, at its close (under omu). */
static void budget_release_conn(dml_rpc_server *s, conn *c)
{
	unstall(s, c);
	in_release(s, c);
	if (c->acct_out) {
		budget_add(s, &s->held_out, -c->acct_out);
		c->acct_out = 0;
	}
}


/* After queueing or writing replies (under omu, `now` ms): notes whether
 * the connection owes output and is over the limit of unsent replies. */
static int note_backlog_at(conn *c, int64_t now)
{
	dml_rpc_server *s = c->s;
	if (c->opos == c->out.len && !c->held) {
		atomic_store(&c->tx_at, now); /* nothing owed: not stalled */
		if (!atomic_load(&c->deferred)) /* idle again, maybe since long */
			sweep_by(s, after(atomic_load(&c->rx_at), s->o.idle_timeout));
		if (atomic_load(&s->draining)) /* maybe done: close it soon */
			kick(s);
	} else {
		sweep_by(s, after(atomic_load(&c->tx_at), s->o.write_timeout));
	}
	int over = c->out.len - c->opos > OUT_HIGH;
	atomic_store(&c->over, over);
	out_account(s, c);
	return over;
}

static int note_backlog(conn *c) { return note_backlog_at(c, stamp()); }

/* Under omu: what a connection waits for when its owner lets go: output
 * room while replies are unsent, input unless they are over the limit,
 * and whatever the stream needs to go on. */
static unsigned wants_locked(conn *c)
{
	return dml__stream_wants(c->st, (c->opos < c->out.len || c->held ? DML__EV_OUT : 0) |
	                                    (atomic_load(&c->over) || atomic_load(&c->stalled)
	                                     ? 0 : DML__EV_IN));
}

/* Whether a stream that is not DUPLEX holds input (a write may take
 * input in, which no event then reports). */
static int conn_held_input(conn *c)
{
	if (c->st->flags & DML__STREAM_DUPLEX)
		return 0;
	pthread_mutex_lock(&c->omu);
	int held = dml__stream_pending(c->st) > 0;
	pthread_mutex_unlock(&c->omu);
	return held;
}

/* One read from the stream (under omu unless it is DUPLEX: a deferred
 * reply may write meanwhile); *more: a short read does not mean that the
 * input is drained (the stream holds more, or cannot tell). */
static ssize_t conn_recv(conn *c, void *buf, size_t len, int *more)
{
	*more = !(c->st->flags & DML__STREAM_SHORT_DRAINS);
	if (c->st->flags & DML__STREAM_DUPLEX)
		return dml__stream_read(c->st, buf, len);
	pthread_mutex_lock(&c->omu);
	ssize_t n = dml__stream_read(c->st, buf, len);
	*more = *more || dml__stream_pending(c->st) > 0;
	pthread_mutex_unlock(&c->omu);
	return n;
}

static unsigned conn_wants(conn *c)
{
	pthread_mutex_lock(&c->omu);
	unsigned w = wants_locked(c);
	pthread_mutex_unlock(&c->omu);
	return w;
}

/* Flushes; *backlog tells whether unsent replies are still over the limit. */
static int conn_flush(conn *c, int *backlog)
{
	pthread_mutex_lock(&c->omu);
	int rc = conn_flush_locked(c);
	*backlog = note_backlog(c);
	pthread_mutex_unlock(&c->omu);
	return rc;
}

/* Notes that c->in is large (BIG_IN) and in use; the sweep then comes at
 * least every BIG_KEEP_MS to free it once it is no longer used. */
static void big_use(dml_rpc_server *s, conn *c)
{
	int64_t now = dml__now_ms();
	if (!c->big_at)
		atomic_fetch_add(&s->nbig, 1);
	sweep_by(s, now + BIG_KEEP_MS);
	c->big_at = now;
}

/* Frees a large input buffer, holding nothing, unused for BIG_KEEP_MS. */
static void big_release(dml_rpc_server *s, conn *c)
{
	if (c->big_at && c->rpos == c->in.len &&
	    (atomic_load(&s->nstalled) || dml__now_ms() - c->big_at >= BIG_KEEP_MS)) {
		in_release(s, c);
		dml__buf_free(&c->in);
		c->rpos = 0;
		c->big_at = 0;
		atomic_fetch_sub(&s->nbig, 1);
	}
}

/* Makes room to read the rest of a frame of `total` bytes whose first
 * bytes sit at rpos; places it so that its payload is 8-aligned. */
static int conn_make_room(dml_rpc_server *s, conn *c, size_t total, size_t name_len)
{
	size_t have = c->in.len - c->rpos;
	size_t shift = (8 - (DML__FRAME_HDR + name_len) % 8) % 8;
	if (c->rpos == shift && c->in.cap >= shift + total)
		return 0;
	if (c->in.cap < shift + total) {
		dml__buf nb = {0};
		int rc = in_reserve(s, c, shift + total);
		if (rc || (rc = dml__buf_grow(&nb, shift + total)))
			return rc;
		memcpy(nb.data + shift, c->in.data + c->rpos, have);
		dml__buf_free(&c->in);
		c->in = nb;
		if (c->in.cap > BIG_IN)
			big_use(s, c); /* counted, so that it is freed when unused */
	} else {
		memmove(c->in.data + shift, c->in.data + c->rpos, have);
	}
	c->rpos = shift;
	c->in.len = shift + have;
	return 0;
}

/* A request in a frame version this server does not speak: an error reply
 * in version 1 framing (docs/protocol.md, section 11), written at once as
 * far as the socket takes it; the connection is then closed. */
static int refuse_version(conn *c, const uint8_t *f, uint64_t seq)
{
	char msg[96];
	dml__set_msg(msg, sizeof msg, "rpc: frame version %u not spoken here "
	             "(this server speaks %d)", (unsigned)f[4], DML__FRAME_VERSION);
	int backlog;
	dml_rpc_ctx x;
	memset(&x, 0, sizeof x);
	x.seq = seq;
	x.t0 = dml__now_us();
	if (!send_error(c->s, c, &x, DML__ST_VERSION, msg))
		conn_flush(c, &backlog);
	return DML_EVERSION;
}

/* Serves the complete frames buffered in c->in, stopping early while the
 * replies not yet sent are over the limit (so a burst of small requests
 * with large replies cannot pile up replies without bound). Sets *partial
 * (and *fr) when an incomplete frame's header has been parsed. */
static int serve_frames(dml_rpc_server *s, conn *c, uint32_t gen, dml__frame *fr,
                        int *partial)
{
	*partial = 0;
	while (c->in.len - c->rpos >= DML__FRAME_HDR && !atomic_load(&c->over)) {
		const uint8_t *f = c->in.data + c->rpos;
		int rc = dml__frame_parse(f, c->in.len - c->rpos, s->o.max_frame, fr);
		if (rc == DML_EVERSION)
			return refuse_version(c, f, fr->seq);
		if (rc)
			return rc;
		if (c->in.len - c->rpos < fr->total) {
			*partial = 1;
			return 0;
		}
		if (fr->total > BIG_IN)
			big_use(s, c); /* also when it came whole in one read */
		if ((rc = dispatch(s, c, gen, f, fr)) == STALLED) {
			stall(s, c); /* replies wait: serve no more for now */
			return 0;
		}
		if (rc)
			return rc;
		c->rpos += fr->total;
	}
	if (c->rpos == c->in.len) {
		c->rpos = c->in.len = 0;
		big_release(s, c); /* after large frames, if they stopped */
	}
	return 0;
}

/* Records when the frame now buffered in part began (for frame_timeout):
 * a frame parsed in part, or a header cut short. */
static void note_frame(dml_rpc_server *s, conn *c, int partial)
{
	size_t left = c->in.len - c->rpos;
	if (!partial && (left == 0 || left >= DML__FRAME_HDR)) {
		atomic_store(&c->frame_at, 0);
	} else if (!atomic_load(&c->frame_at)) {
		int64_t now = stamp();
		atomic_store(&c->frame_at, now);
		sweep_by(s, after(now, s->o.frame_timeout));
	}
}

/* Reads and serves requests until the socket is drained. Returns 0 to keep
 * the connection, or an error to drop it. */
static int conn_read(dml_rpc_server *s, conn *c, uint32_t gen)
{
	unstall(s, c);
	for (;;) {
		dml__frame fr;
		int partial, rc = serve_frames(s, c, gen, &fr, &partial);
		if (rc)
			return rc;
		note_frame(s, c, partial);
		if (!c->in.cap && dml__buf_grow(&c->in, READ_CHUNK))
			return DML_ENOMEM;
		if (partial) {
			if ((rc = conn_make_room(s, c, fr.total, fr.name_len)) == DML_EAGAIN) {
				stall(s, c); /* the budget is spent: read on later */
				return 0;
			}
			if (rc)
				return rc;
		} else if (c->in.cap - c->in.len < DML__FRAME_HDR * 4) {
			size_t have = c->in.len - c->rpos;
			memmove(c->in.data, c->in.data + c->rpos, have);
			c->rpos = 0;
			c->in.len = have;
		}
		/* Send replies before reading more; stop reading while the peer
		 * does not take them (the output event when it does brings the
		 * connection back, see conn_serve). */
		int backlog;
		if ((rc = conn_flush(c, &backlog)))
			return rc;
		if (backlog || atomic_load(&c->stalled))
			return 0; /* the output event, or the budget's release, brings it back */
		if (!partial && c->in.len - c->rpos >= DML__FRAME_HDR)
			continue; /* frames left when serving stopped: serve them */
		size_t room = c->in.cap - c->in.len;
		int more;
		ssize_t n = conn_recv(c, c->in.data + c->in.len, room, &more);
		if (n == DML_EAGAIN)
			return 0;
		if (n < 0)
			return (int)n;
		c->in.len += (size_t)n;
		c->rx_us = dml__now_us(); /* one clock read: both stamps */
		atomic_store(&c->rx_at, c->rx_us / 1000);
		if ((size_t)n < room && !atomic_load(&c->hup) && !more) {
			/* Drained for now (a short read): serve what came; more
			 * input raises a new edge, so no read for EAGAIN. */
			if ((rc = serve_frames(s, c, gen, &fr, &partial)) ||
			    (rc = conn_flush(c, &backlog)))
				return rc;
			note_frame(s, c, partial);
			/* serving may have stopped over the reply limit with
			 * whole frames left: no event would bring them back;
			 * nor would one bring input a stream's write took in */
			if (backlog || atomic_load(&c->stalled) ||
			    ((partial || c->in.len - c->rpos < DML__FRAME_HDR) && !conn_held_input(c)))
				return 0;
		}
	}
}

/* Takes a connection of generation `gen`, or registers news for its owner.
 * 1 if the caller now owns it; 0 if someone else does (they will go round
 * again) or the connection is gone. */
static int conn_acquire(conn *c, uint32_t gen)
{
	uint64_t st = atomic_load(&c->state);
	do {
		if ((uint32_t)(st >> 32) != gen)
			return 0;
	} while (!atomic_compare_exchange_weak(&c->state, &st, st + 1));
	return (uint32_t)st == 0;
}

#define EV_SWEEP 0x80000000u /* not a poller bit: check the timeouts */

static int late(int64_t now, int64_t since, dml_duration limit)
{
	return limit >= 0 && since && now - since > limit;
}

/* Whether a connection has outstayed a timeout (its owner asks): 0 no,
 * 1 yes, 2 its peer stopped reading (it is then reset, so that the kernel
 * does not go on holding the unsent replies). */
/* Whether a draining server may close the connection: every request it
 * read answered and written, no deferred reply owed, no frame begun (its
 * owner's). */
static int conn_quiet(conn *c)
{
	pthread_mutex_lock(&c->omu);
	int owed = c->opos < c->out.len || c->held;
	pthread_mutex_unlock(&c->omu);
	return !owed && !atomic_load(&c->deferred) && !atomic_load(&c->frame_at) &&
	       c->rpos == c->in.len;
}

static int conn_expired(dml_rpc_server *s, conn *c, int64_t now, char *why, size_t cap)
{
	if (atomic_load(&s->draining)) {
		if (now >= atomic_load(&s->drain_at)) {
			snprintf(why, cap, "the server's drain deadline passed");
			return 1;
		}
		if (conn_quiet(c)) {
			snprintf(why, cap, "the server drains");
			return 1;
		}
	}
	pthread_mutex_lock(&c->omu);
	int pending = c->opos < c->out.len;
	pthread_mutex_unlock(&c->omu);
	if (late(now, atomic_load(&c->frame_at), s->o.frame_timeout)) {
		snprintf(why, cap, "a frame not whole within %lld ms (frame_timeout)",
		         (long long)s->o.frame_timeout);
		return 1;
	}
	int64_t fa = atomic_load(&c->frame_at), got = (int64_t)(c->in.len - c->rpos);
	if (fa && c->acct_in && s->o.min_frame_rate > 0 && now - fa > RATE_GRACE_MS &&
	    got < s->o.min_frame_rate * (now - fa) / 1000) {
		snprintf(why, cap, "a frame arriving at %lld bytes/s (min_frame_rate %lld)",
		         (long long)(got * 1000 / (now - fa)), (long long)s->o.min_frame_rate);
		return 1;
	}
	if (pending && late(now, atomic_load(&c->tx_at), s->o.write_timeout)) {
		snprintf(why, cap, "replies unread for %lld ms (write_timeout)",
		         (long long)s->o.write_timeout);
		return 2;
	}
	if (late(now, atomic_load(&c->rx_at), s->o.heartbeat_timeout)) {
		snprintf(why, cap, "nothing received for %lld ms, not even a heartbeat "
		         "(heartbeat_timeout)", (long long)s->o.heartbeat_timeout);
		return 1;
	}
	if (!pending && !atomic_load(&c->deferred) && !atomic_load(&c->frame_at) &&
	    late(now, atomic_load(&c->rx_at), s->o.idle_timeout)) {
		snprintf(why, cap, "idle for %lld ms (idle_timeout)",
		         (long long)s->o.idle_timeout);
		return 1;
	}
	return 0;
}

/* The words of a connection's end (conn_read's error). */
static const char *close_why(int rc)
{
	switch (rc) {
	case DML_ECONNLOST: return "end of stream or reset";
	case DML_EPROTO: return "a malformed frame";
	case DML_ETOOBIG: return "a frame over max_frame";
	case DML_EVERSION: return "another frame version";
	case DML_ENOMEM: return "out of memory";
	default: return dml_strerror(rc);
	}
}

/* Serves a connection: after an event (`events`), or for a deferred reply
 * (events == 0), or to check its timeouts (EV_SWEEP). Goes round while
 * others registered news meanwhile; closes the connection on an error or
 * a timeout.
 * Connections are edge-triggered (no re-arm per request): input is read
 * until a short read whenever output is not backlogged, since no event
 * reports it again; while output is backlogged, the socket's send buffer
 * is full, and the output event when the peer reads brings it back. */
static void conn_serve(dml_rpc_server *s, conn *c, uint32_t gen, uint32_t events)
{
	/* an end of stream raises one edge, maybe together with data that a
	 * short read then takes: remember it (a stale event may mark a new
	 * connection in the slot, which costs it only extra reads) */
	if (events != EV_SWEEP && events & DML__EV_HUP &&
	    conn_gen(c) == gen)
		atomic_store(&c->hup, 1);
	if (conn_acquire(c, gen))
		conn_serve_owned(s, c, gen, events);
}

/* conn_serve, for the owner. */
static void conn_serve_owned(dml_rpc_server *s, conn *c, uint32_t gen, uint32_t events)
{
	if (events == EV_SWEEP) {
		char text[128];
		int why = conn_expired(s, c, dml__now_ms(), text, sizeof text);
		if (!why)
			big_release(s, c);
		if (why) {
			if (why == 2)
				dml__reset_on_close(c->fd); /* the kernel drops the unsent */
			conn_close(s, c, DML_ETIMEDOUT, text);
			return;
		}
		events = 0;
	}
	for (;;) {
		uint64_t seen = atomic_load(&c->state);
		/* flush first on output, or whatever the event for a stream
		 * whose write may have waited for input */
		int backlog = 0, rc = 0;
		if (events & DML__EV_OUT || !(events & DML__EV_IN) ||
		    !(c->st->flags & DML__STREAM_DUPLEX))
			rc = conn_flush(c, &backlog);
		if (!rc && !backlog)
			rc = conn_read(s, c, gen);
		/* a stream that is not DUPLEX: the read may have let a write
		 * that waited go on (no event will say so), and that write may
		 * take input in */
		while (!rc && !(c->st->flags & DML__STREAM_DUPLEX)) {
			if ((rc = conn_flush(c, &backlog)) || backlog || !conn_held_input(c) ||
			    atomic_load(&c->stalled))
				break;
			rc = conn_read(s, c, gen);
		}
		if (rc) {
			conn_close(s, c, rc, close_why(rc));
			return;
		}
		/* what it waits for next (the poll() backend arms it again;
		 * before letting go: afterwards c is someone else's) */
		if (DML__POLLER_ONESHOT)
			dml__poller_want(s->poller, c->fd, conn_wants(c));
		if (atomic_compare_exchange_strong(&c->state, &seen, (uint64_t)gen << 32))
			return;
		/* news arrived meanwhile (an event, a deferred reply): flush
		 * and read again */
		events = 0;
	}
}

int dml_rpc_server_tick(dml_rpc_server *s, dml_duration period,
                        void (*fn)(void *arg), void *arg)
{
	dml__detail_clear();
	if (!s || !fn || period < 1 || period > MAX_TICK_PERIOD)
		return dml__fail(DML_EINVAL, "a tick period is 1 ms to 1 h");
	if (s->nticks == MAX_TICKS)
		return dml__fail(DML_EBUSY, "%d ticks already", MAX_TICKS);
	s->ticks[s->nticks].period = period;
	s->ticks[s->nticks].next = 0;
	s->ticks[s->nticks].fn = fn;
	s->ticks[s->nticks].arg = arg;
	s->nticks++;
	sweep_by(s, 0); /* the first call at the first poll */
	return 0;
}

/* When a connection times out next: its frame, its stalled output or its
 * idleness; NEVER if nothing is timing. */
static int64_t conn_deadline(dml_rpc_server *s, conn *c)
{
	pthread_mutex_lock(&c->omu);
	int pending = c->opos < c->out.len;
	pthread_mutex_unlock(&c->omu);
	int64_t frame = atomic_load(&c->frame_at), d = after(frame, s->o.frame_timeout);
	int64_t hb = after(atomic_load(&c->rx_at), s->o.heartbeat_timeout);
	d = hb < d ? hb : d;
	if (frame && s->o.min_frame_rate > 0 && c->big_at) { /* its rate, each second */
		int64_t r = frame + RATE_GRACE_MS + 1000 * ((dml__now_ms() - frame) / 1000);
		d = r < d ? r : d;
	}
	if (atomic_load(&c->stalled)) { /* waits for the budget */
		int64_t at = atomic_load(&c->stall_at);
		int64_t r = atomic_load(&s->unstall_at) >= at ? 0 : at + STALL_RETRY_MS;
		d = r < d ? r : d;
	}
	if (pending) {
		int64_t w = after(atomic_load(&c->tx_at), s->o.write_timeout);
		d = w < d ? w : d;
	} else if (!atomic_load(&c->deferred) && !frame) {
		int64_t i = after(atomic_load(&c->rx_at), s->o.idle_timeout);
		d = i < d ? i : d;
	}
	if (atomic_load(&s->draining)) {
		int64_t at = atomic_load(&s->drain_at);
		d = at < d ? at : d;
		if (!pending && !atomic_load(&c->deferred) && !atomic_load(&c->frame_at))
			d = 0; /* maybe quiet: look now */
	}
	return d;
}

/* The timers, when the earliest is due (no polling tick: next_sweep is
 * the earliest deadline, brought forward by whatever sets a new one):
 * runs the ticks due, closes the connections that timed out, frees large
 * buffers unused for BIG_KEEP_MS, ends the listeners' rest, and sets the
 * next. One thread at a time. */
static void sweep(dml_rpc_server *s)
{
	int64_t next = atomic_load(&s->next_sweep);
	if (next == NEVER)
		return;
	int64_t now = dml__now_ms();
	if (now < next)
		return;
	int idle = 0;
	if (!atomic_compare_exchange_strong(&s->sweeping, &idle, 1))
		return;
	/* from here, whatever sets a deadline brings NEVER forward again */
	atomic_store(&s->next_sweep, NEVER);
	for (int i = 0; i < s->nticks; i++) {
		if (now >= s->ticks[i].next) {
			s->ticks[i].next = now + s->ticks[i].period;
			s->ticks[i].fn(s->ticks[i].arg);
		}
		sweep_by(s, s->ticks[i].next);
	}
	listeners_wake(s, now);
	if (atomic_load(&s->nbig))
		sweep_by(s, now + BIG_KEEP_MS);
	pthread_mutex_lock(&s->mu);
	size_t nchunks = s->nchunks;
	pthread_mutex_unlock(&s->mu);
	for (size_t k = 0; k < nchunks; k++)
		for (int i = 0; i < CHUNK; i++) {
			conn *c = &s->chunks[k][i];
			uint32_t gen = conn_gen(c);
			if (!atomic_load(&c->open))
				continue;
			int64_t d = conn_deadline(s, c);
			if (d <= now || c->big_at) {
				conn_serve(s, c, gen, EV_SWEEP);
				/* another thread owned it: look again soon */
				if (atomic_load(&c->open) && conn_gen(c) == gen)
					d = conn_deadline(s, c);
				else
					d = NEVER;
				if (d <= now)
					d = now + 1;
			}
			sweep_by(s, d);
		}
	if (atomic_load(&s->draining)) {
		pthread_mutex_lock(&s->mu);
		int left = s->nconns;
		pthread_mutex_unlock(&s->mu);
		if (!left) /* drained */
			dml_rpc_server_stop(s);
		else
			sweep_by(s, atomic_load(&s->drain_at));
	}
	atomic_store(&s->sweeping, 0);
}

/* Milliseconds until the earliest timer: 0 if due, -1 if none. */
static int64_t timer_wait_ms(dml_rpc_server *s)
{
	int64_t next = atomic_load(&s->next_sweep);
	if (next == NEVER)
		return -1;
	int64_t left = next - dml__now_ms();
	return left < 0 ? 0 : left;
}

/* Milliseconds the poller may wait: the caller's timeout, cut at the
 * earliest timer. */
static int poll_wait_ms(dml_rpc_server *s, dml_duration timeout)
{
	int64_t tmo = timeout < 0 ? -1 : timeout > DML__MAX_WAIT_MS ? DML__MAX_WAIT_MS : timeout;
	int64_t t = timer_wait_ms(s);
	if (t >= 0 && (tmo < 0 || t < tmo))
		tmo = t;
	return (int)tmo;
}

int dml_rpc_server_next_timeout(dml_rpc_server *s, dml_duration *ms)
{
	dml__detail_clear();
	if (!s || !ms)
		return DML_EINVAL;
	int64_t t = timer_wait_ms(s);
	*ms = t < 0 ? DML_INFINITE : t > DML__MAX_WAIT_MS ? DML__MAX_WAIT_MS : t;
	return 0;
}

int dml_rpc_server_poll(dml_rpc_server *s, dml_duration timeout)
{
	dml__detail_clear();
	if (!s)
		return DML_EINVAL;
	if (timeout < 0 && timeout != DML_INFINITE)
		return dml__fail(DML_EINVAL, "poll: timeout 0, DML_INFINITE or a "
		                 "positive number of ms (a server has no default)");
	if (atomic_load(&s->stopped))
		return DML_ESTOPPED;
	sweep(s);
	dml__poll_event evs[EVENTS_PER_POLL];
	int n = dml__poller_wait(s->poller, evs, EVENTS_PER_POLL, poll_wait_ms(s, timeout));
	if (n < 0)
		return n;
	int handled = 0;
	for (int i = 0; i < n; i++) {
		uint32_t id = (uint32_t)evs[i].data;
		uint32_t gen = (uint32_t)(evs[i].data >> 32);
		if (id == 0)
			return DML_ESTOPPED;
		if (id == ID_KICK) {
			dml__sys_wake_drain(s->kick);
			sweep(s);
		} else if (id < ID_CONN0)
			accept_all(s, &s->ls[id - 1]);
		else
			conn_serve(s, slot_at(s, id - ID_CONN0), gen, evs[i].events);
		handled++;
	}
	return handled;
}

/* After work, polls without sleeping until spin_us pass with nothing to
 * do (opts.spin_us), if no other thread does so already: the next request
 * then finds this thread awake. What dml_rpc_server_poll returns. */
static int spin(dml_rpc_server *s)
{
	int zero = 0, rc = 0;
	if (!atomic_compare_exchange_strong(&s->spinning, &zero, 1))
		return 0;
	int64_t until = dml__now_us() + s->o.spin_us;
	while (rc >= 0 && dml__now_us() < until)
		if ((rc = dml_rpc_server_poll(s, 0)) > 0)
			until = dml__now_us() + s->o.spin_us;
	atomic_store(&s->spinning, 0);
	return rc;
}

int dml_rpc_server_run(dml_rpc_server *s)
{
	dml__detail_clear();
	if (!s)
		return DML_EINVAL;
	for (;;) {
		int rc = dml_rpc_server_poll(s, DML_INFINITE);
		if (rc > 0 && s->o.spin_us)
			rc = spin(s);
		if (rc == DML_ESTOPPED)
			return 0;
		if (rc < 0)
			return rc;
	}
}

/* ---- deferred replies ---------------------------------------------- */

int dml_rpc_deferred_new(dml_rpc_deferred **out, dml_rpc_ctx *ctx)
{
	dml__detail_clear();
	if (!ctx || !out || ctx->deferred)
		return DML_EINVAL;
	if (atomic_load(&ctx->c->deferred) >= ctx->s->o.max_deferred)
		return dml__fail(DML_EBUSY, "%d deferred replies owed on this "
		                 "connection (max_deferred)", ctx->s->o.max_deferred);
	dml_rpc_deferred *d = malloc(sizeof *d);
	if (!d)
		return DML_ENOMEM;
	atomic_fetch_add(&ctx->c->deferred, 1);
	d->h = ctx->s->hub;
	atomic_fetch_add(&d->h->refs, 1);
	d->s = ctx->s;
	d->conn_id = ctx->c->id;
	d->c = ctx->c;
	d->gen = ctx->gen;
	d->seq = ctx->seq;
	d->rt = ctx->rt;
	d->cnt = ctx->cnt;
	d->in_bytes = ctx->in_bytes;
	d->t0 = ctx->t0;
	ctx->deferred = 1;
	*out = d;
	return 0;
}

int dml_rpc_defer(dml_rpc_ctx *ctx, dml_rpc_deferred **out)
{
	return dml_rpc_deferred_new(out, ctx);
}

int dml_rpc_deferred_reply(dml_rpc_deferred *d, int err, const void *reply,
                           const char *msg)
{
	dml__detail_clear();
	if (!d)
		return DML_EINVAL;
	hub *h = d->h;
	pthread_rwlock_rdlock(&h->lock);
	if (!h->alive) {
		pthread_rwlock_unlock(&h->lock);
		hub_unref(h);
		free(d);
		return DML_ECLOSED;
	}
	conn *c = d->c;
	pthread_mutex_lock(&c->omu);
	int rc = DML_ECLOSED;
	if (conn_gen(c) == d->gen && c->fd >= 0) {
		atomic_fetch_sub(&c->deferred, 1);
		size_t before = unsent(c);
		int failed = err != 0;
		if (err)
			rc = reply_error(c, d->seq, DML__ST_HANDLER,
			                 msg ? msg : dml_strerror(err));
		else
			rc = reply_ok(d->s, c, d->seq, d->rt, reply, &failed);
		count_call(d->s, c, d->cnt, failed || rc, d->in_bytes, appended(c, before), d->t0,
		           dml__now_us());
		if (rc) /* no reply at all would leave the caller waiting */
			dml__stream_shutdown(c->st);
		/* Write at once: the owner may be waiting in the poller for
		 * input. What does not fit waits for the output event that the full
		 * socket raises when the peer reads, and a failed connection
		 * (or the shutdown above) raises an edge too: a server thread
		 * then flushes or closes it. Not this thread, which must not
		 * run handlers (the caller may hold locks they take). */
		if (!rc)
			rc = conn_flush_locked(c);
		note_backlog(c);
		if (!(c->st->flags & DML__STREAM_DUPLEX) && dml__stream_pending(c->st))
			/* the write took input in (a stream's write may read):
			 * no edge will report it, so the owner must be called */
			dml__poller_kick(d->s->poller, c->fd, conn_cookie(c, d->gen));
		else if (DML__POLLER_ONESHOT && (c->opos < c->out.len || c->held))
			dml__poller_want(d->s->poller, c->fd, wants_locked(c)); /* output too */
	}
	pthread_mutex_unlock(&c->omu);
	pthread_rwlock_unlock(&h->lock);
	hub_unref(h);
	free(d);
	return rc == DML_ECONNLOST ? DML_ECLOSED : rc;
}

int dml_rpc_server_drain(dml_rpc_server *s, dml_duration timeout)
{
	dml__detail_clear();
	if (!s)
		return DML_EINVAL;
	if (timeout < 0 && timeout != DML_INFINITE)
		return dml__fail(DML_EINVAL, "drain: timeout 0, DML_INFINITE or a "
		                 "positive number of ms");
	/* rounded up to the ms: never before the timeout */
	int64_t at = timeout == DML_INFINITE ? NEVER : dml__deadline(timeout);
	int64_t was = atomic_load(&s->drain_at);
	while ((!atomic_load(&s->draining) || at < was) &&
	       !atomic_compare_exchange_weak(&s->drain_at, &was, at))
		;
	atomic_store(&s->draining, 1);
	pthread_mutex_lock(&s->lmu); /* new connections are refused */
	pthread_mutex_lock(&s->mu);  /* the listeners' rest looks at them too */
	for (int i = 0; i < s->nls; i++)
		if (s->ls[i].fd >= 0) {
			if (!s->resting)
				dml__poller_del(s->poller, s->ls[i].fd);
			listener_close(&s->ls[i]);
		}
	pthread_mutex_unlock(&s->mu);
	pthread_mutex_unlock(&s->lmu);
	kick(s);
	return 0;
}

int dml_rpc_server_stats_abi(dml_rpc_stats *out, dml_rpc_server *s, const char *method,
                             int abi)
{
	dml__detail_clear();
	int rc = dml__abi_check(abi);
	if (rc)
		return rc;
	if (!out || !s)
		return DML_EINVAL;
	method_ent *e = NULL;
	if (method) {
		size_t n = strnlen(method, DML_RPC_MAX_METHOD + 1);
		e = n <= DML_RPC_MAX_METHOD ? method_find(s, method, n) : NULL;
		if (!e)
			return dml__fail(DML_ENOTFOUND, "no method %.64s registered", method);
	}
	dml_rpc_stats st;
	memset(&st, 0, sizeof st);
	/* one method's, or the server's: every method's and the unknown's */
	for (size_t m = 0; m <= s->nmethods; m++) {
		const counters *k = e ? e->cnt : m < s->nmethods ? s->methods[m].cnt : &s->cnt;
		st.calls += atomic_load_explicit(&k->calls, memory_order_relaxed);
		st.errors += atomic_load_explicit(&k->errors, memory_order_relaxed);
		st.bytes_in += atomic_load_explicit(&k->bytes_in, memory_order_relaxed);
		st.bytes_out += atomic_load_explicit(&k->bytes_out, memory_order_relaxed);
		for (int i = 0; i < DML_RPC_LATENCY_BUCKETS; i++)
			st.latency[i] += atomic_load_explicit(&k->latency[i], memory_order_relaxed);
		if (e)
			break;
	}
	if (!method) {
		st.accepted = atomic_load_explicit(&s->accepted, memory_order_relaxed);
		st.closed = atomic_load_explicit(&s->closed, memory_order_relaxed);
		st.shed = atomic_load_explicit(&s->shed, memory_order_relaxed);
		st.open = st.accepted > st.closed ? st.accepted - st.closed : 0;
		int64_t in = atomic_load(&s->held_in), out_b = atomic_load(&s->held_out);
		st.buffered_in = in > 0 ? (uint64_t)in : 0;
		st.buffered_out = out_b > 0 ? (uint64_t)out_b : 0;
		st.stalled = (uint64_t)atomic_load(&s->nstalled);
	}
	dml__abi_out(out, &st, DML__L_RPC_STATS, abi);
	return 0;
}

int dml__rpc_server_on_close(dml_rpc_server *s,
                             void (*fn)(void *user, dml_rpc_server *s, uint64_t id),
                             void *user)
{
	if (s->non_close == MAX_TICKS)
		return DML_EBUSY;
	s->on_close[s->non_close].fn = fn;
	s->on_close[s->non_close].user = user;
	s->non_close++;
	return 0;
}

void dml__rpc_deferred_of(const dml_rpc_deferred *d, dml_rpc_server **s, uint64_t *id)
{
	*s = d->s;
	*id = d->conn_id;
}

size_t dml__rpc_server_max_frame(const dml_rpc_server *s)
{
	return s->o.max_frame;
}
