/*
 * abi.h - the layouts of the public structs that may grow, by ABI level
 * (DML_ABI, docs/abi.md). A function that reads such a struct from a caller
 * copies it in with dml__abi_in (the caller's layout, the rest zero: the
 * defaults); one that fills it copies out with dml__abi_out (never more
 * than the caller's layout). Not installed.
 *
 * Growing a struct: append its fields, raise DML_ABI, and add the new size
 * to its row in abi.c. A struct nested by value in others (dml_optim_opts,
 * dml_schedule) changes their layouts too: those then need a conversion
 * from each older level in abi.c instead of a prefix copy.
 */
#ifndef DISTML_ABI_H
#define DISTML_ABI_H

#include "internal.h"

enum dml__layout {
	DML__L_RPC_SERVER_OPTS,
	DML__L_RPC_CLIENT_OPTS,
	DML__L_PS_OPTS,
	DML__L_PS_SERVE_OPTS,
	DML__L_PS_REMOTE_OPTS,
	DML__L_PS_CLOCK_INFO,
	DML__L_OPTIM_OPTS,
	DML__L_DATA_OPTS,
	DML__L_MODEL,
	DML__L_SGD_OPTS,
	DML__L_DSGD_OPTS,
	DML__L_TRAIN_STATS,
	DML__L_RPC_STATS,
	DML__L_TLS_OPTS,
	DML__L_COUNT
};

/* The size of a layout at ABI level abi (1 .. DML_ABI, checked by
 * dml__abi_check or dml__abi_in). */
size_t dml__abi_size(enum dml__layout l, int abi);

/* *dst (this library's struct, dst_size bytes) = the caller's struct at
 * src in its layout, zero beyond it; all zero when src is NULL. First
 * checks the level (dml__abi_check): 0 or DML_EVERSION, with *dst then
 * all zero. */
int dml__abi_in(void *dst, size_t dst_size, const void *src,
                enum dml__layout l, int abi);

/* The caller's struct at dst = the first bytes of *src, as many as the
 * caller's layout has. dst may be NULL (nothing is written). */
void dml__abi_out(void *dst, const void *src, enum dml__layout l, int abi);

#endif
