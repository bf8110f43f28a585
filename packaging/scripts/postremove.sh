#!/bin/sh
# virtiofsd-shim postrm (deb: remove | purge | upgrade NEW | disappear |
# failed-upgrade | abort-install | abort-upgrade; rpm %postun: 0 erase,
# 1 upgrade).
#
# After the files are gone, let a running systemd forget the unit files.
# On an upgrade the new package's postinst reloads instead.
set -e

case "$1" in
remove | purge | 0) ;;
*) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
