package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// versionString is "VERSION (REVISION)", or VERSION alone.
func versionString() string {
	ver, rev := version()
	if rev == "" {
		return ver
	}
	return ver + " (" + rev + ")"
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the runner's version and VCS revision",
		Long: `Version prints the module version and the VCS revision the binary was built
from: set by "make build" and the Dockerfile with -ldflags -X, otherwise
read from the Go build info ("(devel)" for a build of a checkout).`,
		Example: "  runner version",
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(a.stdout, "runner", versionString())
			return nil
		},
	}
}

func (a *app) healthCmd() *cobra.Command {
	var addr string
	var timeout time.Duration
	var cf *configFlags
	cmd := &cobra.Command{
		Use:   "health [--addr HOST:PORT | -c FILE]",
		Short: "Ask a running runner's admin endpoint whether it is healthy",
		Long: `Health requests /healthz from the admin endpoint of a running runner (its
admin.listen) and exits 0 when it answers 200, 1 otherwise, printing the
answer. It is the container image's HEALTHCHECK (the image has no curl).
Without --addr it reads admin.listen from the configuration (-c, RUNNER_*
variables) as "runner run" does; a listen address without a host (":9090")
or on every interface is asked on 127.0.0.1.`,
		Example: "  runner health --addr 127.0.0.1:9090\n  runner health -c /etc/runner/config.yaml",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if addr == "" {
				cfg, err := a.load(cf, false)
				if err != nil {
					return err
				}
				if addr = cfg.Admin.Listen; addr == "" {
					return configErrorf("admin.listen", "not set: the runner serves no /healthz (set admin.listen, or give --addr)")
				}
			}
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return usageErrorf(cmd, "--addr: want host:port, got %q", addr)
			}
			if host == "" || host == "0.0.0.0" || host == "::" {
				host = "127.0.0.1"
			}
			if !a.proceed(cmd, &Config{}) {
				return nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("health: %w", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			text := strings.TrimSpace(string(body))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("health: %s: %s", resp.Status, text)
			}
			fmt.Fprintln(a.stdout, text)
			return nil
		},
	}
	cf = addConfigFlags(cmd)
	cmd.Flags().StringVar(&addr, "addr", "", "the admin endpoint's `HOST:PORT` (default: admin.listen of the configuration)")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "give up after this long")
	return cmd
}

func completionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: `Completion prints a script that completes the runner's commands and flags
in bash (needs the bash-completion package), zsh or fish. Load it from the
shell's startup file, or install it where the shell looks for completions.`,
		Example: `  source <(runner completion bash)
  runner completion zsh > "${fpath[1]}/_runner"
  runner completion fish > ~/.config/fish/completions/runner.fish`,
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 || (args[0] != "bash" && args[0] != "zsh" && args[0] != "fish") {
				return usageErrorf(cmd, "completion needs one shell: bash, zsh or fish")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, out := cmd.Root(), cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			default:
				return root.GenFishCompletion(out, true)
			}
		},
	}
}

// manCmd writes the man pages ("make man"); hidden: it is for packaging.
func (a *app) manCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "man DIR",
		Short: "Write the runner's man pages into DIR",
		Long: `Man writes one man page per command (runner.1, runner-run.1, ...) into DIR,
generated from the commands' help with cobra/doc. "make man" runs it; the
command is hidden from the command list, as it is for packaging.`,
		Example: "  runner man bin/man && man -l bin/man/runner-run.1",
		Hidden:  true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageErrorf(cmd, "man needs one directory")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if !a.proceed(cmd, &Config{}) {
				return nil
			}
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			return doc.GenManTree(root, &doc.GenManHeader{Title: "RUNNER", Section: "1", Source: "lockpool " + versionString()}, args[0])
		},
	}
}
