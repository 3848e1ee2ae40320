/*
 * mpi_dsgd.c - distributed SGD launched by MPI (docs/cluster.md, "Launch
 * by an existing engine"). MPI gives each process its rank and the number
 * of processes, and carries the store addresses from the servers to the
 * workers (one MPI_Allgather); everything else is libdistml. The library
 * itself knows nothing of MPI.
 *
 *   mpirun -np 4 build/examples/mpi_dsgd [--shards S] [--epochs E]
 *          [--mode bsp|ssp|asp] [--data DIR] [--host ADDR]
 *
 * Ranks 0 .. S-1 (S = --shards, default half the ranks) each serve one
 * shard of the store (softmax regression on Fashion-MNIST, Adam, cut by
 * dml_shard_range) on an ephemeral port of ADDR (--host; default: this
 * host's first IPv4 address that is not loopback, else 127.0.0.1); the
 * other ranks are workers 0 .. W-1, each training on its part of the data
 * against every shard. At the end rank 0 prints
 *   RESULT mpi ranks=N shards=S workers=W seconds=T acc=A updates=U exact=1
 * (exact=1: every shard applied W x steps pushes, each exactly once).
 *
 * A server rank runs its RPC server on a thread of its own; only the main
 * thread calls MPI, so MPI_Init is enough (no MPI_THREAD_MULTIPLE).
 */
#include <distml.h>
#include <mpi.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC diagnostic ignored "-Wunused-function"
#include "dsgd_host.h"

#define ADDR_LEN 64
#define MAX_SHARDS 16

typedef struct opts {
	int shards, epochs;
	dml_dsgd_mode mode;
	const char *data, *host;
} opts;

/* This host's first IPv4 address that is not loopback (in a namespace
 * host: its eth0), else 127.0.0.1. */
static void own_address(char *out, size_t n)
{
	snprintf(out, n, "127.0.0.1");
	struct ifaddrs *ifs;
	if (getifaddrs(&ifs) != 0)
		return;
	for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
			continue;
		const struct sockaddr_in *a = (const struct sockaddr_in *)(void *)i->ifa_addr;
		if ((ntohl(a->sin_addr.s_addr) >> 24) == 127)
			continue;
		inet_ntop(AF_INET, &a->sin_addr, out, (socklen_t)n);
		break;
	}
	freeifaddrs(ifs);
}

static void *run_server(void *s)
{
	dml_rpc_server_run(s);
	return NULL;
}

/* Every worker takes as many steps per epoch: the largest part's. */
static size_t steps_per_epoch(size_t rows, int workers)
{
	size_t most = (rows + (size_t)workers - 1) / (size_t)workers;
	return (most + 127) / 128;
}

