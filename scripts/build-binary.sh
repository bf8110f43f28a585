#!/bin/sh
# build-binary.sh OUT [VERSION]: build virtiofsd-shim as it ships, the one
# place that says how. make build, packaging/build.sh and the tests
# (shimbox.Binary) all call it, so the tests run what the packages install:
# static (no libc to depend on), position independent (ASLR, for a service
# that runs as root), reproducible paths, the version stamped.
set -eu
out=$1
version=${2:-dev}
cd "$(dirname "$0")/.."
CGO_ENABLED=0 exec go build -trimpath -buildmode=pie -buildvcs=false \
	-ldflags "-s -w -X main.version=$version" \
	-o "$out" ./cmd/virtiofsd-shim
