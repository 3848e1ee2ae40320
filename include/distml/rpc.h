/*
 * distml/rpc.h - RPC in the style of Go's net/rpc.
 * The API rules (names, ownership, durations, errors, ABI): docs/api.md.
 *
 * A method is a name plus an argument type and a reply type (distml/codec.h).
 * The same dml_rpc_method value serves the server, which registers a handler
 * for it, and the client, which calls it:
 *
 *     static const dml_rpc_method multiply = {"Arith.Multiply", &args_t, &reply_t};
 *
 * The server has no thread of its own: the host calls dml_rpc_server_run()
 * from one or more threads, or dml_rpc_server_poll() from its own loop
 * (waiting on dml_rpc_server_fd()). Handlers run in the thread that polled.
 *
 * The client multiplexes any number of calls over one connection by sequence
 * number. Whichever waiting thread is free reads the socket for everyone, so
 * the client starts no thread either.
 *
 * Names: dml_rpc_<verb> acts on a client (dial, call, start, flush, close,
 * free), dml_rpc_server_<verb> on a server, dml_rpc_pending_<verb> on a
 * started call, dml_rpc_ctx_<verb> on a handler's context and
 * dml_rpc_deferred_<verb> on a deferred reply (docs/api.md).
 *
 * Errors: DML_ENOMETHOD (unknown method), DML_EHANDLER (the handler failed;
 * its message is the error detail), DML_ETIMEDOUT, DML_ECONNLOST,
 * DML_ECLOSED, DML_ETOOBIG (frame over the limit), DML_EPROTO (malformed
 * frame/message), DML_EVERSION (the peer speaks another protocol version).
 * A failed call's detail (dml_error_detail, distml/common.h) says what the
 * peer said or what went wrong, escaped.
 *
 * Part of libdistml. Included by <distml.h>; include that instead.
 */
#ifndef DISTML_RPC_H
#define DISTML_RPC_H

#include "codec.h"
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The defaults of the options below (what 0 means in each). */
#define DML_RPC_DEFAULT_MAX_FRAME ((size_t)64 << 20) /* 64 MiB */
#define DML_RPC_DEFAULT_MAX_CONNS 4096 /* the most; 0 = the descriptor limit allows */
#define DML_RPC_DEFAULT_MAX_IN_FLIGHT 65536 /* calls pending on one client */
#define DML_RPC_DEFAULT_MAX_DEFERRED 1024   /* deferred replies owed per connection */
#define DML_RPC_DEFAULT_FRAME_TIMEOUT ((dml_duration)30000)  /* 30 s */
#define DML_RPC_DEFAULT_WRITE_TIMEOUT ((dml_duration)30000)  /* 30 s */
#define DML_RPC_DEFAULT_IDLE_TIMEOUT ((dml_duration)600000)  /* 10 min */
#define DML_RPC_DEFAULT_DIAL_TIMEOUT ((dml_duration)10000)   /* 10 s */
#define DML_RPC_DEFAULT_CALL_TIMEOUT ((dml_duration)60000)   /* 60 s */
#define DML_RPC_DEFAULT_BACKOFF_MIN ((dml_duration)50)       /* ms */
#define DML_RPC_DEFAULT_BACKOFF_MAX ((dml_duration)5000)     /* ms */
/* Dead peers (both sides): TCP keepalive probes after this much silence,
 * this far apart, this many unanswered, and TCP_USER_TIMEOUT (sent data
 * unacknowledged this long) = idle + interval x count: a peer that
 * vanishes without a FIN is noticed within 5 s. */
#define DML_RPC_DEFAULT_KEEPALIVE ((dml_duration)2000)          /* ms */
#define DML_RPC_DEFAULT_KEEPALIVE_INTERVAL ((dml_duration)1000) /* ms */
#define DML_RPC_DEFAULT_KEEPALIVE_COUNT 3
/* Limits. */
#define DML_RPC_MIN_FRAME 64                /* smallest max_frame accepted */
#define DML_RPC_MAX_SPIN_US 10000          /* largest spin_us accepted */
#define DML_RPC_MAX_METHOD 255   /* longest method name, bytes */
#define DML_RPC_ERRMSG_MAX DML_ERRMSG_MAX /* longest error message kept, with NUL */
/* The wire protocol this library speaks (docs/protocol.md, section 11). */
#define DML_RPC_PROTOCOL 1

/* A method: name, argument type and reply type. NULL types mean "no
 * fields". Plain constant data, shared by servers and clients; frozen for
 * the life of the soname (docs/abi.md). Names beginning "RPC." belong to
 * the library (RPC.Hello, docs/protocol.md). */
typedef struct dml_rpc_method {
	const char *name;
	const dml_type *args;
	const dml_type *reply;
} dml_rpc_method;

/* ------------------------------------------------------------------ */
/* Server                                                             */
/* ------------------------------------------------------------------ */

typedef struct dml_rpc_server dml_rpc_server;
typedef struct dml_rpc_ctx dml_rpc_ctx;

/* Server options; zero-initialised means defaults (each field's 0 is the
 * DML_RPC_DEFAULT_* of its name). May grow at its end (docs/abi.md). */
