package systemtest

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/fakevirtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"
)

// clientEnv, set to a socket path, makes the test binary a VM-like client
// instead of running the tests (the os/exec helper-process pattern), so a
// test can connect from inside a box as another user on every leg.
const clientEnv = "SYSTEMTEST_CLIENT"

func TestMain(m *testing.M) {
	fakevirtiofsd.Main() // the test binary doubles as a fake virtiofsd (fakevirtiofsd.Script)
	if sock := os.Getenv(clientEnv); sock != "" {
		fmt.Println(client(sock))
		os.Exit(0)
	}
	if report := os.Getenv(storeEnv); report != "" {
		if err := storeHelper(report); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if dir := os.Getenv(peerEnv); dir != "" {
		if err := peerHelper(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// client connects to sock, asks GET_FEATURES and says what happened:
// "served", "refused" (no permission to connect) or "failed: ...".
func client(sock string) string {
	c, err := vhostuser.Probe(sock, 10*time.Second)
	switch {
	case errors.Is(err, syscall.EACCES):
		return "refused"
	case err != nil:
		return "failed: " + err.Error()
	}
	c.Close()
	return "served"
}
