/*
 * ckpt.h - the checkpoint file container: a header with caller metadata,
 * tagged sections compressed with zlib, and a checksummed trailer, written
 * atomically (temporary file, fsync, rename, fsync of the directory).
 *
 * Generic: it knows nothing about what the sections hold. The byte layout is
 * in docs/checkpoint.md. Not installed.
 *
 * Integrity: every byte of a checkpoint is checked. A file cut anywhere gives
 * DML_ETRUNC; a changed byte gives DML_ECORRUPT, except in the magic (bytes
 * 0-7: DML_EFORMAT, "not a checkpoint") and the format version (bytes 8-11:
 * DML_EVERSION). The header, the meta and the file length are checked by
 * dml__ckpt_open, so once it succeeds a truncated file cannot be read and the
 * meta can be trusted; the sections are checked as they are read and the
 * whole file by dml__ckpt_close. Commit nothing read from sections before
 * dml__ckpt_close has returned 0.
 *
 * Functions are thread-safe on distinct readers; a reader is used by one
 * thread at a time. Saves of distinct paths may run concurrently; concurrent
 * saves of one path leave one of the new checkpoints, whole.
 */
#ifndef DISTML_CKPT_H
#define DISTML_CKPT_H

#include "internal.h"

#define DML__CKPT_VERSION 1
#define DML__CKPT_VERSION_MAC 2 /* version 1 with an HMAC-SHA256 at the end */
#define DML__CKPT_META_MAX 65536u   /* largest meta, in bytes */
#define DML__CKPT_LEVEL_DEFAULT (-1) /* fast: zlib level 1, Z_RLE strategy */

/* A section to write: a tag and `len` raw bytes at `data` (NULL if len 0). */
typedef struct dml__ckpt_sec {
	uint32_t tag;
	const void *data;
	uint64_t len;
} dml__ckpt_sec;

/*
 * Writes a checkpoint to `path` atomically: `kind` (the caller's name for
 * what is inside), `meta_len` bytes of meta (at most DML__CKPT_META_MAX), and
 * the `nsec` sections in order. Tags need not be distinct. `level` is a zlib
 * level 0-9 (0 stores without compressing), or DML__CKPT_LEVEL_DEFAULT: only
 * runs and Huffman coding, which on float vectors compresses as well as
 * level 1 at about three times its speed.
 *
 * The data goes to "<path>.tmp.<16 random hex digits>" in the same
 * directory, created with O_EXCL and mode 0600 (a name planted there in
 * advance is never used: another is tried), fsynced and renamed over
 * `path` (a symbolic link there is replaced, not followed); then the
 * directory is fsynced. A crash at
 * any moment leaves `path` holding the old checkpoint or the new one, whole
 * (and possibly a stray temporary file). Memory use is fixed (about 350 KiB),
 * whatever the section sizes. The caller's buffers are only read.
 *
 * Returns 0; DML_EINVAL (bad argument); DML_ENOMEM; DML_EIO (a system call
 * failed: errno says which). On failure the temporary file is removed and
 * `path` is untouched, except when only the final fsync of the directory
 * fails (DML_EIO): then `path` already holds the new checkpoint, but it may
 * not survive a power loss.
 */
int dml__ckpt_save(const char *path, uint32_t kind, const void *meta,
                   uint32_t meta_len, const dml__ckpt_sec *secs, uint32_t nsec,
                   int level);

/*
 * Options of a save or a load (NULL = defaults): `key` (key_len bytes, at
 * most DML__MAC_MAX_KEY; 0 = none) turns the CRC into a MAC: a save writes
 * format version 2 with an HMAC-SHA256 of the whole file, and a load
 * refuses any file without one (DML_EAUTH, "not signed") or whose MAC does
 * not match (DML_EAUTH at dml__ckpt_close: as for the CRC, commit nothing
 * before it). Without a key a load checks the CRC only, also of a signed
 * file. A key needs OpenSSL (DML_ENOTSUP without). `mode`: the new file's
 * permissions (0 = 0600; the umask still applies).
 */