struct dml_rpc_event;

/*
 * 0.4: identities (docs/security.md). Every connection has one, which
 * handlers read with dml_rpc_ctx_identity and the authorize hook sees:
 * - DML_RPC_AUTH_CERT: the subject of the client certificate the server
 *   verified (mutual TLS, dml_tls_opts.ca_file on the server), in RFC 2253
 *   form, "CN=worker1,O=job";
 * - DML_RPC_AUTH_TOKEN: the name of the token the client presented
 *   (dml_rpc_client_opts.token; checked in constant time);
 * - DML_RPC_AUTH_ADDR: no credentials: the peer's IP address ("127.0.0.1",
 *   "::1"; "unix" for a Unix-domain peer). Anyone on that host can claim it.
 */
typedef enum dml_rpc_auth {
	DML_RPC_AUTH_ADDR = 0,
	DML_RPC_AUTH_CERT = 1,
	DML_RPC_AUTH_TOKEN = 2,
} dml_rpc_auth;

#define DML_RPC_MAX_IDENTITY 256 /* longest identity, with its NUL */
#define DML_RPC_MIN_TOKEN 16     /* shortest token secret, bytes */
#define DML_RPC_MAX_TOKEN 1024   /* longest token secret, bytes */
#define DML_RPC_DEFAULT_MAX_CONNS_PER_PEER 1024 /* per address or identity */
#define DML_RPC_DEFAULT_MAX_UNAUTH_CONNS 64     /* per address, require_auth */
#define DML_RPC_DEFAULT_MAX_BUFFERED ((size_t)512 << 20) /* bytes, all connections */
#define DML_RPC_DEFAULT_MIN_FRAME_RATE ((int64_t)256 << 10) /* bytes/s */

/* A shared token: a client presenting `secret` is known as `name`. */
typedef struct dml_rpc_token {
	const char *name;   /* 1 .. DML_RPC_MAX_IDENTITY - 1 bytes */
	const char *secret; /* NUL-terminated, DML_RPC_MIN_TOKEN ..
	                       DML_RPC_MAX_TOKEN bytes: random, not a word */
} dml_rpc_token;

/* A connection's peer, as the authorize hook sees it (valid during the
 * call only). May grow at its end. */
typedef struct dml_rpc_peer {
	dml_rpc_auth auth;
	const char *identity;
	const char *addr; /* "127.0.0.1:43210", as dml_rpc_ctx_peer gives it */
	uint64_t conn;    /* dml_rpc_ctx_conn's number */
} dml_rpc_peer;

/* The access hook: 0 allows, anything else refuses. Called once when a
 * connection's identity is known (method NULL: refused, every call on it
 * fails with DML_EPERM), then at the first call of each method on each
 * connection (refused: that call and every later one of the method on
 * the connection fail with DML_EPERM). From the thread serving the
 * connection: it must be fast and thread-safe. */
typedef int (*dml_rpc_authorize_fn)(const dml_rpc_peer *peer, const char *method,
                                    void *user);

