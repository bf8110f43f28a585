# virtiofsd-shim. On a fresh Debian 12 machine, as root:
#   make demo   the main job, in a private systemd (nothing on the host changes)
#   make test   the whole test suite (unit, integration, system, guest, packages)
export PATH := /usr/local/go/bin:$(PATH)
export GOTOOLCHAIN ?= auto
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PREFIX ?= /usr

.PHONY: all build deps test unit lint bench demo package install clean

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/virtiofsd-shim ./cmd/virtiofsd-shim

deps:
	./scripts/deps.sh

# Everything: root-only levels (integration, system, guest, packages) run as
# root and say why they skip otherwise. The fuzz targets run on their seeds.
test: deps lint
	$(GO) test -race -count=1 -timeout 75m ./...

# Unit level only, no root needed.
unit:
	$(GO) test -race -count=1 -short ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt -l:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

demo: deps build
	$(GO) run ./internal/demo

clean:
	rm -rf bin dist

# Install by hand (packages do the same): DESTDIR for staging.
install: build
	install -D -m 0755 bin/virtiofsd-shim $(DESTDIR)$(PREFIX)/libexec/virtiofsd-shim
	install -D -m 0644 units/virtiofsd@.socket $(DESTDIR)$(PREFIX)/lib/systemd/system/virtiofsd@.socket
	install -D -m 0644 units/virtiofsd@.service $(DESTDIR)$(PREFIX)/lib/systemd/system/virtiofsd@.service
	install -d -m 0755 $(DESTDIR)/etc/virtiofsd
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
