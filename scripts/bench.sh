#!/usr/bin/env bash
# make bench: runs every benchmark group, keeps each group's output in
# .cache/bench/GROUP.txt with a description of the machine in
# .cache/bench/machine.txt, and writes docs/BENCHMARKS.md from
# docs/BENCHMARKS.tmpl (scripts/benchdoc), so the document's figures, date,
# commit and machine are those of this run.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
out=.cache/bench
rm -rf "$out" && mkdir -p "$out"
load0=$(cut -d' ' -f1-3 /proc/loadavg)

run() { # group command...
  local group=$1; shift
  echo "bench: $group: $*"
  "$@" 2>&1 | tee -a "$out/$group.txt"
}
# Benchmarks that exec whole processes or boot VMs run a fixed number of
# times (their own docs say how many); the others the default second each.
# One group a package, named after its path (host-config, host-qmp, ...), so
# the same benchmark name in two packages cannot be confused.
for pkg in $("$GO" list ./host/... ./internal/...); do
  group=$(echo "${pkg#spectrum-os.org/netcfg/}" | tr / -)
  grep -qs '^func Benchmark' "$("$GO" list -f '{{.Dir}}' "$pkg")"/*_test.go || continue
  run "$group" "$GO" test -run='^$' -bench=. -benchmem -count=1 "$pkg"
done
run guest "$GO" test -run='^$' -bench=. -benchtime=20x -count=1 ./guest/...
run vmtest "$GO" test -run='^$' -bench=Boot -benchtime=5x -count=1 -timeout 60m ./vmtest/
run vmtest "$GO" test -run='^$' -bench=NAT -benchtime=1x -count=1 -timeout 60m ./vmtest/
run daemon ./scripts/bench-daemon.sh

{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit=$(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "CPUs=$(nproc) ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | sort -u | head -n1))"
  echo "virtualisation=$(grep -qwE 'vmx|svm' /proc/cpuinfo && echo 'vmx/svm: KVM possible' || echo 'no vmx/svm: QEMU runs under TCG')"
  echo "memory=$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "OS=$(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "Go=$("$GO" env GOVERSION)"
  echo "QEMU=$(qemu-system-x86_64 --version | head -n1)"
  echo "load average (1, 5, 15 min) before=$load0"
  echo "load average (1, 5, 15 min) after=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/machine.txt"
"$GO" run ./scripts/benchdoc -results "$out" -template docs/BENCHMARKS.tmpl -o docs/BENCHMARKS.md
echo "bench: wrote docs/BENCHMARKS.md"
