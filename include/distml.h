/*
 * distml.h - libdistml, an embeddable C library for distributed machine
 * learning: RPC, a parameter store and distributed SGD.
 *
 * Include this one header; each module has its own under distml/. The API
 * rules (names, ownership, durations, errors, ABI) are in docs/api.md.
 */
#ifndef DISTML_H
#define DISTML_H

#include "distml/common.h"
#include "distml/codec.h"
#include "distml/rpc.h"
#include "distml/tls.h"
#include "distml/optim.h"
#include "distml/ps.h"
#include "distml/data.h"
#include "distml/model.h"
#include "distml/train.h"

#endif
