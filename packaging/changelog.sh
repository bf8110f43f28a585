#!/bin/sh
# changelog.sh VERSION: print a Debian changelog (deb-changelog(5)) for the
# package, one entry for this build naming its commit and the last commits.
set -eu
version=$1
maintainer=${MAINTAINER:?set by build.sh}
commit=$(git rev-parse HEAD)
date=$(git log -1 --format=%cD)

printf 'virtiofsd-shim (%s) unstable; urgency=medium\n\n' "$version"
printf '  * Built from commit %s.\n' "$commit"
printf '  * Recent changes:\n'
git log -20 --format='%s' | cut -c1-64 | sed 's/^/    - /'
printf '\n -- %s  %s\n' "$maintainer" "$date"
