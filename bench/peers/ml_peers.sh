#!/bin/sh
# bench/peers/ml_peers.sh BUILD_DIR - libdistml's training examples beside
# LIBLINEAR and scikit-learn on Fashion-MNIST: fit time and test accuracy.
#
# Called at the end of bench/peers/run.sh (so by `make bench-peers`), or alone
# from the repo root as `sh bench/peers/ml_peers.sh build`. See
# bench/peers/README.md. Environment (all optional):
#   FASHION_MNIST_DIR           the IDX gz files (default /usr/share/datasets/fashion-mnist)
#   ML_PEERS_MODELS             scikit-learn models to run (default "logreg sgd mlp")
#   ML_PEERS_LIBLINEAR          LIBLINEAR solvers to run (default "0 2"; "" for none)
#   ML_PEERS_OPENBLAS_CORETYPE  OpenBLAS kernel for scikit-learn (default: detected)
#   ML_PEERS_MLP_ARGS           arguments for BUILD_DIR/examples/mlp (default none)
# Missing tools or data are skipped with a message (exit 0); a peer or example
# that runs and fails makes the exit status 1, after the table.
set -u

B=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
PYSRC="$HERE/ml_peers.py"
DATA=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
MODELS=${ML_PEERS_MODELS-logreg sgd mlp}
LL_SOLVERS=${ML_PEERS_LIBLINEAR-0 2}
THREADS=2
PD="$B/peers"
FAILED=0
RES=""   # RESULT lines gathered for the table

echo
echo "# === ML peers: libdistml's examples vs LIBLINEAR and scikit-learn (Fashion-MNIST)"

# --- data -------------------------------------------------------------------
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \
	t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
	if [ ! -r "$DATA/$f" ]; then
		echo "bench-peers: Fashion-MNIST not found ($DATA/$f); install the Debian package"
		echo "dataset-fashion-mnist or set FASHION_MNIST_DIR (skipping the ML peers)"
		exit 0
	fi
done

# --- tools --------------------------------------------------------------------
# A python3 with numpy and scikit-learn: the one on PATH, else Debian's.
find_py() {
	for p in python3 /usr/bin/python3; do
		if command -v "$p" >/dev/null 2>&1 &&
			"$p" -c 'import numpy, sklearn, threadpoolctl' >/dev/null 2>&1; then
			echo "$p"
			return 0
		fi
	done
	return 1
}
# Debian packages that are not installed, of those named.
missing_pkgs() {
	for p in "$@"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			printf '%s ' "$p"
	done
}
PKGS=""
find_py >/dev/null || PKGS="python3-sklearn"
command -v liblinear-train >/dev/null 2>&1 || PKGS="$PKGS liblinear-tools"
# Debian's numpy uses whichever libblas.so.3 is installed; without OpenBLAS that
# is the reference BLAS, far slower than what scikit-learn users run.
if command -v dpkg-query >/dev/null 2>&1 &&
	[ -z "$(missing_pkgs python3-numpy)" ] &&
	[ -n "$(missing_pkgs libopenblas0-pthread)" ] &&
	[ -n "$(missing_pkgs libopenblas0-openmp)" ] &&
	[ -n "$(missing_pkgs libopenblas0-serial)" ]; then
	PKGS="$PKGS libopenblas0-pthread"
fi
if [ -n "$PKGS" ] && [ "${DML_NO_DEPS:-0}" = 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	# "python3-sklearn" brings numpy, scipy and threadpoolctl for /usr/bin/python3.
	case "$PKGS" in *python3-sklearn*) PKGS="$PKGS libopenblas0-pthread" ;; esac
	# shellcheck disable=SC2086
	echo "# bench-peers: installing" $PKGS
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086
	if ! apt-get install -y $PKGS >/dev/null 2>&1; then
		apt-get update >/dev/null 2>&1 || true
		apt-get install -y $PKGS >/dev/null 2>&1 || true
	fi
fi
PY=$(find_py || true)
if [ -z "$PY" ]; then
	echo "bench-peers: scikit-learn not found: apt-get install python3-sklearn (skipping scikit-learn)"
fi
HAVE_LL=1
if ! command -v liblinear-train >/dev/null 2>&1 || ! command -v liblinear-predict >/dev/null 2>&1; then
	echo "bench-peers: LIBLINEAR not found: apt-get install liblinear-tools (skipping LIBLINEAR)"
	HAVE_LL=0
fi
if [ -z "$PY" ]; then
	# The LIBSVM files are written with numpy only.
	for p in python3 /usr/bin/python3; do
		if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import numpy' >/dev/null 2>&1; then
			PYNP=$p
			break
		fi
	done
	if [ "$HAVE_LL" = 1 ] && [ -z "${PYNP:-}" ]; then
		echo "bench-peers: LIBLINEAR needs python3 with numpy to convert the data (skipping LIBLINEAR)"
		HAVE_LL=0
	fi
