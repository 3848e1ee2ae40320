/*
 * distml/ps.h - the parameter store: a float32 vector that many threads,
 * processes or machines update at once, exactly.
 * The API rules (names, ownership, durations, errors, ABI): docs/api.md.
 *
 * A store is local (dml_ps_new) or remote (dml_ps_connect: a handle over
 * RPC clients to one or more servers that serve local stores with
 * dml_ps_serve). Both answer the same dml_ps_* calls, so code that trains
 * against a store does not change when the store moves to other machines.
 *
 * Local stores are guarded by striped locks: the vector is cut into
 * `stripes` contiguous ranges, each with its own mutex. What a concurrent
 * reader sees: a pull holds every stripe of its range at once, so it sees a
 * snapshot in which each update is applied whole or not at all, except a
 * dense update (or push) racing with it: those walk the stripes one at a
 * time, so the pull may see one in some stripes and not yet in others (use
 * stripes = 1 to make dense updates atomic too). A sparse update holds all
 * the stripes it touches at once. No update is ever lost or applied twice:
 * T threads x M updates leave exactly the sum.
 *
 * Part of libdistml. Included by <distml.h>; include that instead.
 */
#ifndef DISTML_PS_H
#define DISTML_PS_H

#include "common.h"
#include "optim.h"
#include "rpc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dml_ps dml_ps;

/* Staleness bound meaning "no bound" (asynchronous). */
#define DML_PS_ASYNC (-1)

/* The defaults of the options below (what 0 means in each). */
#define DML_PS_DEFAULT_WORKER_TIMEOUT DML_INFINITE /* never drop a worker */
#define DML_PS_DEFAULT_CLOCK_TIMEOUT DML_INFINITE  /* dml_ps_advance's DML_DEFAULT */
#define DML_PS_DEFAULT_TIMEOUT ((dml_duration)30000) /* remote: per call, 30 s */
#define DML_PS_DEFAULT_RETRIES 1                   /* remote: resends of a lost push */
#define DML_PS_DEFAULT_RETRY_TIMEOUT ((dml_duration)0) /* remote: no resends beyond */
#define DML_PS_NO_RETRIES (-1)                     /* retries: none at all */
/* Limits. */
#define DML_PS_MAX_DIM ((size_t)1 << 40)  /* parameters in one local store */
#define DML_PS_MAX_WORKERS 1000000        /* workers with clocks */
#define DML_PS_MAX_SHARDS 64              /* servers behind one remote handle */

/* The initial value of a keyed row: zeros, or seeded random values that are
 * a function of (init_seed, key, element) only, so that every shard, every
 * pull of an absent key and every restart agree (embeddings). */
typedef enum dml_ps_init {
	DML_PS_INIT_ZERO = 0,
	DML_PS_INIT_UNIFORM = 1, /* uniform in [-init_scale, init_scale) */
	DML_PS_INIT_NORMAL = 2,  /* normal, mean 0, deviation init_scale */
} dml_ps_init;

#define DML_PS_DEFAULT_INIT_SCALE 0.01f
#define DML_PS_DEFAULT_KEYED_STRIPES 64 /* keyed: lock stripes when 0 */
#define DML_PS_MAX_WIDTH ((size_t)1 << 20) /* floats per keyed row */

/* Options of a local store; zero-initialised means defaults. May grow at
 * its end (docs/abi.md). */
typedef struct dml_ps_opts {
	const float *init;    /* dim initial values (copied); NULL = zeros */
	size_t stripes;       /* lock stripes (0 = one per 64 Ki parameters,
	                         at most 256); clipped to dim and 4096 */
	dml_optim_opts optim; /* the rule dml_ps_push applies (default SGD) */
	int workers;          /* workers with clocks (0 = no clocks) */
	int staleness;        /* clock bound s: 0 = bulk-synchronous, s > 0 =
	                         bounded staleness, DML_PS_ASYNC = none */
	dml_duration worker_timeout; /* a worker whose clock has not moved for
	                         this long while others wait for it is dropped
	                         from the bound (it rejoins at its next clock
	                         call); 0 = DML_INFINITE: never */
	dml_duration clock_timeout; /* what dml_ps_advance's DML_DEFAULT means
	                         (0 = DML_INFINITE) */
	/* Keyed stores only (dml_ps_new_keyed; a dense store refuses them): */
	uint64_t max_rows;    /* most rows the store will create (0 = no
	                         bound but memory); a push that would create
	                         more is DML_EFULL and changes nothing */
	dml_ps_init row_init; /* what an absent row reads as, and starts
	                         from when a push creates it (0 = zeros) */
	float init_scale;     /* UNIFORM: values in [-scale, scale); NORMAL:
	                         the standard deviation (0 = 0.01) */
	uint64_t init_seed;   /* UNIFORM, NORMAL: the seed */
	/* 0.4: checkpoints (dml_ps_save, dml_ps_load; docs/security.md): */
	const void *ckpt_key; /* an HMAC-SHA256 key (copied): saves are signed
	                         and loads refuse a file without this key's
	                         MAC (DML_EAUTH), so a planted or forged
	                         checkpoint is never loaded; needs OpenSSL
	                         (DML_ENOTSUP); NULL = the CRC only */
	size_t ckpt_key_len;  /* its length, 1 .. 1024 bytes */
	unsigned ckpt_mode;   /* permissions of new checkpoint files (0 = 0600,
	                         owner only; the umask still applies) */
} dml_ps_opts;

