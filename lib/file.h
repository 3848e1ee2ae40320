/*
 * file.h - opening and creating files safely in directories that other
 * users may write to (a shared /tmp, a group's checkpoint folder).
 *
 * Loads open without blocking (a FIFO planted at the path cannot hang
 * them) and refuse anything that fstat does not call a regular file;
 * checkpoint loads also refuse a symbolic link at the path itself (data
 * folders are often symlinked, so data loads follow links). New files get
 * random names, O_EXCL (a name planted in advance, or a link there, is
 * never opened: another is tried) and mode 0600 unless the caller says
 * otherwise. Not installed.
 */
#ifndef DISTML_FILE_H
#define DISTML_FILE_H

#include <stddef.h>

#define DML__FILE_NOFOLLOW 1 /* refuse a symbolic link at the path */

/*
 * Opens `path` for reading: a blocking descriptor (close-on-exec) of a
 * regular file in *fd. `flags` is 0 or DML__FILE_NOFOLLOW.
 * Returns 0, or DML_EIO with errno set (ENOENT, ...; ELOOP for a link with
 * NOFOLLOW; EINVAL for a FIFO, device or socket; EISDIR) and *why saying
 * it for a message (a static string). Sets no detail.
 */
int dml__file_open_read(const char *path, int flags, int *fd, const char **why);

/*
 * Creates a new file for writing beside `path`, named "<path>.tmp.<16 random
 * hex digits>" into `tmp` (which holds strlen(path) + 32 bytes), with
 * O_EXCL and mode `mode` (0 = 0600; the umask still applies). Returns the
 * descriptor, or -1 with errno set (EEXIST only after many names taken).
 */
int dml__file_create_tmp(const char *path, unsigned mode, char *tmp);

/* The room dml__file_create_tmp needs for `path`'s temporary name. */
#define DML__FILE_TMP_EXTRA 32

#endif
