/*
 * distml/model.h - models: a parameter vector plus callbacks that compute
 * the loss and its gradient on a minibatch, and predictions.
 *
 * Built-in: linear regression (squared loss), binary logistic regression,
 * multinomial softmax regression and a linear SVM (hinge loss), each with
 * L2 regularisation, on dense or sparse (CSR) batches. A host plugs in its
 * own model by filling a dml_model with its callbacks (examples/mlp.c).
 *
 * Threads: a model instance may keep scratch memory, so it is used by one
 * thread at a time; create one instance per worker thread. The parameters
 * `w` are always passed in, never kept.
 *
 * Part of libdistml. Included by <distml.h>; include that instead.
 */
#ifndef DISTML_MODEL_H
#define DISTML_MODEL_H

#include "common.h"
#include "data.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What predict() returns per row. */
typedef enum dml_model_task {
	DML_TASK_REGRESSION = 0,     /* a real value */
	DML_TASK_CLASSIFICATION = 1, /* a class index 0..classes-1, as float */
} dml_model_task;

/*
 * A model. Fill every field for a host model; the built-in constructors
 * below fill them for theirs.
 *   dim        number of parameters
 *   features   number of input features the model expects (batch->dim)
 *   classes    classes for classification (2 for binary models), else 0
 *   self       passed to every callback
 *   init       writes dim initial parameters (deterministic for a seed)
 *   loss_grad  on batch b at parameters w: *loss = mean loss over the rows
 *              + regularisation; if grad != NULL, grad (dim floats) = its
 *              gradient. Labels: class index (as float) for classifiers
 *              (binary models: 0/1), the target for regression.
 *   predict    out[i] for each row of b (see dml_model_task)
 *   destroy    frees self (may be NULL)
 * Callbacks return 0 or a negative DML_E* (e.g. DML_EDIM when
 * b->dim != features, DML_EINVAL for a label out of range).
 */
typedef struct dml_model {
	size_t dim;
	size_t features;
	int classes;
	dml_model_task task;
	void *self;
	int (*init)(void *self, float *w, uint64_t seed);
	int (*loss_grad)(void *self, const float *w, const dml_batch *b,
	                 float *grad, double *loss);
	int (*predict)(void *self, const float *w, const dml_batch *b, float *out);
	void (*destroy)(void *self);
} dml_model;

/* Built-in models. `l2` >= 0 adds l2/2 * |w|^2 (bias excluded) to the
 * loss. Parameters: a weight per feature (per class for softmax, stored
 * class-major: w[c * features + j]) then the bias(es). Zero-initialised
 * parameters for the linear models. On success *m owns its instance
 * (dml_model_free). DML_EINVAL, DML_ENOMEM. */
DML_API int dml_model_linreg(dml_model *m, size_t features, float l2);
DML_API int dml_model_logreg(dml_model *m, size_t features, float l2);
DML_API int dml_model_softmax(dml_model *m, size_t features, int classes,
                              float l2);
DML_API int dml_model_svm(dml_model *m, size_t features, float l2);

/* Calls m->destroy and zeroes *m (NULL or a zeroed model is fine). */
DML_API void dml_model_free(dml_model *m);

/* Mean loss (as loss_grad computes it, regularisation included) and, for
 * classifiers, accuracy of parameters w over the whole data set, in
 * batches. *loss and *accuracy may be NULL. Uses m's scratch: one thread
 * at a time per model. */
DML_API int dml_model_evaluate(const dml_model *m, const float *w,
                               const dml_dataset *ds, double *loss,
                               double *accuracy);

#ifdef __cplusplus
}
#endif
#endif /* DISTML_MODEL_H */
