# virtiofsd-shim. On a fresh Debian 12 machine, as root:
#   make demo   the main job, in a private systemd (nothing on the host changes)
#   make test   the whole test suite (unit, integration, system, guest, packages)
export PATH := /usr/local/go/bin:$(PATH)
export GOTOOLCHAIN ?= auto
GO ?= go
VERSION ?= $(shell packaging/version.sh 2>/dev/null || echo dev)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PREFIX ?= /usr

.PHONY: all build deps test unit fuzz lint mutate bench demo package install uninstall clean

all: build

build:
	scripts/build-binary.sh bin/virtiofsd-shim "$(VERSION)"

deps:
	./scripts/deps.sh

# Everything: root-only levels (integration, system, guest, packages) run as
# root and say why they skip otherwise. The fuzz targets run on their seeds.
# Each root level runs once per platform leg (Debian 12, Debian 13; docs/development.md,
# Tested platforms). The package tests run alone, after the others: they
# build the packages and install them into boxes' overlays.
test: deps lint
	$(GO) test -race -count=1 -timeout 60m $$($(GO) list ./... | grep -v /test/pkgtest)
	$(GO) test -count=1 -timeout 20m ./test/pkgtest/

# Unit level only: -short skips the levels that need root (integration,
# system, guest, packages), saying so.
unit:
	$(GO) test -race -count=1 -short ./...

# Each fuzzer for a bounded time (make test runs their seeds only).
FUZZTIME ?= 20s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzArgs$$' -fuzztime $(FUZZTIME) ./internal/virtiofsd
	$(GO) test -run '^$$' -fuzz '^FuzzClassify$$' -fuzztime $(FUZZTIME) ./internal/virtiofsd
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/config
	$(GO) test -run '^$$' -fuzz '^FuzzReadMessage$$' -fuzztime $(FUZZTIME) ./internal/vhostuser

# Mutation scores of the packages docs/development.md lists (## Mutation
# scores): each mutant judged by the package's go test -short, through
# -overlay (the tree is never edited); mutants that do not compile are counted
# apart, not as kills. A full run writes the table into docs/development.md;
# MUTATE_FLAGS for a partial one (not written): -pkg state, -max 50, -v, -list.
MUTATE_FLAGS ?=
mutate:
	$(GO) run ./test/mutate -write docs/development.md $(MUTATE_FLAGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt -l:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Measures the shim against the bare virtiofsd, side by side in one run, and
# writes docs/benchmarks.md (root). Most of it takes minutes; the data-path
# section boots about 50 guests under TCG at full size (about an hour on a 2-core
# machine without KVM; smaller: -datapath-size FILES,TREE,MIB, see
# docs/benchmarks.md); the pause section (reload, migration, crash) boots two
# guests and takes about 20 minutes (smaller: -pause-quick). In-process Go benchmarks:
# go test -run '^$$' -bench . -count 6 ./test/bench/ (benchstat-friendly; as
# root it includes BenchmarkList200, which boots a private systemd).
bench: deps
	cd test/bench && $(GO) test -count=1 -run '^TestReport$$' -timeout 600m . -args -report ../../docs/benchmarks.md
	$(GO) test -count=1 -run '^$$' -bench BenchmarkList200 -benchtime 20x ./test/bench

demo: deps build
	$(GO) run ./test/demo

clean:
	rm -rf bin dist

package:
	VERSION="$(VERSION)" packaging/build.sh

# Install by hand (packages do the same): DESTDIR for staging. install(1)
# replaces files by unlink+create, so running shims keep their binary.
install: build
	install -D -m 0755 bin/virtiofsd-shim $(DESTDIR)$(PREFIX)/libexec/virtiofsd-shim
	install -d -m 0755 $(DESTDIR)$(PREFIX)/lib/systemd/system-generators $(DESTDIR)$(PREFIX)/lib/systemd/user-generators
	ln -sfn ../../../libexec/virtiofsd-shim $(DESTDIR)$(PREFIX)/lib/systemd/system-generators/virtiofsd-shim-generator
	ln -sfn ../../../libexec/virtiofsd-shim $(DESTDIR)$(PREFIX)/lib/systemd/user-generators/virtiofsd-shim-generator
	install -D -m 0644 units/virtiofsd@.socket $(DESTDIR)$(PREFIX)/lib/systemd/system/virtiofsd@.socket
	install -D -m 0644 units/virtiofsd@.service $(DESTDIR)$(PREFIX)/lib/systemd/system/virtiofsd@.service
	install -D -m 0644 units/user/virtiofsd@.socket $(DESTDIR)$(PREFIX)/lib/systemd/user/virtiofsd@.socket
	install -D -m 0644 units/user/virtiofsd@.service $(DESTDIR)$(PREFIX)/lib/systemd/user/virtiofsd@.service
	install -d -m 0755 $(DESTDIR)/etc/virtiofsd
	[ -e $(DESTDIR)/etc/virtiofsd/example.conf.sample ] || install -m 0644 packaging/example.conf.sample $(DESTDIR)/etc/virtiofsd/example.conf.sample
	# AppArmor (Debian, Ubuntu; docs/libvirt.md): configuration files, kept when present and by uninstall.
	install -d -m 0755 $(DESTDIR)/etc/apparmor.d/abstractions/libvirt-qemu.d
	[ -e $(DESTDIR)/etc/apparmor.d/abstractions/virtiofsd-shim ] || install -m 0644 packaging/apparmor/virtiofsd-shim $(DESTDIR)/etc/apparmor.d/abstractions/virtiofsd-shim
	[ -e $(DESTDIR)/etc/apparmor.d/abstractions/libvirt-qemu.d/virtiofsd-shim ] || install -m 0644 packaging/apparmor/libvirt-qemu.d-virtiofsd-shim $(DESTDIR)/etc/apparmor.d/abstractions/libvirt-qemu.d/virtiofsd-shim
	install -d -m 0755 $(DESTDIR)$(PREFIX)/share/man/man8
	gzip -9n <packaging/virtiofsd-shim.8 >$(DESTDIR)$(PREFIX)/share/man/man8/virtiofsd-shim.8.gz
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

uninstall:
	-if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl stop 'virtiofsd@*.socket' 'virtiofsd@*.service'; fi
	-systemctl --root=$(or $(DESTDIR),/) --no-reload disable virtiofsd@.socket
	rm -f $(DESTDIR)$(PREFIX)/libexec/virtiofsd-shim $(DESTDIR)$(PREFIX)/lib/systemd/system/virtiofsd@.socket \
		$(DESTDIR)$(PREFIX)/lib/systemd/system-generators/virtiofsd-shim-generator \
		$(DESTDIR)$(PREFIX)/lib/systemd/user-generators/virtiofsd-shim-generator \
		$(DESTDIR)$(PREFIX)/lib/systemd/system/virtiofsd@.service $(DESTDIR)$(PREFIX)/share/man/man8/virtiofsd-shim.8.gz \
		$(DESTDIR)$(PREFIX)/lib/systemd/user/virtiofsd@.socket $(DESTDIR)$(PREFIX)/lib/systemd/user/virtiofsd@.service
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
