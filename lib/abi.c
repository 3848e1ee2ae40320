/* abi.c - the sizes of the growable public structs at each ABI level, and
 * the copies in and out of a caller's layout (abi.h, docs/abi.md). */
#include "abi.h"

/* Row: a layout; column: its size at ABI level 1, 2, ... */
static const size_t sizes[DML__L_COUNT][DML_ABI] = {
	[DML__L_RPC_SERVER_OPTS] = {sizeof(dml_rpc_server_opts)},
	[DML__L_RPC_CLIENT_OPTS] = {sizeof(dml_rpc_client_opts)},
	[DML__L_PS_OPTS] = {sizeof(dml_ps_opts)},
	[DML__L_PS_SERVE_OPTS] = {sizeof(dml_ps_serve_opts)},
	[DML__L_PS_REMOTE_OPTS] = {sizeof(dml_ps_remote_opts)},
	[DML__L_PS_CLOCK_INFO] = {sizeof(dml_ps_clock_info)},
	[DML__L_OPTIM_OPTS] = {sizeof(dml_optim_opts)},
	[DML__L_DATA_OPTS] = {sizeof(dml_data_opts)},
	[DML__L_MODEL] = {sizeof(dml_model)},
	[DML__L_SGD_OPTS] = {sizeof(dml_sgd_opts)},
	[DML__L_DSGD_OPTS] = {sizeof(dml_dsgd_opts)},
	[DML__L_TRAIN_STATS] = {sizeof(dml_train_stats)},
	[DML__L_RPC_STATS] = {sizeof(dml_rpc_stats)},
	[DML__L_TLS_OPTS] = {sizeof(dml_tls_opts)},
};

size_t dml__abi_size(enum dml__layout l, int abi)
{
	return sizes[l][abi - 1];
}

int dml__abi_in(void *dst, size_t dst_size, const void *src,
                enum dml__layout l, int abi)
{
	memset(dst, 0, dst_size);
	int rc = dml__abi_check(abi);
	if (rc)
		return rc;
	size_t n = dml__abi_size(l, abi);
	if (src)
		memcpy(dst, src, n < dst_size ? n : dst_size);
	return 0;
}

void dml__abi_out(void *dst, const void *src, enum dml__layout l, int abi)
{
	if (dst)
		memcpy(dst, src, dml__abi_size(l, abi));
}
