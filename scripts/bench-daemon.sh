#!/usr/bin/env bash
# spectrumd with ten running VMs (make bench): one provider and nine
# clients, each a real QEMU (TCG) booting the test kernel with no initramfs
# and panic=0, so the guest stays up (halted after its boot messages) and
# costs little CPU. Prints the wall time of each `spectrumd start`, and the
# daemon's resident memory and open file descriptors with ten VMs running.
# Runs in a private network namespace; removes everything it made.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/bin/spectrumd
kernel=$(readlink -f .cache/kernel/vmlinux)
[ -x "$bin" ] && [ -f "$kernel" ] || { echo "bench-daemon: run make build kernel first" >&2; exit 1; }

work=$(mktemp -d "$PWD/.cache/bench-daemon.XXXXXX")
ns=spectrum-bench-$$
cleanup() {
  [ -n "${serve:-}" ] && kill -TERM "$serve" 2>/dev/null && wait "$serve" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"

data=$work/data
mkvm() { # name [provider]
  mkdir -p "$data/$1/blk" "$data/$1/providers/net"
  ln "$kernel" "$data/$1/vmlinux" 2>/dev/null || cp "$kernel" "$data/$1/vmlinux"
  truncate -s 1M "$data/$1/blk/root.img"
  echo "console=ttyS0 panic=0" >"$data/$1/cmdline"
  [ -z "${2:-}" ] || : >"$data/$1/providers/net/$2"
}
mkvm netvm
for i in $(seq 1 9); do mkvm "app$i" netvm; done

ip netns exec "$ns" "$bin" serve -data "$data" -state "$work/state" -run "$work/run" \
  -stop-timeout 1s -memory 128 2>"$work/serve.log" &
serve=$!
for _ in $(seq 100); do [ -S "$work/run/control.sock" ] && break; sleep 0.1; done

echo "start (CLI round trip: spectrumd's work, QEMU exec and QEMU's start-up until QMP answers):"
for vm in netvm $(seq -f 'app%g' 1 9); do
  t0=$(date +%s%N)
  "$bin" start -run "$work/run" "$vm"
  t1=$(date +%s%N)
  printf '  %-6s %6.1f ms\n' "$vm" "$(echo "($t1-$t0)/1000000" | bc -l)"
done
sleep 5 # let the guests print their boot messages through the daemon
running=$("$bin" list -run "$work/run" | grep -c ' running ')
pid=$serve
rss=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
hwm=$(awk '/^VmHWM/ {print $2}' /proc/$pid/status)
fds=$(ls /proc/$pid/fd | wc -l)
lines=$(grep -c 'source=serial' "$work/serve.log" || true)
printf 'running VMs: %s\nspectrumd RSS: %.1f MiB (peak %.1f MiB)\nspectrumd open fds: %s\nserial lines logged: %s\n' \
  "$running" "$(echo "$rss/1024" | bc -l)" "$(echo "$hwm/1024" | bc -l)" "$fds" "$lines"
kill -TERM "$serve"
wait "$serve" || { echo "spectrumd exited non-zero"; tail -20 "$work/serve.log"; exit 1; }
serve=
left=$(ip -n "$ns" -o link | grep -c 'sp[bcp]' || true)
echo "after SIGTERM: $left spectrum links left, $(pgrep -c -f "$work/data" || true) QEMU processes left"
