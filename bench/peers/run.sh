#!/bin/sh
# bench/peers/run.sh BUILD_DIR - compare libdistml's RPC with Go's net/rpc.
#
# Invoked from the repo root by `make bench-peers` as
#   sh bench/peers/run.sh build
# Builds bench/peers/netrpc_bench.go into BUILD_DIR/peers/netrpc_bench (Go
# standard library only, no network), runs BUILD_DIR/bench/rpc_bench and then
# the Go program, and prints a side-by-side table from their RESULT lines.
# Everything Go writes (build cache, GOPATH) stays under BUILD_DIR/peers/.
# Then bench/peers/ml_peers.sh compares the training examples with LIBLINEAR
# and scikit-learn (see README.md beside this file).
set -e

B=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC="$HERE/netrpc_bench.go"

# The RPC part runs in a subshell: its "no Go, skipping" exit ends only that
# part, and the ML part below still runs. A failure still stops the script.
(
# --- Go toolchain ---------------------------------------------------------
if ! command -v go >/dev/null 2>&1; then
	if [ "${DML_NO_DEPS:-0}" = 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "# bench-peers: Go not found, installing golang-go"
		export DEBIAN_FRONTEND=noninteractive
		if ! apt-get install -y golang-go >/dev/null 2>&1; then
			apt-get update >/dev/null 2>&1 || true
			apt-get install -y golang-go >/dev/null 2>&1 || true
		fi
	fi
	if ! command -v go >/dev/null 2>&1; then
		echo "bench-peers needs Go: apt-get install golang-go (skipping)"
		exit 0
	fi
fi

# --- build ------------------------------------------------------------------
mkdir -p "$B/peers"
PD=$(cd "$B/peers" && pwd) # Go wants absolute paths for GOCACHE/GOPATH
mkdir -p "$PD/gocache" "$PD/gopath"
GOBIN_OUT="$PD/netrpc_bench"
echo "# building $B/peers/netrpc_bench ($(go version))"
(
	cd "$PD"
	GOCACHE="$PD/gocache" GOPATH="$PD/gopath" GOMODCACHE="$PD/gopath/pkg/mod" \
		GO111MODULE=off GOFLAGS= GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 \
		go build -o "$GOBIN_OUT" "$SRC"
)

# --- run --------------------------------------------------------------------
RB="$B/bench/rpc_bench"
C_RES=""
if [ -x "$RB" ]; then
	echo "# running $RB"
	if C_OUT=$("$RB"); then
		printf '%s\n' "$C_OUT"
		C_RES=$(printf '%s\n' "$C_OUT" | grep '^RESULT ' || true)
	else
		printf '%s\n' "$C_OUT"
		echo "# $RB failed; printing Go figures only"
	fi
else
	echo "# $RB not found (run 'make bench' first); printing Go figures only"
fi

echo "# running $B/peers/netrpc_bench"
G_OUT=$("$GOBIN_OUT")
printf '%s\n' "$G_OUT"
G_RES=$(printf '%s\n' "$G_OUT" | grep '^RESULT go_netrpc ' || true)
if [ -z "$G_RES" ]; then
	echo "bench-peers: netrpc_bench printed no RESULT line" >&2
	exit 1
fi
# rpc_bench pins client and server to one core for its "seq1" figure; Go's
# equivalent is the whole Go program on one core.
if command -v taskset >/dev/null 2>&1; then
	echo "# running $B/peers/netrpc_bench on one core (taskset -c 0)"
	G1_OUT=$(taskset -c 0 "$GOBIN_OUT")
	printf '%s\n' "$G1_OUT"
	G1=$(printf '%s\n' "$G1_OUT" | sed -n 's/^RESULT go_netrpc .*seq_calls_per_s=\([0-9.]*\).*/\1/p')
	[ -n "$G1" ] && G_RES="$G_RES seq1_calls_per_s=$G1"
fi

# --- table ------------------------------------------------------------------
echo
printf '%s\n%s\n' "$C_RES" "$G_RES" | awk '
function num(x) { return x == "" ? "-" : sprintf("%.0f", x) }
function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "-" : sprintf("%.2f", a / b) }
function met(a, b, t) { return (a == "" || b == "" || b + 0 == 0) ? "" : (a / b >= t ? "ok" : "MISS") }
$1 == "RESULT" {
	for (i = 3; i <= NF; i++) {
		split($i, kv, "=")
		v[$2, kv[1]] = kv[2]
	}
}
END {
	# Go has no spin option: its scheduler spins by itself, so its two-core
	# figure stands beside both of ours
	v["go_netrpc", "seqspin_calls_per_s"] = v["go_netrpc", "seq_calls_per_s"]
	n = split("seq1_calls_per_s seq_calls_per_s seqspin_calls_per_s pipelined_calls_per_s bulk_MB_per_s", key, " ")
	name[1] = "1. sequential calls/s, one core"
	name[2] = "1. sequential calls/s, two cores"
	name[3] = "1. sequential, two cores, spin_us=50"
	name[4] = "2. pipelined calls/s (64 in flight)"
	name[5] = "3. 40 MB float32 argument, MB/s"
	tgt[1] = 4; tgt[2] = 4; tgt[3] = 4; tgt[4] = 5; tgt[5] = 5
	printf "# libdistml vs Go net/rpc (gob) vs raw TCP, loopback\n"
	printf "%-36s %12s %12s %12s %9s %7s %5s %7s\n", "figure", "libdistml", "go net/rpc", "raw TCP", "dml/go", "target", "", "go/raw"
	for (i = 1; i <= n; i++) {
		d = v["distml", key[i]]; g = v["go_netrpc", key[i]]; r = v["raw", key[i]]
		printf "%-36s %12s %12s %12s %9s %7s %5s %7s\n", name[i], num(d), num(g), num(r),
			ratio(d, g), ">=" tgt[i], met(d, g, tgt[i]), ratio(g, r)
	}
}'
)

# --- training: LIBLINEAR and scikit-learn -------------------------------------
sh "$HERE/ml_peers.sh" "$B"