typedef struct dml_rpc_server_opts {
	size_t max_frame; /* largest frame accepted or sent; 0 = 64 MiB;
	                     64 B .. 4 GiB - 1, else DML_EINVAL */
	int max_conns;    /* open connections at once; 0 = what the process's
	                     descriptor limit allows (the soft RLIMIT_NOFILE
	                     less a quarter of it, and at least 16, kept for
	                     the host), at most 4096; beyond it new connections
	                     are accepted and closed at once. Out of
	                     descriptors anyway (EMFILE), the server stops
	                     accepting for 100 ms or until a connection closes,
	                     and serves the open ones meanwhile */
	dml_codec codec;  /* DML_CODEC_BINARY */
	/* Timeouts that drop a connection (0 = the default, DML_INFINITE =
	 * never); each fires when due (dml_rpc_server_next_timeout), in a
	 * thread running or polling the server: */
	dml_duration frame_timeout; /* a frame begun must arrive whole within
	                               this (0 = 30 s): slow or stalled senders */
	dml_duration write_timeout; /* unsent replies must make progress within
	                               this (0 = 30 s): peers that do not read
	                               are reset (abortive close) */
	dml_duration idle_timeout;  /* nothing received, nothing to send and no
	                               deferred reply owed for this long
	                               (0 = 10 min) */
	int max_deferred;           /* deferred replies owed on one connection;
	                               beyond it dml_rpc_deferred_new returns
	                               DML_EBUSY (0 = 1024) */
	int spin_us;                /* a dml_rpc_server_run thread that found
	                               work polls for more for up to this many
	                               microseconds before it sleeps; one thread
	                               spins at a time (0 = never; at most
	                               10000): less latency for more CPU */
	/* 0.4: dead peers. TCP keepalive on every connection (0 = the
	 * DML_RPC_DEFAULT_KEEPALIVE* values; keepalive DML_INFINITE = off),
	 * and TCP_USER_TIMEOUT where the platform has it (0 = keepalive +
	 * interval x count; DML_INFINITE = off): */
	dml_duration keepalive;
	dml_duration keepalive_interval;
	int keepalive_count;
	dml_duration user_timeout;
	dml_duration heartbeat_timeout; /* nothing received for this long, not
	                               even a client's heartbeat: the connection
	                               is dropped, also while it is owed deferred
	                               replies (a worker parked in a clock call
	                               that went silent). 0 = off; clients must
	                               then send heartbeats more often
	                               (dml_rpc_client_opts.heartbeat) */
	/* 0.4: what happens to connections, for a host's logs or counters
	 * (the library prints nothing): called from the thread serving the
	 * connection, which it must not block for long; NULL = none. */
	void (*on_event)(const struct dml_rpc_event *ev, void *user);
	void *event_user;
	/* 0.4: TLS (distml/tls.h): a DML_TLS_SERVER configuration every
	 * connection speaks, which must outlive the server; NULL = plain */
	const struct dml_tls *tls;
	/* 0.4: identities and access control (docs/security.md): */
	const dml_rpc_token *tokens; /* tokens clients may present (copied);
	                               NULL = none */
	size_t ntokens;
	int require_auth;           /* non-zero: a connection without a
	                               verified client certificate or a token
	                               may call nothing but RPC.Hello and
	                               RPC.Ping (DML_EAUTH) */
	dml_rpc_authorize_fn authorize; /* NULL = every identity may call
	                               every method */
	void *authorize_user;
	/* 0.4: budgets (docs/reliability.md): */
	int max_conns_per_peer;     /* open connections from one address, and
	                               with one identity (0 = 1024); beyond it
	                               new ones are closed at once (SHED) */
	int max_unauth_conns;       /* with require_auth: connections from one
	                               address not authenticated yet (0 = 64) */
	size_t max_buffered;        /* bytes of large input frames and unsent
	                               replies held across all connections
	                               (0 = 512 MiB, at least 2 x max_frame;
	                               DML_INFINITE = no bound; at least
	                               2 x max_frame): half for large frames
	                               being read (beyond it they wait), half
	                               for unsent replies (beyond it no more
	                               requests are served until they drain):
	                               backpressure, no connection dropped;
	                               docs/reliability.md states the bound */
	int64_t min_frame_rate;     /* bytes/s a frame over 16 KiB must
	                               average after its first 2 s, else the
	                               connection is closed (0 = 256 KiB/s;
	                               DML_INFINITE = no minimum) */
} dml_rpc_server_opts;

/* What on_event reports. */
typedef enum dml_rpc_event_kind {
	DML_RPC_EV_ACCEPTED = 1, /* a connection was accepted */
	DML_RPC_EV_CLOSED = 2,   /* a connection was closed: reason, why;
	                            after the library is done with it */
	DML_RPC_EV_SHED = 3,     /* accepted and closed at once: max_conns */
	DML_RPC_EV_REST = 4,     /* out of descriptors (why): accepting rests
	                            100 ms or until a connection closes */
} dml_rpc_event_kind;

/* An event; valid during the callback only. May grow at its end. */
typedef struct dml_rpc_event {
	dml_rpc_event_kind kind;
	uint64_t conn;    /* the connection (dml_rpc_ctx_conn's number), or 0 */
	int reason;       /* CLOSED: DML_ECONNLOST = the peer closed it, reset
	                     it, or vanished (keepalive, user timeout);
	                     DML_ETIMEDOUT = a frame, write, idle or heartbeat
	                     timeout; DML_EPROTO, DML_ETOOBIG, DML_EVERSION =
	                     a bad frame; DML_ENOMEM. SHED: DML_EBUSY. REST:
	                     DML_ESYS (errno's words in why) */
	const char *why;  /* what happened, in words ("idle for 600000 ms") */
	const char *peer; /* the peer's address ("" if unknown) */
} dml_rpc_event;

/*
 * A handler. `args` points at a decoded argument struct (its views are valid
 * until the handler returns); `reply` at a zeroed reply struct to fill.
 * Return 0 for success or a negative code; to send a message with the error,
 * `return dml_rpc_ctx_errorf(ctx, "divide by zero");`. The reply's memory is
 * only read, and is encoded after the handler returns.
 * Handlers may run concurrently in several threads (one per thread running
 * the server), but never two at once for one connection.
 */
typedef int (*dml_rpc_handler)(dml_rpc_ctx *ctx, const void *args, void *reply,
                               void *user);

/* Creates a server. `opts` may be NULL (all defaults) and is only read
 * during the call. On success *out owns the server (free with
 * dml_rpc_server_free); on failure *out is untouched. DML_EINVAL (the
 * detail names the option), DML_ENOMEM, DML_ESYS, DML_EVERSION (see
 * DML_ABI). Thread-safe. */
DML_API int dml_rpc_server_new_abi(dml_rpc_server **out,
                                   const dml_rpc_server_opts *opts, int abi);
#define dml_rpc_server_new(...) dml_rpc_server_new_abi(__VA_ARGS__, DML_ABI)

