package launch

import (
	"os"
	"testing"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/fakevirtiofsd"
)

func TestMain(m *testing.M) {
	fakevirtiofsd.Main() // the test binary doubles as a fake virtiofsd
	os.Exit(m.Run())
}
