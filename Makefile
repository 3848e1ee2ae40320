# libdistml - see README.md. `make`, `make check`, `make demo`, `make bench`.
#
# Variables a packager may set: CC, CFLAGS (default -O2 -g), CPPFLAGS,
# LDFLAGS, PREFIX, LIBDIR, INCLUDEDIR, PKGCONFIGDIR, DESTDIR, B (the build
# directory: build, or build/san with SANITIZE), WERROR=0 (warnings stay
# warnings), DML_NO_DEPS=1 (never install packages; say what is missing),
# PORTABLE=1 (the POSIX fallbacks of lib/sys.h instead of Linux's calls,
# and poll() for epoll), POLLER=poll (poll() alone), TLS=0 (no TLS even
# where OpenSSL's headers are; by default TLS is built when they are).

VERSION_H := include/distml/common.h
MAJOR := $(shell sed -n 's/^\#define DML_VERSION_MAJOR \([0-9]*\)/\1/p' $(VERSION_H))
MINOR := $(shell sed -n 's/^\#define DML_VERSION_MINOR \([0-9]*\)/\1/p' $(VERSION_H))
PATCH := $(shell sed -n 's/^\#define DML_VERSION_PATCH \([0-9]*\)/\1/p' $(VERSION_H))
VERSION := $(MAJOR).$(MINOR).$(PATCH)

ifeq ($(origin B),undefined)
ifdef SANITIZE
B := build/san
else
B := build
endif
endif

# "make clean install" (any goals with clean): clean first, then the others
# in a fresh make; in one make, -j would run them at the same time.
ifneq ($(filter clean,$(MAKECMDGOALS)),)
ifneq ($(filter-out clean,$(MAKECMDGOALS)),)
DML_CLEAN_FIRST := 1
endif
endif

ifdef DML_CLEAN_FIRST
.PHONY: $(MAKECMDGOALS) dml-clean-first
$(filter-out clean,$(MAKECMDGOALS)): dml-clean-first
	@:
clean:
	@:
dml-clean-first:
	rm -rf $(B)
	@$(MAKE) --no-print-directory $(filter-out clean,$(MAKECMDGOALS))
else

CC ?= cc
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR ?=

# The soname changes whenever the ABI may: with every minor release before
# 1.0 (libdistml.so.0.MINOR), with every major one after (docs/abi.md).
ifeq ($(MAJOR),0)
SONAME_VERSION := $(MAJOR).$(MINOR)
else
SONAME_VERSION := $(MAJOR)
endif

OPT ?= -O2 -g
WERROR ?= 1
WARN := -Wall -Wextra -pedantic -Wshadow -Wstrict-prototypes -Wno-overlength-strings
ifneq ($(WERROR),0)
WARN += -Werror
endif
CFLAGS ?= $(OPT)
DEPFLAGS = -MMD -MP -MF $@.d
ALL_CPPFLAGS := -Iinclude -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L $(CPPFLAGS)
# PORTABLE=1: every platform shim of lib/sys.h takes its POSIX fallback,
# and the server polls with poll(). POLLER=poll chooses poll() alone
# (lib/poller.h; epoll is Linux's default).
ifneq ($(filter-out 0,$(PORTABLE)),)
ALL_CPPFLAGS += -DDML_PORTABLE
endif
ifeq ($(POLLER),poll)
ALL_CPPFLAGS += -DDML_POLLER_POLL
endif
ALL_CFLAGS := -std=c11 $(WARN) $(CFLAGS) -pthread
LDLIBS := -lz -lm -pthread

ifdef SANITIZE
ALL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif

