#!/bin/sh
# Installs what building and testing libdistml needs, when it is missing:
# a C compiler, make, pkg-config, zlib and cmocka headers (Debian packages
# gcc make pkg-config zlib1g-dev libcmocka-dev). As root it runs apt-get;
# otherwise it says what to install. Extra package names may be passed;
# those after --optional are installed when possible, and their absence is
# only reported (e.g. the demo's data set).
#
# DML_NO_DEPS=1 (a distribution's build root, a packager) never installs
# anything: what is missing is named, and missing required packages fail.
missing=""
optional=""
have_header() { printf '#include <%s>\n' "$1" | ${CC:-cc} -E -x c - >/dev/null 2>&1; }
command -v ${CC:-cc} >/dev/null 2>&1 || missing="$missing gcc"
command -v make >/dev/null 2>&1 || missing="$missing make"
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
have_header zlib.h || missing="$missing zlib1g-dev"
printf '#include <stdarg.h>\n#include <stddef.h>\n#include <setjmp.h>\n#include <stdint.h>\n#include <cmocka.h>\n' |
	${CC:-cc} -E -x c - >/dev/null 2>&1 || missing="$missing libcmocka-dev"
opt=0
for p in "$@"; do
	if [ "$p" = --optional ]; then
		opt=1
	elif ! dpkg -s "$p" >/dev/null 2>&1; then
		if [ $opt = 1 ]; then optional="$optional $p"; else missing="$missing $p"; fi
	fi
done
may_install() {
	[ "${DML_NO_DEPS:-0}" = 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1
}
if [ -n "$optional" ]; then
	if may_install; then
		echo "deps: installing$optional"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -qq $optional >/dev/null 2>&1 ||
			{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $optional >/dev/null 2>&1; } ||
			echo "deps: could not install$optional (optional; going on without)" >&2
	else
		echo "deps: optional$optional not installed; install with: sudo apt-get install$optional" >&2
	fi
fi
[ -z "$missing" ] && exit 0
if may_install; then
	echo "deps: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq $missing >/dev/null 2>&1 ||
		{ apt-get update -qq && apt-get install -y -qq $missing; } || {
		echo "deps: apt-get install$missing failed" >&2
		exit 1
	}
else
	echo "deps: missing$missing; install them with: sudo apt-get install$missing" >&2
	exit 1
fi
