/* time.c - the monotonic clocks, deadlines, the duration rules of common.h
 * and the backoff between attempts. */
#include "internal.h"

#include <errno.h>
#include <time.h>

int64_t dml__now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The precise clock (a vDSO read, tens of ns): the coarse one's few ms of
 * resolution would let timeouts fire early, and deadlines be late. */
int64_t dml__now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The whole ms at or after now + timeout (from the clock's us): never
 * early, and late by less than 1 ms. */
int64_t dml__deadline(dml_duration timeout)
{
	if (timeout < 0)
		return -1;
	if (timeout > INT64_MAX / 2000)
		timeout = INT64_MAX / 2000;
	return (dml__now_us() + timeout * 1000 + 999) / 1000;
}

int64_t dml__deadline_us(dml_duration timeout)
{
	if (timeout < 0)
		return -1;
	if (timeout > INT64_MAX / 2000)
		timeout = INT64_MAX / 2000;
	return dml__now_us() + timeout * 1000;
}

int64_t dml__remaining_us(int64_t deadline_us)
{
	if (deadline_us < 0)
		return -1;
	int64_t left = deadline_us - dml__now_us();
	return left < 0 ? 0 : left;
}

int dml__remaining_ms(int64_t deadline)
{
	if (deadline < 0)
		return -1;
	int64_t left = deadline - dml__now_ms();
	if (left <= 0)
		return 0;
	return left > DML__MAX_WAIT_MS ? DML__MAX_WAIT_MS : (int)left;
}

int dml__opt_duration(dml_duration *v, dml_duration def)
{
	if (*v == 0)
		*v = def;
	else if (*v < 0 && *v != DML_INFINITE)
		return dml__fail(DML_EINVAL, "duration %lld ms: an option takes 0 "
		                 "(default), DML_INFINITE or a positive value",
		                 (long long)*v);
	return 0;
}

int dml__keepalive_opts(dml_duration *keepalive, dml_duration *interval, int *count,
                        dml_duration *user_timeout)
{
	if (dml__opt_duration(keepalive, DML_RPC_DEFAULT_KEEPALIVE) ||
	    dml__opt_duration(interval, DML_RPC_DEFAULT_KEEPALIVE_INTERVAL))
		return DML_EINVAL;
	if (*count < 0 || *count > 1000)
		return dml__fail(DML_EINVAL, "keepalive_count is 0 (3) to 1000");
	if (!*count)
		*count = DML_RPC_DEFAULT_KEEPALIVE_COUNT;
	if (*interval == DML_INFINITE)
		*interval = DML_RPC_DEFAULT_KEEPALIVE_INTERVAL;
	dml_duration ut_def = *keepalive == DML_INFINITE
	                          ? DML_INFINITE
	                          : *keepalive + *interval * *count;
	if (dml__opt_duration(user_timeout, ut_def))
		return DML_EINVAL;
	return 0;
}

int dml__call_timeout(dml_duration t, dml_duration def, dml_duration *out)
{
	if (t == DML_DEFAULT)
		t = def;
	else if (t < 0 && t != DML_INFINITE)
		return dml__fail(DML_EINVAL, "timeout %lld ms: a call takes "
		                 "DML_DEFAULT, DML_INFINITE, 0 or a positive value",
		                 (long long)t);
	*out = t;
	return 0;
}

void dml__backoff_init(dml__backoff *b, int64_t min_ms, int64_t max_ms)
{
	b->min = min_ms;
	b->max = max_ms < min_ms ? min_ms : max_ms;
	b->cur = min_ms;
}

int64_t dml__backoff_next(dml__backoff *b)
{
	int64_t d = b->cur;
	b->cur = b->cur > b->max / 2 ? b->max : b->cur * 2;
	return d;
}

void dml__backoff_reset(dml__backoff *b) { b->cur = b->min; }

void dml__sleep_ms(int64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}