/* Registers `h` for method `m` (name 1..255 bytes, not beginning "RPC.").
 * `m` and its types must outlive the server; `user` is passed to the
 * handler. DML_EEXIST if the name is taken, DML_EINVAL for a bad type or
 * name. Not thread-safe: register before any thread runs the server. */
DML_API int dml_rpc_server_register(dml_rpc_server *s, const dml_rpc_method *m,
                                    dml_rpc_handler h, void *user);

/* Listens on `addr`: "host:port" (IPv4 or "[v6]:port", a name is resolved;
 * port 0 picks an ephemeral port) or "unix:/path" (the path is removed again
 * by dml_rpc_server_free). Up to 8 listeners (then DML_EBUSY).
 * DML_EADDR, DML_EINVAL, DML_ESYS.
 * Not thread-safe: call before running the server. */
DML_API int dml_rpc_server_listen(dml_rpc_server *s, const char *addr);

/* The bound address of listener `i` (0 = first), formatted so that
 * dml_rpc_dial accepts it (e.g. "127.0.0.1:40123"), into `buf` of `cap`
 * bytes. DML_ENOTFOUND, DML_ETOOBIG. Thread-safe. */
DML_API int dml_rpc_server_addr(dml_rpc_server *s, int i, char *buf,
                                size_t cap);

/* The TCP port of listener `i`, or a negative error. Thread-safe. */
DML_API int dml_rpc_server_port(dml_rpc_server *s, int i);

/*
 * Serves until dml_rpc_server_stop: accepts connections, reads requests,
 * runs handlers, writes replies. Several threads may run it at once; each
 * connection is served by one thread at a time. Returns 0 after a stop, or a
 * negative error. Thread-safe.
 */
DML_API int dml_rpc_server_run(dml_rpc_server *s);

/*
 * One step for a host's own event loop: waits up to `timeout` (0 = not at
 * all, DML_INFINITE = until there is work; a server has no default wait,
 * so DML_DEFAULT is DML_EINVAL) for activity, handles what is ready and
 * returns the number of events handled (>= 0), DML_ESTOPPED after a stop,
 * or a negative error. Thread-safe, like dml_rpc_server_run.
 */
DML_API int dml_rpc_server_poll(dml_rpc_server *s, dml_duration timeout);

/* A file descriptor that polls readable when dml_rpc_server_poll has work
 * (the epoll descriptor of the epoll backend). Owned by the server.
 * DML_ENOTFOUND with the poll() backend, which has no single descriptor:
 * use dml_rpc_server_pollfds, which works with both. Thread-safe. */
DML_API int dml_rpc_server_fd(dml_rpc_server *s);

struct pollfd;

/* The descriptors (with their events) a host's own poll() should watch to
 * know when dml_rpc_server_poll has work: writes up to `cap` of them into
 * fds and returns how many there are (>= 1; more than cap: call again
 * with room for them), or a negative error. The set changes as
 * connections come and go (with the poll() backend it is the listeners,
 * the connections waiting for input or output and a wake-up descriptor;
 * with epoll, one descriptor): take it anew before each poll(). The host
 * owns fds; the descriptors stay the server's. Thread-safe. */
DML_API int dml_rpc_server_pollfds(dml_rpc_server *s, struct pollfd *fds, size_t cap);

/* How long a host's own poll() may wait before it must call
 * dml_rpc_server_poll even with nothing to read: the time until the
 * server's earliest timer (a connection's frame, write or idle timeout, a
 * tick, the end of the listeners' rest after running out of descriptors),
 * into *ms: 0 if one is due now, DML_INFINITE if there is none. The
 * server has no polling tick: between its timers it needs no call at all.
 * Like libuv's uv_backend_timeout. Thread-safe. */
DML_API int dml_rpc_server_next_timeout(dml_rpc_server *s, dml_duration *ms);

#define DML_RPC_LATENCY_BUCKETS 32

/* Counters of a server, or of one of its methods (dml_rpc_server_stats),
 * since the library never prints. Each counter is exact; a snapshot of
 * several taken while calls run need not be consistent. May grow at its
 * end (docs/abi.md). */
typedef struct dml_rpc_stats {
	uint64_t calls;     /* requests answered (a deferred one when its reply
	                       is sent); the server's also counts unknown
	                       methods and refused frame versions */
	uint64_t errors;    /* ... with an error status: the handler's error,
	                       bad arguments, no such method, reply too big */
	uint64_t bytes_in;  /* request frames, headers included */
	uint64_t bytes_out; /* reply frames, headers included */
	uint64_t latency[DML_RPC_LATENCY_BUCKETS]; /* calls by the time from
	                       taking the request to queueing its reply:
	                       [0] under 1 us, [i] 2^(i-1) us to 2^i - 1 us,
	                       the last one also everything longer */
	/* the server's only (0 for a method): */
	uint64_t accepted;  /* connections accepted */
	uint64_t closed;    /* ... closed, for any reason (events say which) */
	uint64_t shed;      /* connections refused at max_conns */
	uint64_t open;      /* open now: accepted - closed */
	uint64_t buffered_in;  /* bytes of large frames being read, now ... */
	uint64_t buffered_out; /* ... and of unsent replies (max_buffered) */
	uint64_t stalled;   /* connections waiting for max_buffered now */
} dml_rpc_stats;

