/* frame.c - the RPC frame header: encode and parse (pure functions). */
#include "frame.h"

int dml__frame_parse(const uint8_t *p, size_t n, size_t max_frame,
                     dml__frame *out)
{
	if (n < DML__FRAME_HDR)
		return DML_EAGAIN;
	uint32_t len = dml__get_u32(p);
	uint8_t ver = p[4], kind = p[5];
	uint16_t name_len = dml__get_u16(p + 6);
	if (ver != DML__FRAME_VERSION) {
		/* bytes 0..4 (length, version) keep their meaning in every
		 * version; the seq is read for a polite refusal */
		out->seq = dml__get_u64(p + 8);
		return DML_EVERSION;
	}
	if (kind != DML__KIND_REQUEST && kind != DML__KIND_REPLY)
		return DML_EPROTO;
	if (len < DML__FRAME_HDR - 4 || name_len > len - (DML__FRAME_HDR - 4))
		return DML_EPROTO;
	uint32_t status = dml__get_u32(p + 16);
	if (kind == DML__KIND_REQUEST && (status != 0 || name_len == 0))
		return DML_EPROTO;
	if (kind == DML__KIND_REPLY && status == DML__ST_OK && name_len != 0)
		return DML_EPROTO; /* only error replies carry a message */
	size_t total = (size_t)len + 4;
	out->total = total;
	out->kind = kind;
	out->name_len = name_len;
	out->seq = dml__get_u64(p + 8);
	out->status = status;
	out->payload_len = total - DML__FRAME_HDR - name_len;
	return total > max_frame ? DML_ETOOBIG : 0;
}

int dml__frame_header(uint8_t *p, uint8_t kind, uint64_t seq, uint32_t status,
                      size_t name_len, size_t payload_len)
{
	if (name_len > UINT16_MAX ||
	    payload_len > UINT32_MAX - (DML__FRAME_HDR - 4) - name_len)
		return DML_ETOOBIG;
	dml__put_u32(p, (uint32_t)(DML__FRAME_HDR - 4 + name_len + payload_len));
	p[4] = DML__FRAME_VERSION;
	p[5] = kind;
	dml__put_u16(p + 6, (uint16_t)name_len);
	dml__put_u64(p + 8, seq);
	dml__put_u32(p + 16, status);
	return 0;
}

int dml__frame_limit(size_t *max_frame)
{
	if ((*max_frame && *max_frame < DML_RPC_MIN_FRAME) ||
	    *max_frame > (size_t)UINT32_MAX)
		return dml__fail(DML_EINVAL, "max_frame %zu: %d B to 4 GiB - 1",
		                 *max_frame, DML_RPC_MIN_FRAME);
	if (!*max_frame)
		*max_frame = DML_RPC_DEFAULT_MAX_FRAME;
	return 0;
}
