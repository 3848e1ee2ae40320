# libdistml - see README.md. `make`, `make check`, `make demo`, `make bench`.

VERSION_H := include/distml/common.h
MAJOR := $(shell sed -n 's/^\#define DML_VERSION_MAJOR \([0-9]*\)/\1/p' $(VERSION_H))
MINOR := $(shell sed -n 's/^\#define DML_VERSION_MINOR \([0-9]*\)/\1/p' $(VERSION_H))
PATCH := $(shell sed -n 's/^\#define DML_VERSION_PATCH \([0-9]*\)/\1/p' $(VERSION_H))
VERSION := $(MAJOR).$(MINOR).$(PATCH)

CC ?= cc
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR ?=

OPT ?= -O2 -g
WARN := -Wall -Wextra -Werror -pedantic -Wshadow -Wstrict-prototypes -Wno-overlength-strings
CFLAGS ?= $(OPT)
ALL_CFLAGS := -std=c11 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L $(WARN) $(CFLAGS) -Iinclude -pthread
LDLIBS := -lz -lm -pthread

ifdef SANITIZE
ALL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
B := build/san
else
B := build
endif

# -fno-math-errno: sqrtf without errno, so the optimizer loops vectorise.
LIB_CFLAGS := $(ALL_CFLAGS) -fPIC -fvisibility=hidden -DDML_BUILDING_LIBRARY -Ilib -fno-math-errno

LIB_SRC := $(wildcard lib/*.c)
LIB_OBJ := $(LIB_SRC:lib/%.c=$(B)/obj/%.o)
HEADERS := include/distml.h $(wildcard include/distml/*.h)
STATIC := $(B)/libdistml.a
SHARED_REAL := $(B)/libdistml.so.$(VERSION)
SHARED_SONAME := libdistml.so.$(MAJOR)

TEST_SRC := $(wildcard tests/test_*.c)
TESTS := $(TEST_SRC:tests/%.c=$(B)/tests/%)
EXAMPLES := $(patsubst examples/%.c,$(B)/examples/%,$(wildcard examples/*.c))
BENCHES := $(patsubst bench/%.c,$(B)/bench/%,$(wildcard bench/*.c))

.PHONY: all lib check check-install demo bench bench-peers install uninstall clean valgrind deps examples
all: lib examples

lib: $(STATIC) $(B)/libdistml.so

$(B)/obj/%.o: lib/%.c $(HEADERS) $(wildcard lib/*.h) | $(B)/obj
	$(CC) $(LIB_CFLAGS) -c $< -o $@

$(B)/obj $(B)/tests $(B)/examples $(B)/bench:
	mkdir -p $@

$(STATIC): $(LIB_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

$(SHARED_REAL): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SHARED_SONAME) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/libdistml.so: $(SHARED_REAL)
	ln -sf libdistml.so.$(VERSION) $(B)/$(SHARED_SONAME)
	ln -sf libdistml.so.$(VERSION) $@

# Tests and programs link the static library, so they run from the tree.
$(B)/tests/%: tests/%.c $(wildcard tests/*.h) $(wildcard examples/*.h) $(STATIC) | $(B)/tests
	$(CC) $(ALL_CFLAGS) -Itests -Ilib $< -o $@ $(STATIC) $(LDFLAGS) -lcmocka $(LDLIBS)

$(B)/examples/%: examples/%.c $(wildcard examples/*.h) $(STATIC) | $(B)/examples
	$(CC) $(ALL_CFLAGS) $< -o $@ $(STATIC) $(LDFLAGS) $(LDLIBS)

$(B)/bench/%: bench/%.c $(wildcard bench/*.h) $(STATIC) | $(B)/bench
	$(CC) $(ALL_CFLAGS) -Ibench $< -o $@ $(STATIC) $(LDFLAGS) $(LDLIBS) -lm

examples: $(EXAMPLES)

deps:
	@sh scripts/deps.sh

check: deps
	@$(MAKE) --no-print-directory lib examples $(TESTS)
ifndef SANITIZE
	@sh scripts/test-install.sh $(B)
endif
	@sh scripts/run-tests.sh $(TESTS)

valgrind: deps
	@$(MAKE) --no-print-directory $(TESTS)
	@VALGRIND=1 sh scripts/run-tests.sh $(TESTS)

demo: deps lib examples
	sh scripts/demo.sh $(B)

bench: deps lib examples $(BENCHES)
	@for b in $(BENCHES); do echo "== $$b"; $$b || exit 1; done
	@echo "== bench/dsgd_bench.sh"; sh bench/dsgd_bench.sh $(B)

bench-peers: deps lib examples $(BENCHES)
	sh bench/peers/run.sh $(B)

# The 60 s soak (make bench runs it for 5 s): see bench/README.md.
.PHONY: soak
soak: deps lib $(B)/bench/soak
	$(B)/bench/soak 60

distml.pc: pkgconfig/distml.pc.in $(VERSION_H)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' $< > $(B)/distml.pc

install: lib distml.pc
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
FUZZ_B := build/fuzz
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(FUZZ_NAMES:%=$(FUZZ_B)/fuzz_%)
# The models and their kernels are not needed by any harness, and clang 14
# takes many minutes over the kernels' unrolled SIMD blocks under ASan or
# UBSan: left out.
FUZZ_LIB_SRC := $(filter-out lib/kernels.c lib/model.c lib/model_softmax.c lib/train.c,$(LIB_SRC))
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:lib/%.c=$(FUZZ_B)/obj/%.o)
FUZZ_CFLAGS := -std=c11 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L $(WARN) \
	-O1 -g -fno-omit-frame-pointer -fno-sanitize-recover=all -Iinclude -Ilib -pthread

.PHONY: fuzz
fuzz:
	@FUZZ_CC=$(FUZZ_CC) sh scripts/fuzz.sh deps
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@sh scripts/fuzz.sh run $(FUZZ_SECONDS) $(FUZZ_NAMES)

$(FUZZ_LIB_OBJ): $(FUZZ_B)/obj/%.o: lib/%.c $(HEADERS) $(wildcard lib/*.h)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined \
		-DDML_BUILDING_LIBRARY -fvisibility=hidden -fno-math-errno -c $< -o $@

$(FUZZ_BINS): $(FUZZ_B)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_util.h tests/codec_all.h $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined $< \
		$(FUZZ_LIB_OBJ) -o $@ $(LDLIBS)

clean:
	rm -rf build