/* The counters of the server (method NULL) or of its method `method` into
 * *out, which the caller owns. 0, DML_ENOTFOUND (no such method),
 * DML_EINVAL, DML_EVERSION. Thread-safe, and cheap: relaxed atomic loads,
 * no lock. */
DML_API int dml_rpc_server_stats_abi(dml_rpc_stats *out, dml_rpc_server *s,
                                     const char *method, int abi);
#define dml_rpc_server_stats(out, s, method) \
	dml_rpc_server_stats_abi(out, s, method, DML_ABI)

/* Stops the server: every thread in dml_rpc_server_run returns, every later
 * or current dml_rpc_server_poll returns DML_ESTOPPED. Handlers already
 * running complete. Connections stay open until dml_rpc_server_free (their
 * pending calls then fail with DML_ECONNLOST). Thread-safe, async-signal-
 * safe (one write to a wake-up descriptor), idempotent. */
DML_API void dml_rpc_server_stop(dml_rpc_server *s);

/* Drains the server, as a rolling restart needs: closes its listeners at
 * once (new connections are refused, and the port is free for a new
 * server), then closes each connection as soon as it is quiet (every
 * request read from it answered and written, no deferred reply owed, no
 * frame half received), so the calls in flight finish and idle clients
 * see DML_ECONNLOST (with opts.reconnect, their next call dials the new
 * server). When no connection is left, or `timeout` has passed (those
 * left are then closed, their pending calls failing), the server stops as
 * by dml_rpc_server_stop: dml_rpc_server_run returns 0. Does not wait
 * itself: the threads that run or poll the server do the work, so keep
 * them running (dml_rpc_server_stats says how many connections are open).
 * timeout: 0 closes at once what is not quiet; DML_INFINITE waits for
 * every connection. Requests a peer sends meanwhile are still served; a
 * connection kept busy closes at the deadline. A second call may bring the
 * deadline forward, never back. 0 or DML_EINVAL. Thread-safe. */
DML_API int dml_rpc_server_drain(dml_rpc_server *s, dml_duration timeout);

/* Closes every connection and listener and frees the server. No thread may
 * be running or polling it. NULL is ignored. */
DML_API void dml_rpc_server_free(dml_rpc_server *s);

/* Calls fn(arg) from a thread running or polling the server about every
 * `period` ms (1 ms .. 1 h), one call at a time: housekeeping such as a
 * host's own timeouts (the parameter store uses it to drop dead workers).
 * With the server driven through dml_rpc_server_fd or _pollfds, ticks run only when
 * the host calls dml_rpc_server_poll. Up to 8 ticks (then DML_EBUSY).
 * Not thread-safe: call before the server runs. */
DML_API int dml_rpc_server_tick(dml_rpc_server *s, dml_duration period,
                                void (*fn)(void *arg), void *arg);

/* Sets the message sent with a handler's error and returns DML_EHANDLER,
 * so a handler can `return dml_rpc_ctx_errorf(ctx, "...")`. The message is
 * truncated to DML_RPC_ERRMSG_MAX - 1 bytes; the client escapes it. Call
 * only from the handler, with its ctx. */
DML_API int dml_rpc_ctx_errorf(dml_rpc_ctx *ctx, const char *fmt, ...)
	DML_PRINTF(2, 3);

/* A number identifying the connection a request came in on, unique for the
 * server's lifetime. */
DML_API uint64_t dml_rpc_ctx_conn(const dml_rpc_ctx *ctx);

/* Writes the address of the peer the request came from into buf (cap
 * bytes, NUL-terminated), in the form dml_rpc_server_listen takes:
 * "127.0.0.1:43210", "[::1]:43210", or "unix:" for a Unix-domain peer
 * (which has no name). DML_ETOOBIG if it does not fit (buf then holds ""),
 * DML_ECONNLOST if the peer is gone. 64 bytes always suffice. Call only
 * from the handler, with its ctx (or from the thread that still holds it
 * before dml_rpc_deferred_new). Thread-safe as the handler is. */
DML_API int dml_rpc_ctx_peer(const dml_rpc_ctx *ctx, char *buf, size_t cap);

/* 0.4: the identity of the connection the request came on (see
 * dml_rpc_auth), and in *auth (may be NULL) how it was established. The
 * string is valid until the handler returns; copy it to keep it. Call only
 * from the handler, with its ctx. Never NULL. */
DML_API const char *dml_rpc_ctx_identity(const dml_rpc_ctx *ctx, dml_rpc_auth *auth);

/*
 * Deferred replies, for a handler that cannot answer yet (a long poll, a
 * barrier): the handler calls dml_rpc_deferred_new, returns (its return
 * value and reply struct are then ignored), and the server goes on serving
 * this and every other connection. Later any thread, e.g. another handler,
 * sends the reply with dml_rpc_deferred_reply. Replies on one connection
 * may thus come out of request order; clients match them by sequence
 * number.
 */
typedef struct dml_rpc_deferred dml_rpc_deferred;

