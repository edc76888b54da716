package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
	"unicode/utf8"
)

// Row is one figure of a section.
type Row struct {
	// Metric names what was measured.
	Metric string
	// Value is the measured value, formatted.
	Value string
	// Target is the target for it, empty when there is none.
	Target string
	// Met is "yes" or "NO" for a row with a target, empty otherwise.
	Met string
}

// Section is one benchmark's results: a heading, the rows, notes saying how
// the figures were computed, and the command that reproduces them.
type Section struct {
	// ID is a stable identifier ("sim", "rpm", …) used to replace the
	// section in BENCHMARKS.md on the next run.
	ID string
	// Title is the heading (without "## ").
	Title string
	// Command reproduces exactly this section's figures.
	Command string
	// Rows are the figures.
	Rows []Row
	// Notes explain formulas and setup, one paragraph each.
	Notes []string
}

// Check returns a Row for a value with a target: Met is "yes" when ok.
func Check(metric, value, target string, ok bool) Row {
	met := "NO"
	if ok {
		met = "yes"
	}
	return Row{Metric: metric, Value: value, Target: target, Met: met}
}

// Info returns a Row without a target.
func Info(metric, value string) Row { return Row{Metric: metric, Value: value} }

// Machine describes where the figures were measured.
type Machine struct {
	NProc     int
	CPU       string
	GoVersion string
	OS        string
}

// ThisMachine reports nproc (as `nproc` would: the CPUs this process may
// use), the CPU model from /proc/cpuinfo, and the Go version.
func ThisMachine() Machine {
	m := Machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, CPU: "unknown"}
	if out, err := exec.Command("nproc").Output(); err == nil {
		fmt.Sscan(string(out), &m.NProc)
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// String is the one-line description printed beside every section.
func (m Machine) String() string {
	return fmt.Sprintf("nproc=%d, CPU %s, %s, %s", m.NProc, m.CPU, m.GoVersion, m.OS)
}

// Text renders sections as a plain-text table for the terminal.
func Text(m Machine, sections []Section) string {
	var b strings.Builder
	fmt.Fprintf(&b, "machine: %s\n", m)
	for _, s := range sections {
		fmt.Fprintf(&b, "\n== %s ==\n   (reproduce: %s)\n", s.Title, s.Command)
		w := [4]int{len("metric"), len("value"), len("target"), len("met")}
		for _, r := range s.Rows {
			for i, c := range []string{r.Metric, r.Value, r.Target, r.Met} {
				w[i] = max(w[i], utf8.RuneCountInString(c))
			}
		}
		line := func(c [4]string) {
			for i := range c {
				b.WriteString(c[i])
				if i < 3 {
					b.WriteString(strings.Repeat(" ", w[i]-utf8.RuneCountInString(c[i])+2))
				}
			}
			b.WriteString("\n")
		}
		line([4]string{"metric", "value", "target", "met"})
		line([4]string{strings.Repeat("-", w[0]), strings.Repeat("-", w[1]), strings.Repeat("-", w[2]), strings.Repeat("-", w[3])})
		for _, r := range s.Rows {
			line([4]string{r.Metric, r.Value, r.Target, r.Met})
		}
	}
	return b.String()
}

func beginMarker(id string) string { return "<!-- gemqbench:" + id + " begin -->" }
func endMarker(id string) string   { return "<!-- gemqbench:" + id + " end -->" }

// Markdown renders one section as a BENCHMARKS.md block between markers that
// identify it, so a later run replaces exactly this block.
func Markdown(m Machine, at time.Time, s Section) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n## %s\n\n", beginMarker(s.ID), s.Title)
	fmt.Fprintf(&b, "Command: `%s` — machine: %s — measured %s.\n\n", s.Command, m, at.UTC().Format("2006-01-02 15:04 UTC"))
	b.WriteString("| metric | value | target | met |\n| --- | --- | --- | --- |\n")
	esc := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	for _, r := range s.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", esc(r.Metric), esc(r.Value), esc(r.Target), esc(r.Met))
	}
	for _, n := range s.Notes {
		fmt.Fprintf(&b, "\n%s\n", n)
	}
	fmt.Fprintf(&b, "%s\n", endMarker(s.ID))
	return b.String()
}

// UpdateMarkdown returns doc with each section's block replaced, or appended
// at the end when doc has none for it yet. Everything outside gemqbench's
// markers (e.g. the "## Limiter" section, owned by the limiter benchmark) is
// kept byte for byte, and new blocks always go below it.
func UpdateMarkdown(doc string, m Machine, at time.Time, sections []Section) string {
	if doc == "" {
		doc = "# gemq benchmarks\n"
	}
	for _, s := range sections {
		block := Markdown(m, at, s)
		bi := strings.Index(doc, beginMarker(s.ID))
		ei := strings.Index(doc, endMarker(s.ID))
		if bi < 0 && ei >= 0 {
			// The begin marker was lost (e.g. by an edit of the section
			// above): the block starts at its heading.
			bi = strings.LastIndex(doc[:ei], "## "+s.Title+"\n")
		}
		if bi >= 0 && ei > bi {
			ei += len(endMarker(s.ID))
			if ei < len(doc) && doc[ei] == '\n' {
				ei++
			}
			doc = doc[:bi] + block + doc[ei:]
			continue
		}
		if !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		doc += "\n" + block
	}
	return doc
}

// WriteMarkdownFile applies UpdateMarkdown to the file at path (created when
// missing).
func WriteMarkdownFile(path string, m Machine, at time.Time, sections []Section) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	doc := UpdateMarkdown(string(old), m, at, sections)
	if bytes.Equal(old, []byte(doc)) {
		return nil
	}
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
