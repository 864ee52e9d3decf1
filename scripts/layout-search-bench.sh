#!/usr/bin/env bash
# Times `moesim plan --search` over the parallel layouts of DeepSeek-V3 on 2,048 H800s (issue #15: ≥ 200
# layouts in ≤ 5 minutes on a 2-core machine) and prints the layouts expanded, simulated and pruned.
# A benchmark, not a test. Usage: scripts/layout-search-bench.sh [SCENARIO] [ITERATIONS]
#   (default scenarios/dsv3-2048.toml, 1 iteration per layout; needs a release build:
#   cargo build --release --bin moesim). Extra arguments after those two go to moesim plan.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/moesim
scenario=${1:-scenarios/dsv3-2048.toml}
iterations=${2:-1}
shift $(($# < 2 ? $# : 2))
[[ -x $bin ]] || { echo "error: $bin missing: run cargo build --release --bin moesim first" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
t0=$(date +%s.%N)
set +e
"$bin" plan --search --json -q --no-timing --out "$out" --set "workload.iterations=$iterations" "$@" \
    "$scenario" >"$out/search.json"
rc=$?
set -e
t1=$(date +%s.%N)
python3 - "$out/search.json" "$t0" "$t1" "$rc" "$(nproc)" "$scenario" <<'EOF'
import json, sys
path, t0, t1, rc, cores, scenario = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
d = json.load(open(path))
ls = d.get("layout_search") or {}
print(f"scenario: {scenario}; {cores} cores; exit status {rc}")
print(f"wall: {t1 - t0:.1f} s")
print(f"candidates simulated: {len(d['results'])}")
if ls:
    print(f"layouts: {ls['expanded']} expanded, {ls['simulated']} simulated, "
          f"{ls['pruned_memory']} pruned by memory bound, {ls['pruned_dominated']} dominated, "
          f"{ls['pruned_bound']} pruned from below ({ls['bounded']} bounded, {ls['estimated']} estimated), "
          f"{ls['pruned_too_large']} too large")
print(f"chosen: {d.get('chosen')}")
best = sorted((r for r in d["results"] if not r["oom"]), key=lambda r: -r["tokens_per_s"])[:5]
for r in best:
    print(f"  {r['strategy']:<42} {r['step_time_ms']['mean']:10.1f} ms {r['tokens_per_s']:12.0f} tok/s {r['memory_peak_gib']:6.1f} GiB")
EOF
