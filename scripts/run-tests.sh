#!/bin/sh
# Runs each test program given; with VALGRIND=1 under valgrind memcheck.
# Prints a closing "N passed, N failed" line and fails if any test failed.
pass=0
fail=0
failed=""
for t in "$@"; do
	if [ "${VALGRIND:-0}" = 1 ]; then
		set -- valgrind -q --error-exitcode=99 --leak-check=full \
			--errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect "$t"
	else
		set -- "$t"
	fi
	if "$@"; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		failed="$failed $t"
	fi
done
[ -n "$failed" ] && echo "failed programs:$failed"
echo "tests: $pass passed, $fail failed"
[ "$fail" = 0 ]
