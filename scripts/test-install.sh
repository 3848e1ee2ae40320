#!/bin/sh
# Installs libdistml into a temporary prefix and checks what a host program
# sees: only dml_* symbols exported, the soname, and the Arith example built
# with `pkg-config --cflags --libs distml` (shared) and with `-static` and
# `pkg-config --static` (glibc warns about getaddrinfo in static programs;
# numeric addresses need nothing at run time),
# each run end to end over loopback.
set -e
B=${1:-build}
tmp=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
make -s --no-print-directory install PREFIX="$tmp/prefix" >/dev/null

bad=$(nm -D --defined-only "$tmp/prefix/lib/libdistml.so" | awk '$2 ~ /[TDBR]/ && $3 !~ /^dml_/ {print $3}')
if [ -n "$bad" ]; then
	echo "test-install: symbols exported without the dml_ prefix: $bad" >&2
	exit 1
fi
soname=$(objdump -p "$tmp/prefix/lib/libdistml.so" | awk '/SONAME/ {print $2}')
[ "$soname" = "libdistml.so.$(sed -n 's/^#define DML_VERSION_MAJOR \([0-9]*\)/\1/p' include/distml/common.h)" ] || {
	echo "test-install: unexpected soname $soname" >&2
	exit 1
}

export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
for mode in shared static; do
	flags=""
	[ $mode = static ] && flags="--static"
	for p in arith_server arith_client; do
		if [ $mode = static ]; then
			${CC:-cc} -Iexamples examples/$p.c -o "$tmp/$p-$mode" -static \
				$(pkg-config --cflags --static distml) $(pkg-config --libs --static distml) 2>"$tmp/log" ||
				{ cat "$tmp/log" >&2; exit 1; }
		else
			${CC:-cc} -Iexamples examples/$p.c -o "$tmp/$p-$mode" \
				$(pkg-config --cflags distml) $(pkg-config --libs distml)
		fi
	done
	if [ $mode = shared ]; then
		ldd "$tmp/arith_client-shared" | grep -q "libdistml.so.[0-9]* => $tmp/prefix/lib" ||
			LD_LIBRARY_PATH="$tmp/prefix/lib" ldd "$tmp/arith_client-shared" | grep -q "$tmp/prefix/lib/libdistml" || {
			echo "test-install: shared client is not linked to the installed libdistml" >&2
			exit 1
		}
	else
		if ldd "$tmp/arith_client-static" 2>/dev/null | grep -q libdistml; then
			echo "test-install: static client still needs libdistml.so" >&2
			exit 1
		fi
	fi
	LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/arith_server-$mode" 127.0.0.1:0 >"$tmp/out" &
	pid=$!
	i=0
	while ! grep -q '^listening on' "$tmp/out"; do
		i=$((i + 1))
		[ $i -gt 200 ] && { echo "test-install: server did not start" >&2; exit 1; }
		sleep 0.05
	done
	addr=$(sed -n 's/^listening on //p' "$tmp/out")
	LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/arith_client-$mode" "$addr" >/dev/null
	kill $pid
	wait $pid 2>/dev/null || true
	pid=""
	echo "test-install: $mode host program built with pkg-config runs"
done
make -s --no-print-directory uninstall PREFIX="$tmp/prefix"
left=$(find "$tmp/prefix" -type f -o -type l | head -5)
[ -z "$left" ] || { echo "test-install: uninstall left $left" >&2; exit 1; }
echo "test-install: install, pkg-config (shared, static), uninstall: ok"
