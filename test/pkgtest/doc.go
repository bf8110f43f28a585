// Package pkgtest builds the .deb and .rpm and tests them as a user gets them.
//
// Its tests build both packages with packaging/build.sh (what `make package`
// runs; shimbox.Packages), check the .deb with lintian and the .rpm with
// rpm, then, as root, install the .deb on each platform leg inside a private
// systemd (sdbox), so that the maintainer scripts talk to a real systemd. On
// Debian 12 the box is this machine's root with /usr, /etc and the dpkg
// database on overlays of the box, and dpkg -i installs there; on Debian 13
// it is the Debian 13 tree (QEMU, no virtiofsd) and apt-get installs the
// .deb, bringing virtiofsd. Either way every file the package writes stays
// in the box: a virtiofsd-shim installed on this machine, and its running
// instances, are left alone. The tools they need (lintian, rpm, man,
// shellcheck) come from scripts/deps.sh, which make test runs; without root
// the tests that need dpkg or a box skip, saying why.
package pkgtest