int main(int argc, char **argv)
{
	MPI_Init(&argc, &argv);
	int rank, size;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	opts o = {0, 5, DML_DSGD_BSP, "/usr/share/datasets/fashion-mnist", NULL};
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--shards"))
			o.shards = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--epochs"))
			o.epochs = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--data"))
			o.data = argv[i + 1];
		else if (!strcmp(argv[i], "--host"))
			o.host = argv[i + 1];
		else if (!strcmp(argv[i], "--mode"))
			o.mode = !strcmp(argv[i + 1], "asp") ? DML_DSGD_ASP
			       : !strcmp(argv[i + 1], "ssp") ? DML_DSGD_SSP : DML_DSGD_BSP;
	}
	if (!o.shards)
		o.shards = size / 2 > 0 ? size / 2 : 1;
	int workers = size - o.shards;
	if (size < 2 || o.shards < 1 || o.shards > MAX_SHARDS || workers < 1 || o.epochs < 1) {
		if (rank == 0)
			fprintf(stderr, "mpi_dsgd: needs at least 2 ranks, 1 to %d shards and a "
			        "worker (%d ranks, %d shards)\n", MAX_SHARDS, size, o.shards);
		MPI_Finalize();
		return 2;
	}
	int serving = rank < o.shards;
	dml_dataset *train = NULL, *test = NULL;
	int rc = dsgd_load_standardised(o.data, &train, &test);
	dml_model m;
	memset(&m, 0, sizeof m);
	if (!rc)
		rc = dml_model_init_softmax(&m, dml_dataset_dim(train), 10, 0);
	size_t steps = rc ? 0 : steps_per_epoch(dml_dataset_rows(train), workers);

	/* servers: a shard each, on an ephemeral port of this host */
	char addr[ADDR_LEN] = "";
	dml_ps *store = NULL;
	dml_rpc_server *srv = NULL;
	pthread_t th;
	int running = 0;
	float *w0 = NULL;
	if (!rc && serving) {
		size_t off, len;
		w0 = calloc(m.dim, sizeof *w0);
		rc = w0 ? dml_shard_range(m.dim, rank, o.shards, &off, &len) : DML_ENOMEM;
		if (!rc && m.init)
			rc = m.init(m.self, w0, 0);
		dml_ps_opts po;
		memset(&po, 0, sizeof po);
		po.init = w0 + off;
		po.optim.kind = DML_OPTIM_ADAM;
		po.optim.lr = 0.002f;
		po.optim.sched.kind = DML_SCHED_COSINE;
		po.optim.sched.lr_min = 0.0001f;
		po.optim.sched.total = steps * (size_t)o.epochs * (size_t)workers;
		po.workers = workers;
		po.staleness = o.mode == DML_DSGD_BSP ? 0 : o.mode == DML_DSGD_SSP ? 2 : DML_PS_ASYNC;
		char host[48], listen[ADDR_LEN];
		if (o.host)
			snprintf(host, sizeof host, "%s", o.host);
		else
			own_address(host, sizeof host);
		snprintf(listen, sizeof listen, "%s:0", host);
		if (!rc)
			rc = dml_ps_new(&store, len, &po);
		if (!rc && !(rc = dml_rpc_server_new(&srv, NULL)) && !(rc = dml_ps_serve(store, srv)) &&
		    !(rc = dml_rpc_server_listen(srv, listen)))
			rc = dml_rpc_server_addr(srv, 0, addr, sizeof addr);
		if (!rc && pthread_create(&th, NULL, run_server, srv) == 0)
			running = 1;
		else if (!rc)
			rc = DML_ENOMEM;
		if (rc)
			addr[0] = '\0';
	}
	/* the one exchange: every rank learns the servers' addresses */
	static char all[1024][ADDR_LEN];
	if (size > 1024) {
		if (rank == 0)
			fprintf(stderr, "mpi_dsgd: at most 1024 ranks\n");
		MPI_Abort(MPI_COMM_WORLD, 2);
	}
	MPI_Allgather(addr, ADDR_LEN, MPI_CHAR, all, ADDR_LEN, MPI_CHAR, MPI_COMM_WORLD);
	int ok = 1;
	for (int i = 0; i < o.shards; i++)
		ok &= all[i][0] != '\0';

	/* workers: train against every shard */
	double secs = 0, acc = 0;
	uint64_t my_steps = 0;
	if (!serving && ok && !rc) {
		int wid = rank - o.shards;
		dml_dataset *part = NULL;
		dml_rpc_client *c[MAX_SHARDS] = {0};
		dml_ps *ps = NULL;
		rc = dml_dataset_new_shard(&part, train, wid, workers);
		for (int i = 0; i < o.shards && !rc; i++)
			rc = dml_rpc_dial(&c[i], all[i], NULL);
		if (!rc)
			rc = dml_ps_connect(&ps, c, o.shards, NULL);
		dml_train_stats st;
		memset(&st, 0, sizeof st);
		double t0 = dsgd_now();
		if (!rc) {
			dml_dsgd_opts d;
			memset(&d, 0, sizeof d);
			d.worker = wid;
			d.mode = o.mode;
			d.epochs = o.epochs;
			d.batch = 128;
			d.steps_per_epoch = steps;
			d.seed = 1000 + (uint64_t)wid;
			rc = dml_dsgd_run(ps, &m, part, &st, &d);
		}
		secs = dsgd_now() - t0;
		my_steps = st.steps;
		if (!rc && wid == 0) {
			float *w = malloc(m.dim * sizeof *w);
			if (w && !dml_ps_pull(ps, w))
				dml_model_evaluate(&m, w, test, NULL, &acc);
			free(w);
		}
		if (rc)
			fprintf(stderr, "mpi_dsgd rank %d (worker %d): %s (%s)\n", rank, wid,
			        dml_strerror(rc), dml_error_detail());
		dml_ps_free(ps);
		for (int i = 0; i < o.shards; i++)
			dml_rpc_free(c[i]);
		dml_dataset_free(part);
	}
	/* the workers are done: the servers stop; then the figures meet at 0 */
	MPI_Barrier(MPI_COMM_WORLD);
	uint64_t updates = 0;
	if (running) {
		dml_rpc_server_stop(srv);
		pthread_join(th, NULL);
		dml_ps_updates(store, &updates);
	}
	int failed = rc != 0 || !ok, any_failed = 0;
	unsigned long long umin = 0, umax = 0, stot = 0, s = my_steps;
	unsigned long long umin_in = serving ? updates : ~0ULL, umax_in = serving ? updates : 0;
	double accmax = 0, secsmax = 0;
	MPI_Reduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, 0, MPI_COMM_WORLD);
	MPI_Reduce(&umin_in, &umin, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, 0, MPI_COMM_WORLD);
	MPI_Reduce(&umax_in, &umax, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, 0, MPI_COMM_WORLD);
	MPI_Reduce(&s, &stot, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
	MPI_Reduce(&acc, &accmax, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
	MPI_Reduce(&secs, &secsmax, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
	if (rank == 0) {
		if (any_failed)
			fprintf(stderr, "mpi_dsgd: a rank failed\n");
		else
			printf("RESULT mpi ranks=%d shards=%d workers=%d seconds=%.3f acc=%.4f "
			       "updates=%llu exact=%d\n", size, o.shards, workers, secsmax, accmax,
			       umax, umin == umax && umax == stot);
	}
	dml_rpc_server_free(srv);
	dml_ps_free(store);
	free(w0);
	dml_model_destroy(&m);
	dml_dataset_free(train);
	dml_dataset_free(test);
	MPI_Finalize();
	return any_failed && rank == 0 ? 1 : 0;
}
