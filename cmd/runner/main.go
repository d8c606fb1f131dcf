// Command runner runs a configured task on each item of a lock pool, across
// a fleet of hosts sharing one Redis.
//
//	runner run [-c FILE] [flags]         run the workers (loop or batch mode)
//	runner pool add|remove|set ITEM...   change the pool's members ("-" reads items from stdin)
//	runner pool clear                    remove every member
//	runner pool list [--json]            items with status, owner, TTL left and token
//	runner pool status [--json]          counts and batch progress
//	runner version
//
// Exit codes: 0 ok; 2 usage or configuration error, printed as one line
// naming the bad field, or a Redis whose settings break the one-holder
// promise (an eviction policy, a cluster without a hash tag in
// pool.prefix); 1 runtime failure (including a batch with failed items).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/worker"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// errUsage marks a command-line mistake (exit 2, with the usage).
var errUsage = errors.New("usage")

// errBadInput marks input a command refused, such as an invalid item name
// (exit 2, without the usage).
var errBadInput = errors.New("bad input")

func main() {
	// The runner re-executes itself once as the exec supervisor that
	// starts its task processes, so a task's whole process group dies
	// with the runner.
	worker.ServeExecWrapper()
	os.Exit(runMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Environ()))
}

const usage = `usage:
  runner run [-c FILE] [--set key=value]... [flags]
  runner pool add|remove|set [-c FILE] ITEM...   ("-" reads items from stdin, one per line)
  runner pool clear [-c FILE]
  runner pool list [-c FILE] [--json]
  runner pool status [-c FILE] [--json]
  runner version
Run "runner run -h" for the flags. Configuration keys: see config/README.md.`

// runMain runs one command and returns its exit code.
func runMain(args []string, stdin io.Reader, stdout, stderr io.Writer, environ []string) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stdout, stderr, environ)
	case "pool":
		err = cmdPool(args[1:], stdin, stdout, stderr, environ)
	case "version", "--version":
		if len(args) != 1 {
			err = fmt.Errorf("%w: version takes no arguments", errUsage)
			break
		}
		fmt.Fprintln(stdout, "runner", version())
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
	default:
		err = fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	return exitCode(err, stderr)
}

// exitCode prints err as one line and maps it to the exit code.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "runner: %s\n%s\n", printable(err.Error()), usage)
		return exitUsage
	case errors.Is(err, ErrConfig), errors.Is(err, errBadInput), errors.Is(err, allocator.ErrUnsafeServer):
		fmt.Fprintf(stderr, "runner: %s\n", printable(configOneLine(err.Error())))
		return exitUsage
	default:
		fmt.Fprintf(stderr, "runner: %s\n", printable(configOneLine(err.Error())))
		return exitFailure
	}
}

// printable escapes the control characters and invalid UTF-8 in s as a Go
// string literal would, so that a message quoting raw input (a flag named
// "-x\nforged", a terminal escape) stays one clean line.
func printable(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], string(utf8.RuneError)):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsControl(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// errHelp: -h was asked for; the flag package printed the help.
var errHelp = errors.New("help shown")

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
