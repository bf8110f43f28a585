#!/bin/sh
# build.sh: build bin/virtiofsd-shim and the .deb and .rpm in dist/ (what
# `make package` runs). Run from anywhere; needs go and git, nothing else:
# nfpm (the packager) is built from the Go module proxy at a pinned version.
#
# Environment (all optional):
#   VERSION   package and `virtiofsd-shim version` version; default: what
#             packaging/version.sh says for the git checkout
#   DIST_DIR  where the packages go; default: dist
#   BIN       where the binary goes; default: bin/virtiofsd-shim
#   MAINTAINER  "Name <address>" of the packages and changelog
#
# Prints the paths of the two packages, one a line, on stdout.
set -eu

NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

VERSION=${VERSION:-$(packaging/version.sh)}
case "$VERSION" in
[0-9]*) ;;
*) echo "build.sh: version $VERSION must start with a digit" >&2; exit 1 ;;
esac
if printf '%s' "$VERSION" | LC_ALL=C grep -q '[^A-Za-z0-9.+~]'; then
	echo "build.sh: version $VERSION may only hold letters, digits and . + ~" >&2
	exit 1
fi
MAINTAINER=${MAINTAINER:-virtiofsd-shim developers <virtiofsd-shim@example.org>}
DIST_DIR=${DIST_DIR:-dist}
BIN=${BIN:-bin/virtiofsd-shim}
mkdir -p "$DIST_DIR" "$(dirname "$BIN")"
DIST_DIR=$(cd "$DIST_DIR" && pwd)
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/virtiofsd-shim-stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

# The binary, as scripts/build-binary.sh builds it for make build and the tests.
echo "build.sh: building $BIN, version $VERSION" >&2
scripts/build-binary.sh "$BIN" "$VERSION"

# Reproducible: file times, and the man page's date, are the commit's.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export VERSION BIN STAGE SOURCE_DATE_EPOCH MAINTAINER

# The documentation: man page (dated and versioned), README, changelog,
# licenses.
mandate=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
sed "s/^\.TH VIRTIOFSD-SHIM 8 \"\" \"virtiofsd-shim\"/.TH VIRTIOFSD-SHIM 8 \"$mandate\" \"virtiofsd-shim $VERSION\"/" \
	packaging/virtiofsd-shim.8 | gzip -9n >"$STAGE/virtiofsd-shim.8.gz"
if [ -f README.md ]; then
	cp README.md "$STAGE/README.md"
else
	echo "build.sh: warning: no README.md at the top of the tree; shipping a pointer to the man page" >&2
	printf 'virtiofsd-shim: see virtiofsd-shim(8): man 8 virtiofsd-shim\n' >"$STAGE/README.md"
fi
if [ ! -f LICENSE ]; then
	echo "build.sh: LICENSE missing at the top of the tree" >&2
	exit 1
fi
packaging/changelog.sh "$VERSION" | gzip -9n >"$STAGE/changelog.gz"
packaging/copyright.sh "$STAGE/copyright" "$STAGE/THIRD-PARTY-LICENSES"

for packager in deb rpm; do
	go run "$NFPM" package --config packaging/nfpm.yaml \
		--packager "$packager" --target "$DIST_DIR/" >&2
done
ls "$DIST_DIR"/virtiofsd-shim_"$VERSION"_amd64.deb \
	"$DIST_DIR"/virtiofsd-shim-"$VERSION"-1.x86_64.rpm
