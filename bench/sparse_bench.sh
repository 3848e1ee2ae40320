#!/bin/sh
# sparse_bench.sh BUILD [ROUNDS] - sparse logistic regression on the
# generated click-through-like set (examples/sparse_gen.c), time to a fixed
# accuracy, all in one run (medians of ROUNDS, default 3):
#   (a) LIBLINEAR -s 0 on the same files, end to end (bench/liblinear.sh);
#       its final accuracy minus 0.5 point is the target of the others;
#   (b) sparse_train in one process (dml_sgd_run's sparse path);
#   (c) sparse_train with 2 workers and 2 keyed shards over loopback RPC;
#   (d) sparse_train with the dense path of before 0.3 (--dense, one
#       process: a gradient of all parameters and a step on each).
# For (b)-(d): the training seconds to the target (accuracy checked every
# 200 steps, the checks' time excluded) and the whole process's wall time
# (loading and checks included: "end to end", as LIBLINEAR's).
set -eu
B=${1:-build}
ROUNDS=${2:-3}
D=$B/data/sparse
TRAIN=$D/train.svm
TEST=$D/test.svm
if [ ! -s "$TRAIN" ] || [ ! -s "$TEST" ]; then
	mkdir -p "$D"
	"$B/examples/sparse_gen" "$TRAIN" "$TEST"
fi

median() { sort -g | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
now() { date +%s.%N; }

ll=$(sh bench/liblinear.sh "$TRAIN" "$TEST" "$ROUNDS")
echo "$ll"
ll_acc=$(echo "$ll" | sed -n 's/.*accuracy \([0-9.]*\).*/\1/p')
ll_s=$(echo "$ll" | sed -n 's/.*seconds \([0-9.]*\).*/\1/p')
target=$(awk -v a="$ll_acc" 'BEGIN {printf "%.4f", a - 0.005}')
echo "target accuracy: $target (LIBLINEAR's $ll_acc minus 0.5 point)"

run() { # name, then sparse_train's options; prints name, train s, wall s, bytes/step
	name=$1
	shift
	out=$(mktemp "${TMPDIR:-/tmp}/sparse_bench.XXXXXX")
	tr_s=; wall_s=; bytes=
	for r in $(seq "$ROUNDS"); do
		t0=$(now)
		"$B/examples/sparse_train" "$TRAIN" "$TEST" --target "$target" --epochs 20 "$@" > "$out"
		t1=$(now)
		if ! grep -q "target .* reached" "$out"; then
			echo "$name: target not reached:" >&2
			tail -3 "$out" >&2
		fi
		tr_s="$tr_s $(sed -n 's/^target .* after \([0-9.]*\) s.*/\1/p' "$out")"
		wall_s="$wall_s $(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')"
		bytes=$(sed -n 's/^.* steps, \([0-9]*\) payload bytes per step.*/\1/p' "$out")
		rows=$(sed -n 's/^rows per step: \([0-9.]*\).*/\1/p' "$out")
	done
	rm -f "$out"
	m_tr=$(echo "$tr_s" | tr ' ' '\n' | grep . | median)
	m_wall=$(echo "$wall_s" | tr ' ' '\n' | grep . | median)
	printf '%-34s train %8.3f s   end to end %8.3f s   payload %9s B/step %s\n' \
		"$name" "$m_tr" "$m_wall" "$bytes" "${rows:+(distinct rows/step $rows)}"
	eval "tr_$name=$m_tr wall_$name=$m_wall"
}

run one --quiet
run dist --quiet --workers 2 --shards 2
run dense --quiet --dense

# Bytes on the wire per step of (c), measured: the loopback interface's
# counters around runs of 1 and 2 epochs without checks; the difference
# over the difference in steps cancels what does not grow with the steps
# (connecting, the final pull of the model). TCP/IP headers included.
lo_bytes() { awk '/^ *lo:/ {sub(/^ *lo:/, ""); print $1}' /proc/net/dev; }
wire() { # epochs -> "bytes steps"
	b0=$(lo_bytes)
	o=$("$B/examples/sparse_train" "$TRAIN" "$TEST" --quiet --workers 2 --shards 2 \
		--epochs "$1" --check-every 1000000000)
	b1=$(lo_bytes)
	echo "$((b1 - b0)) $(echo "$o" | sed -n 's/^\([0-9]*\) steps,.*/\1/p') $(echo "$o" | sed -n 's/^rows per step: \([0-9.]*\).*/\1/p')"
}
if [ -r /proc/net/dev ]; then
	set -- $(wire 1)
	b1=$1 s1=$2 u1=$3
	set -- $(wire 2)
	b2=$1 s2=$2 u2=$3
	awk -v b1="$b1" -v b2="$b2" -v s1="$s1" -v s2="$s2" -v u="$u2" 'BEGIN {
		per = (b2 - b1) / (s2 - s1); bound = 3 * u * (8 + 4)
		printf "(c) wire bytes per step: %.0f (loopback counters); 3 x %.1f distinct keys x (8 + 4 x 1) = %.0f: ratio %.2f (target <= 1)\n", per, u, bound, per / bound
	}'
