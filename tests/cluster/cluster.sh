#!/bin/sh
# tests/cluster/cluster.sh - a cluster of emulated hosts on one machine, for
# the cluster tests and benchmarks (docs/cluster.md): N network namespaces
# ("hosts"), each joined by a veth pair to a router in a namespace of its
# own (the "switch"), every link shaped as a profile asks. Nothing is added
# to the machine's own namespace: every address is inside the cluster (host
# K is 10.233.K.2, its router port 10.233.K.1), and nothing leaves it.
#
# How each property of a link is emulated (this kernel has no netem):
#   rate     tbf on both directions of the host's link: the host's side
#            (what it sends) and the switch's port (what it receives);
#   delay    what the host sends, as the router forwards it, passes an
#            NFQUEUE rule (iptables, in the switch) to nfq_delay, which
#            holds each packet DELAY us (+- a jitter, never reordering)
#            before it goes on: TCP sees the round trip (a host-to-host
#            round trip is twice the delay). In the router, not in the
#            host: there the held packets would still count against the
#            sending socket, and TCP's small-queue limit would cap the
#            rate at a few packets per delay (8.7 Mbit/s at 5 ms);
#   loss     nftables in the router: what the host sends is dropped at
#            random, `numgen random mod 1000 < P`, P per mille (one way:
#            each direction of a host-to-host path loses P);
#   cut      nftables in the host drops everything on its link, both ways,
#            until uncut (no FIN, no RST: the peers see silence).
# Segmentation offloads are off on every link, so that loss and rate act
# on packets of the wire's size, not on 64 KiB GSO bursts.
#
# Usage (ID: the caller's PID, a process that outlives its use; `clean` and
# `up` remove the clusters of IDs whose process is gone):
#   cluster.sh check                 exit 0 if it can run here; else one line
#                                    saying why, exit 77 (as root it first
#                                    installs iproute2, nftables, iptables and
#                                    ethtool when missing, unless DML_NO_DEPS=1)
#   cluster.sh up ID N               N hosts (1..32); prints "K ADDR" per host
#   cluster.sh shape ID K RATE_MBIT DELAY_US JITTER_US LOSS_PERMILLE [SECONDS]
#                                    host K's link (0 = not shaped); the delay
#                                    process lives at most SECONDS (600)
#   cluster.sh unshape ID K
#   cluster.sh cut ID K | uncut ID K
#   cluster.sh exec ID K cmd...      run cmd on host K (ip netns exec)
#   cluster.sh pids ID K             the PIDs of the processes on host K
#   cluster.sh down ID               stop what runs in the cluster (by PID),
#                                    remove its namespaces
#   cluster.sh clean                 remove the clusters of dead IDs
# The delay needs the nfq_delay program: $DML_CLUSTER_BIN/nfq_delay
# (default: build/tests/cluster next to this script's project).
set -eu

prog=cluster
here=$(cd "$(dirname "$0")" && pwd)
bin=${DML_CLUSTER_BIN:-$here/../../build/tests/cluster}
net=10.233

die() {
	echo "$prog: $*" >&2
	exit 1
}

