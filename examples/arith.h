/* arith.h - the Arith service of Go's net/rpc documentation, in C: the types
 * and methods shared by examples/arith_server.c and examples/arith_client.c. */
#ifndef ARITH_H
#define ARITH_H

#include <distml.h>

typedef struct Args {
	int64_t A, B;
} Args;

typedef struct Quotient {
	int64_t Quo, Rem;
} Quotient;

typedef struct Reply {
	int64_t C;
} Reply;

static const dml_field args_fields[] = {
	DML_FIELD(Args, A, DML_I64),
	DML_FIELD(Args, B, DML_I64),
};
static const dml_field reply_fields[] = {DML_FIELD(Reply, C, DML_I64)};
static const dml_field quotient_fields[] = {
	DML_FIELD(Quotient, Quo, DML_I64),
	DML_FIELD(Quotient, Rem, DML_I64),
};
static const dml_type args_type = DML_TYPE(Args, args_fields);
static const dml_type reply_type = DML_TYPE(Reply, reply_fields);
static const dml_type quotient_type = DML_TYPE(Quotient, quotient_fields);

static const dml_rpc_method arith_multiply = {"Arith.Multiply", &args_type, &reply_type};
static const dml_rpc_method arith_divide = {"Arith.Divide", &args_type, &quotient_type};

#endif
