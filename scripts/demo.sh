#!/bin/sh
# The main job (make demo). Until distributed training lands, it runs the
# Arith RPC example end to end over loopback: a server on an ephemeral
# port and a client that checks every answer.
set -e
B=${1:-build}
out=$(mktemp)
"$B/examples/arith_server" 127.0.0.1:0 2 >"$out" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$out"' EXIT
i=0
while ! grep -q '^listening on' "$out"; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 $pid 2>/dev/null; then
		echo "demo: the server did not start" >&2
		exit 1
	fi
	sleep 0.05
done
addr=$(sed -n 's/^listening on //p' "$out")
echo "demo: Arith server listening on $addr (pid $pid)"
"$B/examples/arith_client" "$addr"
echo "demo: ok"
