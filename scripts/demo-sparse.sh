#!/bin/sh
# make demo-sparse: sparse logistic regression on a generated click-through-
# like set (examples/sparse_gen.c: 100k rows, 1M hashed features, ~50 per
# row, Zipf-like frequencies, a hidden sparse separator, 5% label noise),
# trained by 2 worker threads against 2 keyed store shards over loopback RPC
# (examples/sparse_train.c). The set is generated once into BUILD/data.
# Extra arguments go to sparse_train.
set -e
B=${1:-build}
shift || true
D=$B/data/sparse
if [ ! -s "$D/train.svm" ] || [ ! -s "$D/test.svm" ]; then
	mkdir -p "$D"
	"$B/examples/sparse_gen" "$D/train.svm" "$D/test.svm"
fi
exec "$B/examples/sparse_train" "$D/train.svm" "$D/test.svm" --workers 2 --shards 2 "$@"
