// Command tfprovider is gemq's offline stand-in for the hashicorp/google,
// hashicorp/archive and hashicorp/time Terraform providers. It serves the
// providers' real schemas (extracted into schema/*.json from the code cdktf
// generated from google 6.50.0, archive 2.7.1 and time 0.13.1, see
// schema/extract.js) so that `terraform init`, `validate`
// and `plan` run with no network and check every resource type, argument, block
// and type against the real provider.
//
// It never calls Google: planned resources get unknown computed attributes,
// google data sources return fixed fake values, and apply is refused. The
// archive_file data source is implemented for real (it zips its sources at plan
// time, as the real one does) so that the planned object name carries the
// archive's hash and the deploy-bundle check can read exactly what it holds.
//
// One binary serves all three: it picks the schema from the name it was
// installed under (terraform-provider-google_*, terraform-provider-archive_*
// or terraform-provider-time_*).
package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
	"github.com/hashicorp/terraform-plugin-sdk/v2/plugin"
)

func main() {
	name := "google"
	for _, other := range []string{"archive", "time"} {
		if strings.Contains(filepath.Base(os.Args[0]), "provider-"+other) {
			name = other
		}
	}
	plugin.Serve(&plugin.ServeOpts{ProviderFunc: func() *schema.Provider {
		p, err := New(name)
		if err != nil {
			// plugin.Serve has no error path: an invalid embedded schema is a build
			// defect, reported on stderr where terraform shows plugin output.
			os.Stderr.WriteString("tfprovider: " + err.Error() + "\n")
			os.Exit(1)
		}
		return p
	}})
}
