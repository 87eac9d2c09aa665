#!/usr/bin/env bash
# A screenshot of the live viewer on the STDP model, for README.md: runs `fum view` under Xvfb
# and grabs the screen with imagemagick. Needs `xvfb xauth libgl1-mesa-dri imagemagick`.
# Usage: scripts/screenshots.sh [output folder, default docs/images]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/images}
mkdir -p "$out"
cargo build --release --bin fum
display=:${SCREENSHOT_DISPLAY:-91}
Xvfb "$display" -screen 0 1400x860x24 -nolisten tcp &
xvfb=$!
run=$(mktemp -d)
trap 'kill $xvfb 2>/dev/null; rm -rf "$run"' EXIT
sleep 1
# Trace three excitatory neurons; the run is long enough to still be going at the last shot.
DISPLAY=$display ./target/release/fum view assets/models/stdp_balanced.toml --duration 60s --threads 1 \
  --watch 7,1500,3300 --out "$run" --exit-after 12 &
viewer=$!
sleep 10
DISPLAY=$display import -window root "$out/viewer.png"
wait $viewer
echo "screenshot: $out/viewer.png"
