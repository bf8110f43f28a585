#!/bin/sh
# virtiofsd-shim prerm (deb: remove | upgrade NEW | deconfigure |
# failed-upgrade OLD; rpm %preun: 0 erase, 1 upgrade).
#
# Only when the package goes away (not on an upgrade): stop every instance,
# socket and session, while the binary and unit files still exist, and
# disable the enabled instance sockets, so that no symlink points to a unit
# file that is about to vanish. The instances' configs in /etc/virtiofsd
# stay (they are removed on purge, deb, if they are the package's own).
set -e

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
	systemctl stop 'virtiofsd@*.socket' 'virtiofsd@*.service' ||
		echo "virtiofsd-shim: could not stop every virtiofsd@ instance" >&2
fi
# Disabling the template removes the symlinks of all its enabled instances
# (sockets.target.wants/virtiofsd@NAME.socket); works without a running
# systemd too.
systemctl --no-reload disable virtiofsd@.socket >/dev/null 2>&1 ||
	echo "virtiofsd-shim: could not disable the virtiofsd@ sockets" >&2
exit 0
