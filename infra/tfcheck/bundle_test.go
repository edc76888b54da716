package tfcheck

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// mainTemplate is the main package Cloud Functions' Go buildpack generates for
// a module whose functions register themselves (functions.HTTP in init): it
// blank-imports the function package and starts the functions framework, which
// serves the target named by FUNCTION_TARGET.
const mainTemplate = `// Binary main file implements an HTTP server that loads and runs user's code
// on incoming HTTP requests.
package main

import (
	"log"
	"net/http"
	"os"

	_ "%s"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
)

func main() {
	http.HandleFunc("/robots.txt", http.NotFound)
	http.HandleFunc("/favicon.ico", http.NotFound)

	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	if err := funcframework.Start(port); err != nil {
		log.Fatalf("Function failed to start: %%v\n", err)
	}
}
`

// TestDeployBundle builds exactly the files of the planned source archive the
// way the buildpack does and starts each entry point the functions declare.
func TestDeployBundle(t *testing.T) {
	pr := testPlan(t)
	files := bundleFiles(t, pr.plan)

	bin := buildBundle(t, files)
	for _, target := range []string{"Ingest", "Worker"} {
		t.Run(target, func(t *testing.T) { serveTarget(t, bin, target) })
	}
	t.Run("unknown target fails", func(t *testing.T) {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "FUNCTION_TARGET=NoSuchTarget", "PORT="+freePort(t))
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("the function binary accepted an unknown FUNCTION_TARGET")
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Fatal("the function binary served an unknown FUNCTION_TARGET")
		}
	})
}

// TestDeployBundleWithoutRootPackage shows the check failing when the archive
// lacks the root package, as it would in Cloud Build.
func TestDeployBundleWithoutRootPackage(t *testing.T) {
	pr := testPlan(t)
	files := bundleFiles(t, pr.plan)
	delete(files, "function.go")
	dir := writeBundle(t, files)
	if err := buildpack(dir, filepath.Join(t.TempDir(), "fn")); err == nil {
		t.Fatal("a bundle without function.go built")
	} else if !strings.Contains(err.Error(), "root package") {
		t.Fatalf("unexpected error: %v", err)
	}
}

// bundleFiles returns the files of the source archive the plan built, read
// from the zip archive_file wrote (what would be uploaded), after checking that
// it holds exactly the plan's `source` entries with the same contents.
func bundleFiles(t *testing.T, p *Plan) map[string][]byte {
	t.Helper()
	a := p.Data(t, "data.archive_file.source")
	planned := map[string]string{}
	for _, s := range blocks(a.Values["source"]) {
		planned[s["filename"].(string)] = s["content"].(string)
	}
	out, _ := a.Values["output_path"].(string)
	if !filepath.IsAbs(out) {
		out = filepath.Join(testPlan(t).dir, out)
	}
	zr, err := zip.OpenReader(out)
	if err != nil {
		t.Fatalf("open the planned archive: %v", err)
	}
	defer zr.Close()
	files := map[string][]byte{}
	var inZip, inSource []string
	for _, f := range zr.File {
		inZip = append(inZip, f.Name)
		rc, err := f.Open()
		if err != nil {
			t.Fatalf("open %s in the planned archive: %v", f.Name, err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("read %s in the planned archive: %v", f.Name, err)
		}
		files[f.Name] = data
		if want, ok := planned[f.Name]; ok && want != string(data) {
			t.Errorf("archive entry %s differs from the planned source content", f.Name)
		}
	}
	for name := range planned {
		inSource = append(inSource, name)
	}
	sort.Strings(inSource)
	if diff := cmp.Diff(inSource, inZip); diff != "" {
		t.Fatalf("archive entries differ from the planned sources (-sources +zip):\n%s", diff)
	}
	for _, must := range []string{"go.mod", "go.sum"} {
		if _, ok := files[must]; !ok {
			t.Fatalf("the source archive lacks %s", must)
		}
	}
	for name := range files {
		if strings.HasSuffix(name, "_test.go") || strings.HasPrefix(name, "terraform/") || strings.HasPrefix(name, "infra/") || strings.HasPrefix(name, ".git/") {
			t.Errorf("the source archive holds %s: tests, Terraform and local tooling stay out", name)
		}
	}
	return files
}

func writeBundle(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func buildBundle(t *testing.T, files map[string][]byte) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fn")
	if err := buildpack(writeBundle(t, files), bin); err != nil {
		t.Fatalf("the planned source archive does not build as Cloud Functions' Go buildpack would: %v", err)
	}
	return bin
}

// buildpack follows the Go functions-framework buildpack for a module with
// go.mod and go.sum: the module path must contain a dot; the function package
// is the module's root package (no directory is named after the package); the
// framework is required (added when missing); a main package is generated in
// functions.local/app inside the module; `go mod tidy`; `go build`.
func buildpack(dir, bin string) error {
	goCmd := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return strings.TrimSpace(out.String()), err
	}
	mod, err := goCmd("list", "-m")
	if err != nil {
		return fmt.Errorf("go list -m: %v: %s", err, mod)
	}
	if first, _, _ := strings.Cut(mod, "/"); !strings.Contains(first, ".") {
		return fmt.Errorf("module path %q: the buildpack requires a dot in its first element", mod)
	}
	name, err := goCmd("list", "-f", "{{.Name}}", ".")
	if err != nil {
		return fmt.Errorf("root package: the buildpack builds the module's root package, and it does not build: %v: %s", err, name)
	}
	pkg := mod
	if st, err := os.Stat(filepath.Join(dir, name)); err == nil && st.IsDir() {
		pkg = mod + "/" + name
	}
	if req, err := goCmd("list", "-m", "-f", "{{.Version}}", "github.com/GoogleCloudPlatform/functions-framework-go"); err != nil || req == "" {
		if out, err := goCmd("mod", "edit", "-require", "github.com/GoogleCloudPlatform/functions-framework-go@v1.9.2"); err != nil {
			return fmt.Errorf("go mod edit: %v: %s", err, out)
		}
	}
	app := filepath.Join(dir, "functions.local", "app")
	if err := os.MkdirAll(app, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(app, "main.go"), fmt.Appendf(nil, mainTemplate, pkg), 0o644); err != nil {
		return err
	}
	if out, err := goCmd("mod", "tidy"); err != nil {
		return fmt.Errorf("go mod tidy: %v: %s", err, out)
	}
	if out, err := goCmd("build", "-o", bin, "./functions.local/app"); err != nil {
		return fmt.Errorf("go build of the generated main: %v: %s", err, out)
	}
	return nil
}

// serveTarget starts the function binary as Cloud Run does (PORT,
// FUNCTION_TARGET) and waits until the target answers HTTP.
func serveTarget(t *testing.T, bin, target string) {
	port := freePort(t)
	cmd := exec.Command(bin)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.Env = append(os.Environ(), "FUNCTION_TARGET="+target, "PORT="+port, "K_SERVICE=gemq-check")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("target %s exited: %v\n%s", target, err, logs.String())
		default:
		}
		resp, err := http.Get("http://127.0.0.1:" + port + "/")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("target %s did not serve HTTP within 20s\n%s", target, logs.String())
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}
