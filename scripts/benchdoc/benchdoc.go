// Binary benchdoc writes docs/BENCHMARKS.md from the output of `make bench`:
// it executes a text/template (docs/BENCHMARKS.tmpl) whose prose is written
// by hand and whose figures, machine description, date and commit come from
// the benchmark runs themselves, so the document never holds a number that
// was copied by hand.
//
//	benchdoc -results DIR -template docs/BENCHMARKS.tmpl -o docs/BENCHMARKS.md
//
// DIR holds one file per group, GROUP.txt: the output of `go test -bench`
// (or of a script, shown as it is), and machine.txt, KEY=VALUE lines
// describing the run (scripts/bench.sh writes them).
//
// Template functions:
//
//	{{machine}}                          a table of machine.txt
//	{{table "GROUP" "REGEXP"}}           the group's benchmarks whose name matches, one row each
//	{{value "GROUP" "NAME" "UNIT"}}      one figure (NAME without "Benchmark" and the -N suffix)
//	{{target "GROUP" "NAME" "UNIT" "<=" 5}}  "met (v UNIT, target ≤ 5)" or "**missed** (...)"
//	{{targetRatio "GROUP" "NAME1" "NAME2" "UNIT" ">=" 10}}  the same for NAME1's figure over NAME2's
//	{{ratio "GROUP" "NAME1" "NAME2" "UNIT"}} NAME1's figure over NAME2's
//	{{raw "GROUP"}}                      the group's lines that are not benchmark results, fenced
//
// A figure the template asks for that the results lack is an error: a
// benchmark that stopped reporting fails `make bench` instead of leaving
// a stale or empty cell.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/template"
)

func main() {
	results := flag.String("results", ".cache/bench", "`DIR` of GROUP.txt files and machine.txt")
	tmpl := flag.String("template", "docs/BENCHMARKS.tmpl", "the document's template")
	out := flag.String("o", "docs/BENCHMARKS.md", "where to write the document")
	flag.Parse()
	if err := run(*results, *tmpl, *out); err != nil {
		fmt.Fprintln(os.Stderr, "benchdoc:", err)
		os.Exit(1)
	}
}

func run(dir, tmplPath, out string) error {
	r, err := load(dir)
	if err != nil {
		return err
	}
	src, err := os.ReadFile(tmplPath)
	if err != nil {
		return err
	}
	t, err := template.New(filepath.Base(tmplPath)).Option("missingkey=error").Funcs(r.funcs()).Parse(string(src))
	if err != nil {
		return err
	}
	var b strings.Builder
	if err := t.Execute(&b, nil); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// result is one benchmark line: its name and figures by unit, in order.
type result struct {
	name  string
	units []string
	vals  map[string]float64
}

type results struct {
	machine [][2]string
	groups  map[string][]result
	raw     map[string][]string
}

var suffix = regexp.MustCompile(`-\d+$`)

// parseLine reads "BenchmarkX/sub-2  20  123 ns/op  4.5 median-ms ...".
func parseLine(l string) (result, bool) {
	f := strings.Fields(l)
	if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
		return result{}, false
	}
	if _, err := strconv.Atoi(f[1]); err != nil {
		return result{}, false
	}
	r := result{name: suffix.ReplaceAllString(strings.TrimPrefix(f[0], "Benchmark"), ""), vals: map[string]float64{}}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return result{}, false
		}
		r.units = append(r.units, f[i+1])
		r.vals[f[i+1]] = v
	}
	return r, true
}

