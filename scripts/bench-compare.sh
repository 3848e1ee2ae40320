#!/bin/sh
# scripts/bench-compare.sh OLD_BUILD NEW_BUILD [ROUNDS]
#
# Runs the benchmarks of `make bench` from two builds (e.g. a checkout of
# the previous release built in its own tree, and this one), alternately
# and ROUNDS times each (default 5), and prints the median of every figure
# that is a ratio to a baseline measured in the same run (RPC against raw
# TCP, the store against a plain loop and a global mutex, the model kernels
# against the FMA peak), for both builds and new/old. The machines are
# shared and noisy: the ratios, not the raw figures, are what compares.
# The soak's calls/s and the DSGD times have no baseline; their medians are
# shown for information. BENCH_ONLY=rpc runs rpc_bench alone (about 21 s a
# build and round, against 2 min for all), so that the RPC ratios can have
# the 9 to 15 rounds this noise needs.
set -u
OLD=${1:?usage: bench-compare.sh OLD_BUILD NEW_BUILD [ROUNDS]}
NEW=${2:?usage: bench-compare.sh OLD_BUILD NEW_BUILD [ROUNDS]}
ROUNDS=${3:-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The ratios of one run of each benchmark of build $1, as "name value".
ratios() {
	b=$1
	"$b/bench/rpc_bench" 2>/dev/null | awk '
		/^RESULT distml/ { for (i = 3; i <= NF; i++) { split($i, kv, "="); d[kv[1]] = kv[2] } }
		/^RESULT raw/ { for (i = 3; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] } }
		END { for (k in d) if (r[k] > 0) printf "rpc_%s %.4f\n", k, d[k] / r[k] }'
	[ "${BENCH_ONLY:-}" = rpc ] && return # the RPC figures alone: more rounds in the time
	"$b/bench/ps_bench" 2>/dev/null | awk '/^RESULT ps/ {
		for (i = 3; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		printf "ps_local1_vs_plain %.4f\n", v["local1_per_s"] / v["plain_per_s"]
		printf "ps_local2_vs_local1 %.4f\n", v["local2_per_s"] / v["local1_per_s"]
		printf "ps_local1_vs_global1 %.4f\n", v["local1_per_s"] / v["global1_per_s"]
		printf "ps_local2_vs_global2 %.4f\n", v["local2_per_s"] / v["global2_per_s"]
		printf "ps_remote_vs_raw %.4f\n", v["remote_MB_per_s"] / v["raw_MB_per_s"] }'
	"$b/bench/model_bench" 2>/dev/null | awk '$1 ~ /^(avx512|avx2|portable)$/ && NF >= 5 { printf "model_%s_vs_peak %.4f\n", $1, $5 }'
	"$b/bench/soak" 5 2>/dev/null | awk '/^RESULT soak/ { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "calls_per_s" || kv[1] == "lost" || kv[1] == "doubled") printf "soak_%s %s\n", kv[1], kv[2] } }'
	sh bench/dsgd_bench.sh "$b" 2>/dev/null | awk '/^RESULT dsgd/ { split($3, w, "="); split($4, m, "="); split($5, s, "="); printf "dsgd_%sw_%s_seconds %s\n", w[2], m[2], s[2] }'
}

for r in $(seq 1 "$ROUNDS"); do
	# alternate which goes first, so that a drift of the machine spreads
	if [ $((r % 2)) = 1 ]; then first=$OLD second=$NEW; else first=$NEW second=$OLD; fi
	for b in $first $second; do
		tag=old
		[ "$b" = "$NEW" ] && tag=new
		ratios "$b" | sed "s/^/$tag /" >>"$tmp/all"
	done
	echo "bench-compare: round $r of $ROUNDS done" >&2
done

# every value, for the record (BENCH_RAW=file keeps them)
[ -n "${BENCH_RAW:-}" ] && cp "$tmp/all" "$BENCH_RAW"
echo "# medians of $ROUNDS rounds; ratio = new / old"
printf '%-32s %10s %10s %8s\n' figure old new ratio
sort -k2,2 -k1,1 "$tmp/all" | awk '
	function median(list, n,   a, i, j, t) {
		n = split(list, a, " ")
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	{ v[$1 " " $2] = v[$1 " " $2] " " $3; names[$2] = 1 }
	END {
		for (k in names) {
			o = median(v["old " k]); n = median(v["new " k])
			printf "%-32s %10.4g %10.4g %8s\n", k, o, n, (o > 0 ? sprintf("%.3f", n / o) : "-")
		}
	}' | sort
