// Package gemq is the deploy root of gemq's Cloud Functions: the Go
// buildpack builds the module's root package, so this package only links in
// the two functions, whose init functions register their entry points with
// the functions framework ("Ingest" and "Worker"; Terraform's entry_point).
// Neither builds a client at init: each does so on its first request.
//
// The code lives in functions/ingest, functions/worker and internal/; see
// README.md.
package gemq

import (
	_ "github.com/gemq-dev/gemq/functions/ingest" // registers "Ingest"
	_ "github.com/gemq-dev/gemq/functions/worker" // registers "Worker"
)
