package main

// The command tree, on cobra. Every command has a one-paragraph Long help
// with an Example; flags are registered only on the commands they act on.
// Errors are printed by exitCode, one line each ("runner: ..."), never by
// cobra, whose own messages (unknown flags, commands) are rewritten into
// usage errors with a "did you mean" hint.

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lockpool/lockpool/pkg/allocator"
)

// app is one invocation: its streams and environment.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	environ        []string
	// beforeWork, when set, is called by a command once its flags and
	// configuration are loaded, before it starts workers, dials Redis or
	// an admin endpoint, or writes files (cfg is empty for commands that
	// take no configuration);
	// false stops the command there (exit 0). FuzzCLIArgs uses it to run
	// only the parsing stage.
	beforeWork func(cmd string, cfg *Config) bool
}

// runMain runs one command line and returns its exit code.
func runMain(args []string, stdin io.Reader, stdout, stderr io.Writer, environ []string) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, environ: environ}
	return a.main(args)
}

func (a *app) main(args []string) int {
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	return exitCode(root.Execute(), a.stderr)
}

// errUsage marks a command-line mistake (exit 2, with a pointer to the
// command's help).
var errUsage = errors.New("usage")

// errBadInput marks input a command refused, such as an invalid item name
// (exit 2).
var errBadInput = errors.New("bad input")

// errStopped: a signal stopped a batch before it was complete (exit 3).
var errStopped = errors.New("stopped by a signal before the batch was complete")

// usageError is a command-line mistake of one command.
type usageError struct {
	msg     string
	cmdPath string // "runner pool add"
}

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == errUsage }

func usageErrorf(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), cmdPath: cmd.CommandPath()}
}

// exitStatusError makes the process exit with code, printing nothing
// (runner exec: the command's own exit status).
type exitStatusError struct{ code int }

func (e *exitStatusError) Error() string { return "exit status " + strconv.Itoa(e.code) }

// exitCode prints err (one line per problem) and maps it to the exit code.
func exitCode(err error, stderr io.Writer) int {
	var ue *usageError
	var es *exitStatusError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &es):
		return es.code
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "runner: %s\nRun '%s --help' for usage.\n", printable(configOneLine(ue.msg)), ue.cmdPath)
		return exitUsage
	case errors.Is(err, ErrConfig):
		var b strings.Builder
		for _, p := range configProblemsOf(err) {
			fmt.Fprintf(&b, "runner: %s\n", printable(p.Error()))
		}
		io.WriteString(stderr, b.String())
		return exitUsage
	case errors.Is(err, errBadInput), errors.Is(err, allocator.ErrUnsafeServer):
		fmt.Fprintf(stderr, "runner: %s\n", printable(configOneLine(err.Error())))
		return exitUsage
	case errors.Is(err, errStopped):
		fmt.Fprintf(stderr, "runner: %s\n", err)
		return exitStopped
	default:
		fmt.Fprintf(stderr, "runner: %s\n", printable(configOneLine(err.Error())))
		return exitFailure
	}
}

// printable escapes the control characters and invalid UTF-8 in s as a Go
// string literal would, so that a message quoting raw input (a flag named
// "-x\nforged", a terminal escape, an item name) stays one clean line. Item
// names are shown this way everywhere in text output.
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

// displayName is an item or owner name as text output shows it, the same
// way everywhere (tables, status, messages): as is when it is printable
// and holds no space, quote, backslash or leading "-" that could be
// misread, else Go-quoted ("a b", "line\nbreak", "\x1b[31m"), which is
// unambiguous.
func displayName(s string) string {
	if s == "" || s == "-" || strings.HasPrefix(s, "\"") || strings.ContainsFunc(s, func(r rune) bool {
		return r == utf8.RuneError || r == ' ' || r == '\\' || r == '"' || !unicode.IsPrint(r)
	}) || !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	return s
}

const exitCodesHelp = `Exit codes: 0 finished (batch complete, or loop drained after a signal);
1 runtime failure or failed batch items; 2 usage or configuration error;
3 stopped by a signal before the batch was complete.`

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "runner",
		Short: "Run a task on each item of a lock pool shared by a fleet",
		Long: `runner runs a configured command on each item of a lock pool (API keys,
accounts, shards), holding an exclusive lease on the item while the command
runs, across any number of hosts sharing one Redis (or, with no Redis, an
embedded in-memory pool inside one process). "runner run" starts the
workers; "runner pool" inspects and changes the pool's items; "runner exec"
runs one command under one lease; "runner config" checks and shows a
configuration. Settings come from a YAML, TOML or JSON file (-c), RUNNER_*
environment variables and flags; config/README.md lists every key.

` + exitCodesHelp,
		Example: `  runner run -c config/example.yaml
  REDIS_ADDR=127.0.0.1:6379 runner exec --pool deploys -- ./deploy.sh
  runner pool list -c runner.yaml --json`,
		Args: unknownSubcommand,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if v, _ := cmd.Flags().GetBool("version"); v {
				fmt.Fprintln(a.stdout, "runner", versionString())
				return nil
			}
			return usageErrorf(cmd, "missing command")
		},
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	// Not cobra's Version field: its template would link text/template's
	// reflection, which keeps every method of every type in the binary.
	root.Flags().Bool("version", false, "print the version (as runner version)")
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(a.runCmd(), a.poolCmd(), a.configCmd(), a.execCmd(), a.versionCmd(), a.healthCmd(), a.uiCmd(), completionCmd(), a.manCmd())
	return root
}