/* Creates a local store of `dim` (1 .. DML_PS_MAX_DIM) parameters. `opts`
 * may be NULL and is only read during the call (init is copied). *out owns
 * the store (dml_ps_free); on failure *out is untouched. DML_EINVAL (the
 * detail names the option), DML_ENOMEM, DML_EVERSION (DML_ABI).
 * Thread-safe. */
DML_API int dml_ps_new_abi(dml_ps **out, size_t dim, const dml_ps_opts *opts,
                           int abi);
#define dml_ps_new(...) dml_ps_new_abi(__VA_ARGS__, DML_ABI)

/* The number of parameters of a dense store (0 for a keyed one).
 * Thread-safe. */
DML_API size_t dml_ps_dim(const dml_ps *ps);

/*
 * Keyed stores. The parameters are rows of `width` floats (1 ..
 * DML_PS_MAX_WIDTH), each addressed by a 64-bit key (any value: the whole
 * 2^64 key space works). A row exists once a push, update or assign has
 * named its key; before that it reads as its initial value (opts.row_init)
 * and takes no memory, so memory grows with the keys touched, not with the
 * key space. Each row keeps its own optimizer state (opts.optim), and a
 * push steps only the rows it names (docs/optim.md: lazy updates).
 * opts.init must be NULL (dense only); opts.stripes 0 means
 * DML_PS_DEFAULT_KEYED_STRIPES. The dense calls (dml_ps_push, _pull, ...)
 * are DML_EINVAL on a keyed store, and the row calls below on a dense one.
 * How a data set's columns become keys: dml_ps_key (train.h uses it).
 * *out owns the store (dml_ps_free); on failure *out is untouched.
 * DML_EINVAL, DML_ENOMEM, DML_EVERSION. Thread-safe.
 */
DML_API int dml_ps_new_keyed_abi(dml_ps **out, size_t width,
                                 const dml_ps_opts *opts, int abi);
#define dml_ps_new_keyed(...) dml_ps_new_keyed_abi(__VA_ARGS__, DML_ABI)

/* Floats per row of a keyed store (0 for a dense one). Thread-safe. */
DML_API size_t dml_ps_width(const dml_ps *ps);

/* The key of column `col` of a data set: col itself when seed is 0, else a
 * hash of (seed, col) (hashed features: any 64-bit key, the same on every
 * machine and in every version of the library). Keys from
 * DML_PS_KEY_RESERVED up are never returned: models keep their own rows
 * (a bias) there. Thread-safe. */
#define DML_PS_KEY_RESERVED (UINT64_MAX - 255)
DML_API uint64_t dml_ps_key(uint64_t col, uint64_t seed);

/* Copies the rows of keys[0..n) into out (n * width floats, caller's; row
 * i at out + i * width). An absent key reads as its initial value and is
 * not created. Repeated keys are fine. Each row is read whole; rows in
 * one stripe are seen at one moment. Thread-safe. */
DML_API int dml_ps_pull_rows(dml_ps *ps, const uint64_t *keys, size_t n,
                             float *out);

/* One optimizer step (opts.optim) on the rows of keys[0..n) with their
 * gradients grad (n * width floats, only read), creating absent rows from
 * their initial value first. Counts as one step (Adam's t, the schedule),
 * even with n 0; a repeated key is stepped once per occurrence, in order.
 * A NaN or infinity in grad is DML_ENONFINITE; more rows than max_rows
 * allows is DML_EFULL; both change nothing. Readers see a push whole.
 * Thread-safe. */
DML_API int dml_ps_push_rows(dml_ps *ps, const uint64_t *keys, size_t n,
                             const float *grad);

