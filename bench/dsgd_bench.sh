#!/bin/sh
# bench/dsgd_bench.sh BUILD_DIR - time to 0.84 test accuracy on Fashion-MNIST
# for distributed SGD over loopback RPC (examples/dsgd_demo), with 1 and 2
# workers in each consistency model. Each figure is the median of 3 runs of
# the training time (evaluation excluded), with the final test accuracy.
# Run by `make bench`; needs the data set (dataset-fashion-mnist), else the
# demo's generated stand-in is used and the figures say so.
B=${1:-build}
D="$B/examples/dsgd_demo"
[ -x "$D" ] || { echo "dsgd_bench: $D not built" >&2; exit 1; }
median3() { sort -g | sed -n 2p; }
echo "# DSGD time to test accuracy 0.84 (softmax regression, Fashion-MNIST), median of 3 runs"
printf '%-8s %-5s %12s %10s %14s\n' workers mode "seconds" "final acc" "samples/s"
for w in 1 2; do
	for m in bsp ssp asp; do
		times="" accs="" rates=""
		for r in 1 2 3; do
			out=$("$D" --workers $w --mode $m --epochs 6 2>&1) || { echo "$out" >&2; exit 1; }
			t=$(printf '%s\n' "$out" | sed -n 's/^target: .* reached after \([0-9.]*\) s.*/\1/p')
			a=$(printf '%s\n' "$out" | sed -n 's/^summary: test accuracy \([0-9.]*\).*/\1/p')
			s=$(printf '%s\n' "$out" | sed -n 's/.* \([0-9]*\) samples\/s;.*/\1/p')
			times="$times ${t:-inf}" accs="$accs $a" rates="$rates $s"
		done
		mt=$(echo $times | tr ' ' '\n' | median3)
		ma=$(echo $accs | tr ' ' '\n' | median3)
		ms=$(echo $rates | tr ' ' '\n' | median3)
		printf '%-8s %-5s %12s %10s %14s\n' $w $m "$mt" "$ma" "$ms"
		echo "RESULT dsgd workers=$w mode=$m seconds_to_084=$mt accuracy=$ma samples_per_s=$ms"
	done
done