usage() {
	sed -n '/^# Usage/,/^# The delay/p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

set_id() {
	case $1 in
	'' | 0* | *[!0-9]*) echo "$prog: bad ID '$1'" >&2; exit 2 ;;
	esac
	[ ${#1} -le 7 ] || { echo "$prog: bad ID '$1' (at most 7 digits)" >&2; exit 2; }
	ID=$1
	SW=dmlc${ID}s
	STATE=/run/dmlcluster.$ID
	[ -d /run ] && [ -w /run ] || STATE=${TMPDIR:-/tmp}/dmlcluster.$ID
}

host_ns() { echo "dmlc${ID}h$1"; }
port_if() { echo "dc${ID}p$1"; }

ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }
alive() { kill -0 "$1" 2>/dev/null; }

need_root() {
	[ "$(id -u)" = 0 ] || die "not root (network namespaces need root)"
	command -v ip >/dev/null 2>&1 || die "no ip command: install iproute2"
}

# the cluster's namespaces, switch last
cluster_nss() {
	ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^dmlc${ID}h[0-9]+\$" || true
	ns_exists "$SW" && echo "$SW" || true
}

# stop_pids NS: TERM, then KILL after 2 s, the processes in NS (by PID)
stop_pids() {
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
}

do_down() {
	rc=0
	for ns in $(cluster_nss); do
		stop_pids "$ns"
		ip netns del "$ns" 2>/dev/null || { echo "$prog: could not delete $ns" >&2; rc=1; }
	done
	rm -rf "$STATE"
	return $rc
}

do_clean() {
	saved=${ID:-}
	for p in $(ip netns list 2>/dev/null | awk '{print $1}' | sed -n 's/^dmlc\([1-9][0-9]*\)[sh].*/\1/p' | sort -u); do
		alive "$p" && continue
		set_id "$p"
		do_down || true
	done
	[ -z "$saved" ] || set_id "$saved"
}

# offloads off on a link (ethtool; gso_max_segs where it is missing)
no_offload() { # NS IF
	if command -v ethtool >/dev/null 2>&1; then
		ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true
	fi
}

do_up() {
	n=$1
	do_clean
	do_down >/dev/null 2>&1 || true
	mkdir -p "$STATE"
	ip netns add "$SW"
	ip -n "$SW" link set lo up
	ip netns exec "$SW" sysctl -qw net.ipv4.ip_forward=1
	k=1
	while [ $k -le "$n" ]; do
		h=$(host_ns $k)
		p=$(port_if $k)
		ip netns add "$h"
		ip -n "$h" link set lo up
		ip -n "$SW" link add "$p" type veth peer name eth0 netns "$h"
		ip -n "$SW" addr add "$net.$k.1/24" dev "$p"
		ip -n "$SW" link set "$p" up
		ip -n "$h" addr add "$net.$k.2/24" dev eth0
		ip -n "$h" link set eth0 up
		ip -n "$h" route add default via "$net.$k.1"
		no_offload "$SW" "$p"
		no_offload "$h" eth0
		echo "$k $net.$k.2"
		k=$((k + 1))
	done
}

do_unshape() { # K
	h=$(host_ns "$1")
	p=$(port_if "$1")
	if [ -f "$STATE/delay.$1.pid" ]; then
		pid=$(cat "$STATE/delay.$1.pid")
		# only our own delayer: it runs in the switch's namespace
		if ip netns pids "$SW" 2>/dev/null | grep -qx "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			n=0
			while alive "$pid" && [ $n -lt 30 ]; do sleep 0.1; n=$((n + 1)); done
		fi
		rm -f "$STATE/delay.$1.pid"
	fi
	while ip netns exec "$SW" iptables -w 5 -D FORWARD -i "$p" -j NFQUEUE --queue-num "$1" --queue-bypass 2>/dev/null; do :; done
	ip netns exec "$SW" nft delete table inet "dmlloss$1" 2>/dev/null || true
	tc -n "$h" qdisc del dev eth0 root 2>/dev/null || true
	tc -n "$SW" qdisc del dev "$(port_if "$1")" root 2>/dev/null || true
}

# tbf at RATE Mbit/s: a burst of 2 ms of the rate (at least 16 KiB), and
# a queue of 50 ms
tbf() { # NS IF RATE
	burst=$(($3 * 1000000 / 8 / 500))
	[ $burst -ge 16384 ] || burst=16384
	tc -n "$1" qdisc add dev "$2" root tbf rate "${3}mbit" burst "$burst" latency 50ms
}

do_shape() { # K RATE DELAY_US JITTER_US LOSS_PERMILLE SECONDS
	h=$(host_ns "$1")
	ns_exists "$h" || die "no host $1 in cluster $ID"
	do_unshape "$1"
	if [ "$2" -gt 0 ]; then
		tbf "$h" eth0 "$2"
		tbf "$SW" "$(port_if "$1")" "$2"
	fi
	if [ "$5" -gt 0 ]; then
		printf '%s\n' "table inet dmlloss$1 {" \
			"  chain lossy { type filter hook forward priority 0; policy accept;" \
			"    iifname \"$(port_if "$1")\" numgen random mod 1000 < $5 drop; }" \
			"}" | ip netns exec "$SW" nft -f -
	fi
	if [ "$3" -gt 0 ]; then
		[ -x "$bin/nfq_delay" ] || die "no $bin/nfq_delay (make cluster-test builds it)"
		mkdir -p "$STATE"
		ip netns exec "$SW" "$bin/nfq_delay" "$1" "$3" "$4" "$6" >"$STATE/delay.$1.log" 2>&1 &
		echo $! >"$STATE/delay.$1.pid"
		# the queue is bound once it says so (bounded: 5 s)
		n=0
		until grep -q "^nfq_delay: queue" "$STATE/delay.$1.log" 2>/dev/null; do
			alive "$(cat "$STATE/delay.$1.pid")" || die "nfq_delay: $(cat "$STATE/delay.$1.log")"
			[ $n -lt 50 ] || die "nfq_delay did not start"
			sleep 0.1
			n=$((n + 1))
		done
		ip netns exec "$SW" iptables -w 5 -A FORWARD -i "$(port_if "$1")" -j NFQUEUE \
			--queue-num "$1" --queue-bypass
	fi
}

do_cut() { # K
	h=$(host_ns "$1")
	printf '%s\n' "table inet dmlcut {}" "delete table inet dmlcut" "table inet dmlcut {" \
		"  chain in { type filter hook input priority -20; policy accept; iifname \"eth0\" drop; }" \
		"  chain out { type filter hook output priority -20; policy accept; oifname \"eth0\" drop; }" \
		"}" | ip netns exec "$h" nft -f -
}

do_uncut() {
	ip netns exec "$(host_ns "$1")" nft delete table inet dmlcut 2>/dev/null || true
}

skip() {
	echo "$prog: $*"
	exit 77
}

do_check() {
	[ "$(id -u)" = 0 ] || skip "not root (the cluster needs CAP_NET_ADMIN)"
	missing=""
	command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
	command -v tc >/dev/null 2>&1 || missing="$missing iproute2"
	command -v nft >/dev/null 2>&1 || missing="$missing nftables"
	command -v iptables >/dev/null 2>&1 || missing="$missing iptables"
	command -v ethtool >/dev/null 2>&1 || missing="$missing ethtool"
	if [ -n "$missing" ] && [ "${DML_NO_DEPS:-0}" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		export DEBIAN_FRONTEND=noninteractive
		# shellcheck disable=SC2086
		apt-get install -y -qq $missing >/dev/null 2>&1 ||
			{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $missing >/dev/null 2>&1; } || true
	fi
	for c in ip tc nft iptables; do
		command -v $c >/dev/null 2>&1 || skip "no $c: install iproute2, nftables and iptables"
	done
	set_id $$
	trap 'do_down >/dev/null 2>&1 || true' EXIT
	trap 'exit 77' INT TERM HUP
	out=$(do_up 2 2>&1) || skip "cannot make namespaces, veths and a bridge here: $(echo "$out" | tail -1)"
	out=$(do_shape 1 100 0 0 5 10 2>&1) || skip "cannot shape a link (tbf, nft numgen) here: $(echo "$out" | tail -1)"
	out=$(ip netns exec "$SW" iptables -w 5 -A FORWARD -p udp --dport 9 -j NFQUEUE --queue-num 99 --queue-bypass 2>&1) ||
		skip "no NFQUEUE target here (the delay): $out"
	out=$(do_cut 1 2>&1) || skip "cannot cut a link (nft) here: $out"
	do_down >/dev/null 2>&1 || true
	trap - EXIT INT TERM HUP
	exit 0
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
check) [ $# = 0 ] || usage; do_check ;;
clean) [ $# = 0 ] || usage; need_root; do_clean ;;
up)
	[ $# = 2 ] || usage
	set_id "$1"
	need_root
	case $2 in '' | *[!0-9]*) usage ;; esac
	[ "$2" -ge 1 ] && [ "$2" -le 32 ] || die "1 to 32 hosts"
	trap 'do_down >/dev/null 2>&1 || true; exit 1' INT TERM HUP
	if ! out=$(do_up "$2" 2>&1); then
		do_down >/dev/null 2>&1 || true
		die "up: $(echo "$out" | tail -1)"
	fi
	trap - INT TERM HUP
	echo "$out"
	;;
shape)
	[ $# -ge 6 ] && [ $# -le 7 ] || usage
	set_id "$1"
	need_root
	for v in "$3" "$4" "$5" "$6"; do case $v in '' | *[!0-9]*) usage ;; esac; done
	do_shape "$2" "$3" "$4" "$5" "$6" "${7:-600}"
	;;
unshape) [ $# = 2 ] || usage; set_id "$1"; need_root; do_unshape "$2" ;;
cut) [ $# = 2 ] || usage; set_id "$1"; need_root; do_cut "$2" ;;
uncut) [ $# = 2 ] || usage; set_id "$1"; need_root; do_uncut "$2" ;;
exec)
	[ $# -ge 3 ] || usage
	set_id "$1"
	h=$(host_ns "$2")
	shift 2
	ns_exists "$h" || { echo "$prog: no host $h" >&2; exit 125; }
	exec ip netns exec "$h" "$@"
	;;
pids) [ $# = 2 ] || usage; set_id "$1"; ip netns pids "$(host_ns "$2")" ;;
down) [ $# = 1 ] || usage; set_id "$1"; need_root; do_down ;;
*) usage ;;
esac