typedef struct dml__ckpt_opts {
	const void *key;
	size_t key_len;
	unsigned mode;
} dml__ckpt_opts;

int dml__ckpt_save_with(const char *path, uint32_t kind, const void *meta,
                        uint32_t meta_len, const dml__ckpt_sec *secs,
                        uint32_t nsec, int level, const dml__ckpt_opts *o);

/* A checkpoint being read: fixed-size buffers, whatever the file claims. */
typedef struct dml__ckpt_reader dml__ckpt_reader;

/*
 * Opens `path` (never following a symbolic link there, never blocking on a
 * FIFO; anything but a regular file is DML_EIO, the detail says what) and
 * checks its header, its length and its meta. Sets *kind
 * and *meta_len (either may be NULL) and copies the meta into `meta` (which
 * holds `meta_cap` bytes; NULL if 0). On success *out owns the open file:
 * finish with dml__ckpt_close or dml__ckpt_abort. *kind and *meta_len are
 * also set when the header is sound but a later check fails, so a caller
 * whose meta buffer is too small learns the size it needs; on failure the
 * contents of `meta` are unspecified.
 *
 * Returns 0; DML_EINVAL (bad argument); DML_ENOMEM; DML_EIO (cannot open or
 * read: errno says why, ENOENT if there is no file); DML_ETRUNC (the file is
 * shorter than its header says, including any file shorter than a header
 * whose bytes begin like the magic, such as an empty file); DML_EFORMAT (not
 * a checkpoint: bad magic; a header inconsistent though its checksum
 * matches; or meta longer than meta_cap); DML_EVERSION (another format
 * version); DML_ECORRUPT (header or meta checksum mismatch, or bytes after
 * the end the header gives). On failure *out is NULL.
 */
int dml__ckpt_open(dml__ckpt_reader **out, const char *path, uint32_t *kind,
                   void *meta, uint32_t meta_cap, uint32_t *meta_len);
int dml__ckpt_open_with(dml__ckpt_reader **out, const char *path,
                        uint32_t *kind, void *meta, uint32_t meta_cap,
                        uint32_t *meta_len, const dml__ckpt_opts *o);

/*
 * Reads the next section into `dst` (`len` bytes; NULL if 0), which must
 * have tag `tag` and length `len`.
 *
 * Returns 0; DML_EFORMAT if the next section has another tag or length (it
 * stays next: try again, peek or skip) or if there is none left;
 * DML_ECORRUPT (the compressed data or a section header is corrupt);
 * DML_ETRUNC (the file shrank while open); DML_EIO; DML_ENOMEM. Except for
 * DML_EFORMAT, an error is final: every later call returns it again. On
 * error `dst` may hold part of the data.
 */
int dml__ckpt_read(dml__ckpt_reader *r, uint32_t tag, void *dst, uint64_t len);

/*
 * Gives the next section's tag and length without consuming it (for
 * optional sections). The length is what the file claims: check it before
 * using it to size anything. Returns 0; DML_ENOTFOUND if every section has
 * been read; or an error as for dml__ckpt_read.
 */
int dml__ckpt_peek(dml__ckpt_reader *r, uint32_t *tag, uint64_t *len);

/* Reads and discards the next section (an unknown optional one). Returns 0,
 * DML_ENOTFOUND if none is left, or an error as for dml__ckpt_read. */
int dml__ckpt_skip(dml__ckpt_reader *r);

/*
 * Finishes reading: reads any sections left, checks that the compressed
 * data ends where the sections do, then checks the trailer: lengths and the
 * CRC-32 of the whole file. Always frees `r` (NULL gives DML_EINVAL).
 *
 * Returns 0 (every byte of the file is as written); the error a previous
 * call returned, if it was final; DML_ECORRUPT (checksum or length mismatch,
 * data after the last section); DML_ETRUNC (the file shrank while open);
 * DML_EIO; DML_EFORMAT if the file is intact but the caller left sections
 * unread.
 */
int dml__ckpt_close(dml__ckpt_reader *r);

/* Frees `r` and closes its file without checking anything. NULL is fine. */
void dml__ckpt_abort(dml__ckpt_reader *r);

#endif
