/*
 * arith_server.c - Go's net/rpc Arith server, in C.
 *
 *     arith_server [ADDRESS] [THREADS]     (default 127.0.0.1:1234, 1 thread)
 *
 * Prints "listening on ADDRESS" once it accepts connections, then serves
 * until interrupted.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "arith.h"

static int multiply(dml_rpc_ctx *ctx, const void *args, void *reply, void *user)
{
	(void)ctx;
	(void)user;
	const Args *a = args;
	((Reply *)reply)->C = a->A * a->B;
	return 0;
}

static int divide(dml_rpc_ctx *ctx, const void *args, void *reply, void *user)
{
	(void)user;
	const Args *a = args;
	if (a->B == 0)
		return dml_rpc_ctx_errorf(ctx, "divide by zero");
	Quotient *q = reply;
	q->Quo = a->A / a->B;
	q->Rem = a->A % a->B;
	return 0;
}

static void *serve(void *srv)
{
	dml_rpc_server_run(srv);
	return NULL;
}

int main(int argc, char **argv)
{
	const char *addr = argc > 1 ? argv[1] : "127.0.0.1:1234";
	int threads = argc > 2 ? atoi(argv[2]) : 1;
	if (threads < 1 || threads > 64)
		threads = 1;
	dml_rpc_server *srv;
	int rc = dml_rpc_server_new(&srv, NULL);
	if (!rc)
		rc = dml_rpc_server_register(srv, &arith_multiply, multiply, NULL);
	if (!rc)
		rc = dml_rpc_server_register(srv, &arith_divide, divide, NULL);
	if (!rc)
		rc = dml_rpc_server_listen(srv, addr);
	if (rc) {
		fprintf(stderr, "arith_server: %s: %s\n", addr, dml_strerror(rc));
		return 1;
	}
	char bound[128];
	dml_rpc_server_addr(srv, 0, bound, sizeof bound);
	printf("listening on %s\n", bound);
	fflush(stdout);
	pthread_t t[64];
	for (int i = 1; i < threads; i++)
		pthread_create(&t[i], NULL, serve, srv);
	rc = dml_rpc_server_run(srv); /* until killed */
	fprintf(stderr, "arith_server: %s\n", dml_strerror(rc));
	dml_rpc_server_free(srv);
	return rc ? 1 : 0;
}
