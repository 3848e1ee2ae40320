#!/bin/sh
# The ABI check (docs/abi.md).
#
#   sh scripts/abi.sh baseline BUILD_DIR
#       writes abi/<soname>.abi: abidw's description of BUILD_DIR's shared
#       library (its exported functions and every type they reach). Done
#       for each release (the tag), and committed.
#   sh scripts/abi.sh check BUILD_DIR
#       compares BUILD_DIR's shared library with the baseline of its
#       soname (abidiff). An incompatible change (a removed function, a
#       changed struct layout or signature) fails: it needs a new soname,
#       i.e. the next minor version before 1.0. Compatible changes (new
#       functions) are listed and pass. A soname without a baseline is an
#       announced break: the change against the newest older baseline is
#       listed and the check passes, reminding that the release must commit
#       its baseline. Needs abigail-tools (installed when missing).
set -u
mode=${1:?usage: abi.sh baseline|check BUILD_DIR}
B=${2:-build}
cd "$(dirname "$0")/.."
sh scripts/deps.sh abigail-tools || exit 1
lib=$(readlink -f "$B/libdistml.so")
[ -f "$lib" ] || { echo "abi: $B/libdistml.so not built" >&2; exit 1; }
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
base=abi/$soname.abi
ABIDW_OPTS="--no-corpus-path --no-show-locs --no-comp-dir-path --type-id-style hash"

case $mode in
baseline)
	# shellcheck disable=SC2086
	abidw $ABIDW_OPTS --out-file "$base" "$lib" || exit 1
	echo "abi: wrote $base ($(grep -c '<function-decl' "$base") functions)"
	;;
check)
	if [ ! -f "$base" ]; then
		older=$(ls abi/libdistml.so.*.abi 2>/dev/null | sort -V | tail -n 1)
		if [ -z "$older" ]; then
			echo "abi: no baseline in abi/ (make abi-baseline at a release)" >&2
			exit 1
		fi
		echo "abi: $soname has no baseline yet: an announced break (new soname)."
		echo "abi: changes against $older, for the release notes:"
		abidiff --no-show-locs "$older" "$lib"
		echo "abi: commit abi/$soname.abi with the release (make abi-baseline)"
		exit 0
	fi
	out=$(mktemp)
	abidiff --no-show-locs "$base" "$lib" >"$out" 2>&1
	rc=$?
	# abidiff calls a changed struct behind a pointer an "ABI change" (4),
	# like an added function: only additions are compatible here
	changed=$(sed -n 's/^\(Functions\|Variables\) changes summary: \([0-9]*\) Removed, \([0-9]*\) Changed.*/\2 \3/p' "$out" |
		awk '{n += $1 + $2} END {print n + 0}')
	if [ $((rc & 8)) != 0 ] || { [ $((rc & 4)) != 0 ] && [ "$changed" != 0 ]; }; then
		cat "$out"
		rm -f "$out"
		echo "abi: FAILED: an incompatible change to $soname, which its baseline $base does not allow; keep the ABI, or announce the break with a new soname (docs/abi.md)" >&2
		exit 1
	fi
	if [ $((rc & 3)) != 0 ]; then
		cat "$out"
		rm -f "$out"
		echo "abi: abidiff failed (exit $rc)" >&2
		exit 1
	fi
	if [ $((rc & 4)) != 0 ]; then
		cat "$out"
		echo "abi: compatible changes to $soname against $base (listed above)"
	else
		echo "abi: $soname matches its baseline $base"
	fi
	rm -f "$out"
	;;
*)
	echo "usage: abi.sh baseline|check BUILD_DIR" >&2
	exit 2
	;;
esac