/* Adds delta (n * width floats) to the rows of keys, creating them as
 * dml_ps_push_rows does (no optimizer step). Thread-safe. */
DML_API int dml_ps_update_rows(dml_ps *ps, const uint64_t *keys, size_t n,
                               const float *delta);

/* Sets the rows of keys to v (n * width floats), creating them; their
 * optimizer state is kept (zero for new rows). Thread-safe. */
DML_API int dml_ps_assign_rows(dml_ps *ps, const uint64_t *keys, size_t n,
                               const float *v);

/* The number of rows a keyed store holds (for a remote handle: the sum
 * over its shards). Thread-safe. */
DML_API int dml_ps_rows(dml_ps *ps, uint64_t *count);

/* Adds delta (dim floats, only read) to the parameters. Thread-safe.
 * Remote: DML_ECONNLOST, DML_ETIMEDOUT, ... from the RPC layer. */
DML_API int dml_ps_update(dml_ps *ps, const float *delta);

/* Adds val[i] to parameter idx[i] for i < nnz (repeats add up). An index
 * >= dim gives DML_EINVAL and changes nothing. Thread-safe. */
DML_API int dml_ps_update_sparse(dml_ps *ps, const uint32_t *idx,
                                 const float *val, size_t nnz);

/* Applies the store's optimizer to a gradient (dim floats, only read): one
 * step of opts.optim (for a remote store, of each server's optimizer).
 * Thread-safe. */
DML_API int dml_ps_push(dml_ps *ps, const float *grad);

/* Sparse gradient: one optimizer step on the coordinates given (see
 * dml_optim_step_sparse). Index >= dim: DML_EINVAL, nothing changes. */
DML_API int dml_ps_push_sparse(dml_ps *ps, const uint32_t *idx,
                               const float *val, size_t nnz);

/* Copies the parameters into out (dim floats, caller's). Thread-safe. */
DML_API int dml_ps_pull(dml_ps *ps, float *out);

/* Copies parameters [off, off + n) into out (n floats). DML_EINVAL when
 * the range is outside [0, dim). Thread-safe. */
DML_API int dml_ps_pull_range(dml_ps *ps, size_t off, size_t n, float *out);

/* Overwrites the parameters with v (dim floats); the optimizer state is
 * kept. Thread-safe. */
DML_API int dml_ps_assign(dml_ps *ps, const float *v);

/* The number of updates and pushes applied so far (for a remote store, by
 * the first server, which every call reaches). Thread-safe. */
DML_API int dml_ps_updates(dml_ps *ps, uint64_t *count);

/* What a clock call reports. The library writes only the fields of the
 * caller's layout (docs/abi.md). */
typedef struct dml_ps_clock_info {
	int64_t clock;  /* the worker's clock after advancing */
	int64_t min;    /* the slowest worker's clock when the call returned */
	int waited;     /* 1 if the call had to wait for slower workers */
} dml_ps_clock_info;

/*
 * Clocks, for the consistency models. Worker w (0 <= w < workers) calls
 * this at the end of each of its iterations: its clock advances by one,
 * then the call waits until the slowest worker's clock is at least
 * (w's clock - staleness): staleness 0 is bulk-synchronous (a barrier),
 * s > 0 lets a worker run at most s clocks ahead, DML_PS_ASYNC never waits.
 * `info` (may be NULL) is filled on success.
 *
 * `timeout`: DML_DEFAULT is the store's clock_timeout (the local store's
 * dml_ps_opts or the remote handle's dml_ps_remote_opts; both default to
 * DML_INFINITE); a positive value bounds the wait: DML_ETIMEDOUT then
 * leaves the clock advanced. 0 does not wait: a local store advances the
 * clock only if the call need not wait, and otherwise returns DML_ETIMEDOUT
 * with nothing changed; a remote one sends nothing and returns
 * DML_ETIMEDOUT.
 *
 * DML_EINVAL if the store has no clocks or w is out of range. Remote: the
 * first server keeps the clocks; the wait holds no server thread; a call
 * that times out leaves its clock advanced on the server.
 * Thread-safe.
 */
DML_API int dml_ps_advance_abi(dml_ps *ps, int worker, dml_ps_clock_info *info,
                               dml_duration timeout, int abi);
#define dml_ps_advance(...) dml_ps_advance_abi(__VA_ARGS__, DML_ABI)

/* The store's clock settings: the number of workers with clocks (0: none)
 * and the staleness bound (DML_PS_ASYNC: none); either pointer may be
 * NULL. A remote handle reports what its first server said when it
 * connected. Thread-safe. */
