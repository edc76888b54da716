package main

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/hashicorp/terraform-plugin-sdk/v2/diag"
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
)

// readArchive implements the archive_file data source the way hashicorp/archive
// 2.7.1 does for type "zip": `source` blocks (or source_content) are written in
// file-name order with a zero modification time, source_file as one entry,
// source_dir walked with `excludes` matched as exact relative paths; the zip is
// written to output_path and its hashes and size reported.
func readArchive(_ context.Context, d *schema.ResourceData, _ any) diag.Diagnostics {
	if t := d.Get("type").(string); t != "zip" {
		return diag.Errorf("archive_file: only type \"zip\" is served by the stand-in, got %q", t)
	}
	out := d.Get("output_path").(string)
	if out == "" {
		return diag.Errorf("archive_file: output_path is required")
	}
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	var err error
	switch {
	case d.Get("source").(*schema.Set).Len() > 0:
		content := map[string][]byte{}
		for _, s := range d.Get("source").(*schema.Set).List() {
			m := s.(map[string]any)
			content[m["filename"].(string)] = []byte(m["content"].(string))
		}
		err = writeSorted(w, content)
	case d.Get("source_content_filename").(string) != "":
		err = writeSorted(w, map[string][]byte{d.Get("source_content_filename").(string): []byte(d.Get("source_content").(string))})
	case d.Get("source_file").(string) != "":
		err = writeFile(w, d.Get("source_file").(string), filepath.Base(d.Get("source_file").(string)))
	case d.Get("source_dir").(string) != "":
		excludes := map[string]bool{}
		for _, e := range d.Get("excludes").(*schema.Set).List() {
			excludes[filepath.FromSlash(e.(string))] = true
		}
		err = writeDir(w, d.Get("source_dir").(string), excludes)
	default:
		return diag.Errorf("archive_file: one of source, source_content_filename, source_file, source_dir must be specified")
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		return diag.Errorf("archive_file: %v", err)
	}
	data := buf.Bytes()
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return diag.Errorf("archive_file: %v", err)
	}
	if err := os.WriteFile(out, data, 0o644); err != nil {
		return diag.Errorf("archive_file: %v", err)
	}
	s1 := sha1.Sum(data)
	s256 := sha256.Sum256(data)
	s512 := sha512.Sum512(data)
	m5 := md5.Sum(data)
	values := map[string]any{
		"output_sha":          hex.EncodeToString(s1[:]),
		"output_sha256":       hex.EncodeToString(s256[:]),
		"output_base64sha256": base64.StdEncoding.EncodeToString(s256[:]),
		"output_sha512":       hex.EncodeToString(s512[:]),
		"output_base64sha512": base64.StdEncoding.EncodeToString(s512[:]),
		"output_md5":          hex.EncodeToString(m5[:]),
		"output_size":         float64(len(data)),
	}
	for k, v := range values {
		if err := d.Set(k, v); err != nil {
			return diag.Errorf("archive_file: set %s: %v", k, err)
		}
	}
	d.SetId(hex.EncodeToString(s1[:]))
	return nil
}

func writeSorted(w *zip.Writer, content map[string][]byte) error {
	names := make([]string, 0, len(content))
	for n := range content {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f, err := w.Create(filepath.ToSlash(n))
		if err != nil {
			return fmt.Errorf("zip create %s: %w", n, err)
		}
		if _, err := f.Write(content[n]); err != nil {
			return fmt.Errorf("zip write %s: %w", n, err)
		}
	}
	return nil
}

func writeFile(w *zip.Writer, path, name string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return writeSorted(w, map[string][]byte{name: data})
}

func writeDir(w *zip.Writer, dir string, excludes map[string]bool) error {
	return filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return fmt.Errorf("walk: %w", err)
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return fmt.Errorf("rel: %w", err)
		}
		if info.IsDir() {
			if excludes[rel] {
				return filepath.SkipDir
			}
			return nil
		}
		if excludes[rel] {
			return nil
		}
		return writeFile(w, path, rel)
	})
}
