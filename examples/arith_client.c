/*
 * arith_client.c - Go's net/rpc Arith client, in C.
 *
 *     arith_client [ADDRESS]               (default 127.0.0.1:1234)
 *
 * Calls Arith.Multiply synchronously, Arith.Divide asynchronously, then
 * Arith.Divide by zero to show a handler's error, and checks every answer.
 */
#include <stdio.h>

#include "arith.h"

int main(int argc, char **argv)
{
	const char *addr = argc > 1 ? argv[1] : "127.0.0.1:1234";
	dml_rpc_client *client;
	int rc = dml_rpc_dial(&client, addr, NULL);
	if (rc) {
		fprintf(stderr, "dialing: %s\n", dml_strerror(rc));
		return 1;
	}
	int bad = 0;

	/* Synchronous call */
	Args args = {7, 8};
	Reply reply;
	rc = dml_rpc_call(client, &arith_multiply, &args, &reply, 5000);
	if (rc) {
		fprintf(stderr, "arith error: %s: %s\n", dml_strerror(rc), dml_error_detail());
		return 1;
	}
	printf("Arith: %lld*%lld=%lld\n", (long long)args.A, (long long)args.B,
	       (long long)reply.C);
	bad |= reply.C != 56;

	/* Asynchronous call */
	Args dargs = {17, 8};
	Quotient quo;
	dml_rpc_pending *call;
	rc = dml_rpc_start(&call, client, &arith_divide, &dargs, &quo, 5000);
	if (!rc)
		rc = dml_rpc_pending_wait(call);
	if (rc) {
		fprintf(stderr, "arith error: %s: %s\n", dml_strerror(rc), dml_error_detail());
		return 1;
	}
	dml_rpc_pending_free(call);
	printf("Arith: %lld/%lld=%lld remainder %lld\n", (long long)dargs.A,
	       (long long)dargs.B, (long long)quo.Quo, (long long)quo.Rem);
	bad |= quo.Quo != 2 || quo.Rem != 1;

	/* A handler's error comes back with its message */
	Args zero = {1, 0};
	rc = dml_rpc_call(client, &arith_divide, &zero, &quo, 5000);
	printf("Arith: 1/0: %s: %s\n", dml_strerror(rc), dml_error_detail());
	bad |= rc != DML_EHANDLER;

	dml_rpc_free(client);
	if (bad)
		fprintf(stderr, "arith_client: WRONG ANSWER\n");
	return bad;
}
