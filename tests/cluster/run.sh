#!/bin/sh
# tests/cluster/run.sh - the cluster tests (make cluster-test): a cluster of
# network-namespace hosts (cluster.sh), each emulated link property checked
# by a measurement (probe) before anything runs on it.
#
#   run.sh links BUILD      the link profiles of docs/cluster.md, each
#                           measured: round trip, rate, loss, a cut
#   run.sh test BUILD       links, then a short training matrix (make
#                           cluster-test: under 5 minutes)
#   run.sh bench BUILD      links, then the whole training matrix (make
#                           cluster-bench)
#   run.sh faults BUILD     the training runs with faults only (no link
#                           checks: for working on them)
#   run.sh overlap BUILD    softmax with and without --overlap 1 (the next
#                           pull while a step computes) in (b) and (c), BSP
#                           and ASP, 3 runs each and their medians (no link
#                           checks; part of make cluster-bench)
#   run.sh sparse BUILD     the sparse demo's job (logistic regression on
#                           keyed shards, examples/sparse_gen's set) on
#                           (a), (b) and (c), BSP and ASP (no link checks;
#                           part of make cluster-bench)
#   run.sh mpi BUILD        examples/mpi_dsgd launched by mpirun: 4 ranks on
#                           this machine, then 6 ranks on the 6 hosts
#                           through mpi_rsh.sh (skipped without mpirun)
#   run.sh lossy-c BUILD    (c) with and without its loss, BSP and ASP, with
#                           the hosts' TCP loss counters (retransmissions,
#                           tail-loss probes, timeouts) of each run
#   run.sh explain BUILD    (c) without its loss: TCP exchanges of a step's
#                           sizes, as the library makes them, without it
#                           (probe rr), under BBR and CUBIC, for the model
#                           of a step (docs/cluster.md)
#   run.sh compress BUILD   the compression table: the 784-100-10 MLP with
#                           each codec in (c) and at 10 Mbit/s, 3 runs each
#                           and their medians (no link checks; part of
#                           make cluster-bench); DML_CLUSTER_CODECS, _RUNS,
#                           _EPOCHS, _EPOCHS_10 and _TOPK (top-k's fraction,
#                           0.01) change what runs
#
# Needs root with CAP_NET_ADMIN; otherwise it says why and exits 77
# (skipped). Every process it starts is stopped by its PID, and the
# cluster's namespaces are removed on exit, failure included.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cl="$here/cluster.sh"
WHAT=${1:-links}
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

sh "$cl" up $ID 6 >/dev/null
A=10.233.1.2
S=10.233.2.2
# probe_server: the probe's server on host 2 (PID in srv), once a probe
# gets through (bounded: 5 s)
probe_server() {
	sh "$cl" exec $ID 2 "$probe" serve $PORT 600 >/dev/null 2>&1 &
	srv=$!
	n=0
	until sh "$cl" exec $ID 1 "$probe" rtt $S $PORT 1 >/dev/null 2>&1; do
		[ $n -lt 50 ] || { echo "cluster-test: the probe server did not start" >&2; exit 1; }
		sleep 0.1
		n=$((n + 1))
	done
}
probe_server

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
# the best of up to 3 transfers of MB megabytes [with CC], stopping at the
# first at least LO Mbit/s: a link's rate is what it can carry, and the
# delayer (nfq_delay, in user space) loses some on a busy machine
best_rate() { # LO MB [CC]
	lo=$1
	shift
	best=0
	for try in 1 2 3; do
		r=$(sh "$cl" exec $ID 1 "$probe" rate $S $PORT "$@" | val rate_mbit_s)
		best=$(awk -v a="$best" -v b="${r:-0}" 'BEGIN { print (b > a ? b : a) }')
		! within "$lo" 1e9 "$best" || break
		[ $try = 3 ] || echo "  (rate $r Mbit/s, try $try: measured again)" >&2
	done
	echo "$best"
}
measure() { # MB LOSS_N [LO]: sets rtt, rate, loss
	rtt=$(sh "$cl" exec $ID 1 "$probe" rtt $S $PORT 200 | val rtt_median_us)
	rate=$(best_rate "${3:-0}" "$1" | tail -n 1)
	loss=
	[ "$2" = 0 ] || loss=$(sh "$cl" exec $ID 1 "$probe" loss $S $PORT "$2" | val loss_oneway_permille)
}

