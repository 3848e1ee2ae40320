/*
 * ps.h - internals of the parameter store shared by ps.c (local store),
 * ps_serve.c (its RPC methods) and ps_remote.c (the remote handle).
 * Not installed.
 */
#ifndef DISTML_PS_INTERNAL_H
#define DISTML_PS_INTERNAL_H

#include "ckpt.h"
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>

/* Called when a clock wait registered with dml__ps_clock_async ends:
 * err 0 (released; info filled) or DML_ECLOSED (the store is being freed).
 * Called without the store's locks held. */
typedef void (*dml__ps_wake_fn)(void *arg, int err,
                                const dml_ps_clock_info *info);

typedef struct dml__ps_waiter {
	int64_t need; /* released when the slowest clock reaches this */
	int64_t clock; /* the waiting worker's clock */
	int worker;
	dml__ps_wake_fn wake;
	void *arg;
	struct dml__ps_waiter *next;
} dml__ps_waiter;

typedef struct dml__ps_stripe {
	pthread_mutex_t mu;
	char pad[64 - sizeof(pthread_mutex_t) % 64];
} dml__ps_stripe;

typedef struct dml__ps_remote dml__ps_remote;
typedef struct dml__ps_dedup dml__ps_dedup;
typedef struct dml__kv dml__kv;

/* What an update does to the values it carries. */
enum { DML__PS_ADD = 0, DML__PS_STEP = 1, DML__PS_SET = 2,
       /* a later frame of a split push: the step its first frame began
        * (the step count and the update count do not move) */
       DML__PS_STEP_MORE = 3 };

/*
 * One store interface, four implementations: a local dense vector (ps.c),
 * local keyed rows (ps_keyed.c), and a remote handle to servers of either
 * kind (ps_remote.c). The public dml_ps_* calls check their arguments and
 * values (NaN, infinities) and then call through the table; a NULL entry
 * is a call this kind of store does not have (DML_EINVAL). The local
 * kinds share the clocks, the exactly-once table and the serving code.
 */
/*
 * A dense pull of the whole vector into out, begun now and ended later, so
 * that a worker computes while the parameters travel (dml_dsgd_opts
 * .overlap). For a local store, or a pull too large to have in flight at
 * once, begin does the whole pull and *op is NULL. After a successful
 * begin, end must be called (also to give up): it waits, and returns the
 * pull's result; out is not to be read or freed before. One thread.
 */
typedef struct dml__ps_pull_op dml__ps_pull_op;
int dml__ps_pull_begin(dml_ps *ps, float *out, dml__ps_pull_op **op);
int dml__ps_pull_end(dml__ps_pull_op *op);

typedef struct dml__ps_ops {
	const char *name; /* for errors: "a dense store", ... */
	/* dense: op on the whole vector (v: dim floats) */
	int (*update)(dml_ps *ps, int op, const float *v);
	/* dense: op (ADD or STEP) on coordinates, indices checked < dim */
	int (*update_sparse)(dml_ps *ps, int op, const uint32_t *idx,
	                     const float *val, size_t nnz);
	/* dense: [off, off + n) into out, range checked */
	int (*pull)(dml_ps *ps, size_t off, size_t n, float *out);
	/* keyed: rows of keys into out */
	int (*pull_rows)(dml_ps *ps, const uint64_t *keys, size_t n, float *out);
	/* keyed: op on the rows of keys (v: n * width floats, finite) */
	int (*apply_rows)(dml_ps *ps, int op, const uint64_t *keys, size_t n,
	                  const float *v);
	int (*updates)(dml_ps *ps, uint64_t *count);
	int (*rows)(dml_ps *ps, uint64_t *count);
	/* advance: the timeout resolved (no DML_DEFAULT) */
	int (*advance)(dml_ps *ps, int worker, dml_duration timeout,
	               dml_ps_clock_info *info);
	int (*clock_get)(dml_ps *ps, int worker, int64_t *clock, int64_t *min);
	int (*save)(dml_ps *ps, const char *path);
	int (*load)(dml_ps *ps, const char *path);
	/* frees what the kind keeps (ps.c frees the rest and ps itself) */
	void (*free)(dml_ps *ps);
} dml__ps_ops;

extern const dml__ps_ops dml__ps_dense_ops, dml__ps_keyed_ops;
extern const dml__ps_ops dml__psr_dense_ops, dml__psr_keyed_ops;

struct dml_ps {
	const dml__ps_ops *ops;
	size_t dim;   /* dense: parameters; keyed: 0 */
	size_t width; /* keyed: floats per row; dense: 0 */
	dml__ps_remote *remote; /* a remote handle: nothing below is used */
	dml__kv *kv;            /* a local keyed store */

	float *w;
	float *s[2]; /* optimizer state, NULL when the rule has fewer */
	dml_optim_opts optim; /* resolved */
	dml__ps_stripe *stripes;
	size_t nstripes, stripe_len;
	atomic_uint_fast64_t steps;   /* optimizer steps taken */
	atomic_uint_fast64_t updates; /* updates and pushes applied */
	atomic_uint rot;              /* spreads the first stripe of dense walks */

	pthread_mutex_t cmu; /* clocks */
	pthread_cond_t ccv;
	int workers, staleness;
	int64_t *clock;
	dml__ps_waiter *waiters;
	size_t nwaiters; /* at most WAITERS_PER_WORKER * workers */
	int64_t *clock_at;      /* ms of each worker's last clock call */
	unsigned char *dropped; /* workers dropped by worker_timeout */
	dml_duration worker_timeout;
	int nblocked;           /* local threads waiting in dml_ps_advance */
	dml_duration clock_timeout; /* dml_ps_advance's DML_DEFAULT */

