#!/bin/sh
# virtiofsd-shim postinst (deb: configure | abort-*; rpm %post: 1 install,
# 2 upgrade).
#
# Tell a running systemd about the new or changed unit files, nothing more:
# no instance is ever enabled, started, restarted or stopped here. On an
# upgrade each running session keeps the shim it started with (the old file
# stays open while the new one is renamed into place); the next session of
# each instance, at its next connection, runs the new shim.
set -e

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || echo "virtiofsd-shim: systemctl daemon-reload failed; run it by hand" >&2
fi
exit 0
