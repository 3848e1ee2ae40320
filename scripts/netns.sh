#!/bin/sh
# Network-namespace helpers for tests that emulate a second host behind a
# real link that can fail silently: a namespace, a veth pair between it and
# the host (the default namespace) on a private /30, and DROP rules that make
# the peer vanish without a FIN or RST (this kernel has no netem qdisc).
#
# Usage (ID is a number without leading zeros, normally the caller's PID; it
# must be the PID of a process that outlives its use of the namespace, since
# `clean` and every `up` remove the namespaces of IDs whose process is gone):
#
#   netns.sh check          exit 0 if namespaces, veths and DROP rules work
#                           here; otherwise print one line on stdout saying
#                           why (e.g. "netns: not root", "netns: no iptables
#                           or nft: install iptables") and exit 77, the code
#                           tests use for "skipped". As root (unless
#                           DML_NO_DEPS=1) it first installs iproute2 and
#                           iptables with apt-get when they are missing.
#   netns.sh up ID          remove stale namespaces (see clean), then create
#                           namespace dmlns<ID> and veth dmlv<ID>h (host side)
#                           / dmlv<ID>n (inside), address both ends, bring them
#                           and lo inside up, and print one line on stdout:
#                             HOST_ADDR NS_ADDR     e.g. "10.231.12.5 10.231.12.6"
#                           Exit 0; on failure it removes what it made, says
#                           why on stderr and exits 1. If dmlns<ID> already
#                           exists it is removed and made anew.
#   netns.sh exec ID cmd... run cmd inside dmlns<ID> (ip netns exec); exit with
#                           cmd's status, or 125 if the namespace is missing.
#   netns.sh drop ID        silently drop all traffic across the link, both
#                           ways (rules inside the namespace: iptables INPUT
#                           -i / OUTPUT -o dmlv<ID>n -j DROP, or an nft table
#                           if iptables cannot); idempotent. Exit 0, or 1.
#   netns.sh undrop ID      remove those rules; idempotent. Exit 0, or 1.
#   netns.sh down ID        kill the processes left inside dmlns<ID>, delete
#                           the veth and the namespace; exit 0, also when
#                           they are already gone; 1 if they cannot be removed.
#   netns.sh clean          remove this project's namespaces (dmlns<N>) and
#                           veths (dmlv<N>h, dmlv<N>n) whose process N is not
#                           alive; exit 0, or 1 if one could not be removed.
#   netns.sh names ID       print "dmlns<ID> dmlv<ID>h dmlv<ID>n" (no root needed).
#
# Exit codes: 0 success; 1 failure (message on stderr); 2 usage error;
# 77 from check when namespaces cannot be used here; 125 from exec when the
# namespace does not exist. Everything but check, names and usage needs root.
#
# Addresses: run ID uses slot ID mod 16384 of 10.231.0.0/16 (DML_NETNS_NET
# sets the first two octets), the /30 10.231.(slot/64).(slot%64*4): .1 is the
# host side and .2 the namespace side; if that /30 is already on the host (a
# concurrent run whose ID collides), the next slot is used. Namespaces and
# interfaces without the dmlns / dmlv prefix are never touched, and the host's
# firewall never is either.
set -eu

prog=netns
net=${DML_NETNS_NET:-10.231}

usage() {
	echo "usage: $0 check | clean | up ID | exec ID cmd... | drop ID | undrop ID | down ID | names ID" >&2
	exit 2
}

die() {
	echo "$prog: $*" >&2
	exit 1
}

# set_id ID: validates ID and sets the names derived from it.
set_id() {
	case $1 in
	'' | 0* | *[!0-9]*) echo "$prog: bad ID '$1' (a number without leading zeros, e.g. the caller's PID)" >&2; exit 2 ;;
	esac
	[ ${#1} -le 10 ] || { echo "$prog: bad ID '$1' (at most 10 digits)" >&2; exit 2; }
	ID=$1
	NS=dmlns$ID
	VH=dmlv${ID}h
	VN=dmlv${ID}n
}

need_root() {
	[ "$(id -u)" = 0 ] || die "not root (network namespaces need root)"
	command -v ip >/dev/null 2>&1 || die "no ip command: install iproute2"
}

# A lock around creating and removing, so that concurrent runs probing for a
# free /30 or cleaning do not race. Best effort: without flock, no lock.
lock() {
	command -v flock >/dev/null 2>&1 || return 0
	lockdir=/run/lock
	[ -d "$lockdir" ] && [ -w "$lockdir" ] || lockdir=${TMPDIR:-/tmp}
	exec 9>>"$lockdir/dmlnetns.lock"
	flock -w 30 9 || echo "$prog: could not take $lockdir/dmlnetns.lock in 30 s; going on" >&2
}

ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }
link_exists() { ip link show dev "$1" >/dev/null 2>&1; }
alive() { kill -0 "$1" 2>/dev/null; }

# run CMD...: runs it, keeping its output in $why when it fails.
run() {
	if why=$("$@" 2>&1); then return 0; fi
	why="$*: $(printf '%s' "$why" | tr '\n' ' ')"
	return 1
}

