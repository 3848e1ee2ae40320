/*
 * optim.h - the optimizers' update rules on a range of parameters, for the
 * parameter store (which applies them to its own shards under its own locks)
 * and for dml_optim_step*. Not installed.
 *
 * These functions allocate nothing, keep no state of their own and touch only
 * the memory passed in: they are thread-safe as long as no two threads work
 * on the same w/s0/s1 elements at once. The caller owns every buffer.
 */
#ifndef DISTML_OPTIM_INTERNAL_H
#define DISTML_OPTIM_INTERNAL_H

#include "internal.h"

/* Copies `in` (NULL = all defaults) to `out` with every zero field replaced
 * by its default (DML_OPTIM_DEFAULT_*). `in` and `out` may be the same. */
void dml__optim_resolve(const dml_optim_opts *in, dml_optim_opts *out);

/* dml_optim_check without clearing the caller's error detail (for the
 * calls that check optimizer options among their own); sets it on
 * failure. */
int dml__optim_valid(const dml_optim_opts *o);

/* The number of state vectors (0, 1, 2) of a valid rule. */
int dml__optim_nstate(const dml_optim_opts *o);

/* The learning rate after t steps, for options already resolved. */
float dml__schedule_lr(const dml_optim_opts *resolved, uint64_t t);

/*
 * Applies one step with learning rate `lr` (already scheduled) and step
 * number t (1-based, for Adam's bias correction; 0 is taken as 1) to n
 * parameters w[0..n) with gradient g[0..n); s0/s1 are the rule's state
 * vectors for the same range (NULL when the rule has none: see
 * dml_optim_state_floats). `o` must be resolved (dml__optim_resolve) and
 * valid (dml_optim_check). g is only read; the four arrays must not overlap.
 */
void dml__optim_apply(const dml_optim_opts *o, float lr, uint64_t t,
                      float *restrict w, const float *restrict g,
                      float *restrict s0, float *restrict s1, size_t n);

/*
 * The same for nnz (idx[i], val[i]) pairs: idx are offsets into w/s0/s1
 * (the caller checked the bounds); repeated indices are applied in order,
 * each as a full update. Coordinates not listed, and their state, are left
 * alone.
 */
void dml__optim_apply_sparse(const dml_optim_opts *o, float lr, uint64_t t,
                             float *w, const uint32_t *idx, const float *val,
                             size_t nnz, float *s0, float *s1);

/*
 * The same for n rows of `width` parameters each, stored apart: row i's
 * parameters at rows[i][0..width), its state vectors right after them
 * (rows[i] + width, rows[i] + 2 * width), its gradient at g + i * width.
 * One step for every row (a keyed store's push); rows listed twice are
 * stepped twice, in order.
 */
void dml__optim_apply_rows(const dml_optim_opts *o, float lr, uint64_t t,
                           float *const *rows, const float *g, size_t n,
                           size_t width);

#endif