if [ "$WHAT" != faults ] && [ "$WHAT" != compress ] && [ "$WHAT" != overlap ] &&
   [ "$WHAT" != sparse ] && [ "$WHAT" != mpi ] && [ "$WHAT" != explain ] &&
   [ "$WHAT" != lossless-c ] && [ "$WHAT" != lossy-c ]; then
	echo "cluster-test: links (hosts $A and $S, each shaped on its own link)"
	echo "(a) unshaped"
	measure 400 0
	printf '  %-34s %10s us\n  %-34s %10s Mbit/s\n' "round trip (median of 200)" "$rtt" "rate (400 MB)" "$rate"
	check "round trip, unshaped" 1 1000 "$rtt" us

	echo "(b) 1 Gbit/s, 1 ms each way (2 ms round trip)"
	shape_both 1000 1000 0 0
	measure 200 0 850
	check "round trip" 2000 3000 "$rtt" us
	check "rate" 850 1000 "$rate" Mbit/s

	echo "(c) 100 Mbit/s, 5 ms each way, 0.5% loss each way"
	shape_both 100 5000 0 0
	measure 40 0 85
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
fi
kill "$srv" 2>/dev/null || true
srv=
[ "$WHAT" != links ] || exit 0

# ---- training: 2 store shards (hosts 1, 2), 4 workers (hosts 3-6) ----
node="$B/examples/dsgd_node"
[ -x "$node" ] || { echo "cluster-test: no $node" >&2; exit 1; }
EPOCHS=${DML_CLUSTER_EPOCHS:-5}
BATCH=128
STEPS=$(( (60000 / 4 + BATCH - 1) / BATCH ))
# the job: softmax by default; the compression table sets these
NODE_MODEL=""   # e.g. --model mlp, for the servers and the workers
NODE_SERVE=""   # e.g. --compress topk, for the servers
NODE_WORK=""    # e.g. --eval-every 20, for the workers
TARGET=0.84     # the accuracy "to target" is timed to
ACC_MIN=0.835   # every run must end at least this accurate
ROWS=""         # a file: each run's figures, one line each, for medians

tcp_counters() { # the six hosts' TCP counters, summed: "name value" lines
	for k in 1 2 3 4 5 6; do
		sh "$cl" exec $ID $k cat /proc/net/snmp /proc/net/netstat
	done | awk '
	$1 == "Tcp:" && $2 ~ /^[A-Z]/ { for (i = 2; i <= NF; i++) tn[i] = $i; next }
	$1 == "Tcp:" { for (i = 2; i <= NF; i++) { if (tn[i] == "OutSegs") o += $i; if (tn[i] == "RetransSegs") r += $i } next }
	$1 == "TcpExt:" && $2 ~ /^[A-Z]/ { for (i = 2; i <= NF; i++) en[i] = $i; next }
	$1 == "TcpExt:" { for (i = 2; i <= NF; i++) { if (en[i] == "TCPLossProbes") p += $i; if (en[i] == "TCPTimeouts") t += $i } }
	END { print "out", o + 0; print "retrans", r + 0; print "probes", p + 0; print "timeouts", t + 0 }'
}

wire_bytes() { # the bytes every host sent: each byte on the wire once
	t=0
	for k in 1 2 3 4 5 6; do
		b=$(sh "$cl" exec $ID $k cat /sys/class/net/eth0/statistics/tx_bytes)
		t=$((t + b))
	done
	echo $t
}

shape_all() { # RATE DELAY_US JITTER_US LOSS
	for k in 1 2 3 4 5 6; do sh "$cl" shape $ID $k "$@" 900; done
}

