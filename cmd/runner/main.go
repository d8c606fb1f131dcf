// Command runner runs a configured task on each item of a lock pool, across
// a fleet of hosts sharing one Redis.
//
// Only "runner version" exists so far; "runner run" arrives with the
// workers-and-runner issue. Until then `make run` runs examples/lockdemo.
package main

import (
	"fmt"
	"os"
	"runtime/debug"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 1 && args[0] == "version" {
		fmt.Println("runner", version())
		return 0
	}
	fmt.Fprintln(os.Stderr, "usage: runner version (runner run is not built yet)")
	return 2
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
