#!/usr/bin/env python3
"""bench/peers/ml_peers.py - scikit-learn peers for libdistml's training examples.

Usage:
    ml_peers.py [--data DIR] [--threads N] [MODEL ...]
    ml_peers.py --write-libsvm OUTDIR [--data DIR]

Loads Fashion-MNIST from the IDX gz files in DIR (default
/usr/share/datasets/fashion-mnist, Debian package dataset-fashion-mnist) with
gzip + numpy only (no network), scales the pixels to [0, 1] (/255, as the C
examples do), then fits each MODEL on the 60,000 training images and scores it
on the 10,000 test images. MODEL is any of (default: all, in this order)

    logreg  LogisticRegression: multinomial, lbfgs, C=1, max_iter=100 (float64)
    sgd     SGDClassifier: log loss, 20 epochs (tol=None), one-vs-rest on 2 threads
            (float64, which it requires)
    mlp     MLPClassifier: 784-100-10, ReLU, Adam, 10 epochs, default batch
            (200), float32 (as the C side; twice as fast as float64)

Each fit is timed alone (time.perf_counter around fit(); loading, scaling and
predicting are not counted). For each model it prints a readable line and

    RESULT peer name=sklearn_<model> seconds=<f> accuracy=<f>

BLAS and OpenMP pools are limited to N threads (default 2) with threadpoolctl;
the calling shell should also set OMP_NUM_THREADS/OPENBLAS_NUM_THREADS.

--write-libsvm OUTDIR writes OUTDIR/fashion-mnist.train.libsvm and
OUTDIR/fashion-mnist.test.libsvm (labels 0-9, features 1-784 with the scaled
pixel values, zeros left out) for LIBLINEAR, and fits nothing. Each file is
written under a temporary name and renamed when complete.
"""
import gzip
import os
import sys
import time
import warnings

import numpy as np

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MODELS = ("logreg", "sgd", "mlp")


def read_idx(path):
    """An IDX file (gzip-compressed) as a numpy uint8 array of its shape."""
    with gzip.open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] != 0x08:
        raise ValueError("%s: not an unsigned-byte IDX file" % path)
    nd = buf[3]
    dims = tuple(int.from_bytes(buf[4 + 4 * i:8 + 4 * i], "big") for i in range(nd))
    off = 4 + 4 * nd
    n = int(np.prod(dims))
    if len(buf) - off != n:
        raise ValueError("%s: %d data bytes, header says %d" % (path, len(buf) - off, n))
    return np.frombuffer(buf, dtype=np.uint8, offset=off).reshape(dims)


def load(data):
    """(Xtrain, ytrain, Xtest, ytest): X as uint8 rows of 784 pixels."""
    ti, tl, vi, vl = (read_idx(os.path.join(data, f)) for f in FILES)
    ti = ti.reshape(ti.shape[0], -1)
    vi = vi.reshape(vi.shape[0], -1)
    if ti.shape[0] != tl.shape[0] or vi.shape[0] != vl.shape[0] or ti.shape[1] != vi.shape[1]:
        raise ValueError("%s: images and labels do not match" % data)
    return ti, tl.astype(np.int64), vi, vl.astype(np.int64)


# ---- LIBSVM text for LIBLINEAR ----------------------------------------------

def write_libsvm(X, y, path):
    # One string per pixel value, so a row is a join of table look-ups.
    val = ["%.6g" % (v / 255.0) for v in range(256)]
    tmp = path + ".tmp%d" % os.getpid()
    with open(tmp, "w") as f:
        for row, label in zip(X, y):
            nz = np.flatnonzero(row)
            f.write("%d %s\n" % (label, " ".join(
                ["%d:%s" % (j + 1, val[v]) for j, v in zip(nz.tolist(), row[nz].tolist())])))
    os.replace(tmp, path)


def cmd_write_libsvm(outdir, data):
    Xtr, ytr, Xte, yte = load(data)
    os.makedirs(outdir, exist_ok=True)
    t0 = time.perf_counter()
    for X, y, name in ((Xtr, ytr, "train"), (Xte, yte, "test")):
        path = os.path.join(outdir, "fashion-mnist.%s.libsvm" % name)
        write_libsvm(X, y, path)
        print("# wrote %s (%d rows, %.0f MB)" % (path, len(y), os.path.getsize(path) / 1e6))
    print("# LIBSVM conversion took %.1f s" % (time.perf_counter() - t0))
    return 0


# ---- models ------------------------------------------------------------------

def sklearn_version():
    import sklearn
    return tuple(int(p) for p in sklearn.__version__.split(".")[:2] if p.isdigit())


