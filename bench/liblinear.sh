#!/bin/sh
# bench/liblinear.sh TRAIN TEST [ROUNDS] - LIBLINEAR's L2-regularised
# logistic regression (liblinear-train -s 0, primal, C = 1) on LIBSVM files.
# Each round times liblinear-train end to end (reading and parsing TRAIN
# included) and then runs liblinear-predict on TEST. Prints one line:
#
#     liblinear -s 0: accuracy A seconds S (median of N)
#
# A is the test accuracy as a fraction (0..1), S the training wall time;
# both are medians of ROUNDS rounds (default 3).
#
# Environment: LIBLINEAR_OPTS, extra options for liblinear-train (e.g.
# "-B 1" for a bias term, "-c 4"; default none). Needs liblinear-train and
# liblinear-predict (Debian liblinear-tools): as root they are installed with
# apt-get, otherwise the script says what to install and exits 2. Other
# failures exit 1.
set -eu

me=liblinear.sh
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
	echo "usage: $me TRAIN TEST [ROUNDS]" >&2
	exit 1
fi
TRAIN=$1
TEST=$2
ROUNDS=${3:-3}
case $ROUNDS in
'' | *[!0-9]* | 0) echo "$me: ROUNDS must be a positive integer, not '$ROUNDS'" >&2; exit 1 ;;
esac
for f in "$TRAIN" "$TEST"; do
	if [ ! -r "$f" ] || [ ! -s "$f" ]; then
		echo "$me: $f: missing, empty or unreadable" >&2
		exit 1
	fi
done

have_tools() { command -v liblinear-train >/dev/null 2>&1 && command -v liblinear-predict >/dev/null 2>&1; }
if ! have_tools; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "$me: installing liblinear-tools" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y liblinear-tools >&2 ||
			{ apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y liblinear-tools >&2; } ||
			true
	fi
	if ! have_tools; then
		echo "$me: needs liblinear-train and liblinear-predict: apt-get install liblinear-tools" >&2
		exit 2
	fi
fi

case $(date +%N) in
*[!0-9]* | '') echo "$me: needs date +%s.%N (GNU coreutils) for the timing" >&2; exit 1 ;;
esac
now() { date +%s.%N; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/liblinear.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

: >"$tmp/secs"
: >"$tmp/accs"
r=0
while [ "$r" -lt "$ROUNDS" ]; do
	r=$((r + 1))
	t0=$(now)
	# shellcheck disable=SC2086 # LIBLINEAR_OPTS is a list of options
	if ! liblinear-train -q -s 0 ${LIBLINEAR_OPTS:-} "$TRAIN" "$tmp/model" >"$tmp/train.log" 2>&1; then
		echo "$me: liblinear-train -s 0 ${LIBLINEAR_OPTS:+$LIBLINEAR_OPTS }failed on $TRAIN:" >&2
		tail -5 "$tmp/train.log" >&2
		exit 1
	fi
	t1=$(now)
	if ! liblinear-predict "$TEST" "$tmp/model" "$tmp/pred" >"$tmp/predict.log" 2>&1; then
		echo "$me: liblinear-predict failed on $TEST:" >&2
		tail -5 "$tmp/predict.log" >&2
		exit 1
	fi
	# "Accuracy = 87.655% (17531/20000)": take the counts, not the rounded percentage
	acc=$(sed -n 's/^Accuracy = .*(\([0-9]*\)\/\([0-9]*\)).*/\1 \2/p' "$tmp/predict.log" |
		awk '$2 > 0 { printf "%.4f\n", $1 / $2 }')
	if [ -z "$acc" ]; then
		echo "$me: liblinear-predict printed no accuracy:" >&2
		tail -5 "$tmp/predict.log" >&2
		exit 1
	fi
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }' >>"$tmp/secs"
	echo "$acc" >>"$tmp/accs"
done

A=$(median <"$tmp/accs")
S=$(median <"$tmp/secs")
printf 'liblinear -s 0: accuracy %.4f seconds %.3f (median of %d)\n' "$A" "$S" "$ROUNDS"
