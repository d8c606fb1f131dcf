// Command runner runs a configured task on each item of a lock pool, across
// a fleet of hosts sharing one Redis. Its commands are built with cobra
// (cli.go) and its configuration is read with viper (config_*.go); run
// "runner --help" for the commands and config/README.md for the keys.
//
// Exit codes: 0 finished (a batch complete, or a loop drained after a
// signal); 1 runtime failure, including a batch with failed items; 2 usage
// or configuration error (every problem printed, one line each), or a
// Redis whose settings break the one-holder promise; 3 stopped by a signal
// before the batch was complete. "runner exec" exits with its command's
// own code.
package main

import (
	"os"
	"runtime/debug"

	"github.com/lockpool/lockpool/pkg/worker"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitStopped = 3
)

// Set with -ldflags "-X main.buildVersion=... -X main.buildRevision=...";
// otherwise read from the build info (debug.ReadBuildInfo).
var (
	buildVersion  string
	buildRevision string
)

func main() {
	// The runner re-executes itself once as the exec supervisor that
	// starts its task processes, so a task's whole process group dies
	// with the runner. This must come before anything else.
	worker.ServeExecWrapper()
	os.Exit(runMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Environ()))
}

// version is the module version and VCS revision: from -ldflags when the
// build set them (make build, the Dockerfile), else from the build info
// ("(devel)" for a plain go build of a checkout, with its revision).
func version() (ver, rev string) {
	ver, rev = buildVersion, buildRevision
	if bi, ok := debug.ReadBuildInfo(); ok {
		if ver == "" {
			ver = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && rev == "":
				rev = s.Value
			case s.Key == "vcs.modified" && s.Value == "true" && rev != "" && buildRevision == "":
				rev += "-dirty"
			}
		}
	}
	if ver == "" {
		ver = "(devel)"
	}
	return ver, rev
}