def make_model(name, threads):
    ver = sklearn_version()
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression
        kw = {}
        if ver < (1, 5):  # multinomial is lbfgs's only behaviour from 1.5 on
            kw["multi_class"] = "multinomial"
        # max_iter=100 (the default): lbfgs is then at 0.844 test accuracy
        # (50 iterations: 0.836, 130: 0.845), so it is past the 0.84 mark the
        # softmax example is timed to, in about as few iterations as it needs.
        return ("LogisticRegression(multinomial, lbfgs, C=1, max_iter=100)",
                LogisticRegression(solver="lbfgs", C=1.0, max_iter=100, tol=1e-4, **kw))
    if name == "sgd":
        from sklearn.linear_model import SGDClassifier
        loss = "log_loss" if ver >= (1, 1) else "log"
        # tol=None: exactly max_iter epochs. One-vs-rest, one binary problem
        # per class, spread over `threads` threads.
        return ("SGDClassifier(log loss, 20 epochs, OvR on %d threads)" % threads,
                SGDClassifier(loss=loss, max_iter=20, tol=None, n_jobs=threads,
                              random_state=0))
    if name == "mlp":
        from sklearn.neural_network import MLPClassifier
        # Default batch (min(200, n)): faster than batch 128 (about 5 s
        # against 7 s here) and still past 0.87, so the stronger peer.
        return ("MLPClassifier(784-100-10, relu, adam, 10 epochs, batch 200)",
                MLPClassifier(hidden_layer_sizes=(100,), activation="relu", solver="adam",
                              batch_size="auto", max_iter=10, random_state=0))
    raise KeyError(name)


def blas_note():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    out = []
    for p in threadpool_info():
        if p.get("user_api") == "blas":
            out.append("%s %s, kernel %s, %s threads" % (
                p.get("internal_api"), p.get("version"), p.get("architecture", "?"),
                p.get("num_threads")))
    return "; ".join(out) or "no BLAS found by threadpoolctl"


def blas_check():
    """None if BLAS products agree with numpy's own (non-BLAS) loops, else why.

    A kernel chosen for the wrong processor (OPENBLAS_CORETYPE) can compute
    wrong results; this catches that before any timing is reported."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((300, 784)), rng.standard_normal((784, 100))
    ref = np.einsum("ij,jk->ik", a, b)
    for dt, tol in ((np.float64, 1e-9), (np.float32, 1e-3)):
        got = a.astype(dt) @ b.astype(dt)
        if not np.all(np.abs(got - ref) <= tol * (1 + np.abs(ref))):
            return "%s matrix product differs from the reference" % np.dtype(dt).name
    return None


def usage():
    sys.stderr.write("usage: ml_peers.py [--data DIR] [--threads N] [%s ...]\n"
                     "       ml_peers.py --write-libsvm OUTDIR [--data DIR]\n" % " | ".join(MODELS))
    return 2


def main(argv):
    data, threads, libsvm_dir, models = DEFAULT_DATA, 2, None, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--data", "--threads", "--write-libsvm"):
            if i + 1 >= len(argv):
                return usage()
            v = argv[i + 1]
            i += 2
            if a == "--data":
                data = v
            elif a == "--threads":
                threads = int(v)
            else:
                libsvm_dir = v
            continue
        if a in ("-h", "--help") or a not in MODELS:
            return usage()
        models.append(a)
        i += 1
    missing = [f for f in FILES if not os.path.exists(os.path.join(data, f))]
    if missing:
        print("ml_peers: Fashion-MNIST not found in %s (missing %s; Debian package "
              "dataset-fashion-mnist)" % (data, ", ".join(missing)))
        return 3
    if libsvm_dir is not None:
        return cmd_write_libsvm(libsvm_dir, data)
    models = models or list(MODELS)

    try:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(limits=threads)
    except ImportError:
        limiter = None  # rely on OMP_NUM_THREADS / OPENBLAS_NUM_THREADS
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    warnings.simplefilter("ignore", ConvergenceWarning)

    t0 = time.perf_counter()
    Xtr8, ytr, Xte8, yte = load(data)
    Xtr = Xtr8.astype(np.float64) / 255.0
    Xte = Xte8.astype(np.float64) / 255.0
    # MLPClassifier keeps float32 data in float32 (scikit-learn >= 1.2); the
    # linear models compute in float64 whatever they are given.
    X32 = {"train": Xtr.astype(np.float32), "test": Xte.astype(np.float32)}
    print("# data: Fashion-MNIST from %s: %d training, %d test images of %d pixels "
          "(loaded in %.2f s)" % (data, Xtr.shape[0], Xte.shape[0], Xtr.shape[1],
                                  time.perf_counter() - t0))
    print("# scikit-learn %s, numpy %s, python %s; %d threads; BLAS: %s" % (
        sklearn.__version__, np.__version__, sys.version.split()[0], threads, blas_note()))
    err = blas_check()
    if err:
        print("ml_peers: BLAS self-check failed: %s (try another OPENBLAS_CORETYPE)" % err)
        return 4
    for name in models:
        desc, model = make_model(name, threads)
        xtr, xte = (X32["train"], X32["test"]) if name == "mlp" else (Xtr, Xte)
        t = time.perf_counter()
        model.fit(xtr, ytr)
        secs = time.perf_counter() - t
        acc = float(np.mean(model.predict(xte) == yte))
        extra = ""
        n_iter = getattr(model, "n_iter_", None)
        if n_iter is not None:
            extra = ", %d iterations" % int(np.max(n_iter))
        print("%-62s fit %7.2f s  test accuracy %.4f%s" % (desc, secs, acc, extra))
        print("RESULT peer name=sklearn_%s seconds=%.3f accuracy=%.4f" % (name, secs, acc))
        sys.stdout.flush()
    del limiter
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