else
	PYNP=$PY
fi
mkdir -p "$PD"

# Wall-clock seconds since the epoch, with a fraction.
now() {
	t=$(date +%s.%N 2>/dev/null)
	case "$t" in
	*[!0-9.]* | "" | *.) "${PYNP:-python3}" -c 'import time; print("%.6f" % time.time())' ;;
	*) echo "$t" ;;
	esac
}
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# --- scikit-learn -------------------------------------------------------------
if [ -n "$PY" ] && [ -n "$MODELS" ]; then
	# OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE, where the machine sets them, slow a
	# current OpenBLAS: unset them for this command. An OpenBLAS older than the
	# processor then falls back to its generic "Prescott" (SSE3) kernel, which
	# would handicap scikit-learn; pick the AVX2/AVX-512 kernel the processor
	# has instead (ml_peers.py checks its products against numpy's own loops).
	CORE=${ML_PEERS_OPENBLAS_CORETYPE:-}
	if [ -z "$CORE" ]; then
		ARCH=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=$THREADS "$PY" -c '
import numpy
from threadpoolctl import threadpool_info
print(" ".join(p.get("architecture") or "?" for p in threadpool_info() if p.get("internal_api") == "openblas"))' 2>/dev/null)
		if [ "$ARCH" = Prescott ] && [ -r /proc/cpuinfo ]; then
			FLAGS=$(grep -m1 '^flags' /proc/cpuinfo)
			case "$FLAGS" in
			*" avx512f "* | *" avx512f") CORE=SkylakeX ;;
			*" avx2 "* | *" avx2") CORE=Haswell ;;
			esac
			[ -n "$CORE" ] && echo "# OpenBLAS chose its generic Prescott kernel (it predates this processor);" \
				"using OPENBLAS_CORETYPE=$CORE for scikit-learn (set ML_PEERS_OPENBLAS_CORETYPE to choose)"
		fi
	fi
	run_sklearn() {
		# shellcheck disable=SC2086
		if [ -n "$1" ]; then
			env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=$THREADS \
				OPENBLAS_NUM_THREADS=$THREADS OPENBLAS_CORETYPE="$1" \
				"$PY" "$PYSRC" --data "$DATA" --threads $THREADS $MODELS
		else
			env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=$THREADS \
				OPENBLAS_NUM_THREADS=$THREADS \
				"$PY" "$PYSRC" --data "$DATA" --threads $THREADS $MODELS
		fi
	}
	echo "# running scikit-learn ($PY bench/peers/ml_peers.py $MODELS; $THREADS threads)"
	OUT=$(run_sklearn "$CORE" 2>&1)
	rc=$?
	if [ $rc = 4 ] && [ -n "$CORE" ]; then
		printf '%s\n' "$OUT"
		echo "# OPENBLAS_CORETYPE=$CORE failed its check; running with OpenBLAS's own choice"
		OUT=$(run_sklearn "" 2>&1)
		rc=$?
	fi
	printf '%s\n' "$OUT"
	RES="$RES
$(printf '%s\n' "$OUT" | grep '^RESULT peer ' || true)"
	if [ $rc != 0 ]; then
		echo "bench-peers: ml_peers.py failed (exit $rc)"
		FAILED=1
	fi
fi

