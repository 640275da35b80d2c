# The pure C core (src/core/): the metacloud-normalize tool, unit tests,
# golden files and the fuzzer.  Included by the top-level Makefile, and
# usable alone from the top of the tree:
#
#   make -f mk/core.mk normalize       build/core/metacloud-normalize
#   make -f mk/core.mk replay          build/core/metacloud-replay (libpq)
#   make -f mk/core.mk unit            unit tests, ASan + UBSan, under prove
#   make -f mk/core.mk golden          fixtures -> events, diffed with
#                                      t/golden/, validated by the schema
#   make -f mk/core.mk golden-update   rewrite t/golden/ from the fixtures
#   make -f mk/core.mk core-warn       -Werror builds at -O2 and -O0 -g
#   make -f mk/core.mk fuzz            libFuzzer (clang), MC_FUZZ_TIME s
#
# Everything built goes under build/core/.

# Included by another makefile, this fragment must not become its default
# goal: the goal in force before it is restored at the end.
MC_CORE_GOAL := $(.DEFAULT_GOAL)

# the top of the tree, wherever make was started from
MC_ROOT := $(patsubst %/mk/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

MC_CORE_CC ?= cc
MC_PYTHON ?= python3
MC_CORE_CLANG ?= clang
MC_CORE_PKGS = jansson libcrypto

MC_CORE_DIR = $(MC_ROOT)/build/core
MC_CORE_SRC = $(wildcard $(MC_ROOT)/src/core/*.c)
MC_CORE_HDR = $(wildcard $(MC_ROOT)/src/core/*.h)

MC_CORE_PKG_CFLAGS := $(shell pkg-config --cflags $(MC_CORE_PKGS))
MC_CORE_LIBS := $(shell pkg-config --libs $(MC_CORE_PKGS)) -lm

MC_CORE_WARN = -W -Wall -Wpointer-arith -Wno-unused-parameter -Werror
MC_CORE_CFLAGS = $(MC_CORE_WARN) -O2 -D_FORTIFY_SOURCE=2 -g \
                 -I$(MC_ROOT)/src/core $(MC_CORE_PKG_CFLAGS)
MC_CORE_SAN = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
              -fno-omit-frame-pointer
MC_CORE_SAN_CFLAGS = $(MC_CORE_WARN) $(MC_CORE_SAN) -I$(MC_ROOT)/src/core \
                     -DMC_FIXTURES=\"$(MC_ROOT)/t/fixtures\" \
                     -I$(MC_ROOT)/t/unit \
                     $(MC_CORE_PKG_CFLAGS)

MC_UNIT_SRC = $(wildcard $(MC_ROOT)/t/unit/test_*.c)
MC_UNIT_BIN = $(patsubst $(MC_ROOT)/t/unit/%.c,$(MC_CORE_DIR)/unit/%.t, \
                $(MC_UNIT_SRC))
MC_UNIT_DEPS = $(MC_CORE_SRC) $(MC_CORE_HDR) $(wildcard $(MC_ROOT)/t/unit/*.h)

MC_FIXTURES = $(wildcard $(MC_ROOT)/t/fixtures/*.json)
MC_NORMALIZE = $(MC_CORE_DIR)/metacloud-normalize
MC_REPLAY = $(MC_CORE_DIR)/metacloud-replay

MC_FUZZ_TIME ?= 60

# Leaks fail the unit tests too.  Where LeakSanitizer cannot run (under
# ptrace, in some containers) use MC_ASAN_OPTIONS=detect_leaks=0.
MC_ASAN_OPTIONS ?= detect_leaks=1:abort_on_error=0
MC_UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1


.PHONY: normalize replay unit golden golden-update core-warn fuzz core-clean clean


normalize: $(MC_NORMALIZE)

$(MC_NORMALIZE): $(MC_ROOT)/tools/metacloud-normalize.c $(MC_CORE_SRC) \
                 $(MC_CORE_HDR)
	@mkdir -p $(MC_CORE_DIR)
	$(MC_CORE_CC) $(MC_CORE_CFLAGS) -o $@ $(MC_ROOT)/tools/metacloud-normalize.c \
		$(MC_CORE_SRC) $(MC_CORE_LIBS)


# the replay tool is the core plus libpq: it talks to the database itself

replay: $(MC_REPLAY)

$(MC_REPLAY): $(MC_ROOT)/tools/metacloud-replay.c $(MC_CORE_SRC) $(MC_CORE_HDR)
	@mkdir -p $(MC_CORE_DIR)
	$(MC_CORE_CC) $(MC_CORE_CFLAGS) $(shell pkg-config --cflags libpq) \
		-o $@ $(MC_ROOT)/tools/metacloud-replay.c $(MC_CORE_SRC) \
		$(MC_CORE_LIBS) $(shell pkg-config --libs libpq)


unit: $(MC_UNIT_BIN)
	ASAN_OPTIONS=$(MC_ASAN_OPTIONS) UBSAN_OPTIONS=$(MC_UBSAN_OPTIONS) \
		prove --exec '' $(MC_UNIT_BIN)

$(MC_CORE_DIR)/unit/%.t: $(MC_ROOT)/t/unit/%.c $(MC_UNIT_DEPS)
	@mkdir -p $(MC_CORE_DIR)/unit
	$(MC_CORE_CC) $(MC_CORE_SAN_CFLAGS) -o $@ $< $(MC_CORE_SRC) \
		$(MC_CORE_LIBS)


# Each fixture is posted as Meta would send it (--wire), normalised, and
# compared with its golden file; each golden file must satisfy the schema.

golden: $(MC_NORMALIZE)
	@mkdir -p $(MC_CORE_DIR)/golden
	@fail=0; n=0; \
	for f in $(MC_FIXTURES); do \
	    b=`basename $$f .json`; n=$$((n + 1)); \
	    $(MC_NORMALIZE) --wire < $$f | $(MC_NORMALIZE) \
	        > $(MC_CORE_DIR)/golden/$$b.events.json 2>/dev/null; \
	    if ! diff -u $(MC_ROOT)/t/golden/$$b.events.json \
	            $(MC_CORE_DIR)/golden/$$b.events.json; then \
	        echo "golden: $$b differs"; fail=1; \
	    fi; \
	done; \
	$(MC_PYTHON) $(MC_ROOT)/t/golden/validate.py \
	    $(MC_ROOT)/sql/events.schema.json \
	    $(MC_ROOT)/t/golden/*.events.json || fail=1; \
	if [ $$fail = 0 ]; then echo "golden: $$n fixtures match"; fi; \
	exit $$fail

golden-update: $(MC_NORMALIZE)
	@mkdir -p $(MC_ROOT)/t/golden
	@for f in $(MC_FIXTURES); do \
	    b=`basename $$f .json`; \
	    $(MC_NORMALIZE) --wire < $$f | $(MC_NORMALIZE) \
	        > $(MC_ROOT)/t/golden/$$b.events.json 2>/dev/null || exit 1; \
	done
	@echo "golden: t/golden/ rewritten"


core-warn:
	@mkdir -p $(MC_CORE_DIR)/warn
	for o in "-O2 -D_FORTIFY_SOURCE=2" "-O0 -g"; do \
	    for f in $(MC_CORE_SRC) $(MC_ROOT)/tools/metacloud-normalize.c \
	            $(MC_ROOT)/tools/metacloud-replay.c; do \
	        $(MC_CORE_CC) $(MC_CORE_WARN) $$o -I$(MC_ROOT)/src/core \
	            $(MC_CORE_PKG_CFLAGS) $(shell pkg-config --cflags libpq) \
	            -c $$f \
	            -o $(MC_CORE_DIR)/warn/`basename $$f .c`.o || exit 1; \
	    done; \
	done


# libFuzzer needs clang; the corpus starts with the fixtures as sent.

fuzz: $(MC_CORE_DIR)/fuzz/mc_fuzz $(MC_NORMALIZE)
	@mkdir -p $(MC_CORE_DIR)/fuzz/corpus
	@for f in $(MC_FIXTURES); do \
	    $(MC_NORMALIZE) --wire < $$f \
	        > $(MC_CORE_DIR)/fuzz/corpus/`basename $$f .json`; \
	done
	ASAN_OPTIONS=$(MC_ASAN_OPTIONS) UBSAN_OPTIONS=$(MC_UBSAN_OPTIONS) \
	    $(MC_CORE_DIR)/fuzz/mc_fuzz -max_total_time=$(MC_FUZZ_TIME) \
	    -max_len=65536 -timeout=10 -dict=$(MC_ROOT)/fuzz/json.dict \
	    -artifact_prefix=$(MC_CORE_DIR)/fuzz/ \
	    $(MC_CORE_DIR)/fuzz/corpus

$(MC_CORE_DIR)/fuzz/mc_fuzz: $(MC_ROOT)/fuzz/mc_fuzz.c $(MC_CORE_SRC) \
                            $(MC_CORE_HDR)
	@mkdir -p $(MC_CORE_DIR)/fuzz
	$(MC_CORE_CLANG) $(MC_CORE_WARN) -O1 -g \
	    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	    -I$(MC_ROOT)/src/core $(MC_CORE_PKG_CFLAGS) -o $@ \
	    $(MC_ROOT)/fuzz/mc_fuzz.c \
	    $(MC_CORE_SRC) $(MC_CORE_LIBS)


core-clean:
	rm -rf $(MC_CORE_DIR)

clean::
	rm -rf $(MC_CORE_DIR)


ifneq ($(abspath $(firstword $(MAKEFILE_LIST))),$(MC_ROOT)/mk/core.mk)
.DEFAULT_GOAL := $(MC_CORE_GOAL)
endif
