package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func (a *app) configCmd() *cobra.Command {
	return groupCmd("config", "Check a configuration, or show the settings it gives",
		`Config commands load a configuration as "runner run" would (the file, RUNNER_*
variables, then flags) without starting anything: check reports every
problem, show prints the effective settings and where each came from.`,
		"  runner config check -c runner.yaml\n  runner config show -c runner.yaml --concurrency 8",
		a.configCheckCmd(), a.configShowCmd())
}

func (a *app) configCheckCmd() *cobra.Command {
	var cf *configFlags
	cmd := &cobra.Command{
		Use:   "check [-c FILE] [flags]",
		Short: "Validate a configuration and print every problem",
		Long: `Check loads the configuration as "runner run" would and prints every problem
it finds, one line each, naming the key ("config: worker.lease_ttl: ..."),
or "ok". It exits 2 when there is a problem, 0 otherwise; it neither dials
Redis nor starts a task. Secrets are never printed.`,
		Example: "  runner config check -c runner.yaml\n  RUNNER_WORKER_CONCURRENCY=8 runner config check -c runner.yaml",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := a.load(cf, true); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "ok")
			return nil
		},
	}
	cf = addConfigFlags(cmd, "redis-addr", "mode", "concurrency", "batch-id", "log-level", "admin-listen")
	return cmd
}

// maxShowWidth cuts long values (pool.items) in the table; --json shows
// them whole.
const maxShowWidth = 72

func (a *app) configShowCmd() *cobra.Command {
	var cf *configFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show [-c FILE] [flags] [--json]",
		Short: "Print the effective configuration and where each value came from",
		Long: `Show prints every key of the effective configuration (defaults, then the
file, RUNNER_* variables and flags merged) with the source of its value:
default, file, env or flag. Passwords print as "***" and task.env values as
"NAME=***"; values longer than 72 characters are cut ("...") in the table,
never in --json. Derived defaults (worker.refresh_interval, worker.safety_margin,
task.kill_grace) show the value they take from worker.lease_ttl. An invalid
configuration prints its problems instead and exits 2.`,
		Example: "  runner config show -c runner.yaml\n  runner config show -c runner.yaml --json | jq '.[\"worker.concurrency\"]'",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, origin, err := a.loadWithOrigins(cf, false)
			if err != nil {
				return err
			}
			red := cfg.Redacted()
			if asJSON {
				type entry struct {
					Value  any    `json:"value"`
					Source source `json:"source"`
				}
				out := make(map[string]entry, len(red))
				for key, v := range red {
					out[key] = entry{v, origin[key]}
				}
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tVALUE\tSOURCE")
			for _, k := range configKeys {
				js, _ := json.Marshal(red[k.name])
				v := printable(string(js))
				if len(v) > maxShowWidth {
					v = v[:maxShowWidth-3] + "..."
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", k.name, v, origin[k.name])
			}
			return tw.Flush()
		},
	}
	cf = addConfigFlags(cmd, "redis-addr", "mode", "concurrency", "batch-id", "log-level", "admin-listen")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object: key -> {value, source}")
	return cmd
}