// groupCmd is a command that only holds subcommands: without one, or with
// an unknown one, it is a usage error naming the nearest.
func groupCmd(use, short, long, example string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use: use, Short: short, Long: long, Example: example,
		Args: unknownSubcommand,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageErrorf(cmd, "%s needs a subcommand: %s", cmd.Name(), strings.Join(subcommands(cmd), ", "))
		},
	}
	c.AddCommand(subs...)
	return c
}

// unknownSubcommand refuses arguments to a command that only holds
// subcommands, suggesting the nearest one.
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	hint := ""
	if s := nearest(args[0], subcommands(cmd), 3); s != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", s)
	}
	return usageErrorf(cmd, "unknown command %q for %q%s", args[0], cmd.CommandPath(), hint)
}

// subcommands are the names of cmd's visible subcommands.
func subcommands(cmd *cobra.Command) []string {
	var names []string
	for _, s := range cmd.Commands() {
		if s.IsAvailableCommand() {
			names = append(names, s.Name())
		}
	}
	return names
}

// flagError turns pflag's errors into usage errors; an unknown flag gets
// the nearest known one as a hint.
func flagError(cmd *cobra.Command, err error) error {
	msg := err.Error()
	var name string
	if n, ok := strings.CutPrefix(msg, "unknown flag: --"); ok {
		name = n
	}
	if name != "" {
		var known []string
		cmd.Flags().VisitAll(func(f *pflag.Flag) { known = append(known, f.Name) })
		if h := nearest(name, known, 3); h != "" {
			msg += fmt.Sprintf(" (did you mean --%s?)", h)
		}
	}
	return usageErrorf(cmd, "%s", msg)
}

// noArgs is cobra.NoArgs as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf(cmd, "%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

// configFlags are the flags that load a configuration: -c, --set and,
// per command, the named shortcuts for single keys.
type configFlags struct {
	file      string
	overrides map[string]string
}

// namedFlags are the shortcuts for single keys ("--concurrency 8" is
// "--set worker.concurrency=8"). On the command line the last flag for a
// key wins.
var namedFlags = map[string]struct{ key, value string }{
	"redis-addr":   {"redis.addr", "ADDR"},
	"mode":         {"mode", "MODE"},
	"concurrency":  {"worker.concurrency", "N"},
	"batch-id":     {"batch.id", "ID"},
	"log-level":    {"log.level", "LEVEL"},
	"admin-listen": {"admin.listen", "ADDR"},
}

// addConfigFlags registers -c, --set and the named flags given.
func addConfigFlags(cmd *cobra.Command, named ...string) *configFlags {
	cf := &configFlags{overrides: map[string]string{}}
	fs := cmd.Flags()
	fs.StringVarP(&cf.file, "config", "c", "", "read the configuration from `FILE` (.yaml, .yml, .toml or .json)")
	fs.Var(setValue{cf.overrides}, "set", "set a config key, as `key=value` (repeatable; written as in its RUNNER_* variable; beats the file and the environment)")
	for _, name := range named {
		nf := namedFlags[name]
		fs.Var(keyValue{nf.key, nf.value, cf.overrides}, name, "set "+nf.key+" (same as --set "+nf.key+"=`"+nf.value+"`)")
	}
	return cf
}

// load reads the configuration the flags name, with the environment.
func (a *app) load(cf *configFlags, forRun bool) (*Config, error) {
	c, _, err := a.loadWithOrigins(cf, forRun)
	return c, err
}

func (a *app) loadWithOrigins(cf *configFlags, forRun bool) (*Config, configOrigins, error) {
	return loadConfigFrom(configSources{file: cf.file, environ: a.environ, flags: cf.overrides, forRun: forRun})
}

// proceed reports whether a command goes on to its work (see beforeWork).
func (a *app) proceed(cmd *cobra.Command, cfg *Config) bool {
	return a.beforeWork == nil || a.beforeWork(cmd.CommandPath(), cfg)
}

// keyValue is a named flag: it records its value for one key.
type keyValue struct {
	key, typ  string
	overrides map[string]string
}

func (v keyValue) String() string     { return v.overrides[v.key] }
func (v keyValue) Set(s string) error { v.overrides[v.key] = s; return nil }
func (v keyValue) Type() string       { return strings.ToLower(v.typ) }

// setValue is --set key=value.
type setValue struct{ overrides map[string]string }

func (v setValue) String() string { return "" }
func (v setValue) Type() string   { return "key=value" }
func (v setValue) Set(s string) error {
	key, val, ok := strings.Cut(s, "=")
	if !ok {
		return errors.New("want key=value, such as worker.concurrency=8")
	}
	if _, known := configKeyByName[key]; !known {
		return fmt.Errorf("unknown key %q%s", key, configHint(key, configKeyNames()))
	}
	v.overrides[key] = val
	return nil
}

// nearest is the known name within maxDist edits of name, or "".
func nearest(name string, known []string, maxDist int) string {
	best, bestDist := "", maxDist
	for _, k := range known {
		if d := configEditDistance(name, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}
