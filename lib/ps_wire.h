/*
 * ps_wire.h - the parameter store's RPC methods and their messages, shared
 * by the server side (ps_serve.c) and the remote handle (ps_remote.c).
 * Documented in docs/ps.md. Not installed.
 */
#ifndef DISTML_PS_WIRE_H
#define DISTML_PS_WIRE_H

#include "internal.h"

enum { PSW_OP_UPDATE = 0, PSW_OP_PUSH = 1 }; /* = DML__PS_ADD, _STEP */

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

/* ---- 0.3: described stores, keyed rows, split dense calls --------- */

enum { PSW_KIND_DENSE = 0, PSW_KIND_KEYED = 1 };

/* PS.Describe: what a store is and the largest frame its server takes. */
typedef struct psw_desc {
	int32_t kind;
	uint64_t dim, width, rows, max_rows;
	int64_t optim, workers, staleness;
	uint64_t updates, max_frame;
} psw_desc;
static const dml_field psw_desc_f[] = {
	DML_FIELD(psw_desc, kind, DML_I32), DML_FIELD(psw_desc, dim, DML_U64),
	DML_FIELD(psw_desc, width, DML_U64), DML_FIELD(psw_desc, rows, DML_U64),
	DML_FIELD(psw_desc, max_rows, DML_U64), DML_FIELD(psw_desc, optim, DML_I64),
	DML_FIELD(psw_desc, workers, DML_I64),
	DML_FIELD(psw_desc, staleness, DML_I64),
	DML_FIELD(psw_desc, updates, DML_U64),
	DML_FIELD(psw_desc, max_frame, DML_U64)};
static const dml_type psw_desc_t = DML_TYPE(psw_desc, psw_desc_f);

/* The reply of the 0.3 pushes: a code the client returns as its own
 * (DML_ENONFINITE, DML_EFULL, DML_EINVAL, ...), with a message. `buf`
 * is not on the wire: it holds the message until the reply is sent. */
typedef struct psw_status {
	int32_t code;
	dml_str msg;
	char buf[DML_ERRMSG_MAX];
} psw_status;
static const dml_field psw_status_f[] = {DML_FIELD(psw_status, code, DML_I32),
                                         DML_FIELD(psw_status, msg, DML_STR)};
static const dml_type psw_status_t = DML_TYPE(psw_status, psw_status_f);

/* PS.PullRows: keys (u64, sent as i64) -> their rows. */
typedef struct psw_keys { dml_i64s keys; } psw_keys;
static const dml_field psw_keys_f[] = {DML_FIELD(psw_keys, keys, DML_I64S)};
static const dml_type psw_keys_t = DML_TYPE(psw_keys, psw_keys_f);

/* PS.PushRows: op on rows. `start` is 1 on the first frame of a push to
 * this shard (an optimizer step begins) and 0 on the frames after it. */
typedef struct psw_rpush {
	uint64_t client, seq;
	int32_t op, start;
	dml_i64s keys;
	dml_f32s v;
} psw_rpush;
static const dml_field psw_rpush_f[] = {
	DML_FIELD(psw_rpush, client, DML_U64), DML_FIELD(psw_rpush, seq, DML_U64),
	DML_FIELD(psw_rpush, op, DML_I32), DML_FIELD(psw_rpush, start, DML_I32),
	DML_FIELD(psw_rpush, keys, DML_I64S), DML_FIELD(psw_rpush, v, DML_F32S)};
static const dml_type psw_rpush_t = DML_TYPE(psw_rpush, psw_rpush_f);

/* PS.PushRange: one frame of a dense push, update or assign split to fit
 * the frame limit: op on [off, off + v.n). */
typedef struct psw_xpush {
	uint64_t client, seq;
	int32_t op, start;
	uint64_t off;
	dml_f32s v;
} psw_xpush;
static const dml_field psw_xpush_f[] = {
	DML_FIELD(psw_xpush, client, DML_U64), DML_FIELD(psw_xpush, seq, DML_U64),
	DML_FIELD(psw_xpush, op, DML_I32), DML_FIELD(psw_xpush, start, DML_I32),
	DML_FIELD(psw_xpush, off, DML_U64), DML_FIELD(psw_xpush, v, DML_F32S)};
