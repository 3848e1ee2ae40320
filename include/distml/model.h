/*
 * distml/model.h - models: a parameter vector plus callbacks that compute
 * the loss and its gradient on a minibatch, and predictions.
 * The API rules (names, ownership, durations, errors, ABI): docs/api.md.
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
 * b->dim != features, DML_EINVAL for a label out of range); they may set
 * the error detail with what went wrong.
 *
 * The struct is the caller's (on its stack, say): the built-in models fill
 * it with dml_model_init_*, and dml_model_destroy frees what they keep in
 * `self`. It may grow at its end (docs/abi.md): the functions below read
 * and fill only the caller's layout.
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
	/* The keyed (sparse) path; width 0 means the model has none. */
	size_t width;      /* floats per feature row */
	size_t extra_rows; /* rows of the model's own after the features (a
	                      bias: 1 for the built-in models) */
	int (*rows_grad)(void *self, const float *rows, const dml_batch *b,
	                 float *grad, double *loss);
} dml_model;

/*
 * The keyed path: parameters as rows of `width` floats, one per feature
 * (column) and `extra_rows` of the model's own. rows_grad gets a CSR batch
 * whose column indices are local, 0 .. b->dim - 1, and the parameters of
 * just those b->dim feature rows followed by the extra rows:
 * rows[(j * width) + c] for feature row j, rows[(b->dim + r) * width + c]
 * for extra row r. It writes the gradient in the same shape into grad
 * (every float of it) and *loss as loss_grad would, with the L2 term over
 * the rows given only (lazy regularisation). Its cost grows with the
 * batch's entries times width, never with the number of features.
 *
 * The trainers (train.h) use it for sparse batches: on a keyed store they
 * pull and push only the rows of a minibatch's columns (keys:
 * dml_ps_key(column, key_seed); extra row r: UINT64_MAX - r); in
 * dml_sgd_run they gather those rows from the dense vector w, where
 * element c of feature j is w[c * features + j] and element c of extra row
 * r is w[width * features + r * width + c] (the built-in models' layout).
 */

/* Built-in models, filled into the caller's *m. `l2` >= 0 adds
 * l2/2 * |w|^2 (bias excluded) to the loss. Parameters: a weight per
 * feature (per class for softmax, stored class-major: w[c * features + j])
 * then the bias(es). Zero-initialised parameters for the linear models. On
 * success m->self holds the instance's memory until dml_model_destroy; on
 * failure *m is untouched. DML_EINVAL, DML_ENOMEM, DML_EVERSION (DML_ABI).
 * Thread-safe. */
DML_API int dml_model_init_linreg_abi(dml_model *m, size_t features, float l2,
                                      int abi);
DML_API int dml_model_init_logreg_abi(dml_model *m, size_t features, float l2,
                                      int abi);
DML_API int dml_model_init_softmax_abi(dml_model *m, size_t features,
                                       int classes, float l2, int abi);
DML_API int dml_model_init_svm_abi(dml_model *m, size_t features, float l2,
                                   int abi);
#define dml_model_init_linreg(...) dml_model_init_linreg_abi(__VA_ARGS__, DML_ABI)
#define dml_model_init_logreg(...) dml_model_init_logreg_abi(__VA_ARGS__, DML_ABI)
#define dml_model_init_softmax(...) dml_model_init_softmax_abi(__VA_ARGS__, DML_ABI)
#define dml_model_init_svm(...) dml_model_init_svm_abi(__VA_ARGS__, DML_ABI)

/* Calls m->destroy(m->self) and zeroes self and destroy, so a second call
 * does nothing (NULL or a zeroed model is fine). Reads and writes only
 * those two fields, which every layout has. */
DML_API void dml_model_destroy(dml_model *m);

/* Mean loss (as loss_grad computes it, regularisation included) and, for
 * classifiers, accuracy of parameters w over the whole data set, in
 * batches. *loss and *accuracy may be NULL. Uses m's scratch memory, hence
 * `m` is not const: one thread at a time per model. DML_EINVAL, DML_EDIM,
 * the model's errors. */
DML_API int dml_model_evaluate_abi(dml_model *m, const float *w,
                                   const dml_dataset *ds, double *loss,
                                   double *accuracy, int abi);
#define dml_model_evaluate(...) dml_model_evaluate_abi(__VA_ARGS__, DML_ABI)

#ifndef DML_NO_DEPRECATED
/* Deprecated in 0.2: the models are the caller's structs, so _init and
 * _destroy (docs/api.md). */
DML_DEPRECATED("dml_model_init_linreg")
DML_API int dml_model_linreg(dml_model *m, size_t features, float l2);
DML_DEPRECATED("dml_model_init_logreg")
DML_API int dml_model_logreg(dml_model *m, size_t features, float l2);
DML_DEPRECATED("dml_model_init_softmax")
DML_API int dml_model_softmax(dml_model *m, size_t features, int classes,
                              float l2);
DML_DEPRECATED("dml_model_init_svm")
DML_API int dml_model_svm(dml_model *m, size_t features, float l2);
DML_DEPRECATED("dml_model_destroy")
DML_API void dml_model_free(dml_model *m);
#endif

#ifdef __cplusplus
}
#endif
#endif /* DISTML_MODEL_H */