	dml__ps_dedup *dedup; /* set by dml_ps_serve */
	dml__ckpt_opts ckpt;  /* key (an owned copy) and mode of checkpoints */
};

/* Stripe k holds parameters [*off, *off + *n). */
static inline void dml__ps_stripe_span(const dml_ps *ps, size_t k, size_t *off,
                                  size_t *n)
{
	*off = k * ps->stripe_len;
	*n = ps->dim - *off < ps->stripe_len ? ps->dim - *off : ps->stripe_len;
}

/* Locks the stripes that hold parameters [off, off + n) (all of them at
 * once, in ascending order: never a deadlock) and returns them in
 * [*k0, *k1) for dml__ps_unlock; n may be 0 (nothing is locked). */
void dml__ps_lock(dml_ps *ps, size_t off, size_t n, size_t *k0, size_t *k1);
void dml__ps_unlock(dml_ps *ps, size_t k0, size_t k1);

/* Advances worker w's clock. Returns 1 when it need not wait (*info set),
 * 0 when `wake` will be called later (a waiter was registered), or a
 * negative error (DML_EINVAL, DML_ENOMEM: the clock is not advanced). */
int dml__ps_clock_async(dml_ps *ps, int w, dml_ps_clock_info *info,
                        dml__ps_wake_fn wake, void *arg);

/* Applies a dense delta (op 0) or gradient (op 1) to the local store. */
void dml__ps_apply_dense(dml_ps *ps, int op, const float *v);
/* op on [off, off + n) of a dense store (a frame of a split call; STEP
 * or STEP_MORE, ADD, SET); the range checked. */
void dml__ps_apply_range(dml_ps *ps, int op, size_t off, const float *v,
                         size_t n);
/* The step number and learning rate of an op: a new step for STEP, the
 * current one for STEP_MORE. */
uint64_t dml__ps_step_of(dml_ps *ps, int op, float *lr);
/* Sparse; indices already checked < dim. */
void dml__ps_apply_sparse(dml_ps *ps, int op, const uint32_t *idx,
                          const float *val, size_t nnz);

/* What dml_ps_advance's DML_DEFAULT means for this store. */
dml_duration dml__ps_clock_default(const dml_ps *ps);
/* The remote handle's clock_timeout (ps_remote.c). */
dml_duration dml__psr_clock_timeout(const dml_ps *ps);

/* Common parts of a local store of either kind (ps.c): allocates *out
 * with its clocks from resolved options; the kind fills in the rest. */
int dml__ps_local_new(dml_ps **out, const dml_ps_opts *o,
                      const dml__ps_ops *ops);
/* Frees what dml__ps_local_new made (after ops->free). */
void dml__ps_local_free(dml_ps *ps);
/* The options check shared by both local kinds (defaults in place). */
int dml__ps_opts_check(dml_ps_opts *o);

/* The local clocks (ps.c), for the ops tables of both local kinds. */
int dml__ps_local_advance(dml_ps *ps, int worker, dml_duration timeout,
                          dml_ps_clock_info *info);
int dml__ps_local_clock_get(dml_ps *ps, int worker, int64_t *clock,
                            int64_t *min);
int dml__ps_local_updates(dml_ps *ps, uint64_t *count);

/* A keyed store's rows (ps_keyed.c): the number, and each row in turn
 * (for PS.Describe and checkpoints). */
uint64_t dml__kv_rows(const dml_ps *ps);

/* The exactly-once table as bytes, for checkpoints (ps_serve.c): *out
 * (malloc'd, *len bytes; NULL and 0 when the store is not served) or
 * DML_ENOMEM. Import replaces the table (creating it if need be); bytes
 * that do not parse are DML_EFORMAT and change nothing. */
int dml__ps_dedup_export(dml_ps *ps, uint8_t **out, size_t *len);
int dml__ps_dedup_import(dml_ps *ps, const uint8_t *p, size_t len);
/* Checks that import would succeed, changing nothing. */
int dml__ps_dedup_valid(const uint8_t *p, size_t len);

/* Checkpoints (ps.c; the container is ckpt.h). The meta of both kinds
 * holds the dense meta (dim 0 for a keyed store); the exactly-once table
 * is an optional last section. */
#define DML__PS_META_LEN (8 + 8 + 8 + 4 + 4 + 4 * 6 + 8 + 4 + 8 + 4 * 3 + 4 * 2)
#define DML__PS_META_LEN_0_2 (DML__PS_META_LEN - 8) /* without l1, beta */
#define DML__PS_TAG_DEDUP 4u
#define DML__PS_DEDUP_MAX_BYTES (8 + 4096 * 40)
void dml__ps_meta_put(const dml_ps *ps, uint64_t steps, uint64_t updates,
                      uint8_t *m);
int dml__ps_ckpt_failed(const char *path, int rc);
struct dml__ckpt_reader;
/* Reads the optional exactly-once section (checked), if next: *out is
 * malloc'd or NULL. */
int dml__ps_read_dedup(struct dml__ckpt_reader *r, uint8_t **out, size_t *len);

/* 1 if every one of n floats is finite; else 0 and *at = the first that
 * is not. */
int dml__all_finite(const float *v, size_t n, size_t *at);

/* Drops the workers that outstayed worker_timeout while others wait for
 * them, and answers the waits that releases (the server's tick). */
void dml__ps_check_workers(dml_ps *ps);

/* Drops from the clocks the workers of the clock waits whose arg `match`
 * accepts (their peer is gone: its connection closed), as worker_timeout
 * drops a silent one, and ends those waits with DML_ECONNLOST; the
 * waits this releases are woken. */
void dml__ps_drop_waiters(dml_ps *ps, int (*match)(void *arg, void *u), void *u);

/* Frees what dml_ps_serve allocated (ps_serve.c). */
void dml__ps_serve_free(dml_ps *ps);

#endif
