#!/bin/sh
# liblinear.sh TRAIN TEST [ROUNDS] - LIBLINEAR's L2-regularised logistic
# regression (liblinear-train -s 0, C = 1) on a LIBSVM pair: the wall time of
# training end to end (its own parsing included) and its test accuracy,
# median of ROUNDS (default 3). Prints one line:
#   liblinear -s 0: accuracy A seconds S (median of N)
# Installs Debian's liblinear-tools when missing and run as root.
set -eu
TRAIN=$1
TEST=$2
ROUNDS=${3:-3}
if ! command -v liblinear-train >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y liblinear-tools >/dev/null
	else
		echo "liblinear.sh: liblinear-train is missing: apt-get install liblinear-tools" >&2
		exit 2
	fi
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/liblinear.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
times=
acc=
for r in $(seq "$ROUNDS"); do
	t0=$(date +%s.%N)
	liblinear-train -s 0 -q "$TRAIN" "$tmp/model" >/dev/null
	t1=$(date +%s.%N)
	times="$times $(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')"
	acc=$(liblinear-predict "$TEST" "$tmp/model" "$tmp/out" | sed -n 's/^Accuracy = \([0-9.]*\)%.*/\1/p')
done
med=$(echo "$times" | tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}')
awk -v a="$acc" -v s="$med" -v n="$ROUNDS" 'BEGIN {printf "liblinear -s 0: accuracy %.4f seconds %.3f (median of %d)\n", a / 100, s, n}'
