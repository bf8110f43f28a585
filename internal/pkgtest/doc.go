// Package pkgtest builds the .deb and .rpm and tests them as a user gets them.
//
// Its tests build both packages with packaging/build.sh (what `make package`
// runs; shimbox.BuildPackages), check the .deb with lintian and the .rpm with
// rpm, then, as root, install the .deb on each platform leg. On Debian 12 it
// is installed with dpkg inside a private systemd (sdbox) that shares this
// machine's /usr and dpkg database, so that the maintainer scripts talk to a
// real systemd: the package files land in this machine's /usr (run these
// tests on a throwaway machine, such as CI's). On Debian 13 it is installed
// with apt-get inside a box booted from the Debian 13 tree, whose overlay
// keeps every write. The tools they need (lintian, rpm, man, shellcheck)
// come from scripts/deps.sh, which make test runs; without root the tests
// that need dpkg or a box skip, saying why.
package pkgtest
