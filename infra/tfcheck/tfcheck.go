// Package tfcheck checks gemq's Terraform deployment offline. Its tests build
// the stand-in provider (infra/tfprovider, which carries the real google and
// archive provider schemas), run `terraform fmt -check`, `init`, `validate` and
// `plan` with fake credentials on a copy of terraform/, assert over
// `terraform show -json` what validate cannot see, and build the function
// source archive the plan produced the way Cloud Functions' Go buildpack does.
//
// The helpers here are exported for those tests only; nothing imports them.
package tfcheck

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Provider versions the stand-in poses as: those the schemas were extracted from.
const (
	GoogleVersion  = "6.50.0"
	ArchiveVersion = "2.7.1"
	TimeVersion    = "0.13.1"
)

// RepoRoot returns the repository root: the nearest parent of dir holding go.mod.
func RepoRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("repo root: no go.mod above %s", dir)
		}
	}
}

// BuildProvider builds infra/tfprovider once per content of its sources and
// returns a plugin directory (the layout of `terraform init -plugin-dir`)
// serving it as hashicorp/google, hashicorp/archive and hashicorp/time. The build is cached
// under cacheDir, keyed by a hash of the provider's files and go.sum.
func BuildProvider(repo, cacheDir string) (string, error) {
	h := sha256.New()
	srcDir := filepath.Join(repo, "infra", "tfprovider")
	var files []string
	err := filepath.WalkDir(srcDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".go") || strings.HasSuffix(p, ".json")) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("walk provider sources: %w", err)
	}
	files = append(files, filepath.Join(repo, "go.sum"), filepath.Join(repo, "go.mod"))
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("read %s: %w", f, err)
		}
		fmt.Fprintf(h, "%s %d\n", strings.TrimPrefix(f, repo), len(data))
		h.Write(data)
	}
	dir := filepath.Join(cacheDir, hex.EncodeToString(h.Sum(nil))[:16])
	google := filepath.Join(dir, "registry.terraform.io", "hashicorp", "google", GoogleVersion, "linux_amd64", "terraform-provider-google_v"+GoogleVersion)
	archive := filepath.Join(dir, "registry.terraform.io", "hashicorp", "archive", ArchiveVersion, "linux_amd64", "terraform-provider-archive_v"+ArchiveVersion)
	timeProv := filepath.Join(dir, "registry.terraform.io", "hashicorp", "time", TimeVersion, "linux_amd64", "terraform-provider-time_v"+TimeVersion)
	if _, err := os.Stat(timeProv); err == nil {
		return dir, nil
	}
	tmp := google + ".tmp"
	if err := os.MkdirAll(filepath.Dir(google), 0o755); err != nil {
		return "", fmt.Errorf("mkdir: %w", err)
	}
	cmd := exec.Command("go", "build", "-o", tmp, "./infra/tfprovider")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./infra/tfprovider: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, google); err != nil {
		return "", fmt.Errorf("rename: %w", err)
	}
	// The time provider's copy is made last: its presence marks a complete directory.
	for _, other := range []string{archive, timeProv} {
		if err := os.MkdirAll(filepath.Dir(other), 0o755); err != nil {
			return "", fmt.Errorf("mkdir: %w", err)
		}
		if err := copyFile(google, other+".tmp", 0o755); err != nil {
			return "", err
		}
		if err := os.Rename(other+".tmp", other); err != nil {
			return "", fmt.Errorf("rename: %w", err)
		}
	}
	return dir, nil
}

// CopyConfig copies the Terraform configuration in src to dst, leaving out
// what a working directory accumulates (.terraform, the lock file, state,
// tfvars, build output), and adds a local backend override so the check never
// touches a remote backend.
func CopyConfig(src, dst string) error {
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		name := d.Name()
		if d.IsDir() {
			if rel != "." && (name == ".terraform" || name == "build") {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if name == ".terraform.lock.hcl" || strings.HasSuffix(name, ".tfstate") || strings.Contains(name, ".tfstate.") ||
			name == "terraform.tfvars" || strings.HasSuffix(name, ".auto.tfvars") || strings.HasSuffix(name, "_override.tf") || name == "override.tf" {
			return nil
		}
		return copyFile(p, filepath.Join(dst, rel), 0o644)
	})
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	override := "terraform {\n  backend \"local\" {}\n}\n"
	if err := os.WriteFile(filepath.Join(dst, "backend_override.tf"), []byte(override), 0o644); err != nil {
		return fmt.Errorf("write backend override: %w", err)
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("close %s: %w", dst, err)
	}
	return nil
}
