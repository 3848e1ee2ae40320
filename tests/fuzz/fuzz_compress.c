/*
 * fuzz_compress.c - the server's side of compressed pushes (lib/compress.c):
 * dml__gc_check and dml__gc_decode_range on what a peer can send in a
 * PS.PushCoded frame.
 *
 * Input: [codec][n u16][nscales u8][nidx u16][body...]
 *   the body holds the scales (4 bytes each), then the indices (4 bytes
 *   each), then the data: whatever is left
 *
 * A piece is accepted or refused with DML_EINVAL / DML_ENONFINITE and a
 * message; an accepted one decodes, in parts of any size, to finite values
 * (top-k: zero where no index is), the same as decoded whole.
 */
#include "fuzz_util.h"

#include "../../lib/compress.h"

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len)
{
	fz f = {in, len};
	int codec = fz_u8(&f) % 7 - 1; /* -1 .. 5: two unknown */
	size_t n = fz_u16(&f) % 4096, ns = fz_u8(&f), ni = fz_u16(&f) % 4096, got;
	float *scales = malloc(ns * 4 + 4);
	uint32_t *idx = malloc(ni * 4 + 4);
	float *whole = malloc(n * 4 + 4), *part = malloc(n * 4 + 4);
	FZ_CHECK(scales && idx && whole && part);
	const uint8_t *p = fz_take(&f, ns * 4, &got);
	ns = got / 4;
	memcpy(scales, p, ns * 4);
	p = fz_take(&f, ni * 4, &got);
	ni = got / 4;
	memcpy(idx, p, ni * 4);
	const uint8_t *data = fz_take(&f, f.n, &got);
	dml__gc_piece pc = {(uint8_t *)(uintptr_t)data, got, scales, ns, idx, ni};
	char msg[160] = "";
	int rc = dml__gc_check(codec, n, &pc, msg, sizeof msg);
	FZ_CHECK(rc == 0 || rc == DML_EINVAL || rc == DML_ENONFINITE);
	FZ_CHECK(rc == 0 || msg[0]);
	if (rc == 0) {
		dml__gc_decode_range(codec, &pc, 0, n, whole);
		for (size_t i = 0; i < n; i++)
			FZ_CHECK(isfinite(whole[i]));
		size_t step = 1 + (len % 97);
		for (size_t lo = 0; lo < n; lo += step) {
			size_t hi = lo + step < n ? lo + step : n;
			dml__gc_decode_range(codec, &pc, lo, hi, part + lo);
		}
		FZ_CHECK(memcmp(whole, part, n * 4) == 0);
	}
	free(scales);
	free(idx);
	free(whole);
	free(part);
	return 0;
}