fi

# (c)'s floor on this machine: the same steps with the library taken out
# (bench/sparse_floor.c): 2 worker threads and 2 store threads exchanging
# the same bytes per call over raw loopback TCP, the workers spinning for
# (b)'s step, the stores for the keyed table's cost (one worker on an
# in-process keyed store, --local, minus (b); both 2 epochs, no checks).
# Steps cancel: the floor of (c)/(b) is the skeleton's time over its steps
# times (b)'s step, taking (c) to need no more steps than (b).
fixed() { "$B/examples/sparse_train" "$TRAIN" "$TEST" --quiet --epochs 2 --check-every 1000000000 "$@"; }
per_step() { sed -n 's/^\([0-9]*\) steps,.*/\1/p; s/^test accuracy .* seconds \([0-9.]*\).*/\1/p' | tr '\n' ' '; }
if [ -n "${u2:-}" ]; then
	fb=; fl=; fc=
	for r in $(seq "$ROUNDS"); do
		set -- $(fixed --workers 2 --shards 2 | per_step)
		fc="$fc $(awk -v n="$1" -v s="$2" 'BEGIN {print s / n * 1e6}')"
		set -- $(fixed | per_step)
		fb="$fb $(awk -v n="$1" -v s="$2" 'BEGIN {print s / n * 1e6}')"
		set -- $(fixed --local --workers 1 | per_step)
		fl="$fl $(awk -v n="$1" -v s="$2" 'BEGIN {print s / n * 1e6}')"
	done
	m_b=$(echo "$fb" | tr ' ' '\n' | grep . | median)
	m_l=$(echo "$fl" | tr ' ' '\n' | grep . | median)
	m_c=$(echo "$fc" | tr ' ' '\n' | grep . | median)
	m_t=$(awk -v b="$m_b" -v l="$m_l" 'BEGIN {t = l - b; print (t > 0 ? t : 0)}')
	fl_out=$("$B/bench/sparse_floor" 2 2 3128 "$(printf '%.0f' "$u2")" "$m_b" "$m_t")
	awk -v b="$m_b" -v t="$m_t" -v c="$m_c" -v o="$fl_out" 'BEGIN {
		split(o, f, " ")
		printf "(c) per step (2 epochs, no checks): %.1f us = %.2f x (b)'"'"'s %.1f us; its floor, a raw TCP skeleton of the same steps (+ keyed table %.1f us, the same bytes): %.2f x (b)\n", c, c / b, b, t, f[9]
	}'
	echo "RESULT sparse_floor b_step_us=$m_b c_step_us=$m_c table_step_us=$m_t $fl_out"
fi

awk -v b="$tr_one" -v bw="$wall_one" -v c="$tr_dist" -v d="$tr_dense" -v dw="$wall_dense" -v a="$ll_s" 'BEGIN {
	printf "(b) vs (d), training to target: %.2fx faster (target >= 5)\n", d / b
	printf "(b) vs (d), end to end:         %.2fx faster\n", dw / bw
	printf "(b) vs (a) LIBLINEAR, end to end: %.2fx faster (target > 1)\n", a / bw
	printf "(c) / (b), training to target: %.2f (target <= 1.1)\n", c / b
}'
echo "RESULT sparse liblinear_acc=$ll_acc liblinear_s=$ll_s target=$target one_s=$tr_one one_wall=$wall_one dist_s=$tr_dist dist_wall=$wall_dist dense_s=$tr_dense dense_wall=$wall_dense"
