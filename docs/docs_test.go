// Package docs holds the tests of the project's prose: the README stays a
// guide (short, showing the two commands), and every relative link in the
// README and in docs/ leads to a file that exists, so text moved between
// them is not left pointing at nothing.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// linkRE is a Markdown link's target: [text](target).
var linkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)

func TestREADMEIsAGuide(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if n := strings.Count(s, "\n"); n > 300 {
		t.Errorf("README.md is %d lines; a guide a newcomer reads in five minutes is at most 300: reference material goes into docs/man or docs/", n)
	}
	for _, cmd := range []string{"make run", "make test"} {
		if !strings.Contains(s, "\n"+cmd+" ") {
			t.Errorf("README.md does not show %q as a command of its own", cmd)
		}
	}
}

func TestLinksResolve(t *testing.T) {
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	man, err := filepath.Glob("man/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(append(files, man...), "../README.md")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range linkRE.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			if _, err := os.Stat(filepath.Join(filepath.Dir(f), target)); err != nil {
				t.Errorf("%s links to %s, which does not exist", f, m[1])
			}
		}
	}
}