# train NAME MODE [FAULT]: one run on the links as shaped; prints its row.
# FAULT, injected half a second after worker 0 finished its first epoch:
#   cut       host 5 (worker 2) loses its link for 5 s
#   kill      the server of shard 1 is killed (SIGKILL) and started again
#             2 s later from its checkpoint (saved every 500 ms)
#   lose      worker 3 is killed and its host cut off for good; the store
#             drops it after worker_timeout (3 s)
train() {
	log=$(mktemp -d)
	staleness=2
	fault=${3:-}
	sargs="--workers 4 --mode $2 --staleness $staleness --anneal $((STEPS * EPOCHS * 4)) --seconds 900 $NODE_MODEL $NODE_SERVE"
	[ "$fault" != lose ] || sargs="$sargs --worker-timeout 3000"
	ck0=; ck1=
	[ "$fault" != kill ] || { ck0="--checkpoint $log/ck0 --save-every 500"; ck1="--checkpoint $log/ck1 --save-every 500"; }
	# shellcheck disable=SC2086 # sargs is a list of words
	sh "$cl" exec $ID 1 "$node" serve --listen 10.233.1.2:7600 --shard 0 --shards 2 \
		$sargs $ck0 >"$log/s0" 2>&1 &
	p0=$!
	# shellcheck disable=SC2086
	sh "$cl" exec $ID 2 "$node" serve --listen 10.233.2.2:7600 --shard 1 --shards 2 \
		$sargs $ck1 >"$log/s1" 2>&1 &
	p1=$!
	n=0
	until grep -q serving "$log/s0" 2>/dev/null && grep -q serving "$log/s1" 2>/dev/null; do
		[ $n -lt 100 ] || { echo "cluster-test: the store servers did not start" >&2; cat "$log"/s*; return 1; }
		sleep 0.1
		n=$((n + 1))
	done
	b0=$(wire_bytes)
	# DML_CLUSTER_NSTAT=1: each host's TCP loss counters before and after,
	# their sums printed with the row (the loss term of a step)
	[ -z "${DML_CLUSTER_NSTAT:-}" ] || tcp_counters >"$log/tcp0"
	t0=$(date +%s.%N)
	pids=
	for w in 0 1 2 3; do
		# DML_CLUSTER_WRAP3: a command worker 3 runs under (strace -tt ...)
		wrap=
		[ $w != 3 ] || wrap=${DML_CLUSTER_WRAP3:-}
		# shellcheck disable=SC2086 # wrap is a list of words
		sh "$cl" exec $ID $((w + 3)) $wrap "$node" work --servers 10.233.1.2:7600,10.233.2.2:7600 \
			--worker $w --workers 4 --mode "$2" --staleness $staleness --epochs $EPOCHS \
			--batch $BATCH --target $TARGET $NODE_MODEL $NODE_WORK >"$log/w$w" 2>&1 &
		pids="$pids $!"
		eval "pw$w=\$!"
	done
	note=
	# DML_CLUSTER_SS=FILE: worker 0's TCP state (ss -tin) twice a second
	# into FILE, for explaining a step's time (docs/cluster.md)
	ssp=
	if [ -n "${DML_CLUSTER_SS:-}" ]; then
		(for _ in $(seq 1 600); do
			sh "$cl" exec $ID 3 ss -tin dst 10.233.1.2 >>"$DML_CLUSTER_SS" 2>&1 || break
			sleep 0.5
		done) &
		ssp=$!
	fi
	if [ -n "$fault" ]; then
		n=0
		until grep -q "^epoch 1 " "$log/w0" 2>/dev/null; do
			[ $n -lt 1200 ] || break
			sleep 0.1
			n=$((n + 1))
		done
		sleep 0.5 # into the second epoch, past worker 0's evaluation
		case $fault in
		cut)
			sh "$cl" cut $ID 5
			sleep 5
			sh "$cl" uncut $ID 5
			;;
		kill)
			kill -KILL "$p1" 2>/dev/null || true
			wait "$p1" 2>/dev/null || true
			sleep 2
			# shellcheck disable=SC2086
			sh "$cl" exec $ID 2 "$node" serve --listen 10.233.2.2:7600 --shard 1 --shards 2 \
				$sargs $ck1 >"$log/s1" 2>&1 &
			p1=$!
			;;
		lose)
			kill -KILL "$pw3" 2>/dev/null || true
			sh "$cl" cut $ID 6
			;;
		esac
	fi
	rc=0
	for p in $pids; do
		if ! wait "$p"; then
			[ "$fault" = lose ] && [ "$p" = "$pw3" ] || rc=1
		fi
	done
	t1=$(date +%s.%N)
	b1=$(wire_bytes)
	[ -z "${DML_CLUSTER_NSTAT:-}" ] || tcp_counters >"$log/tcp1"
	[ -z "$ssp" ] || { kill "$ssp" 2>/dev/null || true; wait "$ssp" 2>/dev/null || true; }
	kill -TERM "$p0" "$p1" 2>/dev/null || true
	wait "$p0" "$p1" 2>/dev/null || true
	[ "$fault" != lose ] || sh "$cl" uncut $ID 6
	if [ $rc != 0 ]; then
		echo "cluster-test: $1 $2 $fault: a worker failed" >&2
		cat "$log"/w* >&2
		fails=$((fails + 1))
		rm -rf "$log"
		return 0
	fi
	r=$(grep RESULT "$log/w0")
	secs=$(echo "$r" | val seconds)
	acc=$(echo "$r" | val acc)
	reached=$(echo "$r" | sed -n 's/.*reached=\(-\{0,1\}[0-9.]*\).*/\1/p')
	steps=$(echo "$r" | val steps)
	u0=$(grep RESULT "$log/s0" | val updates)
	u1=$(grep RESULT "$log/s1" | val updates)
	want=$((steps * 4))
	case $fault in
	kill)
		# shard 0 exact; shard 1 lost what it applied after its last
		# checkpoint (acknowledged, so never resent)
		resumed=$(sed -n 's/^resumed from .*: \([0-9]*\) updates/\1/p' "$log/s1")
		if [ "$u0" = "$want" ] && [ "${u1:-0}" -le "$want" ] && [ -n "$resumed" ]; then
			exact="ok: shard 1 resumed at $resumed, lost $((want - u1)) of $want"
		else
			exact="FAIL ($u0, $u1 of $want; resumed '$resumed')"
			fails=$((fails + 1))
		fi
		;;
	lose)
		# worker 3 may die between its pushes to the two shards
		d=$((u0 - u1))
		if [ "${d#-}" -le 1 ] && [ "$u0" -ge $((steps * 3)) ] && [ "$u0" -lt "$want" ] &&
		   [ "$u1" -ge $((steps * 3)) ] && [ "$u1" -lt "$want" ]; then
			exact="ok: $u0 and $u1 updates, worker 3's $((u0 - steps * 3)) before it was lost"
		else
			exact="FAIL ($u0, $u1; 3 x $steps and worker 3's)"
			fails=$((fails + 1))
		fi
		;;
	*)
		exact=ok
		[ "$u0" = "$want" ] && [ "$u1" = "$want" ] || { exact="FAIL ($u0, $u1 of $want)"; fails=$((fails + 1)); }
		;;
	esac
	# the accuracy of the run without a fault, within half a point
	if ! within "$ACC_MIN" 1 "$acc"; then
		exact="$exact; FAIL: accuracy $acc"
		fails=$((fails + 1))
	fi
	mb=$(awk -v a="$b0" -v b="$b1" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
	ms=$(awk -v s="$secs" -v n="$steps" 'BEGIN { printf "%.2f", s / n * 1000 }')
	wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
	printf '  %-28s %-4s %8s %8s %7s %7s %9s %8s  %s\n' "$1" "$2" "$reached" "$secs" "$ms" "$acc" "$mb" "$wall" "$exact"
	[ -z "$ROWS" ] || echo "$1|$2|$reached|$secs|$ms|$acc|$mb" >>"$ROWS"
	if [ -n "${DML_CLUSTER_NSTAT:-}" ]; then
		paste "$log/tcp0" "$log/tcp1" | awk -v st="$steps" '{ d[$1] = $4 - $2 }
			END { printf "    TCP, all hosts: %d segments out, %d retransmitted, %d tail-loss probes, %d timeouts; per worker step: %.2f probes, %.3f timeouts\n",
			      d["out"], d["retrans"], d["probes"], d["timeouts"], d["probes"] / (4 * st), d["timeouts"] / (4 * st) }'
	fi
	rm -rf "$log"
}