/* Takes over the reply of the current request of `ctx`. *out is owned by
 * the caller until passed to dml_rpc_deferred_reply, exactly once (also
 * after the server is freed: the reply is then dropped). DML_EINVAL
 * (already deferred), DML_EBUSY (max_deferred owed on this connection:
 * return an error instead), DML_ENOMEM. Call only from the handler, with
 * its ctx. */
DML_API int dml_rpc_deferred_new(dml_rpc_deferred **out, dml_rpc_ctx *ctx);

/* Sends the deferred reply and frees `d`: with err == 0, `reply` (a struct
 * of the method's reply type, only read during the call); else an error
 * reply carrying `msg` (NULL = dml_strerror(err)), as a handler's error.
 * Returns 0, or DML_ECLOSED when the connection or the server has gone
 * (the reply is dropped), DML_ENOMEM. Thread-safe: any thread, also inside
 * a handler, also while the server is being freed. Never runs a handler
 * (what the socket does not take at once is left to the server's threads),
 * so it may be called holding locks that handlers take. */
DML_API int dml_rpc_deferred_reply(dml_rpc_deferred *d, int err,
                                   const void *reply, const char *msg);

/* ------------------------------------------------------------------ */
/* Client                                                             */
/* ------------------------------------------------------------------ */

typedef struct dml_rpc_client dml_rpc_client;
typedef struct dml_rpc_pending dml_rpc_pending;

/* Client options; zero-initialised means defaults (each field's 0 is the
 * DML_RPC_DEFAULT_* of its name). May grow at its end (docs/abi.md). */
typedef struct dml_rpc_client_opts {
	dml_duration dial_timeout; /* 0 = 10 s; DML_INFINITE = no limit */
	dml_duration call_timeout; /* what a call's DML_DEFAULT means;
	                              0 = 60 s; DML_INFINITE = no limit */
	size_t max_frame;          /* largest request sent or reply accepted;
	                              0 = 64 MiB; 64 B .. 4 GiB - 1 */
	dml_codec codec;
	int reconnect;             /* non-zero: after the connection is lost,
	                              a new call dials again (see below) */
	dml_duration backoff_min;  /* first wait between dial attempts (0 = 50 ms) */
	dml_duration backoff_max;  /* longest wait, doubling up to it (0 = 5 s) */
	int max_in_flight;         /* calls pending at once; beyond it
	                              dml_rpc_start returns DML_EBUSY (0 = 65536) */
	int spin_us;               /* a thread waiting for replies polls the
	                              socket for up to this many microseconds
	                              before it sleeps (0 = never; at most
	                              10000): less latency for more CPU, when
	                              client and server are on different cores */
	/* 0.4: dead peers, as in dml_rpc_server_opts: */
	dml_duration keepalive;
	dml_duration keepalive_interval;
	int keepalive_count;
	dml_duration user_timeout;
	dml_duration heartbeat;    /* while a call waits and nothing has come
	                              from the server for this long, send a
	                              heartbeat (RPC.Ping, answered by any
	                              server, also one without it); 0 = none */
	dml_duration heartbeat_timeout; /* ... and nothing for this long: the
	                              connection is lost (DML_ECONNLOST), as for
	                              a server stopped whose kernel still
	                              answers; 0 = 4 x heartbeat. A server's
	                              handler that runs longer than this on the
	                              connection delays the heartbeat's answer:
	                              make it longer than the slowest handler */
	const struct dml_tls *tls; /* 0.4: a DML_TLS_CLIENT configuration
	                              (distml/tls.h): the dial, and every
	                              reconnect, completes a TLS handshake and
	                              verifies the server within dial_timeout
	                              (DML_ETLS says why not); it must outlive
	                              the client; NULL = plain */
	const char *token;         /* 0.4: a token secret (NUL-terminated) the
	                              dial, and every reconnect, presents to the
	                              server before any call; one the server
	                              does not know fails the dial with
	                              DML_EAUTH. Copied. NULL = none */
} dml_rpc_client_opts;

/* Connects to a server at `addr` (as dml_rpc_server_listen takes it).
 * `opts` may be NULL (all defaults) and is only read during the call.
 * On success *out owns the client (free with dml_rpc_free); on failure
 * *out is untouched. DML_EADDR, DML_ECONNREFUSED, DML_ETIMEDOUT,
 * DML_ENOMEM, DML_ESYS, DML_EINVAL (bad options), DML_EVERSION (DML_ABI).
 * Thread-safe.
 *
 * When the connection is lost, every pending call fails with DML_ECONNLOST,
 * and so does every new call: at once, never hanging. With opts.reconnect,
 * a new call (dml_rpc_start / dml_rpc_call) first dials the same address again,
 * within the call's deadline and at most once per backoff period (which
 * doubles from backoff_min to backoff_max while dialling fails, and resets
 * on success); between attempts calls fail fast with DML_ECONNLOST. There
 * is no background thread: reconnecting happens in the calling thread.
 * Calls are not resent automatically: whether a lost call ran is unknown,
 * so only the caller can tell whether it may be repeated. */
