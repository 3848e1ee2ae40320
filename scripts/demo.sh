#!/bin/sh
# The main job (make demo): distributed training of softmax regression on
# Fashion-MNIST over loopback RPC (examples/dsgd_demo.c: a parameter-store
# server thread and 2 worker threads, each with its own RPC client).
# The data comes from the Debian package dataset-fashion-mnist, which
# scripts/deps.sh installs when run as root; without it the demo trains on a
# generated data set and says so. Extra arguments go to dsgd_demo.
set -e
B=${1:-build}
shift || true
sh "$(dirname "$0")/deps.sh" --optional dataset-fashion-mnist || true
exec "$B/examples/dsgd_demo" "$@"