# kill_inside NS: TERM, then KILL after 2 s, every process in the namespace.
kill_inside() {
	pids=$(ip netns pids "$1" 2>/dev/null | grep -vx "$$" || true)
	[ -n "$pids" ] || return 0
	# shellcheck disable=SC2086 # a list of numbers
	kill -TERM $pids 2>/dev/null || true
	n=0
	while [ $n -lt 20 ]; do
		pids=$(ip netns pids "$1" 2>/dev/null | grep -vx "$$" || true)
		[ -n "$pids" ] || return 0
		sleep 0.1
		n=$((n + 1))
	done
	# shellcheck disable=SC2086
	kill -KILL $pids 2>/dev/null || true
	sleep 0.1
}

# teardown: removes dmlns$ID and its veth; fails if something remains.
teardown() {
	if ns_exists "$NS"; then
		kill_inside "$NS"
	fi
	for l in "$VH" "$VN"; do
		if link_exists "$l"; then ip link del dev "$l" 2>/dev/null || true; fi
	done
	if ns_exists "$NS"; then
		run ip netns del "$NS" || { echo "$prog: $why" >&2; return 1; }
	fi
	for l in "$VH" "$VN"; do
		if link_exists "$l"; then echo "$prog: could not delete $l" >&2; return 1; fi
	done
	return 0
}

