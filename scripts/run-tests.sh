#!/bin/sh
# Runs each test program given, each under its own time limit
# (DML_TEST_TIMEOUT seconds, default 600; 1800 under valgrind); with
# VALGRIND=1 under valgrind memcheck. Prints each program's time and a
# closing "N passed, N failed" line, and fails if any test failed.
pass=0
fail=0
failed=""
if [ "${VALGRIND:-0}" = 1 ]; then
	limit=${DML_TEST_TIMEOUT:-1800}
else
	limit=${DML_TEST_TIMEOUT:-600}
fi
for t in "$@"; do
	if [ "${VALGRIND:-0}" = 1 ]; then
		set -- valgrind -q --error-exitcode=99 --leak-check=full \
			--errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect "$t"
	else
		set -- "$t"
	fi
	start=$(date +%s)
	timeout -k 10 "$limit" "$@"
	rc=$?
	end=$(date +%s)
	if [ $rc = 124 ] || [ $rc = 137 ]; then
		echo "$t: timed out after $limit s"
	fi
	echo "time: $t $((end - start)) s"
	if [ $rc = 0 ]; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		failed="$failed $t"
	fi
done
[ -n "$failed" ] && echo "failed programs:$failed"
echo "tests: $pass passed, $fail failed"
[ "$fail" = 0 ]
