/* shard.c - the one rule that cuts a range into parts (common.h). */
#include "internal.h"

int dml_shard_range(size_t total, int i, int n, size_t *off, size_t *len)
{
	dml__detail_clear();
	if (n < 1 || i < 0 || i >= n || !off || !len)
		return dml__fail(DML_EINVAL, "part %d of %d", i, n);
	size_t base = total / (size_t)n, extra = total % (size_t)n, k = (size_t)i;
	*off = k * base + (k < extra ? k : extra);
	*len = base + (k < extra);
	return 0;
}
