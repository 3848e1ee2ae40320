/*
 * distml/train.h - training loops: single-process minibatch SGD, and the
 * distributed worker loop around a parameter store (local or remote).
 * The API rules (names, ownership, durations, errors, ABI): docs/api.md.
 *
 * Neither starts threads: the host runs dml_sgd_run, or one dml_dsgd_run
 * per worker, in threads or processes of its own.
 *
 * Part of libdistml. Included by <distml.h>; include that instead.
 */
#ifndef DISTML_TRAIN_H
#define DISTML_TRAIN_H

#include "common.h"
#include "data.h"
#include "model.h"
#include "optim.h"
#include "ps.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The defaults of the options below (what 0 means). */
#define DML_TRAIN_DEFAULT_EPOCHS 10
#define DML_TRAIN_DEFAULT_BATCH 64
#define DML_DSGD_DEFAULT_RECONNECT_TIMEOUT ((dml_duration)0) /* give up at once */

/* What an epoch callback is told. The library's struct, valid during the
 * call; a host built with an older header reads the fields it knows. */
typedef struct dml_epoch_info {
	int worker;         /* dml_dsgd_run: its id; dml_sgd_run: 0 */
	int epoch;          /* 1, 2, ... */
	double loss;        /* mean minibatch loss over the epoch */
	uint64_t samples;   /* rows processed in this epoch */
	double seconds;     /* wall time since training started */
	int64_t staleness;  /* DSGD: largest clock lead seen this epoch, -1 = not measured */
	uint64_t step;      /* steps of the whole run so far */
	int end_of_epoch;   /* 1 at an epoch's end, 0 for a call made every
	                       callback_every steps within it */
} dml_epoch_info;

/* Called after each epoch (and every callback_every steps, if set) with
 * the current parameters (dim floats, valid during the call; NULL when
 * training against a keyed store: get them with dml_model_pull). Return
 * non-zero to stop training early. */
typedef int (*dml_epoch_fn)(void *user, const dml_epoch_info *info,
                            const float *w);

/* Statistics of a training run. The library writes only the fields of the
 * caller's layout (docs/abi.md). */
typedef struct dml_train_stats {
	uint64_t steps;       /* minibatches */
	uint64_t samples;     /* rows */
	int epochs;           /* epochs completed */
	double seconds;       /* wall time */
	double loss;          /* mean minibatch loss of the last epoch */
	uint64_t waits;       /* DSGD: clock calls that had to wait */
	double wait_seconds;  /* DSGD: time spent in them */
	int64_t max_staleness;/* DSGD: largest clock lead over the slowest worker */
	int stopped;          /* the callback asked to stop */
	uint64_t retries;     /* DSGD: store calls repeated after a lost connection */
	int fail_epoch;       /* a failed run: the epoch (1, 2, ...) and the */
	uint64_t fail_step;   /* step within it (1, 2, ...) that failed; else 0 */
	uint64_t rows_moved;  /* keyed path: rows pulled plus rows pushed */
} dml_train_stats;

/* Options of dml_sgd_run; zero-initialised means defaults. May grow at its
 * end (docs/abi.md). */
typedef struct dml_sgd_opts {
	int epochs;           /* 0 = 10 */
	size_t batch;         /* rows per minibatch; 0 = 64 */
	dml_optim_opts optim; /* the update rule and schedule (distml/optim.h) */
	uint64_t seed;        /* shuffle seed: the first pass uses seed, the
	                         k-th later pass seed + k */
	int no_shuffle;       /* non-zero: keep the data set's order */
	dml_epoch_fn on_epoch;
	void *user;
	size_t callback_every; /* also call on_epoch every this many steps
	                         (0 = at the ends of epochs only) */
	int dense_path;       /* non-zero: sparse batches take the dense
	                         path too (a gradient of all dim parameters and
	                         a step on each), as before 0.3 */
} dml_sgd_opts;

/*
 * Sparse batches (CSR) and a model with a keyed path (model.h: rows_grad)
 * take the sparse path: each step computes the gradient of the rows of
 * the minibatch's columns only and steps only them (lazy optimizers,
 * docs/optim.md), in time that grows with the batch's entries, not with
 * the dimension; opts.dense_path turns it off. Dense batches, and models
 * without rows_grad, take the dense path.
 *
 * Divergence: a loss, gradient or parameter that becomes NaN or infinite
 * stops training with DML_EDIVERGED; the detail and the statistics
 * (fail_epoch, fail_step) say where. Parameters are checked as a step
 * reads them and, on the dense path, at each epoch's end.
 *
 * Minibatch SGD on one thread: for each epoch, shuffles `train` in place
 * (unless no_shuffle), then one optimizer step per minibatch on w (m->dim
 * floats, initial parameters in, trained parameters out). `st` may be NULL;
 * it is filled also on failure, with what was done. `opts` may be NULL.
 * Errors from the model (DML_EDIM, DML_EINVAL) end training with w as it
 * is, and the detail says at which epoch and step; DML_ENOMEM. Not
 * thread-safe on the same model or data set.
 */
DML_API int dml_sgd_run_abi(dml_model *m, dml_dataset *train, float *w,
                            dml_train_stats *st, const dml_sgd_opts *opts,
                            int abi);
#define dml_sgd_run(...) dml_sgd_run_abi(__VA_ARGS__, DML_ABI)

/* Consistency model of a DSGD worker. It must match the store's clocks
 * (dml_ps_opts.workers and .staleness): AUTO takes them from the store. */
