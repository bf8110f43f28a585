// Command runlibs is the floor of the libraries the shim's run path links
// (logrus, go-systemd's journal and daemon, net, os/exec, flag, os/signal):
// it touches each, as the shim does at start, then waits for SIGTERM.
package main

import (
	"flag"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
)

func main() {
	flag.Parse()
	log := logrus.New()
	log.SetOutput(os.Stderr)
	_, _ = daemon.SdNotify(false, "STATUS=floor")
	if journal.Enabled() {
		_ = journal.Send("floor", journal.PriDebug, nil)
	}
	_, _ = exec.LookPath("true")
	_, _ = net.ResolveUnixAddr("unixgram", "/run/systemd/notify")
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	<-c
}
