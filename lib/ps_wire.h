/*
 * ps_wire.h - the parameter store's RPC methods and their messages, shared
 * by the server side (ps_serve.c) and the remote handle (ps_remote.c).
 * Documented in docs/ps.md. Not installed.
 */
#ifndef DISTML_PS_WIRE_H
#define DISTML_PS_WIRE_H

#include "internal.h"

enum { PSW_OP_UPDATE = 0, PSW_OP_PUSH = 1 };

/* The server's exactly-once window: a push number this far or further
 * below the highest seen from its client is taken for a late copy. A
 * handle therefore keeps fewer than this many pushes in flight per shard. */
#define PSW_WINDOW 64

typedef struct psw_info {
	uint64_t dim;
	int64_t optim, workers, staleness;
	uint64_t updates;
} psw_info;
static const dml_field psw_info_f[] = {
	DML_FIELD(psw_info, dim, DML_U64), DML_FIELD(psw_info, optim, DML_I64),
	DML_FIELD(psw_info, workers, DML_I64), DML_FIELD(psw_info, staleness, DML_I64),
	DML_FIELD(psw_info, updates, DML_U64)};
static const dml_type psw_info_t = DML_TYPE(psw_info, psw_info_f);

typedef struct psw_range { uint64_t off, n; } psw_range;
static const dml_field psw_range_f[] = {DML_FIELD(psw_range, off, DML_U64),
                                        DML_FIELD(psw_range, n, DML_U64)};
static const dml_type psw_range_t = DML_TYPE(psw_range, psw_range_f);

typedef struct psw_vec { dml_f32s v; } psw_vec;
static const dml_field psw_vec_f[] = {DML_FIELD(psw_vec, v, DML_F32S)};
static const dml_type psw_vec_t = DML_TYPE(psw_vec, psw_vec_f);

/* A push: client id and sequence number make it idempotent. */
typedef struct psw_push {
	uint64_t client, seq;
	int32_t op;
	dml_f32s v;
} psw_push;
static const dml_field psw_push_f[] = {
	DML_FIELD(psw_push, client, DML_U64), DML_FIELD(psw_push, seq, DML_U64),
	DML_FIELD(psw_push, op, DML_I32), DML_FIELD(psw_push, v, DML_F32S)};
static const dml_type psw_push_t = DML_TYPE(psw_push, psw_push_f);

typedef struct psw_spush {
	uint64_t client, seq;
	int32_t op;
	dml_u32s idx;
	dml_f32s v;
} psw_spush;
static const dml_field psw_spush_f[] = {
	DML_FIELD(psw_spush, client, DML_U64), DML_FIELD(psw_spush, seq, DML_U64),
	DML_FIELD(psw_spush, op, DML_I32), DML_FIELD(psw_spush, idx, DML_U32S),
	DML_FIELD(psw_spush, v, DML_F32S)};
static const dml_type psw_spush_t = DML_TYPE(psw_spush, psw_spush_f);

typedef struct psw_worker { int32_t worker; } psw_worker;
static const dml_field psw_worker_f[] = {DML_FIELD(psw_worker, worker, DML_I32)};
static const dml_type psw_worker_t = DML_TYPE(psw_worker, psw_worker_f);

typedef struct psw_clock {
	int64_t clock, min;
	int32_t waited;
} psw_clock;
static const dml_field psw_clock_f[] = {DML_FIELD(psw_clock, clock, DML_I64),
                                        DML_FIELD(psw_clock, min, DML_I64),
                                        DML_FIELD(psw_clock, waited, DML_I32)};
static const dml_type psw_clock_t = DML_TYPE(psw_clock, psw_clock_f);

static const dml_rpc_method psw_m_info = {"PS.Info", NULL, &psw_info_t};
static const dml_rpc_method psw_m_pull = {"PS.Pull", &psw_range_t, &psw_vec_t};
static const dml_rpc_method psw_m_push = {"PS.Push", &psw_push_t, NULL};
static const dml_rpc_method psw_m_spush = {"PS.PushSparse", &psw_spush_t, NULL};
static const dml_rpc_method psw_m_assign = {"PS.Assign", &psw_vec_t, NULL};
static const dml_rpc_method psw_m_clock = {"PS.Clock", &psw_worker_t, &psw_clock_t};
static const dml_rpc_method psw_m_clock_get = {"PS.ClockGet", &psw_worker_t, &psw_clock_t};

#endif
