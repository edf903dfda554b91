# The two commands a user needs are `make run` and `make test`; each installs
# what it needs (Debian packages, Go modules) first, idempotently.

GO        ?= go
BIN       := bin
GUESTFLAGS := -trimpath -ldflags='-s -w'
# Each fuzz target runs this long in `make test` (CI); run longer by hand with
# `make fuzz FUZZTIME=5m`.
FUZZTIME  ?= 5s
# package:target pairs run by `make fuzz`.
FUZZ      := ./internal/mac:FuzzParseClassify ./guest:FuzzParseLink ./guest:FuzzParseNetconf ./host/link:FuzzParseName ./host/config:FuzzLoad ./host/alloc:FuzzState ./host/daemon:FuzzControlRequest

.PHONY: all deps build test vet fuzz bench run clean kernel

all: build

deps:
	@./scripts/deps.sh

build: deps
	CGO_ENABLED=0 $(GO) build $(GUESTFLAGS) -o $(BIN)/spectrum-netcfg ./cmd/spectrum-netcfg
	$(GO) build -o $(BIN)/spectrumd ./cmd/spectrumd

# The VM tests' kernel: Debian's cloud kernel, cached in .cache/kernel/
# (git-ignored). SPECTRUM_TEST_KERNEL / SPECTRUM_TEST_MODULES override it.
kernel: deps
	@./scripts/test-kernel.sh

vet:
	./scripts/verify-unit.sh
	@test -z "$$(gofmt -l .)" || { echo "gofmt would change:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

fuzz:
	@set -e; for pt in $(FUZZ); do \
	  pkg=$${pt%%:*}; target=$${pt##*:}; \
	  echo "fuzz $$pkg $$target for $(FUZZTIME)"; \
	  $(GO) test -run='^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

test: build vet kernel
	$(GO) test -race -count=1 -timeout 80m ./...
	$(MAKE) --no-print-directory fuzz

# The guest agent's benchmarks exec whole processes in a namespace: they run
# a fixed 20 times per size, for a median (README, "Guest agent").
bench: build
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 $$($(GO) list ./... | grep -vx spectrum/guest)
	$(GO) test -run='^$$' -bench=. -benchtime=20x -count=1 ./guest/

clean:
	rm -rf $(BIN)
