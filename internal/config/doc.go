// Package config reads and validates an instance's /etc/virtiofsd/<instance>.conf: what the instance wants.
//
// The file holds KEY=VALUE lines in the syntax of systemd's EnvironmentFile=
// (systemd.exec(5)), read the way systemd reads it, so the same file can also
// serve as a unit's EnvironmentFile:
//
//   - Lines starting with "#" or ";" (after optional blanks) are comments;
//     blank lines are ignored. A "#" later in a line is part of the value.
//   - Blanks around the key and at the start and end of an unquoted value are
//     dropped: "CACHE = never" sets CACHE to "never".
//   - A value may be quoted with '...' (taken literally, may span lines) or
//     "..." (where \" \\ \` \$ stand for the character, a backslash before a
//     newline joins lines, and other backslashes stay). Quoted and unquoted
//     pieces join: A="x"'y'z is xyz. Unquoted, a backslash takes the next
//     character literally, and a backslash at the end of a line continues the
//     value on the next line.
//
// The shim is stricter than systemd, which silently drops or mangles what
// follows; it refuses with the file and line: a line with no "=", an
// unterminated quote, a NUL byte, invalid UTF-8, a line following a comment
// that ends in a backslash (systemd versions disagree on it), an unknown key,
// a key given twice, and any bad value. An empty value (KEY=) leaves the key
// unset.
//
// Keys (values are case-sensitive; booleans are yes, no, true, false, 1, 0):
//
//	KEY                 VALUE                                   WHEN UNSET
//	SHARED_DIR          absolute path of the directory to share (required)
//	CACHE               auto, always, never, metadata; none is  virtiofsd's default
//	                    read as never; metadata: Rust only
//	VIRTIOFSD           absolute path of the virtiofsd binary   searched by the shim
//	FLAVOR              auto, c, rust: which virtiofsd it is    auto (detected)
//	SANDBOX             namespace, chroot, none (none: Rust     virtiofsd's default
//	                    only)
//	THREAD_POOL_SIZE    whole number >= 0                       virtiofsd's default
//	XATTR               boolean: extended attributes            virtiofsd's default
//	ANNOUNCE_SUBMOUNTS  boolean: announce submounts to guest    virtiofsd's default
//	READONLY            boolean: share read-only                virtiofsd's default
//	READY_TIMEOUT       time to wait for virtiofsd to be ready: the shim's default
//	                    a Go duration (10s, 1m30s, 500ms) or
//	                    whole seconds (10); positive
//	LOG_LEVEL           virtiofsd's log level: info, debug,     info
//	                    trace (Rust only); lower levels would
//	                    hide the readiness line
//	STOP_TIMEOUT        time between SIGTERM and SIGKILL when   the shim's default
//	                    stopping; same forms
//	UID_MAP, GID_MAP    rootless instances only (systemctl      the user's own id
//	                    --user), Rust only: one id range of
//	                    virtiofsd's user namespace,
//	                    :NAMESPACE_ID:HOST_ID:COUNT: (virtiofsd's
//	                    --uid-map/--gid-map; newuidmap/newgidmap
//	                    and /etc/subuid, /etc/subgid allow it)
//	EXTRA_ARGS          more virtiofsd arguments, split like a  none
//	                    shell would (github.com/kballard/go-shellquote);
//	                    options the shim sets itself or that
//	                    break it (--fd, --shared-dir, --cache,
//	                    --syslog, ...) are refused by virtiofsd.Args,
//	                    which knows the flavor
//	SOCKET_USER         owner of the socket: a user name or uid  root
//	SOCKET_GROUP        group of the socket: a group name or gid root
//	SOCKET_MODE         permission bits of the socket, octal,    0660
//	                    at most 0777
//	STANDBY             boolean: a virtiofsd waits on the socket no
//	                    before the VM connects
//	FRONT               auto, no: with auto the shim is the VM's auto
//	                    end of the socket where virtiofsd can
//	                    save its state (systemctl reload swaps it)
//	MIGRATION_MODE      find-paths, file-handles (Rust 1.12+;   virtiofsd's default
//	                    the destination gets CAP_DAC_READ_SEARCH) (find-paths)
//	MIGRATION_ON_ERROR  abort, guest-error                      virtiofsd's default (abort)
//	MIGRATION_VERIFY_HANDLES, MIGRATION_CONFIRM_PATHS           no
//	                    booleans, find-paths only
//	INODE_FILE_HANDLES  never, prefer, mandatory; prefer and    never, always passed
//	                    mandatory get CAP_DAC_READ_SEARCH       to the Rust one
//	POSIX_ACL, SECURITY_LABEL                                   never
//	                    never, auto (Rust 1.14+), always; yes
//	                    is always, no is never
//	TRANSLATE_UID, TRANSLATE_GID                                none
//	                    virtiofsd's --translate-uid/gid values
//	                    (Rust 1.13+), separated by blanks
//	ALLOW_MMAP, WRITEBACK, READDIRPLUS, PRESERVE_NOATIME        virtiofsd's default
//	                    booleans; READDIRPLUS=no gives
//	                    --no-readdirplus
//
// Which of these the installed virtiofsd can honour is checked against what
// it reports (--print-capabilities, --version) by the virtiofsd package.
//
// The SOCKET_ keys and STANDBY are applied by systemd through the generator
// (package generator) at boot and on daemon-reload; run reads STANDBY too.
//
// Quoting in EXTRA_ARGS happens twice: the file's quotes are removed first,
// then the value is split, so EXTRA_ARGS="--modcaps=-mknod -o 'a=b c'" gives
// the arguments --modcaps=-mknod, -o and a=b c.
//
// Example /etc/virtiofsd/vm1.conf:
//
//	# Share /srv/vm1 with the guest of virtiofsd@vm1.socket.
//	SHARED_DIR=/srv/vm1
//	CACHE=never
//	XATTR=yes
//	# C virtiofsd spelling; the Rust one takes --modcaps=-mknod
//	EXTRA_ARGS="-o modcaps=-mknod"
//
// Every error is an *Error (use errors.As) whose text names the file, the line
// and the fix, e.g.
//
//	/etc/virtiofsd/vm1.conf:3: unknown key CACHEMODE (known: ANNOUNCE_SUBMOUNTS, CACHE, ...)
//
// Load (and Read, which the generator uses) also refuses a file or folder
// that group or others may write or that is owned by a user other than root
// and the current one (the file chooses the program the service runs as
// root), a symbolic link that leads out of the folder, and a file with more
// than one hard link, so that no error quotes a file that is not a config. A
// user's instance (Scope User, read by LoadIn and ReadIn from
// ~/.config/virtiofsd) is stricter: its file and folder must be the user's
// own.
package config