DML_API int dml_rpc_dial_abi(dml_rpc_client **out, const char *addr,
                             const dml_rpc_client_opts *opts, int abi);
#define dml_rpc_dial(...) dml_rpc_dial_abi(__VA_ARGS__, DML_ABI)

/*
 * Calls `m` and waits for its reply, at most `timeout` (DML_DEFAULT: the
 * client's call_timeout; DML_INFINITE; 0: sends nothing and returns
 * DML_ETIMEDOUT). `args` is only read. Reply fields of variable length must
 * have caller buffers (`data` and `cap` set; see dml_str), else DML_EINVAL;
 * large arrays are received straight into them. On DML_EHANDLER or
 * DML_ENOMETHOD the peer's message is the error detail (dml_error_detail).
 * A timeout while waiting for the reply leaves the connection usable (the
 * late reply is discarded); a timeout while the request is still being
 * written (the peer does not read) breaks the connection, since a partial
 * frame is on the stream: every call then fails with DML_ECONNLOST.
 * A server's "bad arguments" reply comes back as DML_EPROTO with a message.
 * Thread-safe: many threads may call at once over one client.
 */
DML_API int dml_rpc_call(dml_rpc_client *c, const dml_rpc_method *m,
                         const void *args, void *reply, dml_duration timeout);

/*
 * Starts a call without waiting and stores its handle in *out (Go's
 * client.Go). The request is queued and written no later than the next
 * dml_rpc_pending_wait, dml_rpc_call or dml_rpc_flush on this client
 * (requests carrying an array, string or blob of 64 KiB or more are
 * written, without copying it, before dml_rpc_start returns), so many calls
 * started in a row share writes. `args` is only read, and not after
 * dml_rpc_start returns. `reply` must stay valid until dml_rpc_pending_wait
 * returns or the call is freed; views in it (fields with data == NULL)
 * point into the handle and live until dml_rpc_pending_free. The deadline,
 * `timeout` from now (DML_DEFAULT: the client's call_timeout), bounds
 * dml_rpc_pending_wait; a timeout of 0 starts nothing and returns
 * DML_ETIMEDOUT. On failure *out is untouched. Thread-safe.
 */
DML_API int dml_rpc_start(dml_rpc_pending **out, dml_rpc_client *c,
                          const dml_rpc_method *m, const void *args,
                          void *reply, dml_duration timeout);

/* Writes every queued request now, within `timeout` (DML_DEFAULT: the
 * client's call_timeout; if it passes with a request half written, the
 * connection breaks as for dml_rpc_call; 0 writes nothing and gives
 * DML_ETIMEDOUT when requests are queued). Thread-safe. */
DML_API int dml_rpc_flush(dml_rpc_client *c, dml_duration timeout);

/* Writes queued requests (unless this call is finished or expired), then
 * waits for a started call until its reply arrives or its deadline passes,
 * and returns its result (0 or an error; a passed deadline abandons the
 * call: DML_ETIMEDOUT). Calling it again returns the same result, and sets
 * the thread's error detail to the call's message again. Thread-safe for
 * distinct calls; one thread per call handle. */
DML_API int dml_rpc_pending_wait(dml_rpc_pending *call);

/* The error message of a finished call (the peer's message, escaped, or
 * what went wrong), or "" if none: the same text dml_rpc_pending_wait left
 * as the error detail, kept with the call for later or for another thread.
 * Owned by the call handle, valid until dml_rpc_pending_free. */
DML_API const char *dml_rpc_pending_errmsg(const dml_rpc_pending *call);

/* Releases a call handle; a call still pending is abandoned (its reply is
 * discarded and `reply` is not written afterwards). NULL is ignored. */
DML_API void dml_rpc_pending_free(dml_rpc_pending *call);

/* Shuts the connection down: every pending call fails with DML_ECLOSED, and
 * so does every later call. The handle stays valid. Thread-safe, idempotent. */
DML_API void dml_rpc_close(dml_rpc_client *c);

/* Closes (as above) and frees the client. Every call handle must have been
 * freed, and no other thread may use the client. NULL is ignored. */
DML_API void dml_rpc_free(dml_rpc_client *c);

/*
 * Asks the server whether it serves method `name`, with the built-in
 * RPC.Hello call (docs/protocol.md, section 11): 1 if it does, 0 if not, or
 * a negative error. A server older than protocol negotiation (libdistml
 * 0.1) answers DML_EVERSION. For a client that needs a method newer
 * servers added, before it relies on it. `timeout` as for dml_rpc_call.
 * Thread-safe.
 */
DML_API int dml_rpc_has_method(dml_rpc_client *c, const char *name,
                               dml_duration timeout);

