/*
 * distml/tls.h - TLS 1.3 for RPC connections (OpenSSL 3), servers and
 * clients alike: a configuration made once (dml_tls_new) and named in
 * dml_rpc_server_opts.tls or dml_rpc_client_opts.tls (docs/rpc.md, TLS).
 * The API rules (names, ownership, durations, errors, ABI): docs/api.md.
 *
 * A server presents its certificate; a client verifies it against its CA
 * file and the host name it dialed (or opts.server_name). With a CA file,
 * a server requires a client certificate that chains to it (mutual TLS).
 * Only TLS 1.3 is spoken.
 *
 * These functions exist in every build, so the ABI does not depend on the
 * build host: in one without OpenSSL, dml_tls_new returns DML_ENOTSUP and
 * dml_tls_available 0 (docs/security.md).
 *
 * Part of libdistml. Included by <distml.h>; include that instead.
 */
#ifndef DISTML_TLS_H
#define DISTML_TLS_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dml_tls dml_tls;

enum dml_tls_role {
	DML_TLS_CLIENT = 0,
	DML_TLS_SERVER = 1,
};

/* TLS options; zero-initialised fields are absent. Paths of PEM files, read
 * by dml_tls_new only. May grow at its end (docs/abi.md). */
typedef struct dml_tls_opts {
	const char *cert_file;   /* our certificate (chain): a server's is
	                            required; a client's for mutual TLS */
	const char *key_file;    /* its private key */
	const char *ca_file;     /* the CAs a peer's certificate must chain to:
	                            required for a client; a server with one
	                            requires client certificates (mutual TLS) */
	const char *server_name; /* client: the name the server's certificate
	                            must carry, also sent as SNI; NULL: the host
	                            of the address dialed (an IP address is
	                            checked as one); over unix: only the
	                            chain is verified unless this is set */
} dml_tls_opts;

/* Makes a TLS configuration for servers (DML_TLS_SERVER) or clients
 * (DML_TLS_CLIENT) and stores it in *out, which the caller frees with
 * dml_tls_free after every server and client using it. The files are read
 * now. 0; DML_EINVAL (a required file missing, a bad role); DML_ETLS (a
 * file that does not load, a key that does not match its certificate: the
 * detail names it); DML_ENOTSUP (built without OpenSSL); DML_ENOMEM;
 * DML_EVERSION. On failure *out is untouched. Thread-safe; the
 * configuration may be shared by any number of servers and clients. */
DML_API int dml_tls_new_abi(dml_tls **out, int role, const dml_tls_opts *opts, int abi);
#define dml_tls_new(...) dml_tls_new_abi(__VA_ARGS__, DML_ABI)

/* Frees a configuration; NULL is ignored. No server or client may use it
 * any longer. */
DML_API void dml_tls_free(dml_tls *t);

/* 1 if this build speaks TLS, 0 if not. Thread-safe. */
DML_API int dml_tls_available(void);

#ifdef __cplusplus
}
#endif

#endif