# do_clean: removes this project's namespaces and veths whose PID is dead.
do_clean() {
	rc=0
	saved_id=${ID:-}
	for name in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^dmlns[1-9][0-9]{0,9}$' || true); do
		p=${name#dmlns}
		alive "$p" && continue
		set_id "$p"
		teardown || rc=1
	done
	for name in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' |
		grep -E '^dmlv[1-9][0-9]{0,9}[hn]$' || true); do
		p=${name#dmlv}
		p=${p%?}
		alive "$p" && continue
		if link_exists "$name"; then
			ip link del dev "$name" 2>/dev/null || { echo "$prog: could not delete $name" >&2; rc=1; }
		fi
	done
	[ -z "$saved_id" ] || set_id "$saved_id"
	return $rc
}

# pick_addrs: sets HOST_ADDR, NS_ADDR to the first free /30 from ID's slot.
pick_addrs() {
	slot=$((ID % 16384))
	tries=0
	while [ $tries -lt 16384 ]; do
		c=$((slot / 64))
		d=$((slot % 64 * 4))
		if [ -z "$(ip -o -4 addr show to "$net.$c.$d/30" 2>/dev/null)" ]; then
			HOST_ADDR=$net.$c.$((d + 1))
			NS_ADDR=$net.$c.$((d + 2))
			return 0
		fi
		slot=$(((slot + 1) % 16384))
		tries=$((tries + 1))
	done
	why="no free /30 in $net.0.0/16"
	return 1
}

# do_up: creates everything for $ID; on failure removes it, sets $why, fails.
do_up() {
	do_clean || true
	if ns_exists "$NS" || link_exists "$VH" || link_exists "$VN"; then
		teardown || { why="dmlns$ID exists and could not be removed"; return 1; }
	fi
	pick_addrs || return 1
	if run ip netns add "$NS" &&
		run ip link add "$VH" type veth peer name "$VN" &&
		run ip link set dev "$VN" netns "$NS" &&
		run ip addr add "$HOST_ADDR/30" dev "$VH" &&
		run ip link set dev "$VH" up &&
		run ip -n "$NS" addr add "$NS_ADDR/30" dev "$VN" &&
		run ip -n "$NS" link set dev "$VN" up &&
		run ip -n "$NS" link set dev lo up; then
		return 0
	fi
	saved_why=$why
	teardown >/dev/null 2>&1 || true
	why=$saved_why
	return 1
}

# ipt_drop TOOL: adds the two DROP rules with iptables-like TOOL; on failure
# removes what it added.
ipt_has() { ip netns exec "$NS" "$1" -w 5 -C "$2" "$3" "$VN" -j DROP >/dev/null 2>&1; }
ipt_drop() {
	command -v "$1" >/dev/null 2>&1 || return 1
	if ! ipt_has "$1" INPUT -i; then
		run ip netns exec "$NS" "$1" -w 5 -I INPUT 1 -i "$VN" -j DROP || return 1
	fi
	if ! ipt_has "$1" OUTPUT -o; then
		if ! run ip netns exec "$NS" "$1" -w 5 -I OUTPUT 1 -o "$VN" -j DROP; then
			ipt_undrop "$1" || true
			return 1
		fi
	fi
}
ipt_undrop() {
	command -v "$1" >/dev/null 2>&1 || return 0
	# Looking would create the legacy tables in the namespace: only look when
	# its legacy filter table exists (i.e. iptables-legacy was used there).
	if [ "$1" = iptables-legacy ] &&
		! ip netns exec "$NS" grep -qx filter /proc/net/ip_tables_names 2>/dev/null; then
		return 0
	fi
	for spec in "INPUT -i" "OUTPUT -o"; do
		chain=${spec% *}
		opt=${spec#* }
		n=0
		while ipt_has "$1" "$chain" "$opt"; do
			[ $n -lt 16 ] || return 1
			ip netns exec "$NS" "$1" -w 5 -D "$chain" "$opt" "$VN" -j DROP >/dev/null 2>&1 || return 1
			n=$((n + 1))
		done
	done
}
nft_drop() {
	command -v nft >/dev/null 2>&1 || return 1
	# Creating the table first makes the delete safe; the whole file is atomic.
	why=$(printf '%s\n' "table inet dmlnetns {}" "delete table inet dmlnetns" \
		"table inet dmlnetns {" \
		"  chain input { type filter hook input priority -10; policy accept; iifname \"$VN\" drop; }" \
		"  chain output { type filter hook output priority -10; policy accept; oifname \"$VN\" drop; }" \
		"}" | ip netns exec "$NS" nft -f - 2>&1) || { why="nft: $why"; return 1; }
}
nft_undrop() {
	command -v nft >/dev/null 2>&1 || return 0
	if ip netns exec "$NS" nft list table inet dmlnetns >/dev/null 2>&1; then
		ip netns exec "$NS" nft delete table inet dmlnetns >/dev/null 2>&1 || return 1
	fi
}

do_drop() {
	if ! command -v iptables >/dev/null 2>&1 && ! command -v iptables-legacy >/dev/null 2>&1 &&
		! command -v nft >/dev/null 2>&1; then
		why="no iptables or nft: install iptables"
		return 1
	fi
	# One set of rules is enough; the first tool that works wins.
	ipt_drop iptables && return 0
	w1=${why:-}
	ipt_drop iptables-legacy && return 0
	nft_drop && return 0
	why="cannot add DROP rules inside a namespace (${w1:-$why})"
	return 1
}

do_undrop() {
	rc=0
	ipt_undrop iptables || rc=1
	ipt_undrop iptables-legacy || rc=1
	nft_undrop || rc=1
	[ $rc = 0 ] || why="could not remove the DROP rules in $NS"
	return $rc
}

skip() {
	echo "$prog: $*"
	exit 77
}

do_check() {
	[ "$(id -u)" = 0 ] || skip "not root"
	missing=""
	command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
	if ! command -v iptables >/dev/null 2>&1 && ! command -v nft >/dev/null 2>&1; then
		missing="$missing iptables"
	fi
	if [ -n "$missing" ] && [ "${DML_NO_DEPS:-0}" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		export DEBIAN_FRONTEND=noninteractive
		# shellcheck disable=SC2086 # a list of package names
		apt-get install -y -qq $missing >/dev/null 2>&1 ||
			{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $missing >/dev/null 2>&1; } || true
	fi
	command -v ip >/dev/null 2>&1 || skip "no ip command: install iproute2"
	if ! command -v iptables >/dev/null 2>&1 && ! command -v nft >/dev/null 2>&1; then
		skip "no iptables or nft: install iptables"
	fi
	# The real thing, with this process's PID as the ID (so a check killed
	# midway leaves only what clean removes).
	set_id $$
	lock
	trap 'teardown >/dev/null 2>&1 || true' EXIT
	trap 'exit 77' INT TERM HUP
	if ! do_up; then
		case $why in
		"ip netns add"*) skip "cannot create network namespaces here ($why)" ;;
		*veth*) skip "cannot create veth pairs here ($why)" ;;
		*) skip "cannot set up a namespace link here ($why)" ;;
		esac
	fi
	do_drop || skip "$why"
	do_undrop || skip "$why"
	teardown >/dev/null 2>&1 || skip "cannot delete network namespaces here"
	trap - EXIT INT TERM HUP
	exit 0
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
check)
	[ $# = 0 ] || usage
	do_check
	;;
clean)
	[ $# = 0 ] || usage
	need_root
	lock
	do_clean
	;;
names)
	[ $# = 1 ] || usage
	set_id "$1"
	echo "$NS $VH $VN"
	;;
up)
	[ $# = 1 ] || usage
	set_id "$1"
	need_root
	lock
	trap 'teardown >/dev/null 2>&1 || true; exit 1' INT TERM HUP
	do_up || die "up $ID: $why"
	trap - INT TERM HUP
	echo "$HOST_ADDR $NS_ADDR"
	;;
exec)
	[ $# -ge 2 ] || usage
	set_id "$1"
	shift
	if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null 2>&1; then
		echo "$prog: exec needs root and ip (iproute2)" >&2
		exit 125
	fi
	ns_exists "$NS" || { echo "$prog: no namespace $NS (run: $0 up $ID)" >&2; exit 125; }
	exec ip netns exec "$NS" "$@"
	;;
drop | undrop)
	[ $# = 1 ] || usage
	set_id "$1"
	need_root
	ns_exists "$NS" || die "no namespace $NS (run: $0 up $ID)"
	if [ "$cmd" = drop ]; then
		do_drop || die "drop $ID: $why"
	else
		do_undrop || die "undrop $ID: $why"
	fi
	;;
down)
	[ $# = 1 ] || usage
	set_id "$1"
	need_root
	lock
	teardown || die "down $ID: could not remove $NS"
	;;
*)
	usage
	;;
esac