# --- LIBLINEAR ----------------------------------------------------------------
if [ "$HAVE_LL" = 1 ] && [ -n "$LL_SOLVERS" ]; then
	TR="$PD/fashion-mnist.train.libsvm"
	TE="$PD/fashion-mnist.test.libsvm"
	if [ ! -s "$TR" ] || [ ! -s "$TE" ]; then
		echo "# writing the data in LIBSVM format for LIBLINEAR (once; kept in $PD/)"
		if ! "$PYNP" "$PYSRC" --data "$DATA" --write-libsvm "$PD"; then
			echo "bench-peers: could not write the LIBSVM files (skipping LIBLINEAR)"
			FAILED=1
			LL_SOLVERS=""
		fi
	fi
	if [ -n "$LL_SOLVERS" ]; then
		# liblinear-train reads a 300 MB text file before it trains; time that
		# alone with a tolerance that stops the solver at once.
		t0=$(now)
		liblinear-train -q -s 0 -e 1000 "$TR" "$PD/liblinear.model" >/dev/null 2>&1
		READ_S=$(elapsed "$t0" "$(now)")
		LLV=$(dpkg-query -W -f='${Version}' liblinear-tools 2>/dev/null || true)
		echo "# LIBLINEAR${LLV:+ $LLV}: reading $TR takes ${READ_S} s (included in the times below)"
	fi
	for s in $LL_SOLVERS; do
		case $s in
		0) what="logistic regression, primal" ;;
		2) what="L2-loss SVM, primal" ;;
		*) what="solver $s" ;;
		esac
		# -B 1: a bias feature, as scikit-learn fits an intercept (without it
		# both solvers stop just short of 0.84); C=1 and eps are the defaults.
		echo "# running liblinear-train -s $s -B 1 ($what, C=1, one-vs-rest, 1 thread)"
		t0=$(now)
		if ! liblinear-train -q -s "$s" -B 1 "$TR" "$PD/liblinear.model" >/dev/null; then
			echo "bench-peers: liblinear-train -s $s failed"
			FAILED=1
			continue
		fi
		secs=$(elapsed "$t0" "$(now)")
		POUT=$(liblinear-predict "$TE" "$PD/liblinear.model" "$PD/liblinear.out" 2>&1)
		acc=$(printf '%s\n' "$POUT" | sed -n 's/^Accuracy = .*(\([0-9]*\)\/\([0-9]*\)).*/\1 \2/p' |
			awk 'NF == 2 && $2 > 0 { printf "%.4f", $1 / $2 }')
		if [ -z "$acc" ]; then
			printf '%s\n' "$POUT"
			echo "bench-peers: liblinear-predict printed no accuracy"
			FAILED=1
			continue
		fi
		printf '%-62s train %7.2f s  test accuracy %s\n' "liblinear-train -s $s -B 1 ($what)" "$secs" "$acc"
		line="RESULT peer name=liblinear_s$s seconds=$secs accuracy=$acc read_seconds=$READ_S"
		echo "$line"
		RES="$RES
$line"
	done
	rm -f "$PD/liblinear.model" "$PD/liblinear.out"
fi

# --- libdistml ------------------------------------------------------------------
run_ours() { # BIN ARGS...: run with a time limit when `timeout` exists
	if command -v timeout >/dev/null 2>&1; then
		timeout 900 "$@"
	else
		"$@"
	fi
}
DEMO="$B/examples/dsgd_demo"
if [ -x "$DEMO" ]; then
	echo "# running $DEMO --data $DATA --target 0.84 (softmax regression, DSGD)"
	OUT=$(run_ours "$DEMO" --data "$DATA" --target 0.84 2>&1)
	rc=$?
	printf '%s\n' "$OUT"
	acc=$(printf '%s\n' "$OUT" | sed -n 's/^summary: test accuracy \([0-9.]*\).*/\1/p' | tail -1)
	secs=$(printf '%s\n' "$OUT" | sed -n 's/^summary: .* after \([0-9.]*\) s of training.*/\1/p' | tail -1)
	t84=$(printf '%s\n' "$OUT" | sed -n 's/^target: test accuracy \([0-9.]*\) reached after \([0-9.]*\) s.*/\1 \2/p' | tail -1)
	if [ $rc != 0 ]; then
		echo "bench-peers: $DEMO failed (exit $rc)"
		FAILED=1
	elif [ -z "$acc" ] || [ -z "$secs" ]; then
		echo "bench-peers: $DEMO printed no summary line"
	else
		line="RESULT ours name=distml_softmax seconds=$secs accuracy=$acc"
		[ -n "$t84" ] && line="$line target=${t84% *} target_seconds=${t84#* }"
		echo "$line"
		RES="$RES
$line"
	fi
else
	echo "# $DEMO not found (make examples); no softmax figures of ours"
fi
MLP="$B/examples/mlp"
if [ -x "$MLP" ]; then
	echo "# running $MLP ${ML_PEERS_MLP_ARGS:-}(784-100-10 MLP, DSGD)"
	# shellcheck disable=SC2086
	OUT=$(run_ours "$MLP" ${ML_PEERS_MLP_ARGS:-} 2>&1)
	rc=$?
	printf '%s\n' "$OUT"
	R=$(printf '%s\n' "$OUT" | grep '^RESULT mlp ' | tail -1)
	secs=$(printf '%s\n' "$R" | sed -n 's/.* seconds=\([0-9.]*\).*/\1/p')
	acc=$(printf '%s\n' "$R" | sed -n 's/.* accuracy=\([0-9.]*\).*/\1/p')
	line=""
	[ -n "$secs" ] && [ -n "$acc" ] && line="RESULT ours name=distml_mlp seconds=$secs accuracy=$acc"
	if [ $rc != 0 ]; then
		echo "bench-peers: $MLP failed (exit $rc)"
		FAILED=1
	elif [ -z "$line" ]; then
		echo "bench-peers: $MLP printed no 'RESULT mlp seconds=... accuracy=...' line; no MLP figures of ours"
	else
		echo "$line"
		RES="$RES
