#!/bin/sh
# version.sh: print the package version of the git checkout in the current
# directory, in a form that deb and rpm both sort upward across commits.
#
#   tag v1.2.0 on HEAD, clean         1.2.0
#   3 commits after tag v1.2.0        1.2.0+git3.<sha>
#   no tag at all, 25 commits         0.0.0+git25.<sha>
#   uncommitted changes               ...+git<N>.<sha>.dirty
#   tag v1.3.0-rc1                    1.3.0~rc1 (sorts before 1.3.0)
#
# <N> counts commits (since the tag, or since the start), so a later commit
# always gives a higher version, as dpkg --compare-versions and rpm's
# rpmvercmp see it; a dirty tree sorts after its clean commit. A shallow
# clone counts too few commits: build from a full clone.
set -eu

desc=$(git describe --tags --always --dirty --match 'v[0-9]*')
sha=$(git rev-parse --short=7 HEAD)
dirty=
case "$desc" in *-dirty) dirty=.dirty ;; esac

if tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null); then
	# v1.3.0-rc1 -> 1.3.0~rc1: "-" would split off a Debian revision.
	base=$(printf '%s' "${tag#v}" | tr -- '-' '~')
	count=$(git rev-list --count "$tag"..HEAD)
else
	base=0.0.0
	count=$(git rev-list --count HEAD)
fi

if [ "$count" = 0 ] && [ -z "$dirty" ] && [ "$base" != 0.0.0 ]; then
	printf '%s\n' "$base"
else
	printf '%s+git%s.%s%s\n' "$base" "$count" "$sha" "$dirty"
fi