header() {
	printf '  %-28s %-4s %8s %8s %7s %7s %9s %8s  %s\n' profile mode "to $TARGET" "train s" "ms/step" acc "wire MB" "wall s" "each push once"
}

# medians NAME...: for each run name in $ROWS, the medians of its runs
medians() {
	printf '  %-28s %-4s %8s %8s %7s %7s %9s  %s\n' run mode "to $TARGET" "train s" ms/step acc "wire MB" runs
	for name in "$@"; do
		awk -F'|' -v n="$name" '
		function med(a, k,   i, j, t) { # sort a[1..k], the middle one
			for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
			return a[int((k + 1) / 2)]
		}
		$1 == n { k++; r[k] = ($3 < 0 ? 1e9 : $3); s[k] = $4; m[k] = $5; a[k] = $6; w[k] = $7; mode = $2 }
		END { if (k) { x = med(r, k); printf "  %-28s %-4s %8s %8.3f %7.2f %7.4f %9.1f  %d\n", n, mode, (x >= 1e9 ? "never" : sprintf("%.3f", x)), med(s, k), med(m, k), med(a, k), med(w, k), k } }' "$ROWS"
	done
}

if [ "$WHAT" = explain ]; then
	probe_server
	shape_all 100 5000 0 0
	echo "explain: (c) without its loss, host 1 to host 2, probe rr (an exchange of B bytes each way)"
	for cc in bbr cubic; do
		for b in 1 1448 14480 15700 31400; do
			for gap in 0 68; do
				r=$(sh "$cl" exec $ID 1 "$probe" rr $S $PORT 100 $b $gap $cc | grep RESULT)
				printf '  %-6s %6s B every %3s ms: %s\n' $cc $b $gap "$r"
			done
		done
	done
	exit 0
