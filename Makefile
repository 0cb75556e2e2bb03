# Makefile for the maileroo extension (PGXS).
EXTENSION = maileroo
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = maileroo
OBJS = \
	src/maileroo.o \
	src/maileroo_account.o \
	src/maileroo_citus.o \
	src/maileroo_event.o \
	src/maileroo_signature.o \
	src/maileroo_http.o \
	src/maileroo_outbox.o \
	src/maileroo_campaign.o \
	src/maileroo_request.o \
	src/maileroo_send.o \
	src/maileroo_queue.o \
	src/maileroo_bulk.o \
	src/maileroo_scheduler.o \
	src/maileroo_status.o \
	src/maileroo_transfer.o \
	src/maileroo_wakeup.o \
	src/maileroo_worker.o

# One install script, assembled from the topic files under sql/install/.
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(wildcard sql/$(EXTENSION)--*--*.sql)

# Every sql/NAME.sql that is not an extension script is a regress test.
REGRESS = $(sort $(filter-out $(EXTENSION)--%,$(notdir $(basename $(wildcard sql/*.sql)))))
REGRESS_OPTS = --inputdir=. --dbname=contrib_regression

PG_CPPFLAGS += -DMAILEROO_VERSION='"$(EXTVERSION)"' $(shell curl-config --cflags)
PG_CFLAGS += -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare -Werror
SHLIB_LINK += $(shell curl-config --libs)

EXTRA_CLEAN = sql/$(EXTENSION)--$(EXTVERSION).sql results regression.diffs regression.out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/$(EXTENSION)--$(EXTVERSION).sql: $(sort $(wildcard sql/install/*.sql))
	cat $^ > $@

.PHONY: test demo dist
test:
	bash test/run

demo:
	bash test/demo

# A source archive for PGXN, from the committed tree.
dist:
	git archive --format zip --prefix=$(EXTENSION)-$(EXTVERSION)/ -o $(EXTENSION)-$(EXTVERSION).zip HEAD
