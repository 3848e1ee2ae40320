/*
 * test_rpc_stream.c - the RPC suite (test_rpc.c) over the buffering test
 * stream (bufstream.h): input held inside the stream that the descriptor
 * does not show, short reads, writes that wait for the peer to read and
 * output held until a flush, as a TLS stream behaves. Every connection
 * the library makes, server and client side, is one.
 */
#define RPC_OVER_BUFSTREAM 1
#include "bufstream.h"

/* the tests left out are still defined */
#pragma GCC diagnostic ignored "-Wunused-function"
#include "test_rpc.c"
