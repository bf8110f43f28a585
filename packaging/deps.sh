#!/bin/sh
# deps.sh: install, as root, the Debian packages that internal/pkgtest needs
# besides go and git: lintian (checks the .deb), rpm (reads the .rpm),
# man-db (checks the man page) and shellcheck (checks the scripts). .ci/run
# calls it before the tests; the tests call it themselves when a tool is
# missing and they run as root.
set -eu
missing=
command -v lintian >/dev/null 2>&1 || missing="$missing lintian"
command -v rpm >/dev/null 2>&1 || missing="$missing rpm"
command -v man >/dev/null 2>&1 || missing="$missing man-db"
command -v shellcheck >/dev/null 2>&1 || missing="$missing shellcheck"
[ -n "$missing" ] || exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086 # one word per package
apt-get install -y -q --no-install-recommends $missing
