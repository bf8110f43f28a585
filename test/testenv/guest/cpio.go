package guest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// Mode bits of the cpio "newc" format (the same values as S_IF* in stat(2)).
const (
	modeTypeMask = 0o170000
	modeDir      = 0o040000
	modeRegular  = 0o100000
	modeSymlink  = 0o120000
	modeCharDev  = 0o020000
)

// cpioWriter writes a cpio archive in the "newc" format, the one the Linux
// kernel unpacks as an initramfs. Entries are written in call order, so parent
// directories must come first. Every entry belongs to root and has mtime 0,
// which makes the archive a pure function of its entries.
type cpioWriter struct {
	w     io.Writer
	ino   uint32
	err   error
	total int64
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, ino: 1}
}

// writeArchive creates the file path and writes into it what prefix holds
// (nil: nothing), then a cpio archive of the entries fill adds. It returns
// the first error of fill, the writes, the flush or the close.
func writeArchive(path string, prefix io.Reader, fill func(w *cpioWriter) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	if prefix != nil {
		_, err = io.Copy(bw, prefix)
	}
	if err == nil {
		w := newCPIOWriter(bw)
		if err = fill(w); err == nil {
			err = w.Close()
		}
	}
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Dir adds a directory with the given permission bits.
func (c *cpioWriter) Dir(name string, perm uint32) {
	c.entry(name, modeDir|perm, 0, 0, nil)
}

// File adds a regular file with the given permission bits and contents.
func (c *cpioWriter) File(name string, perm uint32, data []byte) {
	c.entry(name, modeRegular|perm, 0, 0, data)
}

// Symlink adds a symbolic link name pointing to target.
func (c *cpioWriter) Symlink(name, target string) {
	c.entry(name, modeSymlink|0o777, 0, 0, []byte(target))
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm, major, minor uint32) {
	c.entry(name, modeCharDev|perm, major, minor, nil)
}

// Close writes the trailer and returns the first error met while writing.
func (c *cpioWriter) Close() error {
	c.entry("TRAILER!!!", 0, 0, 0, nil)
	return c.err
}

func (c *cpioWriter) entry(name string, mode, rmajor, rminor uint32, data []byte) {
	if c.err != nil {
		return
	}
	name = strings.TrimPrefix(name, "/")
	nlink := 1
	if mode&modeTypeMask == modeDir {
		nlink = 2
	}
	ino := c.ino
	if name == "TRAILER!!!" {
		ino = 0
	}
	c.ino++
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
	// rdevmajor, rdevminor, namesize (with the NUL), check.
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
	c.write(data)
	c.pad()
}

func (c *cpioWriter) write(p []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(p)
	c.total += int64(n)
	if err != nil {
		c.err = fmt.Errorf("write cpio archive: %w", err)
	}
}

// pad aligns the stream to 4 bytes, as newc wants after names and data.
func (c *cpioWriter) pad() {
	if r := c.total % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}
