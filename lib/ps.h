/*
 * ps.h - internals of the parameter store shared by ps.c (local store),
 * ps_serve.c (its RPC methods) and ps_remote.c (the remote handle).
 * Not installed.
 */
#ifndef DISTML_PS_INTERNAL_H
#define DISTML_PS_INTERNAL_H

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

struct dml_ps {
	size_t dim;
	dml__ps_remote *remote; /* non-NULL: a remote handle, nothing below */

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
/* Sparse; indices already checked < dim. */
void dml__ps_apply_sparse(dml_ps *ps, int op, const uint32_t *idx,
                          const float *val, size_t nnz);

/* The remote handle's side of each public call (ps_remote.c). */
int dml__psr_update(dml_ps *ps, int op, const float *v);
int dml__psr_update_sparse(dml_ps *ps, int op, const uint32_t *idx,
                           const float *val, size_t nnz);
int dml__psr_pull(dml_ps *ps, size_t off, size_t n, float *out);
int dml__psr_assign(dml_ps *ps, const float *v);
int dml__psr_updates(dml_ps *ps, uint64_t *count);
int dml__psr_clock(dml_ps *ps, int worker, dml_duration timeout,
                   dml_ps_clock_info *info);
/* The remote handle's clock_timeout. */
dml_duration dml__psr_clock_timeout(const dml_ps *ps);
int dml__psr_clock_get(dml_ps *ps, int worker, int64_t *clock, int64_t *min);
void dml__psr_free(dml_ps *ps);

/* Drops the workers that outstayed worker_timeout while others wait for
 * them, and answers the waits that releases (the server's tick). */
void dml__ps_check_workers(dml_ps *ps);

/* Frees what dml_ps_serve allocated (ps_serve.c). */
void dml__ps_serve_free(dml_ps *ps);

#endif
