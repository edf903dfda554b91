# The two commands a user needs are `make run` and `make test`; each installs
# what it needs (Debian packages, Go modules, tools) first, idempotently.
# `make build` and `make install` install nothing on the machine: only the
# targets that need Debian packages (run, test, bench, soak, kernel) call deps.

GO        ?= go
BIN       := bin
# The guest programs, spectrum-netcfg (every guest) and spectrum-router
# (providers): static, stripped, within their size budgets
# (guest/binary_test.go).
GUESTFLAGS := -trimpath -ldflags='-s -w'
# Fuzzing. `make test` (CI) runs each target for a fixed number of inputs
# (`-fuzztime=Nx`), sized to a few seconds each on this 2-core machine when
# idle: a count sets no deadline, so the race in Go 1.26's coordinator at a
# -fuzztime deadline (go.dev/issue/75804: "context deadline exceeded" with no
# crasher, under load) cannot fire, while a crasher still fails the run.
# `make fuzz` runs each for FUZZTIME by hand (`make fuzz FUZZTIME=5m`).
FUZZTIME  ?= 30s
# package:target:count, one per fuzz target.
FUZZ      := ./internal/mac:FuzzParseClassify:200000x ./guest:FuzzParseLink:100000x ./guest:FuzzParseNetconf:100000x \
             ./guest:FuzzParseAnswers:100000x ./host/link:FuzzParseName:100000x ./host/config:FuzzLoad:2000x ./host/config:FuzzLoaderReload:600x \
             ./host/alloc:FuzzState:2000x ./host/control:FuzzControlRequest:20000x ./host/qmp:FuzzParse:100000x \
             ./host/vmlog:FuzzSanitize:100000x ./host/vmlog:FuzzLinePriority:100000x ./host/termfilter:FuzzFilter:200000x ./internal/printable:FuzzString:50000x \
             ./guest/router:FuzzNameservers:100000x ./guest/router:FuzzParseConntrack:100000x \
             ./guest/router/dnsfwd:FuzzQuery:100000x ./guest/router/dnsfwd:FuzzAnswer:100000x \
             ./vmtest/lan:FuzzParseIPv4:100000x ./vmtest/lan:FuzzParseIPv6:100000x ./vmtest/dhcpc:FuzzParseRA:100000x

.PHONY: all deps build man test vet staticcheck fuzz fuzz-count bench soak run clean kernel install

# `make install`: DESTDIR-aware; the binaries go to $(PREFIX)/bin, the unit
# to $(UNITDIR) (both searched by the hooks and systemd as they are).
PREFIX    ?= /usr/local
UNITDIR   ?= $(PREFIX)/lib/systemd/system
# The udev rule and the systemd-networkd file that tell the provider's
# network manager to leave the 0A:B3:EC NICs to spectrum-router (udev and
# networkd search both directories under /usr/local as under /usr).
UDEVRULESDIR ?= $(PREFIX)/lib/udev/rules.d
NETWORKDIR   ?= $(PREFIX)/lib/systemd/network
# The initramfs generators that get spectrum-netcfg's hooks
# (spectrum-netcfg(8), INITRAMFS): by default those installed on
# this machine; with DESTDIR (a package or a guest image being built) all
# three, since the target is not this machine. INITRAMFS="dracut" or
# INITRAMFS= chooses by hand.
ALL_INITRAMFS := initramfs-tools dracut mkinitcpio
ifeq ($(DESTDIR),)
INITRAMFS ?= $(strip $(if $(wildcard /usr/share/initramfs-tools),initramfs-tools) $(if $(wildcard /usr/lib/dracut),dracut) $(if $(wildcard /usr/lib/initcpio),mkinitcpio))
else
INITRAMFS ?= $(ALL_INITRAMFS)
endif

all: build

deps:
	@./scripts/deps.sh

build:
	CGO_ENABLED=0 $(GO) build $(GUESTFLAGS) -o $(BIN)/spectrum-netcfg ./cmd/spectrum-netcfg
	CGO_ENABLED=0 $(GO) build $(GUESTFLAGS) -o $(BIN)/spectrum-router ./cmd/spectrum-router
	$(GO) build -o $(BIN)/spectrumd ./cmd/spectrumd
	$(GO) build -o $(BIN)/spectrum-initramfs-append ./cmd/spectrum-initramfs-append