fi

if [ "$WHAT" = mpi ]; then
	mpi="$B/examples/mpi_dsgd"
	if ! command -v mpirun >/dev/null 2>&1 || [ ! -x "$mpi" ]; then
		echo "cluster-test: mpi skipped: no mpirun or $mpi (Debian openmpi-bin libopenmpi-dev)"
		exit 0
	fi
	root=
	[ "$(id -u)" != 0 ] || root=--allow-run-as-root
	echo "mpi: examples/mpi_dsgd, softmax, 2 epochs"
	t0=$(date +%s.%N)
	# shellcheck disable=SC2086
	r=$(mpirun $root --oversubscribe -np 4 "$mpi" --epochs 2 --host 127.0.0.1 2>&1 | grep RESULT) || true
	t1=$(date +%s.%N)
	printf '  %-44s %s (%.1f s)\n' "mpirun -np 4, this machine:" "${r:-FAIL}" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
	case $r in *exact=1*) ;; *) fails=$((fails + 1)) ;; esac
	shape_all 1000 1000 0 0
	hosts=10.233.1.2,10.233.2.2,10.233.3.2,10.233.4.2,10.233.5.2,10.233.6.2
	t0=$(date +%s.%N)
	# shellcheck disable=SC2086
	r=$(DML_MPI_NS="dmlc${ID}h" sh "$cl" exec $ID 1 env DML_MPI_NS="dmlc${ID}h" \
		mpirun $root --oversubscribe --mca plm_rsh_agent "$here/mpi_rsh.sh" \
		--mca oob_tcp_if_include eth0 --mca btl_tcp_if_include eth0 --mca btl self,tcp \
		-H $hosts -np 6 "$(cd "$B" && pwd)/examples/mpi_dsgd" --shards 2 --epochs 2 2>&1) || true
	t1=$(date +%s.%N)
	line=$(echo "$r" | grep RESULT) || true
	printf '  %-44s %s (%.1f s)\n' "mpirun -np 6 on hosts 1-6, (b) links:" "${line:-FAIL}" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
	[ -n "$line" ] || echo "$r" | tail -n 15 >&2
	case $line in *exact=1*) ;; *) fails=$((fails + 1)) ;; esac
	[ $fails -eq 0 ] || { echo "cluster-test: $fails checks failed"; exit 1; }
	exit 0