static const dml_type psw_xpush_t = DML_TYPE(psw_xpush, psw_xpush_f);

enum { PSW_OP_ASSIGN = 2 };

static const dml_rpc_method psw_m_describe = {"PS.Describe", NULL, &psw_desc_t};
static const dml_rpc_method psw_m_pull_rows = {"PS.PullRows", &psw_keys_t, &psw_vec_t};
static const dml_rpc_method psw_m_push_rows = {"PS.PushRows", &psw_rpush_t, &psw_status_t};
static const dml_rpc_method psw_m_push_range = {"PS.PushRange", &psw_xpush_t, &psw_status_t};

/* ---- 0.4: compressed pushes (compress.h) ---------------------------- */

/* PS.Compression: what the store asks of pushes (DML__GC_*, top-k's
 * fraction and warm-up in pushes). A server without it (0.3) asks for
 * nothing. */
typedef struct psw_codec {
	int32_t codec;
	float topk;
	uint64_t warmup;
} psw_codec;
static const dml_field psw_codec_f[] = {DML_FIELD(psw_codec, codec, DML_I32),
                                        DML_FIELD(psw_codec, topk, DML_F32),
                                        DML_FIELD(psw_codec, warmup, DML_U64)};
static const dml_type psw_codec_t = DML_TYPE(psw_codec, psw_codec_f);

/* PS.PushCoded: a frame of a dense push as PS.PushRange, its n values
 * coded: op on [off, off + n) of what dml__gc_decode makes of the rest. */
typedef struct psw_cpush {
	uint64_t client, seq;
	int32_t op, start;
	uint64_t off, n;
	int32_t codec;
	dml_f32s scales;
	dml_u32s idx;
	dml_bytes data;
} psw_cpush;
static const dml_field psw_cpush_f[] = {
	DML_FIELD(psw_cpush, client, DML_U64), DML_FIELD(psw_cpush, seq, DML_U64),
	DML_FIELD(psw_cpush, op, DML_I32), DML_FIELD(psw_cpush, start, DML_I32),
	DML_FIELD(psw_cpush, off, DML_U64), DML_FIELD(psw_cpush, n, DML_U64),
	DML_FIELD(psw_cpush, codec, DML_I32),
	DML_FIELD(psw_cpush, scales, DML_F32S), DML_FIELD(psw_cpush, idx, DML_U32S),
	DML_FIELD(psw_cpush, data, DML_BYTES)};
static const dml_type psw_cpush_t = DML_TYPE(psw_cpush, psw_cpush_f);

static const dml_rpc_method psw_m_compression = {"PS.Compression", NULL, &psw_codec_t};
static const dml_rpc_method psw_m_push_coded = {"PS.PushCoded", &psw_cpush_t, &psw_status_t};

/* The shard of a key among n (ranges of a fixed hash of the key: both
 * sides must agree, for ever). */
static inline int psw_shard_of(uint64_t key, int n)
{
	uint64_t x = key;
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return (int)(((x >> 32) * (uint64_t)n) >> 32);
}

/* Bytes of a frame that are not the values of its arrays: the header,
 * the method name and the fixed fields, generously. */
#define PSW_FRAME_SLACK 1024

static const dml_rpc_method psw_m_info = {"PS.Info", NULL, &psw_info_t};
static const dml_rpc_method psw_m_pull = {"PS.Pull", &psw_range_t, &psw_vec_t};
static const dml_rpc_method psw_m_push = {"PS.Push", &psw_push_t, NULL};
static const dml_rpc_method psw_m_spush = {"PS.PushSparse", &psw_spush_t, NULL};
static const dml_rpc_method psw_m_assign = {"PS.Assign", &psw_vec_t, NULL};
static const dml_rpc_method psw_m_clock = {"PS.Clock", &psw_worker_t, &psw_clock_t};
static const dml_rpc_method psw_m_clock_get = {"PS.ClockGet", &psw_worker_t, &psw_clock_t};

#endif
