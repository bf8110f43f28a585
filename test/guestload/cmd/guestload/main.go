// Command guestload runs the file-system workload of package guestload on
// a folder (a virtiofs share inside the test guest) and prints one JSON line
// per event. Exit status 1 when a group failed, 2 on bad flags.
//
//	guestload -dir /mnt/auto -share auto
//	guestload -dir /mnt/never -share never -groups stream-write,stream-read
//	guestload -dir /tmp/x -files 20 -tree 50 -stream-mib 2 -pause 0
//
// With check first, it runs guestload.Check instead: rounds of operations
// that check their own data, until a stop file appears, then one summary
// line. Exit status 1 when an operation failed.
//
//	guestload check -dir /mnt/fs -label fs -stop /mnt/fs/stop -limit 10m -deleted
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/guestload"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "check" {
		return check(args[1:])
	}
	p := guestload.Default()
	fs := flag.NewFlagSet("guestload", flag.ContinueOnError)
	dir := fs.String("dir", "", "folder to work in (required)")
	share := fs.String("share", "", "label of the records (the share's cache mode, say)")
	groups := fs.String("groups", "all", "comma-separated groups, or all, metadata, stream: "+strings.Join(guestload.Groups, ","))
	fs.IntVar(&p.Files, "files", p.Files, "files of the metadata groups and of read-small")
	fs.IntVar(&p.TreeEntries, "tree", p.TreeEntries, "entries of the tree walked")
	fs.IntVar(&p.StreamMiB, "stream-mib", p.StreamMiB, "size of the streamed file, MiB")
	fs.DurationVar(&p.Pause, "pause", p.Pause, "idle time after each begin and result line")
	fs.BoolVar(&p.DropCaches, "drop-caches", p.DropCaches, "drop the kernel's caches before each group (root)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "guestload: -dir is required and takes no arguments")
		return 2
	}
	var list []string
	switch *groups {
	case "all":
		list = guestload.Groups
	case "metadata":
		list = guestload.MetadataGroups
	case "stream":
		list = guestload.StreamGroups
	default:
		list = strings.Split(*groups, ",")
	}
	if err := guestload.Run(os.Stdout, *dir, *share, list, p); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func check(args []string) int {
	p := guestload.CheckParams{Limit: 10 * time.Minute, Pause: 50 * time.Millisecond, Keep: 5, DropCaches: true}
	fs := flag.NewFlagSet("guestload check", flag.ContinueOnError)
	dir := fs.String("dir", "", "folder to work in (required)")
	fs.StringVar(&p.Label, "label", "", "label of the records (the share's tag, say)")
	fs.StringVar(&p.Stop, "stop", "", "file whose appearance ends the run (default: stop in -dir)")
	fs.DurationVar(&p.Limit, "limit", p.Limit, "longest run; without the stop file by then, an error")
	fs.DurationVar(&p.Pause, "pause", p.Pause, "idle time between rounds")
	fs.IntVar(&p.Keep, "keep", p.Keep, "checked files kept in the folder")
	fs.BoolVar(&p.Deleted, "deleted", false, "hold a file opened and then deleted (file-handles mode)")
	fs.BoolVar(&p.DropCaches, "drop-caches", p.DropCaches, "drop the kernel's caches before reading back (root)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "guestload check: -dir is required and takes no arguments")
		return 2
	}
	if p.Stop == "" {
		p.Stop = filepath.Join(*dir, "stop")
	}
	if err := guestload.Check(os.Stdout, *dir, p); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
