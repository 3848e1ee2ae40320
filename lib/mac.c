/*
 * mac.c - HMAC-SHA256 over OpenSSL 3's EVP_MAC (see mac.h).
 */
#include "mac.h"
#include "internal.h"

#include <stdlib.h>

int dml__ct_equal(const void *a, const void *b, size_t n)
{
	const volatile uint8_t *x = a, *y = b;
	uint8_t d = 0;
	for (size_t i = 0; i < n; i++)
		d |= (uint8_t)(x[i] ^ y[i]);
	return d == 0;
}

#ifdef DML_HAVE_TLS

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

struct dml__mac {
	EVP_MAC_CTX *ctx;
};

int dml__mac_new(dml__mac **out, const void *key, size_t len)
{
	*out = NULL;
	if (!key || !len || len > DML__MAC_MAX_KEY)
		return DML_EINVAL;
	dml__mac *m = malloc(sizeof *m);
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!m || !mac) {
		free(m);
		EVP_MAC_free(mac);
		return DML_ENOMEM;
	}
	m->ctx = EVP_MAC_CTX_new(mac);
	EVP_MAC_free(mac); /* the context keeps its own reference */
	char digest[] = "SHA256";
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
		OSSL_PARAM_construct_end()};
	if (!m->ctx || !EVP_MAC_init(m->ctx, key, len, params)) {
		EVP_MAC_CTX_free(m->ctx);
		free(m);
		return DML_ENOMEM;
	}
	*out = m;
	return 0;
}

void dml__mac_update(dml__mac *m, const void *p, size_t n)
{
	if (n)
		EVP_MAC_update(m->ctx, p, n);
}

int dml__mac_final(dml__mac *m, uint8_t tag[DML__MAC_LEN])
{
	size_t len = 0;
	if (!EVP_MAC_final(m->ctx, tag, &len, DML__MAC_LEN) || len != DML__MAC_LEN)
		return DML_ENOMEM;
	return 0;
}

void dml__mac_free(dml__mac *m)
{
	if (!m)
		return;
	EVP_MAC_CTX_free(m->ctx);
	free(m);
}

#else

int dml__mac_new(dml__mac **out, const void *key, size_t len)
{
	*out = NULL;
	if (!key || !len || len > DML__MAC_MAX_KEY)
		return DML_EINVAL;
	return dml__fail(DML_ENOTSUP, "this build of libdistml has no OpenSSL "
	                 "(HMAC-SHA256 keys need it)");
}

void dml__mac_update(dml__mac *m, const void *p, size_t n)
{
	(void)m;
	(void)p;
	(void)n;
}

int dml__mac_final(dml__mac *m, uint8_t tag[DML__MAC_LEN])
{
	(void)m;
	memset(tag, 0, DML__MAC_LEN);
	return DML_ENOTSUP;
}

void dml__mac_free(dml__mac *m) { (void)m; }

#endif
