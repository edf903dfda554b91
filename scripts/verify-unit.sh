#!/usr/bin/env bash
# Checks dist/spectrumd.service with systemd-analyze verify. verify insists
# that ExecStart's binary exists, so the unit is checked as a copy whose
# ExecStart names the freshly built bin/spectrumd.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/local/bin/spectrumd|$PWD/bin/spectrumd|" dist/spectrumd.service >"$tmp/spectrumd.service"
out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$tmp/spectrumd.service" 2>&1) || { echo "$out"; exit 1; }
# verify exits 0 on some warnings about the unit itself; treat those as failures.
if grep -F "spectrumd.service" <<<"$out"; then exit 1; fi
echo "systemd-analyze verify: dist/spectrumd.service ok"