$line"
	fi
else
	echo "# $MLP not found (make examples); no MLP figures of ours"
fi

# --- table ----------------------------------------------------------------------
echo
printf '%s\n' "$RES" | awk '
function f2(x) { return x == "" ? "-" : sprintf("%.2f", x) }
function f4(x) { return x == "" ? "-" : sprintf("%.4f", x) }
$1 == "RESULT" {
	id = ""
	for (i = 3; i <= NF; i++) {
		split($i, kv, "=")
		if (kv[1] == "name") { id = kv[2]; order[++n] = id; kind[id] = $2 }
		else if (id != "") v[id, kv[1]] = kv[2]
	}
}
# time to >= T for a peer: its fit time if its final accuracy reaches T
function reach(id, T) { return (v[id, "accuracy"] != "" && v[id, "accuracy"] + 0 >= T) ? v[id, "seconds"] : "" }
END {
	desc["distml_softmax"] = "libdistml softmax, DSGD (examples/dsgd_demo)"
	desc["distml_mlp"] = "libdistml MLP 784-100-10, DSGD (examples/mlp)"
	desc["sklearn_logreg"] = "scikit-learn LogisticRegression (lbfgs)"
	desc["sklearn_sgd"] = "scikit-learn SGDClassifier (log, 20 epochs)"
	desc["sklearn_mlp"] = "scikit-learn MLPClassifier 784-100-10"
	desc["liblinear_s0"] = "LIBLINEAR -s 0 -B 1 (logistic regression)"
	desc["liblinear_s2"] = "LIBLINEAR -s 2 -B 1 (L2-loss SVM)"
	printf "# Fashion-MNIST, 60,000 train / 10,000 test, 2 threads; seconds = training only\n"
	printf "%-48s %10s %10s\n", "model", "seconds", "test acc"
	for (i = 1; i <= n; i++) {
		id = order[i]
		d = (id in desc) ? desc[id] : id
		printf "%-48s %10s %10s\n", d, f2(v[id, "seconds"]), f4(v[id, "accuracy"])
	}
	if (v["liblinear_s0", "read_seconds"] != "")
		printf "(LIBLINEAR times include %.2f s reading its LIBSVM text file)\n", v["liblinear_s0", "read_seconds"]

	printf "\n# softmax: time to test accuracy >= 0.84 (ours: first evaluation past it)\n"
	ours = (v["distml_softmax", "target"] != "" && v["distml_softmax", "target"] + 0 <= 0.84) ? v["distml_softmax", "target_seconds"] : ""
	if (v["distml_softmax", "seconds"] == "") ours_s = "not run"
	else ours_s = ours == "" ? "not reached" : sprintf("%.2f s", ours)
	printf "%-48s %s\n", "libdistml softmax (DSGD)", ours_s
	split("sklearn_logreg liblinear_s0 liblinear_s2 sklearn_sgd", peers, " ")
	for (k = 1; k <= 4; k++) {
		p = peers[k]
		if (v[p, "seconds"] == "") continue
		r = reach(p, 0.84)
		if (r == "") s = sprintf("not reached (%.4f after %.2f s)", v[p, "accuracy"], v[p, "seconds"])
		else {
			s = sprintf("%.2f s", r)
			if (ours != "" && ours + 0 > 0) s = s sprintf("   peer/ours %.2fx", r / ours)
		}
		printf "%-48s %s\n", desc[p], s
	}

	printf "\n# MLP 784-100-10: ours vs MLPClassifier (target: >= 0.87, in less time)\n"
	om = v["distml_mlp", "seconds"]; oa = v["distml_mlp", "accuracy"]
	pm = v["sklearn_mlp", "seconds"]; pa = v["sklearn_mlp", "accuracy"]
	printf "%-48s %s\n", "libdistml MLP", om == "" ? "no figures" : sprintf("%.2f s, %.4f", om, oa)
	printf "%-48s %s\n", "scikit-learn MLPClassifier", pm == "" ? "no figures" : sprintf("%.2f s, %.4f", pm, pa)
	if (om != "" && pm != "") {
		printf "%-48s %s\n", "time ours/sklearn", (pm + 0 > 0) ? sprintf("%.2f", om / pm) : "-"
		if (oa + 0 < 0.87) verdict = "MISS (ours below 0.87)"
		else if (pa + 0 < 0.87) verdict = "ok (sklearn below 0.87)"
		else verdict = om + 0 < pm + 0 ? "ok (ours faster)" : "MISS (ours slower)"
		printf "%-48s %s\n", "ours >= 0.87 and faster", verdict
	}
}'
exit $FAILED
