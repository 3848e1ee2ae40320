#!/bin/sh
# Checks the API rules of docs/api.md that a compiler does not (run by
# make check):
#  1. every public function that returns a code begins by clearing the
#     calling thread's error detail (or forwards to one that does);
#  2. every deprecated name is called by tests/test_deprecated.c;
#  3. lib/distml.map names exactly the functions the headers declare;
#  4. every public header points to docs/api.md;
#  5. DML_FIELD refuses a member of another type at compile time, in C;
#     the headers compile as C++ too;
#  6. deprecated names warn, and DML_NO_DEPRECATED hides them;
#  7. README's example compiles cleanly with -Wall -Wextra -Werror.
set -u
CC=${CC:-cc}
fail=0
say() { echo "check-api: $*" >&2; fail=1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. The first statement of each `int dml_x(...)` definition.
awk '
FNR == 1 { delete clearing }
# a static helper that clears first may be forwarded to
/^static int [a-z_0-9]+\(/ { split($3, a, "("); pending_static = a[1] }
/^int dml_[a-z][a-z0-9_]*\(/ { split($2, a, "("); pending = a[1]; where = FILENAME ":" FNR }
(pending != "" || pending_static != "") && /\{ *$/ { want = 1; next }
(pending != "" || pending_static != "") && /\{ *return / {
	line = $0; sub(/.*\{ */, "", line); first = line; want = 0; decide = 1
}
want { first = $0; sub(/^[ \t]+/, "", first); want = 0; decide = 1 }
decide {
	decide = 0
	if (pending_static != "") {
		if (first ~ /^dml__detail_clear\(\);/) clearing[pending_static] = 1
		pending_static = ""
		next
	}
	name = pending; pending = ""
	if (name ~ /^(dml_rpc_ctx_errorf|dml_rpc_errorf|dml_version_number|dml_dataset_is_sparse|dml_tls_available)$/) next
	if (first ~ /^dml__detail_clear\(\);/) next
	if (first ~ /^return [a-z_0-9]+\(/) {
		rest = first; sub(/^return /, "", rest)
		id1 = rest; sub(/\(.*/, "", id1)
		rest2 = rest; sub(/^[a-z_0-9]+\(/, "", rest2)
		id2 = rest2; sub(/[^a-z_0-9].*/, "", id2)
		if (id1 ~ /^dml_[a-z]/ || (id1 in clearing)) next
		if (id2 ~ /^dml_[a-z]/ || (id2 in clearing)) next
	}
	printf "%s: %s does not clear the error detail first (%s)\n", where, name, first
	bad = 1
}
END { exit bad }' lib/*.c >&2 || fail=1

# 2. Deprecated names, each called in test_deprecated.c.
for name in $(grep -h -A2 'DML_DEPRECATED(' include/distml/*.h |
	sed -n 's/.*DML_API [a-z ]*\*\{0,1\}\(dml_[a-z0-9_]*\)(.*/\1/p'); do
	grep -q "\b$name(" tests/test_deprecated.c || say "$name is deprecated but tests/test_deprecated.c does not call it"
done

# 3. The version script against the declarations.
sed -n 's/^[[:space:]]*\(dml_[a-z0-9_]*\);.*/\1/p' lib/distml.map | sort -u >"$tmp/map"
grep -h 'DML_API' include/distml/*.h | grep -v '^#' |
	sed -n 's/.*DML_API[^(]*[ *]\(dml_[a-z0-9_]*\)(.*/\1/p' | sort -u >"$tmp/declared"
if ! cmp -s "$tmp/map" "$tmp/declared"; then
	say "lib/distml.map and the headers' DML_API declarations differ (< map, > headers):"
	diff "$tmp/map" "$tmp/declared" >&2
fi

# 4. Each header's opening comment names docs/api.md.
for h in include/distml/*.h; do
	head -n 16 "$h" | grep -q 'docs/api.md' || say "$h does not point to docs/api.md"
done

# 5. DML_FIELD type checks.
cat >"$tmp/field.c" <<'C'
#include <distml.h>
typedef struct { int64_t a; int32_t b; float c; uint64_t d; bool e; dml_f32s f; } T;
#ifndef BAD
static const dml_field ok[] = {DML_FIELD(T, a, DML_I64), DML_FIELD(T, b, DML_I32),
	DML_FIELD(T, c, DML_F32), DML_FIELD(T, d, DML_U64), DML_FIELD(T, e, DML_BOOL),
	DML_FIELD(T, f, DML_F32S)};
#elif BAD == 1
static const dml_field ok[] = {DML_FIELD(T, a, DML_I32)}; /* int64_t as I32 */
#elif BAD == 2
static const dml_field ok[] = {DML_FIELD(T, b, DML_F32)}; /* int32_t as F32 */
#elif BAD == 3
static const dml_field ok[] = {DML_FIELD(T, d, DML_I64)}; /* uint64_t as I64 */
#elif BAD == 4
static const dml_field ok[] = {DML_FIELD(T, f, DML_F64S)}; /* f32s as f64s */
#endif
int main(void) { return (int)ok[0].kind == 0; }
C
$CC -std=c11 -Iinclude -c "$tmp/field.c" -o "$tmp/f.o" 2>"$tmp/log" ||
	{ say "DML_FIELD refuses correct members:"; cat "$tmp/log" >&2; }
for bad in 1 2 3 4; do
	if $CC -std=c11 -Iinclude -DBAD=$bad -c "$tmp/field.c" -o "$tmp/f.o" 2>/dev/null; then
		say "DML_FIELD accepts a member of another type (case $bad)"
	fi
done
if command -v c++ >/dev/null 2>&1; then
	cp "$tmp/field.c" "$tmp/field.cc"
	c++ -std=c++11 -Iinclude -fsyntax-only "$tmp/field.cc" 2>"$tmp/log" ||
		{ say "the headers do not compile as C++:"; cat "$tmp/log" >&2; }
fi

# 6. Deprecation.
cat >"$tmp/old.c" <<'C'
#include <distml.h>
int main(void) { dml_rpc_client_free(NULL); return 0; }
C
$CC -std=c11 -Iinclude -Werror -c "$tmp/old.c" -o "$tmp/o.o" 2>/dev/null &&
	say "a deprecated name compiles without a warning"
$CC -std=c11 -Iinclude -Werror -DDML_NO_DEPRECATION_WARNINGS -c "$tmp/old.c" -o "$tmp/o.o" 2>/dev/null ||
	say "DML_NO_DEPRECATION_WARNINGS does not quiet a deprecated name"
$CC -std=c11 -Iinclude -Werror -DDML_NO_DEPRECATED -c "$tmp/old.c" -o "$tmp/o.o" 2>/dev/null &&
	say "DML_NO_DEPRECATED does not hide a deprecated name"

# 7. README's short example.
awk '/^```c$/ && !done { on = 1; next } on && /^```$/ { on = 0; done = 1 } on' README.md >"$tmp/readme.c"
$CC -std=c11 -Wall -Wextra -Werror -pedantic -Iinclude -c "$tmp/readme.c" -o "$tmp/r.o" 2>"$tmp/log" ||
	{ say "README's example does not compile cleanly:"; cat "$tmp/log" >&2; }

[ $fail = 0 ] && echo "check-api: error detail, deprecated names, exports, header pointers, DML_FIELD types, README example: ok"
exit $fail