# -fno-math-errno: sqrtf without errno, so the optimizer loops vectorise.
LIB_CFLAGS := $(ALL_CFLAGS) -fPIC -fvisibility=hidden -fno-math-errno
LIB_CPPFLAGS := $(ALL_CPPFLAGS) -DDML_BUILDING_LIBRARY -Ilib
# TLS (lib/stream_tls.c) with OpenSSL 3 (Debian libssl-dev, which `make
# deps` installs when it may); without it the TLS calls say DML_ENOTSUP.
ifneq ($(TLS),0)
HAVE_TLS := $(shell printf '\043include <openssl/ssl.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo 1)
endif
ifeq ($(HAVE_TLS),1)
LIB_CPPFLAGS += -DDML_HAVE_TLS
BENCH_CPPFLAGS := -DDML_HAVE_TLS # tls_bench's OpenSSL baseline
LDLIBS += -lssl -lcrypto
PC_REQUIRES := zlib, libssl, libcrypto
else
PC_REQUIRES := zlib
endif
MAPFILE := lib/distml.map

LIB_SRC := $(wildcard lib/*.c)
LIB_OBJ := $(LIB_SRC:lib/%.c=$(B)/obj/%.o)
STATIC := $(B)/libdistml.a
SHARED_REAL := $(B)/libdistml.so.$(VERSION)
SHARED_SONAME := libdistml.so.$(SONAME_VERSION)

TEST_SRC := $(wildcard tests/test_*.c)
TESTS := $(TEST_SRC:tests/%.c=$(B)/tests/%)
EXAMPLES := $(patsubst examples/%.c,$(B)/examples/%,$(filter-out examples/mpi_%.c,$(wildcard examples/*.c)))
# examples/mpi_dsgd.c: built when mpicc is there (Debian openmpi-bin
# libopenmpi-dev; make cluster-tools installs them); the library has no MPI
MPICC := $(shell command -v mpicc 2>/dev/null)
ifneq ($(MPICC),)
EXAMPLES += $(B)/examples/mpi_dsgd
endif
BENCHES := $(patsubst bench/%.c,$(B)/bench/%,$(wildcard bench/*.c))

.PHONY: all lib check demo bench bench-peers install uninstall clean valgrind deps examples abi-check abi-baseline
all: lib examples

lib: $(STATIC) $(B)/libdistml.so

$(B)/obj $(B)/tests $(B)/examples $(B)/bench:
	mkdir -p $@

$(B)/obj/%.o: lib/%.c | $(B)/obj
	$(CC) $(LIB_CPPFLAGS) $(LIB_CFLAGS) $(DEPFLAGS) -c $< -o $@

$(STATIC): $(LIB_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

$(SHARED_REAL): $(LIB_OBJ) $(MAPFILE)
	$(CC) -shared -Wl,-soname,$(SHARED_SONAME) -Wl,--version-script=$(MAPFILE) \
		$(LDFLAGS) -o $@ $(LIB_OBJ) $(LDLIBS)

$(B)/libdistml.so: $(SHARED_REAL)
	ln -sf libdistml.so.$(VERSION) $(B)/$(SHARED_SONAME)
	ln -sf libdistml.so.$(VERSION) $@

# Tests and programs link the static library, so they run from the tree.
$(B)/tests/%: tests/%.c $(STATIC) | $(B)/tests
	$(CC) $(ALL_CPPFLAGS) -Itests -Ilib $(ALL_CFLAGS) $(DEPFLAGS) $< -o $@ \
		$(STATIC) $(LDFLAGS) -lcmocka $(LDLIBS)

$(B)/examples/%: examples/%.c $(STATIC) | $(B)/examples
	$(CC) $(ALL_CPPFLAGS) $(ALL_CFLAGS) $(DEPFLAGS) $< -o $@ $(STATIC) $(LDFLAGS) $(LDLIBS)

$(B)/examples/mpi_dsgd: examples/mpi_dsgd.c $(STATIC) | $(B)/examples
	$(MPICC) $(ALL_CPPFLAGS) $(ALL_CFLAGS) $(DEPFLAGS) $< -o $@ $(STATIC) $(LDFLAGS) $(LDLIBS)

$(B)/bench/%: bench/%.c $(STATIC) | $(B)/bench
	$(CC) $(ALL_CPPFLAGS) $(BENCH_CPPFLAGS) -Ibench -Ilib $(ALL_CFLAGS) $(DEPFLAGS) $< -o $@ \
		$(STATIC) $(LDFLAGS) $(LDLIBS)

examples: $(EXAMPLES)

deps:
	@sh scripts/deps.sh --optional libssl-dev openssl

check: deps
	@$(MAKE) --no-print-directory lib examples $(TESTS)
ifndef SANITIZE
	@sh scripts/check-api.sh
	@sh scripts/test-install.sh $(B)
endif
	@DML_TEST_PASS=$(if $(SANITIZE),sanitize,plain) sh scripts/run-tests.sh $(TESTS)

# Under valgrind the heaviest tests run at a tenth of their sizes
# (DML_TEST_SCALE), and the flooding ones not at all (DML_TEST_PASS).
valgrind: deps
	@$(MAKE) --no-print-directory $(TESTS)
	@VALGRIND=1 DML_TEST_PASS=valgrind DML_TEST_SCALE=$${DML_TEST_SCALE:-10} \
		sh scripts/run-tests.sh $(TESTS)

demo: deps lib examples
	sh scripts/demo.sh $(B)

# Sparse models on keyed stores (docs/train.md, "Sparse models").
.PHONY: demo-sparse
demo-sparse: deps lib examples
	sh scripts/demo-sparse.sh $(B)

bench: deps lib examples $(BENCHES)
	@for b in $(BENCHES); do echo "== $$b"; $$b || exit 1; done
	@echo "== bench/dsgd_bench.sh"; sh bench/dsgd_bench.sh $(B)
	@echo "== bench/sparse_bench.sh"; sh bench/sparse_bench.sh $(B)

bench-peers: deps lib examples $(BENCHES)
	sh bench/peers/run.sh $(B)

# The 60 s soak (make bench runs it for 5 s): see bench/README.md.
.PHONY: soak
soak: deps lib $(B)/bench/soak
	$(B)/bench/soak 60

# The cluster of network-namespace hosts (docs/cluster.md, tests/cluster/):
# cluster-test is the short run (root with CAP_NET_ADMIN; it says why it
# skips otherwise). Its helpers are test programs, not the library's.
CLUSTER_BIN := $(B)/tests/cluster
# cluster-bench runs the whole training matrix.
.PHONY: cluster-test cluster-bench cluster-tools
cluster-tools: deps lib examples
	@sh scripts/deps.sh --optional libnetfilter-queue-dev iproute2 nftables iptables ethtool \
		dataset-fashion-mnist openmpi-bin libopenmpi-dev
	@if command -v mpicc >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(B)/examples/mpi_dsgd MPICC=$$(command -v mpicc); fi
	@$(MAKE) --no-print-directory $(CLUSTER_BIN)/probe
	@if pkg-config --exists libnetfilter_queue; then \
		$(MAKE) --no-print-directory $(CLUSTER_BIN)/nfq_delay; fi
cluster-test: cluster-tools
	@rc=0; sh tests/cluster/run.sh test $(B) || rc=$$?; \
		if [ $$rc = 77 ]; then exit 0; fi; exit $$rc
# cluster-bench: the whole matrix, then overlap, the sparse job, the
# compression table (about an hour) and the MPI launch.
cluster-bench: cluster-tools
	@for w in bench overlap sparse compress mpi; do \
		rc=0; sh tests/cluster/run.sh $$w $(B) || rc=$$?; \
		if [ $$rc = 77 ]; then exit 0; fi; [ $$rc = 0 ] || exit $$rc; done

$(CLUSTER_BIN):
	mkdir -p $@

$(CLUSTER_BIN)/probe: tests/cluster/probe.c | $(CLUSTER_BIN)
	$(CC) $(ALL_CPPFLAGS) $(ALL_CFLAGS) $< -o $@ -lm -pthread

$(CLUSTER_BIN)/nfq_delay: tests/cluster/nfq_delay.c | $(CLUSTER_BIN)
	$(CC) $(ALL_CPPFLAGS) $$(pkg-config --cflags libnetfilter_queue) $(ALL_CFLAGS) $< -o $@ \
		$$(pkg-config --libs libnetfilter_queue)

# The ABI of the shared library against the committed baseline of its
# soname (abi/, docs/abi.md); abi-baseline writes that baseline.
abi-check: lib
	@sh scripts/abi.sh check $(B)
abi-baseline: lib
	@sh scripts/abi.sh baseline $(B)

# Written anew by every install: it holds PREFIX, which may differ each time.
.PHONY: FORCE
$(B)/distml.pc: pkgconfig/distml.pc.in $(VERSION_H) FORCE | $(B)/obj
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    -e 's|@REQUIRES@|$(PC_REQUIRES)|' $< > $@

install: lib $(B)/distml.pc
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR)/distml $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 include/distml.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 include/distml/*.h $(DESTDIR)$(INCLUDEDIR)/distml/
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(SHARED_REAL) $(DESTDIR)$(LIBDIR)/
	ln -sf libdistml.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SHARED_SONAME)
	ln -sf libdistml.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libdistml.so
	install -m 644 $(B)/distml.pc $(DESTDIR)$(PKGCONFIGDIR)/

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/distml.h
	rm -rf $(DESTDIR)$(INCLUDEDIR)/distml
	rm -f $(DESTDIR)$(LIBDIR)/libdistml.a $(DESTDIR)$(LIBDIR)/libdistml.so \
	      $(DESTDIR)$(LIBDIR)/$(SHARED_SONAME) $(DESTDIR)$(LIBDIR)/libdistml.so.$(VERSION) \
	      $(DESTDIR)$(PKGCONFIGDIR)/distml.pc

# Fuzzing (libFuzzer): `make fuzz FUZZ_SECONDS=N` builds each harness in
# tests/fuzz/ with clang, the library objects instrumented separately, and
# runs each for N seconds on a copy of its seed corpus (scripts/fuzz.sh).
FUZZ_SECONDS ?= 10
FUZZ_CC ?= clang
FUZZ_B := $(B)/fuzz
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(FUZZ_NAMES:%=$(FUZZ_B)/fuzz_%)
# The models and their kernels are not needed by any harness, and clang 14
# takes many minutes over the kernels' unrolled SIMD blocks under ASan or
# UBSan: left out.
FUZZ_LIB_SRC := $(filter-out lib/kernels%.c lib/model.c lib/model_softmax.c lib/train.c,$(LIB_SRC))
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:lib/%.c=$(FUZZ_B)/obj/%.o)
FUZZ_CFLAGS := -std=c11 $(WARN) -O1 -g -fno-omit-frame-pointer -fno-sanitize-recover=all -pthread

.PHONY: fuzz
fuzz:
	@FUZZ_CC=$(FUZZ_CC) sh scripts/fuzz.sh deps
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@FUZZ_B=$(FUZZ_B) sh scripts/fuzz.sh run $(FUZZ_SECONDS) $(FUZZ_NAMES)

$(FUZZ_LIB_OBJ): $(FUZZ_B)/obj/%.o: lib/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(ALL_CPPFLAGS) -Ilib -DDML_BUILDING_LIBRARY $(FUZZ_CFLAGS) $(DEPFLAGS) \
		-fsanitize=fuzzer-no-link,address,undefined -fvisibility=hidden -fno-math-errno -c $< -o $@

$(FUZZ_BINS): $(FUZZ_B)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(ALL_CPPFLAGS) -Ilib -Itests $(FUZZ_CFLAGS) $(DEPFLAGS) \
		-fsanitize=fuzzer,address,undefined $< $(FUZZ_LIB_OBJ) -o $@ $(LDLIBS)

clean:
	rm -rf $(B)

-include $(wildcard $(B)/obj/*.d $(B)/tests/*.d $(B)/examples/*.d $(B)/bench/*.d $(FUZZ_B)/obj/*.d $(FUZZ_B)/*.d)

endif
