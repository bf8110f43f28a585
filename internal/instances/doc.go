// Package instances tells what systemd knows of each virtiofsd instance, through its D-Bus API.
//
// An instance is listed when virtiofsd@NAME.socket or virtiofsd@NAME.service
// is loaded in systemd (in any state: listening, serving, failed, inactive),
// or when /etc/virtiofsd/NAME.conf exists; a configured instance whose units
// are not loaded is listed with both units "not loaded".
//
// # Where each field comes from
//
//   - Unit states: one Manager.ListUnitsByPatterns call for
//     virtiofsd@*.socket and virtiofsd@*.service (LoadState, ActiveState,
//     SubState).
//   - Service details: one org.freedesktop.DBus.Properties.GetAll per
//     loaded service with an empty interface name, which systemd answers
//     with the Unit and Service interfaces together: StateChangeTimestamp
//     (since), Result, MainPID (the shim), StatusText, ExecMainCode and
//     ExecMainStatus (the last exit, explained from the shim's exit status
//     table). A failed socket adds one GetAll of its Socket interface, for
//     its Result. All these calls are sent before any reply is read, so
//     listing costs two round trips of latency whatever the number of
//     instances (and systemd's work per unit).
//   - Client and virtiofsd's pid: from the typed state the running shim
//     publishes (package state, %t/virtiofsd-shim/NAME.json, read from
//     Lister.RuntimeDir), trusted only when its shim_pid is the service's
//     MainPID: a past run's record says nothing of the running one. The
//     status text is shown, never parsed. When the proc file system of
//     systemd's pid namespace is at hand (Lister.ProcRoot; list uses /proc)
//     and shows the shim, the pid is kept only if /proc/N/stat names the
//     shim as its parent, so a virtiofsd that has just exited is not shown;
//     without a state, the shim's only child found by a scan of /proc.
//     /proc/PID/task/TID/children is not used: kernels built without
//     CONFIG_PROC_CHILDREN (this project's CI is one) lack it.
//   - Older binaries: the running shim's state records its own program and
//     virtiofsd's as they were started (state.Binary); a file at that path
//     that is another one now (an upgrade) makes the session run an older
//     binary than the installed one.
//   - Deferred restart: the marker %t/virtiofsd/NAME.restart (see
//     state.Deferral), present while a restart of the socket waits for the
//     session to end.
//   - Shared directory and config error: NAME.conf read by config.Load, as
//     run would read it. A config that Load refuses is still shown, with
//     its error, and SHARED_DIR when the file parses.
//
// # JSON (list --json), schema version 1
//
// One object; keys are always present (null when they do not apply), new
// keys may be added without changing schema_version, and a change in the
// meaning or type of a key bumps it:
//
//	{
//	  "schema_version": 1,
//	  "instances": [                          // sorted by instance name
//	    {
//	      "instance": "vm1",
//	      "socket": {                         // null: socket unit not loaded
//	        "unit": "virtiofsd@vm1.socket",
//	        "load_state": "loaded",
//	        "active_state": "active",         // systemd's ActiveState
//	        "sub_state": "listening",         // SubState: running while a session runs
//	        "result": ""                      // Result, read only when failed
//	      },
//	      "service": {                        // null: service unit not loaded
//	        "unit": "virtiofsd@vm1.service",
//	        "load_state": "loaded",
//	        "active_state": "active",
//	        "sub_state": "running",
//	        "since": "2026-11-27T14:22:01.123456Z", // StateChangeTimestamp or null
//	        "result": "success",              // Result
//	        "main_pid": 812,                  // the shim, or null
//	        "virtiofsd_pid": 815,             // or null
//	        "client": "connected",            // "connected", "waiting", "standby" or null
//	        "state": {...},                   // the shim's state file (package state), or null
//	        "state_error": null,              // why it could not be read, or null
//	        "status_text": "Serving a vhost-user client on /run/virtiofsd/vm1.sock, sharing /srv/vm1 (virtiofsd pid 815)",
//	        "exit": {                         // last exit of the shim, or null
//	          "code": "exited",               // exited, killed or dumped
//	          "status": 78,                   // exit status, or signal number
//	          "meaning": "config: the instance config or an option is invalid (...)"
//	        },
//	        "older_binaries": [               // or null: programs replaced since the running shim started them
//	          {"program": "virtiofsd",        // "shim" or "virtiofsd"
//	           "path": "/usr/libexec/virtiofsd",
//	           "version": "1.13.2",           // the running one's
//	           "reason": "/usr/libexec/virtiofsd was replaced since it was started (another file is installed there)"}
//	        ]
//	      },
//	      "config": {
//	        "path": "/etc/virtiofsd/vm1.conf",
//	        "exists": true,
//	        "shared_dir": "/srv/vm1",         // or null
//	        "error": null                     // why run would refuse it, or null
//	      },
//	      "deferred_restart": null,           // the deferred-restart marker's record, or null
//	      "failure": ""                       // why the socket or service failed, or ""
//	    }
//	  ]
//	}
//
// Times are RFC 3339 in UTC; pids are in systemd's pid namespace.
package instances
