/*
 * fuzz_frame.c - the frame header parser (lib/frame.c) on arbitrary bytes.
 *
 * The input is parsed as a stream of frames, the way the server and client
 * walk their input buffers, under several frame limits. Each parse must
 * return one of its five codes (another frame version is DML_EVERSION,
 * with the seq read for the refusal); an accepted header must describe a
 * consistent frame, be re-encoded byte for byte by dml__frame_header, and
 * give the same answer from its first 20 bytes alone (the parser may not
 * look further).
 */
#include "fuzz_util.h"

#include "frame.h"

static const size_t limits[] = {
	0, DML__FRAME_HDR, 64, 4096, (size_t)64 << 20, UINT32_MAX,
	(size_t)UINT32_MAX + 4, SIZE_MAX,
};

static void check_header(const uint8_t *p, size_t n, size_t max, int rc,
                         const dml__frame *f)
{
	if (n < DML__FRAME_HDR) {
		FZ_CHECK(rc == DML_EAGAIN);
		return;
	}
	FZ_CHECK(rc == 0 || rc == DML_EPROTO || rc == DML_ETOOBIG || rc == DML_EVERSION);
	FZ_CHECK((rc == DML_EVERSION) == (p[4] != DML__FRAME_VERSION));
	if (rc == DML_EVERSION) {
		uint64_t seq;
		memcpy(&seq, p + 8, 8);
		FZ_CHECK(f->seq == seq);
	}
	/* only the header counts: the same verdict from a copy of it alone */
	uint8_t *h = malloc(DML__FRAME_HDR);
	FZ_CHECK(h);
	memcpy(h, p, DML__FRAME_HDR);
	dml__frame g;
	FZ_CHECK(dml__frame_parse(h, DML__FRAME_HDR, max, &g) == rc);
	free(h);
	if (rc == DML_EPROTO || rc == DML_EVERSION)
		return;
	/* accepted (or merely too big): a consistent frame */
	uint32_t len;
	memcpy(&len, p, 4);
	FZ_CHECK(f->total == (size_t)len + 4);
	FZ_CHECK(f->total >= DML__FRAME_HDR);
	FZ_CHECK(f->kind == DML__KIND_REQUEST || f->kind == DML__KIND_REPLY);
	FZ_CHECK(f->total == DML__FRAME_HDR + (size_t)f->name_len + f->payload_len);
	FZ_CHECK(rc == 0 ? f->total <= max : f->total > max);
	/* any status: one this library does not know is a newer peer's */
	if (f->kind == DML__KIND_REQUEST)
		FZ_CHECK(f->status == 0 && f->name_len > 0);
	else if (f->status == DML__ST_OK)
		FZ_CHECK(f->name_len == 0);
	FZ_CHECK(g.total == f->total && g.seq == f->seq &&
	         g.name_len == f->name_len && g.payload_len == f->payload_len);
	/* the writer produces the same 20 bytes */
	uint8_t w[DML__FRAME_HDR];
	FZ_CHECK(dml__frame_header(w, f->kind, f->seq, f->status, f->name_len,
	                           f->payload_len) == 0);
	FZ_CHECK(memcmp(w, p, DML__FRAME_HDR) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
		size_t off = 0;
		for (;;) {
			dml__frame f;
			memset(&f, 0xa5, sizeof f);
			int rc = dml__frame_parse(data + off, size - off, limits[i], &f);
			check_header(data + off, size - off, limits[i], rc, &f);
			if (rc || f.total > size - off)
				break;
			off += f.total; /* the next frame follows back to back */
		}
	}
	/* every short prefix asks for more */
	for (size_t n = 0; n < DML__FRAME_HDR && n <= size; n++) {
		dml__frame f;
		FZ_CHECK(dml__frame_parse(data, n, SIZE_MAX, &f) == DML_EAGAIN);
	}
	return 0;
}
