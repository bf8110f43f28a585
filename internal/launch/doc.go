// Package launch starts virtiofsd on the socket systemd passed and supervises
// it until it ends: readiness, its log lines, release, stop and exit status.
// What the flags and lines of each virtiofsd flavor mean is package virtiofsd's.
package launch
