package stack

// The module's root package, which Cloud Functions' Go buildpack builds: it
// imports functions/ingest and functions/worker, whose init functions
// register the "Ingest" and "Worker" entry points with the functions
// framework. Linking it is what makes the stack serve the deployed code.
import _ "github.com/gemq-dev/gemq"
