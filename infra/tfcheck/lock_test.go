package tfcheck

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// TestLockFile checks the committed terraform/.terraform.lock.hcl: every
// provider versions.tf requires is locked, at the version the offline
// stand-in poses as (so what the plan checks is what `terraform init`
// installs), with versions.tf's constraint, and with the registry's zip
// checksums (zh:) for every platform, so that init on any machine verifies
// the download against them (init adds its own platform's h1: hash).
func TestLockFile(t *testing.T) {
	wd, _ := os.Getwd()
	repo, err := RepoRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(repo, "terraform")
	p := hclparse.NewParser()
	lock, diags := p.ParseHCLFile(filepath.Join(dir, ".terraform.lock.hcl"))
	if diags.HasErrors() {
		t.Fatalf("terraform/.terraform.lock.hcl: %v (commit the lock file: README, Deploy to Google Cloud)", diags)
	}
	versions, diags := p.ParseHCLFile(filepath.Join(dir, "versions.tf"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}

	required := map[string]string{} // registry address → version constraint
	for _, b := range versions.Body.(*hclsyntax.Body).Blocks {
		for _, rp := range b.Body.Blocks {
			if b.Type != "terraform" || rp.Type != "required_providers" {
				continue
			}
			for name, attr := range rp.Body.Attributes {
				v, diags := attr.Expr.Value(nil)
				if diags.HasErrors() {
					t.Fatalf("required_providers.%s: %v", name, diags)
				}
				source, constraint := v.GetAttr("source").AsString(), v.GetAttr("version").AsString()
				required["registry.terraform.io/"+source] = constraint
			}
		}
	}
	want := map[string]string{
		"registry.terraform.io/hashicorp/google":  GoogleVersion,
		"registry.terraform.io/hashicorp/archive": ArchiveVersion,
		"registry.terraform.io/hashicorp/time":    TimeVersion,
	}
	if len(required) != len(want) {
		t.Fatalf("versions.tf requires %v; the stand-in serves %v: keep them in step", required, want)
	}

	zh := regexp.MustCompile(`^zh:[0-9a-f]{64}$`)
	h1 := regexp.MustCompile(`^h1:[A-Za-z0-9+/]{43}=$`)
	locked := map[string]bool{}
	for _, b := range lock.Body.(*hclsyntax.Body).Blocks {
		if b.Type != "provider" || len(b.Labels) != 1 {
			t.Errorf("unexpected block %s %v in the lock file", b.Type, b.Labels)
			continue
		}
		addr := b.Labels[0]
		locked[addr] = true
		attrs := map[string]cty.Value{}
		for name, a := range b.Body.Attributes {
			v, diags := a.Expr.Value(&hcl.EvalContext{})
			if diags.HasErrors() {
				t.Fatalf("%s.%s: %v", addr, name, diags)
			}
			attrs[name] = v
		}
		if _, ok := want[addr]; !ok {
			t.Errorf("lock file has %s, which versions.tf does not require", addr)
			continue
		}
		if got := attrs["version"].AsString(); got != want[addr] {
			t.Errorf("%s is locked at %s; the offline check's stand-in is %s: plan what will be installed", addr, got, want[addr])
		}
		if got := attrs["constraints"].AsString(); got != required[addr] {
			t.Errorf("%s: lock constraints %q, versions.tf %q: run terraform init and commit the lock file", addr, got, required[addr])
		}
		zips := 0
		for _, h := range attrs["hashes"].AsValueSlice() {
			switch s := h.AsString(); {
			case zh.MatchString(s):
				zips++
			case h1.MatchString(s):
			default:
				t.Errorf("%s: malformed hash %q", addr, s)
			}
		}
		if zips < 4 {
			t.Errorf("%s: %d zh: hashes; the registry publishes one per platform (darwin, linux, windows, …): lock them all (terraform providers lock -platform=…)", addr, zips)
		}
	}
	for addr := range want {
		if !locked[addr] {
			t.Errorf("%s is not in terraform/.terraform.lock.hcl", addr)
		}
	}
}
