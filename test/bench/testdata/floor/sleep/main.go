// Command sleep is Go's memory floor for the benchmarks' memory section: a
// program that only sleeps, built as the shim is (scripts/build-binary.sh).
package main

import "time"

func main() { time.Sleep(time.Hour) }
