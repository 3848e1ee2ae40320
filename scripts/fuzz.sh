#!/bin/sh
# Runs the libFuzzer harnesses of tests/fuzz/ (see `make fuzz`).
#
#   sh scripts/fuzz.sh deps
#       makes sure clang can link -fsanitize=fuzzer: installs clang and its
#       runtime (Debian: libclang-rt-<major>-dev, which holds
#       libclang_rt.fuzzer) through scripts/deps.sh when missing.
#   sh scripts/fuzz.sh run SECONDS NAME...
#       for each NAME: replays tests/fuzz/regressions/NAME/* (inputs that
#       once found a bug), then fuzzes $FUZZ_B/fuzz_NAME (default build/fuzz) for SECONDS on a
#       copy of tests/fuzz/corpus/NAME in $FUZZ_B/corpus-NAME (the seed
#       corpus stays clean). Prints the executions and time of each run
#       (libFuzzer's -print_final_stats=1), and fails if any harness
#       crashed, leaked, timed out or ran out of memory; the input that did
#       is left in $FUZZ_B/artifacts-NAME/ and the log in
#       $FUZZ_B/NAME.log.
set -u
cd "$(dirname "$0")/.."
FUZZ_CC=${FUZZ_CC:-clang}
B=${FUZZ_B:-build/fuzz}

links_fuzzer() {
	d=$(mktemp -d) || return 1
	printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
		'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
		'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' >"$d/t.c"
	"$FUZZ_CC" -fsanitize=fuzzer,address,undefined "$d/t.c" -o "$d/t" >/dev/null 2>&1
	rc=$?
	rm -rf "$d"
	return $rc
}

deps() {
	links_fuzzer && return 0
	if command -v "$FUZZ_CC" >/dev/null 2>&1; then
		major=$("$FUZZ_CC" -dumpversion 2>/dev/null | cut -d. -f1)
		pkgs="libclang-rt-$major-dev"
	else
		pkgs="clang libclang-rt-dev"
	fi
	echo "fuzz: $FUZZ_CC cannot link -fsanitize=fuzzer; installing $pkgs"
	sh scripts/deps.sh $pkgs || exit 1
	links_fuzzer && return 0
	echo "fuzz: $FUZZ_CC still cannot link -fsanitize=fuzzer (libclang_rt.fuzzer missing)" >&2
	exit 1
}

# What went wrong, from log $1: the report from its first error on, and
# where the input went.
report() {
	sed -n '/ERROR\|runtime error\|deadly signal\|out-of-memory\|timeout after/,$p' "$1" |
		grep -v '^ *0x[0-9a-f]*:' | head -n 40
	grep 'Test unit written\|Running: ' "$1" | tail -n 3
}

# The value of libFuzzer's final statistic $2 in log $1.
final_stat() {
	sed -n "s/^stat::$2: *\([0-9]*\).*/\1/p" "$1" | tail -n 1
}

run_one() {
	name=$1 secs=$2
	bin=$B/fuzz_$name
	log=$B/$name.log
	art=$B/artifacts-$name
	corpus=$B/corpus-$name
	rm -rf "$corpus" "$art"
	mkdir -p "$corpus" "$art"
	if [ -d "tests/fuzz/corpus/$name" ]; then
		cp -R "tests/fuzz/corpus/$name/." "$corpus/"
	fi
	opts="-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=$art/"
	reg=tests/fuzz/regressions/$name
	if [ -d "$reg" ] && [ -n "$(ls -A "$reg" 2>/dev/null)" ]; then
		n=$(ls -A "$reg" | wc -l | tr -d ' ')
		# shellcheck disable=SC2086
		if ! "$bin" $opts "$reg"/* >"$B/$name.regressions.log" 2>&1; then
			echo "fuzz_$name: FAILED on a regression input ($n replayed); see $B/$name.regressions.log"
			report "$B/$name.regressions.log"
			return 1
		fi
		echo "fuzz_$name: $n regression input(s) pass"
	fi
	start=$(date +%s)
	# shellcheck disable=SC2086
	"$bin" $opts -max_total_time="$secs" "$corpus" >"$log" 2>&1
	rc=$?
	end=$(date +%s)
	execs=$(final_stat "$log" number_of_executed_units)
	peak=$(final_stat "$log" peak_rss_mb)
	done_s=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
	cov=$(sed -n 's/^#[0-9]*[ 	]*DONE[ 	]*cov: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
	units=$(ls "$corpus" | wc -l | tr -d ' ')
	echo "fuzz_$name: ${execs:-?} executions in ${done_s:-?} s" \
		"(stat::number_of_executed_units; libFuzzer's Done line; $((end - start)) s wall," \
		"-max_total_time=$secs), cov ${cov:-?}, corpus $units, peak rss ${peak:-?} MB, exit $rc"
	if [ $rc -ne 0 ] || [ -n "$(ls -A "$art")" ]; then
		echo "fuzz_$name: FAILED; the input is in $art/, the log in $log:"
		report "$log"
		return 1
	fi
	return 0
}

case "${1:-}" in
deps)
	deps
	;;
run)
	secs=${2:?usage: fuzz.sh run SECONDS NAME...}
	shift 2
	failed=""
	for name in "$@"; do
		run_one "$name" "$secs" || failed="$failed $name"
	done
	if [ -n "$failed" ]; then
		echo "fuzz: FAILED:$failed"
		exit 1
	fi
	echo "fuzz: $# harnesses, no crash, leak or timeout"
	;;
*)
	echo "usage: sh scripts/fuzz.sh deps | run SECONDS NAME..." >&2
	exit 2
	;;
esac