DML_API int dml_ps_clocks(dml_ps *ps, int *workers, int *staleness);

/* The clock of `worker` and the slowest clock. Thread-safe. */
DML_API int dml_ps_clock_get(dml_ps *ps, int worker, int64_t *clock,
                             int64_t *min_clock);

/*
 * Checkpoints (local stores only; DML_EINVAL for a remote handle: save on
 * the server's host). dml_ps_save writes the parameters, the optimizer
 * rule, its state and step count to `path`: zlib-compressed, CRC-32
 * checked, written to a temporary file, fsynced and renamed, so `path`
 * always holds the old or the new checkpoint (see docs/checkpoint.md).
 * Updates may run meanwhile; each stripe is copied whole. DML_EIO.
 *
 * dml_ps_load replaces the store's parameters and optimizer state and step
 * count with the checkpoint's, or changes nothing on error: DML_EDIM (other
 * dimension), DML_ETYPE (other optimizer rule), DML_ETRUNC (truncated),
 * DML_ECORRUPT (checksum), DML_EFORMAT, DML_EVERSION, DML_EIO.
 * Both thread-safe.
 */
DML_API int dml_ps_save(dml_ps *ps, const char *path);
DML_API int dml_ps_load(dml_ps *ps, const char *path);

/*
 * Serving. dml_ps_serve registers the store's methods (named "PS.*", see
 * docs/ps.md) on a server the host runs; the store must outlive the
 * server (free the server first). Pushes carry a client id and sequence
 * number: a push retried after a lost reply is applied once. DML_EEXIST
 * (already registered), DML_EINVAL. Not thread-safe: call before the
 * server runs, like dml_rpc_server_register.
 */
DML_API int dml_ps_serve(dml_ps *ps, dml_rpc_server *server);

/* The defaults of dml_ps_serve_opts (what 0 means in each). */
#define DML_PS_DEFAULT_CLIENTS_PER_PEER 64
#define DML_PS_DEFAULT_SEQ_WINDOW ((uint64_t)1 << 20)
#define DML_PS_DEFAULT_WORKER_GRACE ((dml_duration)60000) /* 1 min */

/*
 * 0.4: who may do what to a served store (docs/security.md). Callers are
 * known by their identity (dml_rpc_ctx_identity: a verified client
 * certificate's subject, a token's name, or without credentials the
 * peer's IP address). Zero-initialised means defaults. May grow at its
 * end (docs/abi.md).
 */
typedef struct dml_ps_serve_opts {
	const char *const *writers; /* NULL-terminated: the identities that may
	                               change the store (push, assign, advance
	                               clocks) and read it; NULL = every
	                               identity not among the readers */
	const char *const *readers; /* NULL-terminated: identities that may only
	                               read (PS.Info, PS.Pull, PS.PullRows,
	                               PS.ClockGet, PS.Describe); with writers
	                               set, an identity in neither list may do
	                               nothing (DML_EPERM). NULL = none */
	int max_clients_per_peer;   /* exactly-once client ids one identity may
	                               hold (0 = 64); a new one beyond them
	                               replaces its own least recently used */
	uint64_t seq_window;        /* a push's sequence number may run at most
	                               this far ahead of its client's highest
	                               (0 = 2^20); beyond it: refused */
	dml_duration worker_grace;  /* a worker's clock is claimed by the
	                               identity whose PS.Clock call comes first;
	                               after the holder's connection closes, the
	                               slot stays its own for this long (0 = 1
	                               min; make it longer than the dead-peer
	                               bound), so a worker that reconnects gets
	                               it back; DML_INFINITE = for ever */
	const char *const *worker_ids; /* NULL, or one identity per worker
	                               (the store's `workers` of them): worker
	                               i's clock is worker_ids[i]'s alone, from
	                               the start (no first-come claim) */
	int compress;               /* the compression the store asks of the
	                               pushes (dml_ps_push) of remote handles:
	                               DML_PS_COMPRESS_*, 0 = none. Handles of
	                               0.4 and later follow it; the server
	                               takes every codec, and plain pushes */
	float topk;                 /* DML_PS_COMPRESS_TOPK: the fraction of a
	                               push's values sent (0 = 0.01; at most 1) */
	uint64_t topk_warmup;       /* DML_PS_COMPRESS_TOPK: over a handle's
	                               first this many pushes the fraction falls
	                               geometrically from 1 to topk (DGC's
	                               warm-up; an epoch's steps is a good
	                               choice); 0 = none */
} dml_ps_serve_opts;