typedef enum dml_dsgd_mode {
	DML_DSGD_AUTO = 0, /* the store's: BSP with staleness 0, SSP with
	                      s > 0, ASP with DML_PS_ASYNC or no clocks */
	DML_DSGD_ASP = 1,  /* never waits; no clock calls */
	DML_DSGD_BSP = 2,  /* a barrier after every step */
	DML_DSGD_SSP = 3,  /* at most s steps ahead of the slowest worker */
} dml_dsgd_mode;

/* Options of dml_dsgd_run; zero-initialised means defaults. May grow at its
 * end (docs/abi.md). */
typedef struct dml_dsgd_opts {
	int worker;           /* this worker's id, 0 .. workers-1 */
	dml_dsgd_mode mode;   /* 0 = DML_DSGD_AUTO */
	int epochs;           /* 0 = 10 */
	size_t batch;         /* 0 = 64 */
	size_t steps_per_epoch; /* 0 = ceil(shard rows / batch); give every
	                         worker the same number under BSP and SSP */
	uint64_t seed;        /* shuffle seed (0 = worker id + 1) */
	int no_shuffle;
	dml_duration clock_timeout; /* longest wait per clock (0 = the store's
	                         clock_timeout, as dml_ps_advance's DML_DEFAULT;
	                         DML_INFINITE = no limit) */
	dml_duration reconnect_timeout; /* when a pull or clock call fails with
	                         DML_ECONNLOST, repeat it (waiting 10 ms, doubling
	                         to 1 s, between attempts) for up to this long:
	                         with RPC clients dialled with `reconnect`, and a
	                         remote handle with retry_timeout for the pushes,
	                         the worker rides out a store server's restart.
	                         0 = give up at once; DML_INFINITE = never */
	dml_epoch_fn on_epoch;
	void *user;
	size_t callback_every; /* also call on_epoch every this many steps
	                         (0 = at the ends of epochs only) */
	uint64_t key_seed;    /* keyed store: the key of column j is
	                         dml_ps_key(j, key_seed) (0 = j itself) */
	int overlap;          /* dense store: non-zero pulls the next step's
	                         parameters while this step computes (double
	                         buffering; no thread: the pull is in flight on
	                         the RPC client). A step then computes on
	                         parameters one step older: they miss its own
	                         last push and, under BSP and SSP, the others'
	                         pushes of the last round. 0 = off */
} dml_dsgd_opts;

/*
 * On a keyed store (dml_ps_new_keyed), the worker takes the sparse path:
 * the shard must be sparse and the model must have rows_grad with the
 * store's width; each step pulls the rows of its minibatch's columns
 * (keys: dml_ps_key(column, key_seed), extra rows UINT64_MAX - r), and
 * pushes their gradient, so the bytes per step grow with the minibatch's
 * distinct columns, not with the dimension. A dense store keeps the
 * dense path (the whole vector pulled and pushed).
 *
 * The distributed worker loop: repeat { pull the parameters from `ps`,
 * compute the gradient of the next minibatch of `shard`, push it (the
 * store's optimizer applies it), and, under BSP/SSP, advance this worker's
 * clock and wait as the store's bound says }. `shard` is this worker's part
 * of the data (dml_dataset_new_shard), shuffled in place each epoch. `st`
 * may be NULL; `opts` may be NULL.
 *
 * Before the first step it checks the worker against the store: a mode
 * other than the store's clocks allow (ASP beside a BSP store would hold
 * every other worker at its first barrier for ever), a worker id the
 * store has no clock for, or a model of another dimension is DML_EINVAL
 * (DML_EDIM) at once, with the detail saying why.
 *
 * Errors from the store (e.g. DML_ECONNLOST, DML_ETIMEDOUT for a clock
 * wait) or the model end the loop and are returned, with `st` filled so
 * far and the detail naming the epoch, the step and the call. Thread-safe
 * with respect to other workers on the same store; `m` and `shard` belong
 * to this worker.
 */
DML_API int dml_dsgd_run_abi(dml_ps *ps, dml_model *m, dml_dataset *shard,
                             dml_train_stats *st, const dml_dsgd_opts *opts,
                             int abi);
#define dml_dsgd_run(...) dml_dsgd_run_abi(__VA_ARGS__, DML_ABI)

/*
 * The parameters of model m in its dense layout (model.h), read from a
 * keyed store: w (m->dim floats, the caller's) gets every feature's row
 * (key dml_ps_key(column, key_seed)) and the extra rows (UINT64_MAX - r);
 * rows never pushed read as the store's initial value. For evaluating or
 * saving a model trained on a keyed store. DML_EINVAL (no keyed path, or
 * another width), the store's errors. Thread-safe.
 */
DML_API int dml_model_pull_abi(const dml_model *m, dml_ps *ps,
                               uint64_t key_seed, float *w, int abi);
#define dml_model_pull(...) dml_model_pull_abi(__VA_ARGS__, DML_ABI)

#ifndef DML_NO_DEPRECATED
/* Deprecated in 0.2: dml_sgd_run and dml_dsgd_run, with the statistics
 * before the options. */
DML_DEPRECATED("dml_sgd_run (stats, then options)")
DML_API int dml_sgd_train(const dml_model *m, dml_dataset *train, float *w,
                          const dml_sgd_opts *o, dml_train_stats *st);
DML_DEPRECATED("dml_dsgd_run (stats, then options)")
DML_API int dml_dsgd_worker(dml_ps *ps, const dml_model *m,
                            dml_dataset *shard, const dml_dsgd_opts *o,
                            dml_train_stats *st);
#endif

#ifdef __cplusplus
}
#endif
#endif /* DISTML_TRAIN_H */
