/*
 * distml/optim.h - optimizers (SGD, momentum, AdaGrad, Adam, FTRL-Proximal)
 * with L2 decay (L1 and L2 for FTRL), and learning-rate schedules.
 * The API rules (names, ownership, durations, errors, ABI): docs/api.md.
 *
 * One implementation serves both the parameter store (server-side updates:
 * workers push gradients) and single-process training.
 *
 * Part of libdistml. Included by <distml.h>; include that instead.
 */
#ifndef DISTML_OPTIM_H
#define DISTML_OPTIM_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The update rules, for a gradient g of parameters w at step t = 1, 2, ...
 * (after L2 decay: g + l2 * w, computed per step, except for FTRL; the
 * caller's g is only read) and learning rate lr = schedule(t - 1):
 *   SGD:      w -= lr * g
 *   MOMENTUM: v = mu * v + g;  w -= lr * v            (nesterov: w -= lr * (g + mu * v))
 *   ADAGRAD:  G += g * g;      w -= lr * g / (sqrt(G) + eps)
 *   ADAM:     m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g * g;
 *             w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 *   FTRL:     per-coordinate FTRL-Proximal with L1 and L2 (McMahan et al.,
 *             KDD 2013, "Ad Click Prediction"), alpha = lr, g the gradient
 *             as given: l2 is McMahan's lambda2 inside the closed form, NOT
 *             added to g as for the other rules:
 *             sigma = (sqrt(n + g*g) - sqrt(n)) / alpha;
 *             z += g - sigma * w;  n += g*g;
 *             w = |z| <= l1 ? 0 : -(z - sign(z) * l1) / ((beta + sqrt(n)) / alpha + l2)
 *             It leaves exact zeros (w == 0.0f: sparse models). w is a
 *             function of (z, n): a value assigned to w enters only the
 *             next step of that coordinate (through sigma * w), and that
 *             step overwrites it with the w of the new z and n. At alpha 0
 *             (a schedule can reach it: COSINE with lr_min 0), or one so
 *             small that 1 / alpha overflows a float, no step is taken:
 *             w, z and n stay as they are (t still advances).
 * State per parameter: none (SGD), v (MOMENTUM), G (ADAGRAD), m and v (ADAM),
 * z and n (FTRL), all starting at zero.
 *
 * Sparse ("lazy") steps update only the coordinates given, and only their
 * state; t and the schedule still advance by one per step. A coordinate
 * touched rarely misses the steps in between: MOMENTUM's v and ADAM's m
 * and v do not decay in the steps it misses (lazy, as TensorFlow's LazyAdam
 * and PyTorch's SparseAdam), while ADAM's bias correction and the schedule
 * use the global step count t. ADAGRAD and FTRL are exact: their state
 * only changes when a gradient arrives, so a missed step is a zero
 * gradient (except that a dense FTRL step with g 0 still recomputes w from
 * z and n, at its alpha). When every coordinate is touched once at every
 * step, sparse steps equal dense ones.
 */
typedef enum dml_optim_kind {
	DML_OPTIM_SGD = 0,
	DML_OPTIM_MOMENTUM = 1,
	DML_OPTIM_ADAGRAD = 2,
	DML_OPTIM_ADAM = 3,
	DML_OPTIM_FTRL = 4,
} dml_optim_kind;

/*
 * Learning-rate schedules, lr(t) for t = 0, 1, 2, ... (t = steps taken):
 *   CONST:   lr0
 *   STEP:    lr0 * gamma^floor(t / step_size)
 *   INVSQRT: lr0 / sqrt(1 + t / t0)
 *   COSINE:  lr_min + (lr0 - lr_min) * (1 + cos(pi * min(t, total) / total)) / 2
 */
typedef enum dml_sched_kind {
	DML_SCHED_CONST = 0,
	DML_SCHED_STEP = 1,
	DML_SCHED_INVSQRT = 2,
	DML_SCHED_COSINE = 3,
} dml_sched_kind;

/* The defaults: what 0 means in each field below. */
#define DML_OPTIM_DEFAULT_LR 0.01f
#define DML_OPTIM_DEFAULT_MOMENTUM 0.9f
#define DML_OPTIM_DEFAULT_BETA1 0.9f
#define DML_OPTIM_DEFAULT_BETA2 0.999f
#define DML_OPTIM_DEFAULT_EPS 1e-8f
#define DML_OPTIM_DEFAULT_BETA 1.0f
#define DML_SCHED_DEFAULT_STEP_SIZE 1000
#define DML_SCHED_DEFAULT_GAMMA 0.1f
#define DML_SCHED_DEFAULT_T0 1.0f

/* A schedule; zero-initialised is CONST. Zero fields take the defaults.
 * Nested by value in dml_optim_opts (docs/abi.md). */
typedef struct dml_schedule {
	dml_sched_kind kind;
	uint64_t step_size; /* STEP: steps per decay (0 = 1000) */
	float gamma;        /* STEP: factor per decay (0 = 0.1) */
	float t0;           /* INVSQRT: time scale in steps (0 = 1) */
	uint64_t total;     /* COSINE: steps to anneal over (required, > 0) */
	float lr_min;       /* COSINE: final learning rate (default 0) */
} dml_schedule;

/* Optimizer options; zero-initialised is plain SGD with lr 0.01. Because
 * zero means "default", momentum and the betas cannot be exactly 0. Nested
 * by value in dml_ps_opts and dml_sgd_opts; may grow (docs/abi.md). */
typedef struct dml_optim_opts {
	dml_optim_kind kind;
	float lr;           /* base learning rate lr0 (0 = 0.01) */
	float l2;           /* L2 decay coefficient (default 0) */
	float momentum;     /* MOMENTUM: mu (0 = 0.9) */
	int nesterov;       /* MOMENTUM: non-zero for Nesterov's variant */
	float beta1, beta2; /* ADAM: (0 = 0.9, 0.999) */
	float eps;          /* ADAGRAD, ADAM: (0 = 1e-8) */
	dml_schedule sched;
	float l1;           /* FTRL: L1 strength lambda1 (default 0) */
	float beta;         /* FTRL: beta of the per-coordinate rate (0 = 1) */
} dml_optim_opts;

/* Checks `o` with defaults applied (NULL = defaults): known kinds; lr, l2,
 * eps, l1, beta, gamma, t0 and lr_min finite and >= 0; momentum and betas
 * in [0,1); a COSINE total > 0. Every field is checked, used by the kind
 * or not. 0 or DML_EINVAL (the detail names the field). Thread-safe. */
DML_API int dml_optim_check_abi(const dml_optim_opts *o, int abi);
#define dml_optim_check(...) dml_optim_check_abi(__VA_ARGS__, DML_ABI)

/* The number of state floats per parameter that `o` needs (NULL = defaults):
 * 0, 1 or 2, or DML_EINVAL for an unknown kind. Thread-safe. */
DML_API int dml_optim_state_floats_abi(const dml_optim_opts *o, int abi);
#define dml_optim_state_floats(...) dml_optim_state_floats_abi(__VA_ARGS__, DML_ABI)

/* The learning rate of `o`'s schedule after `t` steps (defaults applied;
 * NULL = defaults). `o` should pass dml_optim_check; a COSINE total of 0
 * gives lr_min; a layout level this library does not know gives NaN.
 * Thread-safe. */
DML_API float dml_schedule_lr_abi(const dml_optim_opts *o, uint64_t t, int abi);
#define dml_schedule_lr(...) dml_schedule_lr_abi(__VA_ARGS__, DML_ABI)

/* An optimizer for a vector of `dim` parameters: the options plus the state
 * and the step count. Opaque. */
typedef struct dml_optim dml_optim;

/* Creates an optimizer for `dim` (>= 1) parameters, its state zeroed; `o` is
 * copied (NULL = defaults). *out owns it (dml_optim_free); on failure *out
 * is not written. DML_EINVAL (also when dml_optim_check fails), DML_ENOMEM,
 * DML_EVERSION (DML_ABI). Thread-safe. */
DML_API int dml_optim_new_dim_abi(dml_optim **out, size_t dim,
                                  const dml_optim_opts *o, int abi);
#define dml_optim_new_dim(...) dml_optim_new_dim_abi(__VA_ARGS__, DML_ABI)

/* One step on all `dim` parameters: w (dim floats, updated in place) with the
 * gradient g (dim floats, only read; must not overlap w), at the learning
 * rate schedule(steps); then steps += 1. Does nothing if an argument is
 * NULL. Not thread-safe on one optimizer. */
DML_API void dml_optim_step(dml_optim *opt, float *w, const float *g);

/* One step on the `nnz` coordinates idx[i] with gradients val[i] (indices
 * < dim, else DML_EINVAL and nothing changes; repeated indices are applied in
 * order, each as a full update); other coordinates and their state are left
 * alone. Counts as one step, even with nnz 0 (idx and val may then be NULL).
 * 0 or DML_EINVAL (also for a NULL opt or w). Not thread-safe on one
 * optimizer. */
DML_API int dml_optim_step_sparse(dml_optim *opt, float *w,
                                  const uint32_t *idx, const float *val,
                                  size_t nnz);

/* Steps taken so far (0 for NULL). */
DML_API uint64_t dml_optim_steps(const dml_optim *opt);

/* The options in use (defaults filled in), owned by the optimizer. */
DML_API const dml_optim_opts *dml_optim_options(const dml_optim *opt);

/* State vector k (0 or 1) of dim floats, or NULL when the rule has fewer;
 * owned by the optimizer (for checkpoints and inspection). MOMENTUM: 0 is
 * v; ADAGRAD: 0 is G; ADAM: 0 is m, 1 is v. */
DML_API float *dml_optim_state(dml_optim *opt, int k);

/* Sets the step count and zeroes nothing (for restoring a checkpoint).
 * NULL is ignored. */
DML_API void dml_optim_set_steps(dml_optim *opt, uint64_t t);

/* Zeroes the state and the step count. NULL is ignored. */
DML_API void dml_optim_reset(dml_optim *opt);

/* Frees `opt` (NULL is fine). */
DML_API void dml_optim_free(dml_optim *opt);

#ifndef DML_NO_DEPRECATED
/* Deprecated in 0.2: dml_optim_new_dim, with the options last. */
DML_DEPRECATED("dml_optim_new_dim (dim, then options)")
DML_API int dml_optim_new(dml_optim **out, const dml_optim_opts *o,
                          size_t dim);
#endif

#ifdef __cplusplus
}
#endif
#endif /* DISTML_OPTIM_H */
