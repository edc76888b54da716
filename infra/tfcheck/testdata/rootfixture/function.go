// Package gemq is a TEMPORARY stand-in for the repository's function.go, used by the deploy-bundle
// check only while the real one has not landed: the module's root package that blank-imports both
// functions for their registrations.
package gemq

import (
	_ "github.com/gemq-dev/gemq/functions/ingest"
	_ "github.com/gemq-dev/gemq/functions/worker"
)
