#!/bin/sh
# tests/cluster/run.sh - the cluster tests (make cluster-test): a cluster of
# network-namespace hosts (cluster.sh), each emulated link property checked
# by a measurement (probe) before anything runs on it.
#
#   run.sh links BUILD      the link profiles of docs/cluster.md, each
#                           measured: round trip, rate, loss, a cut
#
# Needs root with CAP_NET_ADMIN; otherwise it says why and exits 77
# (skipped). Every process it starts is stopped by its PID, and the
# cluster's namespaces are removed on exit, failure included.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cl="$here/cluster.sh"
B=${2:-build}
export DML_CLUSTER_BIN="$B/tests/cluster"
probe="$DML_CLUSTER_BIN/probe"
ID=$$
PORT=7500
fails=0

if ! why=$(sh "$cl" check); then
	echo "cluster-test: skipped: $why"
	exit 77
fi
[ -x "$probe" ] || { echo "cluster-test: no $probe (make cluster-test builds it)" >&2; exit 1; }
[ -x "$DML_CLUSTER_BIN/nfq_delay" ] || {
	echo "cluster-test: skipped: no nfq_delay (needs libnetfilter-queue-dev)"
	exit 77
}

cleanup() {
	[ -z "${srv:-}" ] || kill "$srv" 2>/dev/null || true
	sh "$cl" down $ID >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

sh "$cl" up $ID 2 >/dev/null
A=10.233.1.2
S=10.233.2.2
sh "$cl" exec $ID 2 "$probe" serve $PORT 600 >/dev/null 2>&1 &
srv=$!
# the server listens once a probe gets through (bounded: 5 s)
n=0
until sh "$cl" exec $ID 1 "$probe" rtt $S $PORT 1 >/dev/null 2>&1; do
	[ $n -lt 50 ] || { echo "cluster-test: the probe server did not start" >&2; exit 1; }
	sleep 0.1
	n=$((n + 1))
done

val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
# within LO HI VALUE: 0 if LO <= VALUE <= HI
within() { awk -v lo="$1" -v hi="$2" -v v="$3" 'BEGIN { exit !(v >= lo && v <= hi) }'; }
check() { # NAME LO HI VALUE UNIT
	if within "$2" "$3" "$4"; then r=ok; else r=FAIL; fails=$((fails + 1)); fi
	printf '  %-34s %10s %-7s expected %s..%s  %s\n' "$1" "$4" "$5" "$2" "$3" "$r"
}
shape_both() { # RATE DELAY_US JITTER_US LOSS
	sh "$cl" shape $ID 1 "$@" 600
	sh "$cl" shape $ID 2 "$@" 600
}
measure() { # MB LOSS_N: sets rtt, rate, loss
	rtt=$(sh "$cl" exec $ID 1 "$probe" rtt $S $PORT 200 | val rtt_median_us)
	rate=$(sh "$cl" exec $ID 1 "$probe" rate $S $PORT "$1" | val rate_mbit_s)
	loss=
	[ "$2" = 0 ] || loss=$(sh "$cl" exec $ID 1 "$probe" loss $S $PORT "$2" | val loss_oneway_permille)
}

echo "cluster-test: links (hosts $A and $S, each shaped on its own link)"
echo "(a) unshaped"
measure 400 0
printf '  %-34s %10s us\n  %-34s %10s Mbit/s\n' "round trip (median of 200)" "$rtt" "rate (400 MB)" "$rate"
check "round trip, unshaped" 1 1000 "$rtt" us

echo "(b) 1 Gbit/s, 1 ms each way (2 ms round trip)"
shape_both 1000 1000 0 0
measure 200 0
check "round trip" 2000 3000 "$rtt" us
check "rate" 850 1000 "$rate" Mbit/s

echo "(c) 100 Mbit/s, 5 ms each way, 0.5% loss each way"
shape_both 100 5000 0 0
measure 40 0
check "round trip" 10000 11500 "$rtt" us
check "rate, before the loss" 85 100 "$rate" Mbit/s
shape_both 100 5000 0 5
measure 20 6000
check "loss, one way (per mille)" 3 7.5 "$loss" ""
# Mathis et al.: a TCP flow's rate <= MSS / RTT x 1.22 / sqrt(p), here
# with p the round trip's loss that its segments or ACKs see
mathis=$(awk -v r="$rtt" 'BEGIN { printf "%.0f", 1448 * 8 / (r / 1e6) * 1.22 / sqrt(0.005) / 1e6 }')
printf '  %-34s %10s Mbit/s (Mathis bound %s Mbit/s)\n' "rate with the loss" "$rate" "$mathis"
check "rate with the loss, under the rate" 1 100 "$rate" Mbit/s
cc=$(sh "$cl" exec $ID 1 sysctl -n net.ipv4.tcp_congestion_control)
echo "  (congestion control: $cc; BBR does not back off on random loss, Mathis' bound is Reno's)"
if [ "$cc" != cubic ] && sh "$cl" exec $ID 1 sysctl -n net.ipv4.tcp_available_congestion_control | grep -qw cubic; then
	rate=$(sh "$cl" exec $ID 1 "$probe" rate $S $PORT 10 cubic | val rate_mbit_s)
	printf '  %-34s %10s Mbit/s (Mathis bound %s Mbit/s)\n' "rate with the loss, CUBIC" "$rate" "$mathis"
	check "rate with the loss, CUBIC, < 3x bound" 1 $((mathis * 3)) "$rate" Mbit/s
fi

echo "jitter: 5 ms +- 2 ms each way"
shape_both 0 5000 2000 0
p=$(sh "$cl" exec $ID 1 "$probe" rtt $S $PORT 200)
lo=$(echo "$p" | val rtt_p10_us)
hi=$(echo "$p" | val rtt_p90_us)
check "round trip p10" 6000 9500 "$lo" us
check "round trip p90" 10500 14000 "$hi" us

echo "cut: the link of host 2 drops everything, then comes back"
shape_both 0 0 0 0
sh "$cl" cut $ID 2
if sh "$cl" exec $ID 1 timeout 3 "$probe" rtt $S $PORT 1 >/dev/null 2>&1; then
	r=FAIL; fails=$((fails + 1))
else
	r=ok
fi
printf '  %-34s %10s %s\n' "a round trip while cut" "none" "$r"
sh "$cl" uncut $ID 2
if sh "$cl" exec $ID 1 "$probe" rtt $S $PORT 10 >/dev/null 2>&1; then r=ok; else r=FAIL; fails=$((fails + 1)); fi
printf '  %-34s %10s %s\n' "round trips after the cut" "10" "$r"

if [ $fails -gt 0 ]; then
	echo "cluster-test: $fails link checks failed"
	exit 1
fi
echo "cluster-test: every link check passed"
