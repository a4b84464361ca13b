package main

import (
	"fmt"
	"io/fs"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/pressly/goose/v3"
	"github.com/spf13/cobra"

	"github.com/tasukiq/tasuki/schema"
)

// versionJSON is the output of version --json.
type versionJSON struct {
	// Version is the module version tasuki was built at: a release such as
	// v0.1.0, a pseudo-version for a commit, or "(devel)" when the build
	// recorded none.
	Version string `json:"version"`
	// SchemaVersion is the latest migration this build applies.
	SchemaVersion int64 `json:"schema_version"`
	// Go is the Go release tasuki was built with.
	Go string `json:"go"`
	// Platform is the operating system and architecture, as os/arch.
	Platform string `json:"platform"`
}

func newVersionCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print tasuki's version, its schema version and its Go version",
		Long: `version prints the version of this tasuki build, the latest schema version
it applies with 'tasuki migrate up', and the Go release and platform it was
built for; it needs no database. 'tasuki migrate version' shows the schema
version applied to a database. 'tasuki --version' prints the same.`,
		Example: `  tasuki version
  tasuki version --json | jq -r .version`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return groupRunE(cmd, args)
			}
			if asJSON {
				return a.printJSON(buildVersion())
			}
			fmt.Fprint(a.stdout, versionText())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of text")
	return cmd
}

func buildVersion() versionJSON {
	v := versionJSON{
		Version:       "(devel)",
		SchemaVersion: latestSchemaVersion(),
		Go:            runtime.Version(),
		Platform:      runtime.GOOS + "/" + runtime.GOARCH,
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
		v.Version = info.Main.Version
	}
	return v
}

// versionText is what version and --version print.
func versionText() string {
	v := buildVersion()
	return fmt.Sprintf("tasuki %s\nschema version %d\n%s %s\n", v.Version, v.SchemaVersion, v.Go, v.Platform)
}

// latestSchemaVersion is the number of the latest migration embedded in
// this build, read from the file names as goose reads them.
func latestSchemaVersion() int64 {
	var latest int64
	entries, _ := fs.ReadDir(schema.Migrations, ".")
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		if n, err := goose.NumericComponent(e.Name()); err == nil {
			latest = max(latest, n)
		}
	}
	return latest
}