fi

if [ "$WHAT" = sparse ]; then
	D="$B/data/sparse"
	if [ ! -s "$D/train.svm" ] || [ ! -s "$D/test.svm" ]; then
		mkdir -p "$D"
		"$B/examples/sparse_gen" "$D/train.svm" "$D/test.svm" >/dev/null
	fi
	NODE_MODEL="--sparse $D"
	BATCH=64
	TARGET=0.7921 # LIBLINEAR's 0.7971 less half a point (docs/train.md)
	# BSP passes the target and then falls back to 0.783 by the fifth
	# epoch (docs/cluster.md): the bound is below that
	ACC_MIN=0.775
	echo "sparse: logistic regression on $D (keyed shards, FTRL), $EPOCHS epochs, batch $BATCH"
	header
	shape_all 0 0 0 0
	for m in bsp asp; do train "(a) unshaped" $m; done
	shape_all 1000 1000 0 0
	for m in bsp asp; do train "(b) 1 Gbit/s, 1 ms" $m; done
	shape_all 100 5000 0 5
	for m in bsp asp; do train "(c) 100 Mbit/s, 5 ms, 0.5%" $m; done
	[ $fails -eq 0 ] || { echo "cluster-test: $fails checks failed"; exit 1; }
	exit 0
fi

if [ "$WHAT" = overlap ]; then
	ROWS=$(mktemp)
	runs=${DML_CLUSTER_RUNS:-3}
	for prof in b c; do
		if [ $prof = b ]; then
			shape_all 1000 1000 0 0
			title="(b) 1 Gbit/s, 1 ms"
		else
			shape_all 100 5000 0 5
			title="(c) 100 Mbit/s, 5 ms, 0.5%"
		fi
		echo "overlap: softmax on $title, $EPOCHS epochs of $STEPS steps, batch $BATCH"
		header
		for m in bsp asp; do
			for r in $(seq 1 "$runs"); do
				for ov in 0 1; do
					NODE_WORK="--overlap $ov"
					train "$prof $m overlap $ov" $m
				done
			done
		done
		echo "medians of $runs:"
		medians
		for m in bsp asp; do
			for ov in 0 1; do medians "$prof $m overlap $ov" | tail -n 1; done
		done
	done
	rm -f "$ROWS"
	[ $fails -eq 0 ] || { echo "cluster-test: $fails checks failed"; exit 1; }
	exit 0
fi

