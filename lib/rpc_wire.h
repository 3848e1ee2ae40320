/*
 * rpc_wire.h - the built-in RPC.Hello method (docs/protocol.md, section 11),
 * shared by the server (rpc_server.c), which answers it, and the client
 * (rpc_client.c), which asks. Not installed.
 */
#ifndef DISTML_RPC_WIRE_H
#define DISTML_RPC_WIRE_H

#include "internal.h"

/* A peer says which protocol it speaks and which library it runs, and asks
 * whether the other side serves `method` (empty: asks nothing). */
typedef struct rpcw_hello {
	uint32_t proto;
	dml_str lib;
	dml_str method;
} rpcw_hello;
static const dml_field rpcw_hello_f[] = {
	DML_FIELD(rpcw_hello, proto, DML_U32), DML_FIELD(rpcw_hello, lib, DML_STR),
	DML_FIELD(rpcw_hello, method, DML_STR)};
static const dml_type rpcw_hello_t = DML_TYPE(rpcw_hello, rpcw_hello_f);

typedef struct rpcw_welcome {
	uint32_t proto;
	dml_str lib;
	bool has;
} rpcw_welcome;
static const dml_field rpcw_welcome_f[] = {
	DML_FIELD(rpcw_welcome, proto, DML_U32), DML_FIELD(rpcw_welcome, lib, DML_STR),
	DML_FIELD(rpcw_welcome, has, DML_BOOL)};
static const dml_type rpcw_welcome_t = DML_TYPE(rpcw_welcome, rpcw_welcome_f);

static const dml_rpc_method rpcw_m_hello = {"RPC.Hello", &rpcw_hello_t,
                                            &rpcw_welcome_t};

/* RPC.Ping (0.4): no arguments, an empty reply; a client's heartbeat.
 * Sent with sequence number 0, whose reply no call waits for; a server
 * without it answers "no such method", as good a sign of life. */
static const dml_rpc_method rpcw_m_ping = {"RPC.Ping", NULL, NULL};

/* RPC.Auth (0.4): a client presents a token (dml_rpc_client_opts.token)
 * on a new connection, before any call, with sequence number 0; the reply
 * is read before anything else is sent. Served by servers with tokens. */
typedef struct rpcw_auth {
	dml_str token;
} rpcw_auth;
static const dml_field rpcw_auth_f[] = {DML_FIELD(rpcw_auth, token, DML_STR)};
static const dml_type rpcw_auth_t = DML_TYPE(rpcw_auth, rpcw_auth_f);
static const dml_rpc_method rpcw_m_auth = {"RPC.Auth", &rpcw_auth_t, NULL};

/* Method names with this prefix belong to the library. */
#define RPCW_PREFIX "RPC."

#endif