/*
 * Lossy compression of pushes (docs/ps.md, "Compressed pushes"), chosen by
 * the store (dml_ps_serve_opts.compress) and done by each remote handle:
 *   FP16, BF16  each value as a 16-bit float, rounded to nearest (2 bytes);
 *   INT8        QSGD: levels -127..127 of each bucket of 512 values' largest
 *               magnitude, rounded at random so that the expected value is
 *               the value (1 byte, + 4 per bucket);
 *   TOPK        the `topk` fraction of largest magnitudes, with positions
 *               (8 bytes each), and error feedback: what a handle did not
 *               send is kept and added to its next push (Lin et al., Deep
 *               Gradient Compression).
 * Only pushes (optimizer steps) are compressed; updates, assigns and pulls
 * travel as float32.
 */
enum {
	DML_PS_COMPRESS_NONE = 0,
	DML_PS_COMPRESS_FP16 = 1,
	DML_PS_COMPRESS_BF16 = 2,
	DML_PS_COMPRESS_INT8 = 3,
	DML_PS_COMPRESS_TOPK = 4
};

/* dml_ps_serve with access rules: the lists are copied. As dml_ps_serve,
 * and DML_EINVAL (a bad option, the detail names it), DML_EEXIST (served
 * already), DML_EVERSION (DML_ABI). Not thread-safe: call before the
 * server runs. */
DML_API int dml_ps_serve_with_abi(dml_ps *ps, dml_rpc_server *server,
                                  const dml_ps_serve_opts *opts, int abi);
#define dml_ps_serve_with(...) dml_ps_serve_with_abi(__VA_ARGS__, DML_ABI)

/* Options of a remote handle; zero-initialised means defaults. May grow at
 * its end (docs/abi.md). */
typedef struct dml_ps_remote_opts {
	dml_duration timeout; /* per call (0 = 30 s; DML_INFINITE = none) */
	int retries;          /* resends of a push whose reply was lost (timed
	                         out or connection lost; 0 = 1,
	                         DML_PS_NO_RETRIES = none); the server applies
	                         a push once */
	dml_duration retry_timeout; /* beyond `retries`, keep resending a lost
	                         push for this long, waiting 10 ms doubling to
	                         1 s between attempts (0 = none beyond;
	                         DML_INFINITE = for ever): with clients dialled
	                         with `reconnect`, pushes ride out a server
	                         restart */
	dml_duration clock_timeout; /* what dml_ps_advance's DML_DEFAULT means
	                         (0 = DML_INFINITE) */
} dml_ps_remote_opts;

/*
 * A remote store over `n` (1 .. DML_PS_MAX_SHARDS) dialled clients, one
 * per server, in key order: server i holds the range [sum of the dims
 * before it, + its dim), as dml_shard_range cuts it (ps-lite's range
 * partition). A push or pull goes to every shard at once. The clients are
 * borrowed: they must outlive the handle; free the handle first. `opts`
 * may be NULL and is only read during the call. Asks each server for its
 * dimension: DML_ECONNLOST, DML_ETIMEDOUT, DML_ENOMETHOD (not a store),
 * and the detail names the shard. On failure *out is untouched.
 * Thread-safe.
 */
DML_API int dml_ps_connect_abi(dml_ps **out, dml_rpc_client *const *clients,
                               int n, const dml_ps_remote_opts *opts, int abi);
#define dml_ps_connect(...) dml_ps_connect_abi(__VA_ARGS__, DML_ABI)

/* Frees a store or handle (NULL is fine). No call may be running on it;
 * a served store must be freed after its server (calls still waiting in
 * its clocks then see their connection close: DML_ECONNLOST). */
DML_API void dml_ps_free(dml_ps *ps);

/* ------------------------------------------------------------------ */
/* Deprecated in 0.2 (kept for one release; docs/api.md)              */
/* ------------------------------------------------------------------ */
#ifndef DML_NO_DEPRECATED
/* dml_ps_advance with the info before the timeout. */
DML_DEPRECATED("dml_ps_advance (info, then timeout)")
DML_API int dml_ps_clock(dml_ps *ps, int worker, dml_duration timeout,
                         dml_ps_clock_info *info);
/* Shard i of n of dim parameters, with n before i; n > dim is DML_EINVAL. */
DML_DEPRECATED("dml_shard_range (i, then n)")
DML_API int dml_ps_shard_range(size_t dim, int n, int i, size_t *off,
                               size_t *len);
#endif

#ifdef __cplusplus
}
#endif
#endif /* DISTML_PS_H */