if [ "$WHAT" = compress ]; then
	# the 784-100-10 MLP (318 KB of gradient a push): float32 against each
	# codec, 3 runs each, BSP; top-k at 1% warms up over the first fifth
	# of the run. At 10 Mbit/s a step takes over a second: 1 epoch there,
	# timed to 0.85
	NODE_MODEL="--model mlp"
	NODE_WORK="--eval-every 20"
	# a codec that ends more than half a point below float32 is a result
	# (the medians say so), not a failure of the harness
	ACC_MIN=0.80
	ROWS=$(mktemp)
	codecs=${DML_CLUSTER_CODECS:-none fp16 bf16 int8 topk}
	runs=${DML_CLUSTER_RUNS:-3}
	for prof in c 10; do
		if [ $prof = c ]; then
			EPOCHS=${DML_CLUSTER_EPOCHS:-5}
			TARGET=0.87
			shape_all 100 5000 0 5
			title="(c) 100 Mbit/s, 5 ms, 0.5%"
		else
			EPOCHS=${DML_CLUSTER_EPOCHS_10:-1}
			TARGET=0.85
			shape_all 10 5000 0 0
			title="10 Mbit/s, 5 ms"
		fi
		echo "compression: the MLP on $title, $EPOCHS epochs of $STEPS steps, batch $BATCH, BSP"
		header
		# rounds of every codec, not a codec's runs in a row: the machine's
		# speed drifts (it is shared), and a round sees one speed
		for r in $(seq 1 "$runs"); do
			for c in $codecs; do
				NODE_SERVE="--compress $c --topk-warmup $((STEPS * EPOCHS / 5)) --topk ${DML_CLUSTER_TOPK:-0.01}"
				train "$prof $c" bsp
			done
		done
		echo "medians of $runs:"
		medians
		for c in $codecs; do medians "$prof $c" | tail -n 1; done
		# each codec's final accuracy against float32's, as the issue asks
		base=$(medians "$prof none" | tail -n 1 | awk '{print $7}')
		for c in $codecs; do
			a=$(medians "$prof $c" | tail -n 1 | awk '{print $7}')
			[ -n "$base" ] && [ -n "$a" ] || continue
			awk -v c="$c" -v a="$a" -v b="$base" 'BEGIN { d = (a - b) * 100;
				printf "  %-6s accuracy %+.2f points against float32: %s\n", c, d,
				(d >= -0.5 ? "within half a point" : "MORE than half a point below") }'
		done
	done
	rm -f "$ROWS"
	[ $fails -eq 0 ] || { echo "cluster-test: $fails checks failed"; exit 1; }
	exit 0
fi

echo "cluster-test: training softmax on Fashion-MNIST, 2 shards, 4 workers, $EPOCHS epochs of $STEPS steps, batch $BATCH"
header
if [ "$WHAT" = bench ]; then
	modes="bsp ssp asp"
else
	modes="bsp asp"
fi
if [ "$WHAT" != lossless-c ] && [ "$WHAT" != faults ] && [ "$WHAT" != lossy-c ]; then
	shape_all 0 0 0 0
	for m in $modes; do train "(a) unshaped" $m; done
	shape_all 1000 1000 0 0
	for m in $modes; do train "(b) 1 Gbit/s, 1 ms" $m; done
fi
if [ "$WHAT" != lossless-c ] && [ "$WHAT" != lossy-c ]; then
	echo "faults, on (b):"
	shape_all 1000 1000 0 0
	train "link of worker 2 cut for 5 s" bsp cut
	train "server of shard 1 killed" bsp kill
	train "worker 3 lost for good" bsp lose
	# a straggler: worker 3's link at a tenth of the rate
	sh "$cl" shape $ID 6 100 1000 0 0 900
	for m in $modes; do train "worker 3 at 100 Mbit/s" $m; done
fi
if [ "$WHAT" = lossy-c ]; then
	# (c) with and without its loss, with the TCP loss counters
	DML_CLUSTER_NSTAT=${DML_CLUSTER_NSTAT:-1}
	shape_all 100 5000 0 0
	for m in $modes; do train "(c) without the loss" $m; done
	shape_all 100 5000 0 5
	for m in $modes; do train "(c) 100 Mbit/s, 5 ms, 0.5%" $m; done
	[ $fails -eq 0 ] || exit 1
	exit 0
fi
if [ "$WHAT" = bench ] || [ "$WHAT" = lossless-c ]; then
	# (c) without its loss: what the loss itself costs
	shape_all 100 5000 0 0
	for m in $modes; do train "(c) without the loss" $m; done
fi
if [ "$WHAT" = bench ]; then
	shape_all 100 5000 0 5
	for m in $modes; do train "(c) 100 Mbit/s, 5 ms, 0.5%" $m; done
fi
if [ $fails -gt 0 ]; then
	echo "cluster-test: $fails checks failed"
	exit 1
fi
echo "cluster-test: every run applied every push exactly once"
