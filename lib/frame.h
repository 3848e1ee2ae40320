/*
 * frame.h - RPC framing: a fixed 20-byte header, a name (method or error
 * message) and a payload. Pure functions, no I/O. See docs/protocol.md.
 */
#ifndef DISTML_FRAME_H
#define DISTML_FRAME_H

#include "internal.h"

#define DML__FRAME_HDR 20
#define DML__FRAME_VERSION 1

enum { DML__KIND_REQUEST = 1, DML__KIND_REPLY = 2 };

/* Reply status on the wire. A receiver takes a status it does not know for
 * an error of a newer peer (docs/protocol.md, section 11). */
enum {
	DML__ST_OK = 0,
	DML__ST_NOMETHOD = 1, /* name holds a message */
	DML__ST_HANDLER = 2,  /* name holds the handler's message */
	DML__ST_BADARGS = 3,  /* arguments did not decode */
	DML__ST_TOOBIG = 4,   /* reply too large to send */
	DML__ST_VERSION = 5,  /* the request's frame version is not spoken here */
	DML__ST_AUTH = 6,     /* 0.4: not authenticated (name: why) */
	DML__ST_PERM = 7,     /* 0.4: this identity may not (name: why) */
	DML__ST_MAX = 7       /* the last status this library knows */
};

typedef struct dml__frame {
	size_t total;    /* whole frame: header + name + payload */
	uint8_t kind;
	uint16_t name_len;
	uint64_t seq;
	uint32_t status;
	size_t payload_len;
} dml__frame;

/*
 * Parses a header from the first `n` bytes at `p`. Returns 0 and fills
 * `out`; DML_EAGAIN if fewer than 20 bytes; DML_EVERSION for a version
 * other than DML__FRAME_VERSION (out->seq is then the header's seq, if it
 * has one where version 1 has it); DML_EPROTO for a malformed header;
 * DML_ETOOBIG if the frame exceeds `max_frame` bytes.
 */
int dml__frame_parse(const uint8_t *p, size_t n, size_t max_frame,
                     dml__frame *out);

/* A max_frame option: 0 becomes DML_RPC_DEFAULT_MAX_FRAME; otherwise
 * DML_RPC_MIN_FRAME .. UINT32_MAX, else DML_EINVAL (with the detail). */
int dml__frame_limit(size_t *max_frame);

/* Writes a 20-byte header for a frame of name_len + payload_len bytes
 * after the header. DML_ETOOBIG if it does not fit the u32 length. */
int dml__frame_header(uint8_t *p, uint8_t kind, uint64_t seq, uint32_t status,
                      size_t name_len, size_t payload_len);

#endif
