# ngx_http_metacloud_module: top-level Makefile.
#
#   make run          deps, build, PostgreSQL in .run/pg, migrations, demo
#                     organisation, nginx in the foreground on 127.0.0.1:8080
#   make test         deps, build (release + debug), unit tests, prove suites
#                     (and a valgrind pass); non-zero on any failure
#   make deps         install the missing Debian packages (apt-get)
#   make build        build/nginx/ngx_http_metacloud_module.so (Debian flags)
#   make build-debug  build/nginx-debug/... (-O0 -g)
#   make migrate      apply the migrations (to $PGDATABASE when set, else to
#                     the `make run` cluster's database metacloud)
#   make psql         psql into the `make run` database
#   make bench        scripts/bench: the module, the Node peer (issue 10;
#                     BENCH_PEER) and `return 200` side by side (wrk,
#                     paced.js, the media case: bench/media.pl)
#   make bench-rss    scripts/bench-rss: the workers' RSS over
#                     BENCH_RSS_REQUESTS (1,000,000) unique webhooks
#   make bench-compare  the module of BASE (a git revision, 529180b) and of
#                     this tree side by side, interleaved (scripts/bench-compare)
#   make clean        remove build/;  make distclean: also .run/ (clusters)
#
# The core's own targets (normalize, replay, unit, golden) come from mk/core.mk.
# Options: make test T=t/x.t VALGRIND=0 PROVE_FLAGS=-v MC_KEEP=1

SHELL := /bin/bash
.DEFAULT_GOAL := build

# the directory of this Makefile, wherever the clone is
PROJECT_ROOT := $(patsubst %/,%,$(dir $(abspath $(firstword $(MAKEFILE_LIST)))))
RUN_DIR := $(PROJECT_ROOT)/.run

export T VALGRIND VALGRIND_T PROVE_FLAGS MC_KEEP UNIT TEST_PG_PORT RUN_PG_PORT KEEP_PG
export BASE BENCH_PG_PORT BENCH_PORT

.PHONY: deps build build-debug run migrate psql test bench bench-compare \
	bench-media-latency bench-rss \
        clean distclean

deps:
	@$(PROJECT_ROOT)/scripts/deps

build:
	@$(PROJECT_ROOT)/scripts/build-module release

build-debug:
	@$(PROJECT_ROOT)/scripts/build-module debug

run:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	@$(PROJECT_ROOT)/scripts/run

test:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory build-debug
	@MAKE="$(MAKE)" $(PROJECT_ROOT)/scripts/test

# To $PGDATABASE (with the other PG* variables) when set: an operator's
# database.  Otherwise the `make run` cluster, started for the occasion.
migrate:
	@set -e; cd $(PROJECT_ROOT); \
	if [ -n "$${PGDATABASE:-}" ]; then \
	    exec sql/migrate; \
	fi; \
	was_running=1; \
	scripts/pg-cluster status $(RUN_DIR)/pg >/dev/null || was_running=; \
	scripts/pg-cluster start $(RUN_DIR)/pg $${RUN_PG_PORT:-5432} >/dev/null; \
	eval "$$(scripts/pg-cluster env $(RUN_DIR)/pg)"; \
	rc=0; \
	psql -XAtc "SELECT 1 FROM pg_database WHERE datname = 'metacloud'" \
	    postgres | grep -q 1 || createdb metacloud || rc=$$?; \
	[ $$rc = 0 ] && { PGDATABASE=metacloud sql/migrate || rc=$$?; }; \
	[ -n "$$was_running" ] || scripts/pg-cluster stop $(RUN_DIR)/pg >/dev/null; \
	exit $$rc

psql:
	@cd $(PROJECT_ROOT); \
	scripts/pg-cluster status $(RUN_DIR)/pg >/dev/null \
	    || { echo "psql: the make run cluster is not running"; exit 1; }; \
	eval "$$(scripts/pg-cluster env $(RUN_DIR)/pg)"; \
	exec psql -X metacloud

bench:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	@$(PROJECT_ROOT)/scripts/bench

bench-rss:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	@$(PROJECT_ROOT)/scripts/bench-rss

# webhook p99 with and without 20 stalled media downloads (a timing
# comparison: kept out of make test, run in the test harness's cluster)
bench-media-latency:
	@$(MAKE) --no-print-directory test T=bench/media-latency.t VALGRIND=0 \
	    UNIT=0

bench-compare:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	@$(PROJECT_ROOT)/scripts/bench-compare

# double-colon: mk/core.mk may add its own `clean::` recipe
clean::
	rm -rf $(PROJECT_ROOT)/build

distclean:: clean
	@for d in $(RUN_DIR)/pg $(RUN_DIR)/test-pg; do \
	    [ -d $$d ] && $(PROJECT_ROOT)/scripts/pg-cluster destroy $$d || true; \
	done
	rm -rf $(RUN_DIR)

# the core's targets: normalize, unit, golden
include $(PROJECT_ROOT)/mk/core.mk
