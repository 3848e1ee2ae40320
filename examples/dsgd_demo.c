/*
 * dsgd_demo.c - the main job: distributed training over loopback RPC.
 *
 * One host thread serves a parameter store on 127.0.0.1; W worker threads
 * each dial their own RPC client and run dml_dsgd_run on their shard of
 * Fashion-MNIST, training multinomial softmax regression: pull the
 * parameters, compute the gradient of a minibatch, push it (the store runs
 * Adam), advance the worker's clock. A line per epoch shows loss, train and
 * test accuracy and throughput; a summary follows.
 *
 * Data: /usr/share/datasets/fashion-mnist (Debian package
 * dataset-fashion-mnist). Where it is absent the demo says so and trains on
 * a generated data set of the same shape instead.
 *
 *     dsgd_demo [--workers N] [--mode bsp|ssp|asp] [--staleness S]
 *               [--epochs E] [--batch B] [--lr LR] [--data DIR] [--target ACC]
 */
#include <distml.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsgd_host.h"

typedef struct softmax_arg {
	size_t features;
	int classes;
} softmax_arg;

static int make_softmax(dml_model *m, void *arg)
{
	softmax_arg *a = arg;
	return dml_model_init_softmax(m, a->features, a->classes, 0);
}

static int usage(void)
{
	fprintf(stderr, "usage: dsgd_demo [--workers N] [--mode bsp|ssp|asp] [--staleness S]\n"
	                "                 [--epochs E] [--batch B] [--lr LR] [--data DIR] [--target ACC]\n");
	return 2;
}

int main(int argc, char **argv)
{
	dsgd_job job;
	memset(&job, 0, sizeof job);
	job.workers = 2;
	job.mode = DML_DSGD_SSP;
	job.staleness = 1;
	job.epochs = 5;
	job.batch = 128;
	job.target = 0.84;
	float lr = 0.002f;
	const char *data = "/usr/share/datasets/fashion-mnist";
	for (int i = 1; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			return usage();
		if (!strcmp(a, "--workers"))
			job.workers = atoi(v);
		else if (!strcmp(a, "--mode"))
			job.mode = !strcmp(v, "bsp") ? DML_DSGD_BSP : !strcmp(v, "ssp") ? DML_DSGD_SSP
			         : !strcmp(v, "asp") ? DML_DSGD_ASP : (dml_dsgd_mode)-1;
		else if (!strcmp(a, "--staleness"))
			job.staleness = atoi(v);
		else if (!strcmp(a, "--epochs"))
			job.epochs = atoi(v);
		else if (!strcmp(a, "--batch"))
			job.batch = (size_t)atol(v);
		else if (!strcmp(a, "--lr"))
			lr = (float)atof(v);
		else if (!strcmp(a, "--data"))
			data = v;
		else if (!strcmp(a, "--target"))
			job.target = atof(v);
		else
			return usage();
	}
	if (job.workers < 1 || job.workers > DSGD_MAX_WORKERS || (int)job.mode < 0 ||
	    job.staleness < 0 || job.epochs < 1 || job.epochs > DSGD_MAX_EPOCHS ||
	    job.batch < 1 || !(lr > 0))
		return usage();

	int rc = dsgd_load_fashion(data, &job.train, &job.test);
	if (rc == DML_ENOTFOUND) {
		printf("data: Fashion-MNIST not found in %s (Debian package dataset-fashion-mnist;\n"
		       "      `make demo` installs it when run as root).\n"
		       "      Training on a generated data set of the same shape instead.\n", data);
		rc = dsgd_generate(&job.train, &job.test);
	} else if (!rc) {
		printf("data: Fashion-MNIST from %s: %zu training, %zu test images of %zu pixels\n",
		       data, dml_dataset_rows(job.train), dml_dataset_rows(job.test),
		       dml_dataset_dim(job.train));
	}
	/* standardise each pixel with the training set's mean and deviation */
	dml_scaler *sc = NULL;
	if (!rc && !(rc = dml_scaler_new_fit(&sc, job.train, DML_SCALE_STANDARD)) &&
	    !(rc = dml_scaler_apply(sc, job.train)))
		rc = dml_scaler_apply(sc, job.test);
	dml_scaler_free(sc);
	if (rc) {
		fprintf(stderr, "dsgd_demo: data: %s\n", dml_strerror(rc));
		return 1;
	}
	softmax_arg sa = {dml_dataset_dim(job.train), (int)dml_dataset_classes(job.train)};
	job.make_model = make_softmax;
	job.model_arg = &sa;
	/* Adam on the server, annealed over the whole run (cosine) */
	job.optim.kind = DML_OPTIM_ADAM;
	job.optim.lr = lr;
	job.optim.sched.kind = DML_SCHED_COSINE;
	job.optim.sched.lr_min = lr / 20;
	printf("model: softmax regression, %zu x %d; Adam lr %g with cosine decay, on the store\n",
	       sa.features, sa.classes, (double)lr);
	rc = dsgd_run(&job);
	dml_dataset_free(job.train);
	dml_dataset_free(job.test);
	if (rc) {
		fprintf(stderr, "dsgd_demo: %s\n", dml_strerror(rc));
		return 1;
	}
	return 0;
}