/* ------------------------------------------------------------------ */
/* A host's event loop (0.4): one thread drives many clients           */
/* ------------------------------------------------------------------ */
/*
 * A host that runs its own poll() loop (and no thread per connection)
 * drives a client with these three calls, as it drives a server with
 * dml_rpc_server_pollfds / dml_rpc_server_next_timeout /
 * dml_rpc_server_poll: it polls the descriptor dml_rpc_client_pollfds
 * gives, no longer than dml_rpc_client_next_timeout says, then calls
 * dml_rpc_client_poll(c, 0), which never waits. Calls are started with
 * dml_rpc_start as usual, and learnt finished with dml_rpc_pending_done or
 * a callback (dml_rpc_pending_on_done); dml_rpc_pending_wait on a finished
 * call returns its result at once.
 *
 * From the first dml_rpc_client_poll or dml_rpc_client_pollfds on, the
 * client is the loop's: dml_rpc_start only queues a request (its arrays
 * are copied, however large) and the loop writes it as the socket takes
 * it, so no call waits for the network. Other threads may still use the
 * client (dml_rpc_call, dml_rpc_pending_wait block as before); a blocking
 * waiter may then read replies in the loop's place, and the callbacks of
 * calls it finished run at the loop's next step.
 */

/* The descriptor to poll and its events (POLLIN, and POLLOUT while
 * requests wait for room or the stream needs it), in fds[0]: returns 1,
 * or 0 when the connection is lost or closed (dml_rpc_client_poll then
 * fails what was pending and returns the error). The descriptor changes
 * when the client reconnects: ask again before every poll(). DML_EINVAL
 * if cap is 0. Thread-safe. */
DML_API int dml_rpc_client_pollfds(dml_rpc_client *c, struct pollfd *fds, size_t cap);

/* How long the host may wait before the next dml_rpc_client_poll is due
 * (the earliest deadline of a pending call, a heartbeat, a callback to
 * run), in *ms: DML_INFINITE when nothing is timing, 0 when it is due now.
 * 0 or DML_EINVAL. Thread-safe. */
DML_API int dml_rpc_client_next_timeout(dml_rpc_client *c, dml_duration *ms);

/* Processes what is ready: writes queued requests as far as the socket
 * takes them, reads and delivers the replies that have come (LOOP_READS
 * reads at most, so one busy client cannot starve the loop), fails the
 * calls whose deadline passed (DML_ETIMEDOUT), then runs the callbacks of
 * finished calls, in this thread. Waits up to `timeout` for the socket
 * first (0: not at all; DML_INFINITE; never past the next deadline).
 * Returns the number of calls that finished (>= 0), or, when none did and
 * the connection is lost or closed, that error (DML_ECONNLOST,
 * DML_ECLOSED, with a detail; pending calls have failed with it).
 * DML_EBUSY from inside a callback. One thread at a time. */
DML_API int dml_rpc_client_poll(dml_rpc_client *c, dml_duration timeout);

/* 1 if the call has finished (dml_rpc_pending_wait returns at once), 0 if
 * not; DML_EINVAL for NULL. Never waits. Thread-safe. */
DML_API int dml_rpc_pending_done(const dml_rpc_pending *call);

/* A finished call's callback: result as dml_rpc_pending_wait returns it
 * (and dml_rpc_pending_errmsg has its message). It runs in the thread of
 * dml_rpc_client_poll, without the client's locks: it may start calls and
 * free this handle (or keep it), but not call dml_rpc_client_poll. */
typedef void (*dml_rpc_done_fn)(dml_rpc_pending *call, int result, void *user);

/* Sets the callback that dml_rpc_client_poll runs once the call has
 * finished (at its next step if it has already); NULL removes it. 0 or
 * DML_EINVAL. One thread per call handle. */
DML_API int dml_rpc_pending_on_done(dml_rpc_pending *call, dml_rpc_done_fn fn,
                                    void *user);

/* ------------------------------------------------------------------ */
/* Deprecated in 0.2 (kept for one release; docs/api.md)              */
/* ------------------------------------------------------------------ */
#ifndef DML_NO_DEPRECATED
DML_DEPRECATED("dml_rpc_ctx_errorf")
DML_API int dml_rpc_errorf(dml_rpc_ctx *ctx, const char *fmt, ...)
	DML_PRINTF(2, 3);
DML_DEPRECATED("dml_rpc_deferred_new (out first)")
DML_API int dml_rpc_defer(dml_rpc_ctx *ctx, dml_rpc_deferred **out);
DML_DEPRECATED("dml_rpc_start (out first)")
DML_API int dml_rpc_go(dml_rpc_client *c, const dml_rpc_method *m,
                       const void *args, void *reply, dml_duration timeout,
                       dml_rpc_pending **out);
DML_DEPRECATED("dml_rpc_pending_wait")
DML_API int dml_rpc_wait(dml_rpc_pending *call);
/* The last message seen by a dml_rpc_call on this client, whichever thread
 * made it: use dml_error_detail, which is the calling thread's. */
DML_DEPRECATED("dml_error_detail")
DML_API void dml_rpc_client_errmsg(dml_rpc_client *c, char *buf, size_t cap);
DML_DEPRECATED("dml_rpc_close")
DML_API void dml_rpc_client_close(dml_rpc_client *c);
DML_DEPRECATED("dml_rpc_free")
DML_API void dml_rpc_client_free(dml_rpc_client *c);
#endif

#ifdef __cplusplus
}
#endif
#endif /* DISTML_RPC_H */
