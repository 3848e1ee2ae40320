/* test_sys.c - the platform shims of lib/sys.h, in whichever kind this
 * build uses (make PORTABLE=1 check runs them as the POSIX fallbacks). */
#define _GNU_SOURCE
#include "testutil.h"

#include "internal.h"
#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

static void assert_nonblock_cloexec(int fd)
{
	assert_true(fd >= 0);
	assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
}

static void test_kinds_match_the_build(void **state)
{
	(void)state;
	const char *k = dml__sys_kinds();
#ifdef DML_PORTABLE
	assert_string_equal(k, "accept+fcntl pipe urandom sigpipe-mask poll-ms "
	                       "tcp-keepalive no-user-timeout");
#elif defined(__linux__)
	assert_string_equal(k, "accept4 eventfd getrandom msg-nosignal ppoll "
	                       "tcp-keepalive user-timeout");
#else
	assert_non_null(k);
#endif
}

static void test_socket_and_accept_flags(void **state)
{
	(void)state;
	int lfd = dml__sys_socket(AF_INET, SOCK_STREAM);
	assert_nonblock_cloexec(lfd);
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof sa;
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	/* nothing pending: EAGAIN, not a block */
	assert_int_equal(dml__sys_accept(lfd, NULL, NULL), -1);
	assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
	int c = dml__sys_socket(AF_INET, SOCK_STREAM);
	assert_nonblock_cloexec(c);
	int r = connect(c, (struct sockaddr *)&sa, sizeof sa);
	assert_true(r == 0 || errno == EINPROGRESS);
	struct pollfd p = {lfd, POLLIN, 0};
	assert_int_equal(poll(&p, 1, 10000), 1);
	int a = dml__sys_accept(lfd, NULL, NULL);
	assert_nonblock_cloexec(a);
	close(a);
	close(c);
	close(lfd);
}

static int pipe_pending(void)
{
	sigset_t s;
	sigpending(&s);
	return sigismember(&s, SIGPIPE);
}

/* A send to a closed peer is EPIPE, never a SIGPIPE (which would end this
 * process: its action is the default here), and leaves none pending; a
 * SIGPIPE the host had pending stays pending. */
static void test_send_to_a_closed_peer(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_DFL);
	for (int host_pending = 0; host_pending < 2; host_pending++) {
		sigset_t pipe_set, old;
		sigemptyset(&pipe_set);
		sigaddset(&pipe_set, SIGPIPE);
		if (host_pending) { /* the host blocks SIGPIPE and has one pending */
			pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
			raise(SIGPIPE);
			assert_true(pipe_pending());
		}
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		close(sv[1]);
		char b[16] = "x";
		struct iovec iov = {b, sizeof b};
		struct msghdr m = {0};
		m.msg_iov = &iov;
		m.msg_iovlen = 1;
		assert_int_equal(dml__sys_sendmsg(sv[0], &m), -1);
		assert_int_equal(errno, EPIPE);
		assert_int_equal(pipe_pending(), host_pending);
		close(sv[0]);
		if (host_pending) {
			struct timespec zero = {0, 0};
			assert_int_equal(sigtimedwait(&pipe_set, NULL, &zero), SIGPIPE);
			pthread_sigmask(SIG_SETMASK, &old, NULL);
		}
	}
}

static void test_random_bytes(void **state)
{
	(void)state;
	uint64_t a[4] = {0}, b[4] = {0};
	assert_int_equal(dml__sys_random(a, sizeof a), 0);
	assert_int_equal(dml__sys_random(b, sizeof b), 0);
	assert_memory_not_equal(a, b, sizeof a); /* 2^-256 to fail by chance */
}

static int readable(int fd)
{
	struct pollfd p = {fd, POLLIN, 0};
	return poll(&p, 1, 0) == 1;
}

/* A timeout in us is kept: never early, and (with ppoll) not rounded to
 * whole ms either. */
static void test_poll_us(void **state)
{
	(void)state;
	int w[2];
	assert_int_equal(dml__sys_wake_new(w), 0);
	struct pollfd p = {w[0], POLLIN, 0};
	for (int i = 0; i < 5; i++) {
		int64_t t0 = dml__now_us();
		assert_int_equal(dml__sys_poll_us(&p, 1, 1500), 0);
		int64_t took = dml__now_us() - t0;
		assert_true(took >= 1500);
		assert_true(took < 2000000); /* generous: a loaded machine */
	}
	dml__sys_wake_signal(w);
	assert_int_equal(dml__sys_poll_us(&p, 1, -1), 1);
	dml__sys_wake_close(w);
}

static void test_wake_descriptor(void **state)
{
	(void)state;
	int w[2];
	assert_int_equal(dml__sys_wake_new(w), 0);
	assert_nonblock_cloexec(w[0]);
	assert_nonblock_cloexec(w[1]);
	assert_false(readable(w[0]));
	for (int i = 0; i < 100000; i++) /* a full pipe is still signalled */
		dml__sys_wake_signal(w);
	assert_true(readable(w[0]));
	dml__sys_wake_drain(w);
	assert_false(readable(w[0]));
	errno = 1234; /* the calls keep errno */
	dml__sys_wake_signal(w);
	dml__sys_wake_drain(w);
	assert_int_equal(errno, 1234);
	dml__sys_wake_close(w);
	assert_int_equal(w[0], -1);
	assert_int_equal(w[1], -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kinds_match_the_build),
		cmocka_unit_test(test_socket_and_accept_flags),
		cmocka_unit_test(test_send_to_a_closed_peer),
		cmocka_unit_test(test_random_bytes),
		cmocka_unit_test(test_wake_descriptor),
		cmocka_unit_test(test_poll_us),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
