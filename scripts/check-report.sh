#!/usr/bin/env bash
# Generates the quickstart capacity report into a temporary folder and checks it: index.md and index.html
# exist, every figure they link exists, every SVG parses, every PNG decodes, the timeline is valid Chrome
# trace JSON. Also exports a simulate timeline and checks it the same way.
#
# Usage: scripts/check-report.sh            (builds moesim in debug, like `cargo test`)
#        MOESIM=path/to/moesim scripts/check-report.sh
# Exit status: non-zero if anything is missing or malformed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ -z "${MOESIM:-}" ]]; then
    cargo build --quiet --bin moesim
    MOESIM="${CARGO_TARGET_DIR:-$root/target}/debug/moesim"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Fewer iterations and three cluster sizes keep this to seconds; the figures and tables are the same kinds.
"$MOESIM" --quiet report scenarios/quickstart.toml \
    --set workload.iterations=8 --capacity-nodes 1,2,4 --out "$tmp/report"
"$MOESIM" --quiet report --check "$tmp/report"

# The timeline goes into the report folder, so --check validates it as a trace.
"$MOESIM" --quiet simulate scenarios/quickstart.toml --set workload.iterations=4 \
    --iterations 0..4 --timeline "$tmp/report/quickstart/simulate.trace.json" > /dev/null
"$MOESIM" --quiet report --check "$tmp/report"

echo "check-report: quickstart report and timeline are complete and well-formed"