func load(dir string) (*results, error) {
	r := &results{groups: map[string][]result{}, raw: map[string][]string{}}
	files, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil {
		return nil, err
	}
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		group := strings.TrimSuffix(filepath.Base(p), ".txt")
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			l := sc.Text()
			if group == "machine" {
				if k, v, ok := strings.Cut(l, "="); ok {
					r.machine = append(r.machine, [2]string{k, v})
				}
				continue
			}
			if res, ok := parseLine(l); ok {
				r.groups[group] = append(r.groups[group], res)
			} else {
				r.raw[group] = append(r.raw[group], l)
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	return r, nil
}

func (r *results) find(group, name string) (result, error) {
	rs, ok := r.groups[group]
	if !ok {
		return result{}, fmt.Errorf("no benchmark results for group %q", group)
	}
	for _, x := range rs {
		if x.name == name {
			return x, nil
		}
	}
	return result{}, fmt.Errorf("group %q has no benchmark %q", group, name)
}

func (r *results) value(group, name, unit string) (float64, error) {
	x, err := r.find(group, name)
	if err != nil {
		return 0, err
	}
	v, ok := x.vals[unit]
	if !ok {
		return 0, fmt.Errorf("benchmark %s (%s) reports no %q", name, group, unit)
	}
	return v, nil
}

// format prints v with three significant digits at most, as a person would,
// and a comma between thousands.
func format(v float64) string {
	switch a := math.Abs(v); {
	case a < 1000 && v == math.Trunc(v):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 1000:
		s := strconv.FormatFloat(math.Abs(v), 'f', 0, 64)
		for i := len(s) - 3; i > 0; i -= 3 {
			s = s[:i] + "," + s[i:]
		}
		if v < 0 {
			s = "-" + s
		}
		return s
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func (r *results) funcs() template.FuncMap {
	return template.FuncMap{
		"machine": func() string {
			var b strings.Builder
			b.WriteString("| | |\n| --- | --- |\n")
			for _, kv := range r.machine {
				fmt.Fprintf(&b, "| %s | %s |\n", kv[0], kv[1])
			}
			return b.String()
		},
		"table": func(group, match string) (string, error) {
			re, err := regexp.Compile(match)
			if err != nil {
				return "", err
			}
			var rows []result
			var units []string
			seen := map[string]bool{}
			for _, x := range r.groups[group] {
				if !re.MatchString(x.name) {
					continue
				}
				rows = append(rows, x)
				for _, u := range x.units {
					if !seen[u] {
						seen[u] = true
						units = append(units, u)
					}
				}
			}
			if len(rows) == 0 {
				return "", fmt.Errorf("group %q has no benchmark matching %q", group, match)
			}
			var b strings.Builder
			b.WriteString("| benchmark |")
			for _, u := range units {
				_, du := display(0, u)
				b.WriteString(" " + du + " |")
			}
			b.WriteString("\n| --- |" + strings.Repeat(" ---: |", len(units)) + "\n")
			for _, x := range rows {
				b.WriteString("| " + x.name + " |")
				for _, u := range units {
					if v, ok := x.vals[u]; ok {
						v, _ = display(v, u)
						b.WriteString(" " + format(v) + " |")
					} else {
						b.WriteString(" |")
					}
				}
				b.WriteString("\n")
			}
			return b.String(), nil
		},
		"value": func(group, name, unit string) (string, error) {
			v, err := r.value(group, name, unit)
			v, _ = display(v, unit)
			return format(v), err
		},
		"ratio": func(group, a, b, unit string) (string, error) {
			va, err := r.value(group, a, unit)
			if err != nil {
				return "", err
			}
			vb, err := r.value(group, b, unit)
			if err != nil {
				return "", err
			}
			if vb == 0 {
				return "", fmt.Errorf("ratio %s/%s: %s of %s is 0", a, b, unit, b)
			}
			return format(va/vb) + "×", nil
		},
		"target": func(group, name, unit, op string, limit float64) (string, error) {
			v, err := r.value(group, name, unit)
			if err != nil {
				return "", err
			}
			return verdict(v, unit, op, limit)
		},
		"targetRatio": func(group, a, b, unit, op string, limit float64) (string, error) {
			va, err := r.value(group, a, unit)
			if err != nil {
				return "", err
			}
			vb, err := r.value(group, b, unit)
			if err != nil {
				return "", err
			}
			if vb == 0 {
				return "", fmt.Errorf("ratio %s/%s: %s of %s is 0", a, b, unit, b)
			}
			return verdict(va/vb, "×", op, limit)
		},
		"raw": func(group string) (string, error) {
			lines, ok := r.raw[group]
			if !ok {
				return "", fmt.Errorf("no output for group %q", group)
			}
			return "```\n" + strings.TrimSpace(strings.Join(lines, "\n")) + "\n```\n", nil
		},
	}
}

// verdict says whether v met its target (op is "<=" or ">="), with both,
// shown in v's display unit (the limit is in the unit reported).
func verdict(v float64, unit, op string, limit float64) (string, error) {
	v, du := display(v, unit)
	limit, _ = display(limit, unit)
	unit = du
	var met bool
	sym := op
	switch op {
	case "<=":
		met, sym = v <= limit, "≤"
	case ">=":
		met, sym = v >= limit, "≥"
	default:
		return "", fmt.Errorf("target: operator %q, want <= or >=", op)
	}
	sep := " "
	if unit == "×" {
		sep = ""
	}
	s := fmt.Sprintf("%s%s%s, target %s %s", format(v), sep, unit, sym, format(limit))
	if met {
		return "met (" + s + ")", nil
	}
	return "**missed** (" + s + ")", nil
}

// display is how a figure is shown: Go's ns/op in ms/op, whose numbers a
// person reads at a glance; every other unit as reported.
func display(v float64, unit string) (float64, string) {
	if unit == "ns/op" {
		return v / 1e6, "ms/op"
	}
	return v, unit
}