# The manual pages: roff from their Markdown sources in docs/man
# (NAME.SECTION.md) by go-md2man, a tool of go.mod (`go tool`), so it is
# fetched and checked like every Go module and `make install` needs no
# Debian package. Linted by mandoc, and checked against each program's
# flags, in docs/man's tests.
MANPAGES := $(patsubst docs/man/%.md,$(BIN)/man/%,$(wildcard docs/man/*.md))
man: $(MANPAGES)
$(BIN)/man/%: docs/man/%.md
	@mkdir -p $(@D)
	$(GO) tool go-md2man -in $< -out $@.tmp.$$$$ && mv $@.tmp.$$$$ $@

# The VM tests' kernels: Debian's cloud kernel, cached in .cache/kernel/, and
# its full kernel (the nested VFIO test's middle VM), in .cache/kernel-full/
# (git-ignored). SPECTRUM_TEST_KERNEL / SPECTRUM_TEST_MODULES override it.
kernel: deps
	@./scripts/test-kernel.sh
	@./scripts/test-kernel.sh full

# The main job: the documented example for real. A LAN (DHCP, DNS and a
# web site in a namespace of its own, spectrum-lan), netvm on it with the
# router, appvm-lynx browsing through netvm with Debian's lynx, under
# spectrumd serve in a private network namespace (spectrum-run), the guests'
# serial lines streaming in spectrumd's log; `spectrumd console appvm-lynx`
# in a second terminal is appvm-lynx's shell. Ctrl-C stops the VMs,
# removes the links and deletes the namespaces (cmd/spectrum-demo).
run: deps build kernel
	$(GO) build -o $(BIN)/spectrum-demo ./cmd/spectrum-demo
	$(BIN)/spectrum-demo -spectrumd $(BIN)/spectrumd

# staticcheck at a pinned version, built into .cache/tools (git-ignored)
# once; a different version there is replaced.
STATICCHECK_VERSION := v0.8.2
STATICCHECK := .cache/tools/staticcheck
staticcheck:
	@v=$$($(STATICCHECK) -version 2>/dev/null); case "$$v" in *"$(STATICCHECK_VERSION)"*) ;; *) \
	  echo "vet: installing staticcheck $(STATICCHECK_VERSION)"; \
	  GOBIN=$(CURDIR)/.cache/tools $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ;; esac

vet: staticcheck
	@test -z "$$(gofmt -l .)" || { echo "gofmt would change:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(GO) mod tidy -diff
	$(STATICCHECK) ./...

# $(1): how long each target runs: its count, or FUZZTIME.
define fuzz_targets
	@set -e; for pt in $(FUZZ); do \
	  pkg=$${pt%%:*}; rest=$${pt#*:}; target=$${rest%%:*}; count=$${rest#*:}; \
	  t=$(1); echo "fuzz $$pkg $$target for $$t"; \
	  $(GO) test -run='^$$' -fuzz="^$$target\$$" -fuzztime=$$t $$pkg; \
	done
endef

fuzz:
	$(call fuzz_targets,$(FUZZTIME))

fuzz-count:
	$(call fuzz_targets,$$count)

# The soak (200 start/stop cycles under a real spectrumd, about 5 minutes)
# fits CI's time, so it is part of the tests.
test: deps build vet kernel
	$(GO) test -race -count=1 -timeout 80m ./...
	$(MAKE) --no-print-directory fuzz-count
	$(MAKE) --no-print-directory soak

# Every benchmark, then docs/BENCHMARKS.md written from docs/BENCHMARKS.tmpl
# with this run's figures, date, commit and machine (scripts/bench.sh).
# The guest agent's benchmarks exec whole processes in a namespace: a fixed
# 20 runs per size, for a median; the VM benchmarks boot real guests
# (BenchmarkBoot 5 times, BenchmarkNAT once: seven pairs of runs inside).
bench: deps build kernel
	GO=$(GO) ./scripts/bench.sh

# Start/stop cycles of a client and its provider under a real spectrumd
# serve with QEMU (stub kernel): spectrumd's RSS, fds, children and links
# before and after (docs/TESTING.md, "Reliability").
SOAK_CYCLES ?= 200
soak: deps
	SPECTRUM_SOAK_CYCLES=$(SOAK_CYCLES) $(GO) test -count=1 -run='^TestSoakServe$$' -v -timeout 60m ./host/cli/

install: build man
	install -D -m 0755 $(BIN)/spectrum-netcfg $(DESTDIR)$(PREFIX)/bin/spectrum-netcfg
	install -D -m 0755 $(BIN)/spectrum-router $(DESTDIR)$(PREFIX)/bin/spectrum-router
	install -D -m 0755 $(BIN)/spectrumd $(DESTDIR)$(PREFIX)/bin/spectrumd
	install -D -m 0755 $(BIN)/spectrum-initramfs-append $(DESTDIR)$(PREFIX)/bin/spectrum-initramfs-append
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|/usr/local/|$(PREFIX)/|g' dist/spectrumd.service >$(DESTDIR)$(UNITDIR)/spectrumd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/spectrumd.service
	sed 's|/usr/local/|$(PREFIX)/|g' dist/spectrum-router.service >$(DESTDIR)$(UNITDIR)/spectrum-router.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/spectrum-router.service
	install -D -m 0644 dist/udev/90-spectrum-router.rules $(DESTDIR)$(UDEVRULESDIR)/90-spectrum-router.rules
	install -D -m 0644 dist/networkd/00-spectrum-router.network $(DESTDIR)$(NETWORKDIR)/00-spectrum-router.network
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/spectrum/README.md
	@set -e; for p in $(MANPAGES); do s=$${p##*.}; \
	  echo "install -D -m 0644 $$p $(DESTDIR)$(PREFIX)/share/man/man$$s/$${p##*/}"; \
	  install -D -m 0644 $$p $(DESTDIR)$(PREFIX)/share/man/man$$s/$${p##*/}; done
	install -D -m 0644 dist/completion/spectrumd.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/spectrumd
	install -D -m 0644 dist/completion/_spectrumd $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_spectrumd
	@set -e; for g in $(INITRAMFS); do echo "install: initramfs hooks for $$g"; case $$g in \
	  initramfs-tools) \
	    install -D -m 0755 dist/initramfs-tools/hooks/spectrum-netcfg $(DESTDIR)/usr/share/initramfs-tools/hooks/spectrum-netcfg; \
	    install -D -m 0755 dist/initramfs-tools/scripts/init-premount/spectrum-netcfg $(DESTDIR)/usr/share/initramfs-tools/scripts/init-premount/spectrum-netcfg ;; \
	  dracut) \
	    install -D -m 0755 -t $(DESTDIR)/usr/lib/dracut/modules.d/90spectrum-netcfg dist/dracut/90spectrum-netcfg/module-setup.sh dist/dracut/90spectrum-netcfg/spectrum-netcfg-pre-mount.sh ;; \
	  mkinitcpio) \
	    install -D -m 0644 dist/mkinitcpio/install/spectrum-netcfg $(DESTDIR)/usr/lib/initcpio/install/spectrum-netcfg; \
	    install -D -m 0644 dist/mkinitcpio/hooks/spectrum-netcfg $(DESTDIR)/usr/lib/initcpio/hooks/spectrum-netcfg ;; \
	  *) echo "install: unknown initramfs generator $$g (know: $(ALL_INITRAMFS))" >&2; exit 1 ;; \
	esac; done
	@# The settings file is the user's: written once, never overwritten.
	@if [ -n "$(strip $(INITRAMFS))" ] && [ ! -e $(DESTDIR)/etc/default/spectrum-netcfg ]; then \
	  install -d $(DESTDIR)/etc/default; \
	  sed 's|^BINARY=$$|BINARY=$(PREFIX)/bin/spectrum-netcfg|' dist/spectrum-netcfg.default >$(DESTDIR)/etc/default/spectrum-netcfg; \
	  echo "install: $(DESTDIR)/etc/default/spectrum-netcfg"; fi

clean:
	rm -rf $(BIN)
