/*
 * mac.h - HMAC-SHA256, from OpenSSL's libcrypto (in a build without
 * OpenSSL, dml__mac_new says DML_ENOTSUP), and comparing secrets in
 * constant time. Not installed.
 */
#ifndef DISTML_MAC_H
#define DISTML_MAC_H

#include <stddef.h>
#include <stdint.h>

#define DML__MAC_LEN 32    /* bytes of an HMAC-SHA256 */
#define DML__MAC_MAX_KEY 1024 /* longest key accepted */

typedef struct dml__mac dml__mac;

/* A MAC under `key` (1 .. DML__MAC_MAX_KEY bytes, copied): 0; DML_EINVAL;
 * DML_ENOMEM; DML_ENOTSUP without OpenSSL. */
int dml__mac_new(dml__mac **out, const void *key, size_t len);
/* Adds n bytes to the message. */
void dml__mac_update(dml__mac *m, const void *p, size_t n);
/* The tag of everything added; the MAC can then be used no more. 0 or
 * DML_ENOMEM. */
int dml__mac_final(dml__mac *m, uint8_t tag[DML__MAC_LEN]);
/* Frees m; NULL is fine. */
void dml__mac_free(dml__mac *m);

/* Whether the n bytes at a and b are equal, in a time that depends on n
 * only. */
int dml__ct_equal(const void *a, const void *b, size_t n);

#endif
