#!/usr/bin/env python3
"""Checks the error-detail rule of docs/api.md in lib/*.c: every public
function that returns an int (a code) begins by clearing the calling
thread's detail (dml__detail_clear), or is a single `return` of another
public function that does. Prints the offenders; exits 1 if any."""
import re, sys, glob

EXEMPT = {
    # returns DML_EHANDLER for the handler to pass on: not a failure of its own
    "dml_rpc_ctx_errorf", "dml_rpc_errorf",
    # cannot fail: a number or a yes/no, not a code
    "dml_version_number", "dml_dataset_is_sparse",
}
def first_statement(src, end):
    return src[end:].strip().split("\n", 1)[0].strip()

bad = []
for path in sorted(glob.glob(sys.argv[1] + "/*.c")):
    src = open(path).read()
    # static helpers that clear first may be forwarded to
    clearing = set(m.group(1) for m in re.finditer(
        r"^static int ([a-z_0-9]+)\([^)]*\)\s*\{", src, re.M)
        if first_statement(src, m.end()).startswith("dml__detail_clear();"))
    for m in re.finditer(r"^int (dml_[a-z][a-z0-9_]*)\(([^)]*)\)\s*\{", src, re.M):
        name = m.group(1)
        if name in EXEMPT:
            continue
        first = first_statement(src, m.end())
        if first.startswith("dml__detail_clear();"):
            continue
        fwd = re.match(r"return (?:[a-z_]+\()?(dml_[a-z][a-z0-9_]*|[a-z_0-9]+)\(", first)
        if fwd and (fwd.group(1).startswith("dml_") or fwd.group(1) in clearing):
            continue
        if re.match(r"return (ps|c|s) \? dml_", first):
            continue
        bad.append("%s: %s: first statement is `%s`" % (path, name, first))
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
