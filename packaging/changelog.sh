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
# Subjects cut at a word boundary: a word cut in half reads as a
# misspelling to lintian (spelling-error-in-changelog).
git log -20 --format='%s' | awk '{
	if (length($0) > 64) { s = substr($0, 1, 64); sub(/ [^ ]*$/, "", s); $0 = s " ..." }
	print "    - " $0
}'
printf '\n -- %s  %s\n' "$maintainer" "$date"
