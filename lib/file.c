/*
 * file.c - safe opens and temporary files (see file.h).
 */
#include "file.h"
#include "internal.h"
#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int dml__file_open_read(const char *path, int flags, int *fd, const char **why)
{
	int f, oflags = O_RDONLY | O_NONBLOCK | O_CLOEXEC;
	if (flags & DML__FILE_NOFOLLOW)
		oflags |= O_NOFOLLOW;
	do
		f = open(path, oflags);
	while (f < 0 && errno == EINTR);
	if (f < 0) {
		int err = errno;
		*why = err == ELOOP && (flags & DML__FILE_NOFOLLOW)
		       ? "a symbolic link (refused: it could point anywhere)"
		       : strerror(err);
		errno = err;
		return DML_EIO;
	}
	struct stat st;
	int err = 0;
	if (fstat(f, &st)) {
		err = errno;
		*why = strerror(err);
	} else if (!S_ISREG(st.st_mode)) {
		err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		*why = S_ISDIR(st.st_mode) ? "not a regular file (a directory)"
		       : S_ISFIFO(st.st_mode) ? "not a regular file (a FIFO)"
		       : "not a regular file (a device or a socket)";
	} else if (fcntl(f, F_SETFL, fcntl(f, F_GETFL) & ~O_NONBLOCK) < 0) {
		err = errno; /* regular files never block: plain reads from here */
		*why = strerror(err);
	}
	if (err) {
		close(f);
		errno = err;
		return DML_EIO;
	}
	*fd = f;
	return 0;
}

#define TMP_TRIES 64 /* names tried before giving up */

/* 64 bits no other user can guess: the system's random source, or (where
 * it has none) a clock and a counter, which O_EXCL still keeps safe. */
static uint64_t tmp_bits(void)
{
	static atomic_ullong counter;
	uint64_t x;
	if (!dml__sys_random(&x, sizeof x))
		return x;
	x = (uint64_t)dml__now_us() ^ ((uint64_t)getpid() << 40) ^
	    atomic_fetch_add(&counter, 0x9e3779b97f4a7c15ULL);
	x ^= x >> 31;
	return x * 0xbf58476d1ce4e5b9ULL;
}

int dml__file_create_tmp(const char *path, unsigned mode, char *tmp)
{
	size_t n = strlen(path);
	for (int tries = 0; tries < TMP_TRIES; tries++) {
		snprintf(tmp, n + DML__FILE_TMP_EXTRA, "%s.tmp.%016llx", path,
		         (unsigned long long)tmp_bits());
		int fd;
		do
			fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
			          O_CLOEXEC, mode ? (mode_t)mode : 0600);
		while (fd < 0 && errno == EINTR);
		if (fd >= 0 || errno != EEXIST)
			return fd;
	}
	return -1; /* errno is EEXIST */
}
