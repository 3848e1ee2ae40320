#!/bin/sh
# Installs libdistml into a temporary prefix and checks what a host program
# sees: exactly the symbols lib/distml.map names exported (all dml_*, each
# with the map's version node), the soname, and the Arith example built
# with `pkg-config --cflags --libs distml` (shared) and with `-static` and
# `pkg-config --static` (glibc warns about getaddrinfo in static programs;
# numeric addresses need nothing at run time),
# each run end to end over loopback. Then a staged install (DESTDIR, as a
# distribution's package build does) and its uninstall.
set -e
B=${1:-build}
tmp=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
make -s --no-print-directory install B="$B" PREFIX="$tmp/prefix" >/dev/null

lib="$tmp/prefix/lib/libdistml.so"
bad=$(nm -D --defined-only "$lib" | awk '$2 ~ /[TDBRVW]/ && $3 !~ /^dml_/ {print $3}')
if [ -n "$bad" ]; then
	echo "test-install: symbols exported without the dml_ prefix: $bad" >&2
	exit 1
fi
node=$(sed -n 's/^\(DISTML_[0-9.]*\) *{.*/\1/p' lib/distml.map | tail -n 1)
unversioned=$(nm -D --defined-only --with-symbol-versions "$lib" | awk -v n="@@$node" '$3 ~ /^dml_/ && index($3, n) == 0 && index($3, "@") == 0 {print $3}')
if [ -n "$unversioned" ]; then
	echo "test-install: symbols without a version node: $unversioned" >&2
	exit 1
fi
nm -D --defined-only "$lib" | awk '$3 ~ /^dml_/ {print $3}' | sed 's/@.*//' | sort -u >"$tmp/exported"
sed -n 's/^[[:space:]]*\(dml_[a-z0-9_]*\);.*/\1/p' lib/distml.map | sort -u >"$tmp/listed"
if ! cmp -s "$tmp/exported" "$tmp/listed"; then
	echo "test-install: exported symbols differ from lib/distml.map (< exported, > listed):" >&2
	diff "$tmp/exported" "$tmp/listed" >&2 || true
	exit 1
fi
major=$(sed -n 's/^#define DML_VERSION_MAJOR \([0-9]*\)/\1/p' include/distml/common.h)
minor=$(sed -n 's/^#define DML_VERSION_MINOR \([0-9]*\)/\1/p' include/distml/common.h)
if [ "$major" = 0 ]; then want="libdistml.so.0.$minor"; else want="libdistml.so.$major"; fi
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
[ "$soname" = "$want" ] || {
	echo "test-install: soname $soname, expected $want" >&2
	exit 1
}
[ -e "$tmp/prefix/lib/$soname" ] || { echo "test-install: $soname not installed" >&2; exit 1; }

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
make -s --no-print-directory uninstall B="$B" PREFIX="$tmp/prefix"
left=$(find "$tmp/prefix" -type f -o -type l | head -5)
[ -z "$left" ] || { echo "test-install: uninstall left $left" >&2; exit 1; }

# A staged install: everything under DESTDIR, nothing naming it.
make -s --no-print-directory install B="$B" PREFIX=/usr DESTDIR="$tmp/stage" >/dev/null
for f in usr/include/distml.h usr/include/distml/rpc.h usr/lib/libdistml.a \
	usr/lib/libdistml.so "usr/lib/$soname" usr/lib/pkgconfig/distml.pc; do
	[ -e "$tmp/stage/$f" ] || { echo "test-install: DESTDIR install lacks /$f" >&2; exit 1; }
done
if grep -q "$tmp" "$tmp/stage/usr/lib/pkgconfig/distml.pc"; then
	echo "test-install: distml.pc names the DESTDIR" >&2
	exit 1
fi
grep -q '^prefix=/usr$' "$tmp/stage/usr/lib/pkgconfig/distml.pc" ||
	{ echo "test-install: distml.pc does not say prefix=/usr" >&2; exit 1; }
make -s --no-print-directory uninstall B="$B" PREFIX=/usr DESTDIR="$tmp/stage"
left=$(find "$tmp/stage" -type f -o -type l | head -5)
[ -z "$left" ] || { echo "test-install: DESTDIR uninstall left $left" >&2; exit 1; }
echo "test-install: install, pkg-config (shared, static), DESTDIR install, uninstall: ok"
