#!/usr/bin/env bash
# Runs `moesim tui scenarios/quickstart.toml` in a real terminal (tmux), drives it with send-keys and
# checks the captured pane: the Compare view of the quickstart appears; after raising ep16-replicated's
# slots per GPU in the Knobs view, the re-simulated numbers differ from the previous run; `s` saves
# plan.json; `q` quits and the program exits.
#
# Usage: scripts/tui-smoke.sh                 (builds moesim in release, as CI does)
#        MOESIM=path/to/moesim scripts/tui-smoke.sh
# Installs tmux from the Debian packages when it is missing (CI runs as root).
# Exit status: non-zero, with the last captured pane, if any check fails.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v tmux > /dev/null; then
    apt-get update -qq && apt-get install -y -qq tmux > /dev/null
fi
if [[ -z "${MOESIM:-}" ]]; then
    cargo build --quiet --release --bin moesim
    MOESIM="${CARGO_TARGET_DIR:-$root/target}/release/moesim"
fi

tmp="$(mktemp -d)"
session="moesim-tui-smoke"
# A private tmux server, so the script neither sees nor disturbs anyone's sessions.
socket="moesim-tui-smoke-$$"
tmux() { command tmux -L "$socket" "$@"; }
trap 'tmux kill-server 2> /dev/null || true; rm -rf "$tmp"' EXIT

pane() { tmux capture-pane -p -t "$session"; }
fail() {
    echo "tui-smoke: $1" >&2
    echo "---- pane ----" >&2
    cat "$tmp/pane" >&2 || true
    exit 1
}
# wait_for PATTERN [SECONDS]: polls the pane until a line matches the extended regex PATTERN.
wait_for() {
    local deadline=$((SECONDS + ${2:-60}))
    while ((SECONDS < deadline)); do
        pane > "$tmp/pane" 2> /dev/null || true
        if grep -Eq -- "$1" "$tmp/pane"; then
            return 0
        fi
        sleep 0.2
    done
    fail "timed out waiting for /$1/"
}

tmux -u new-session -d -s "$session" -x 120 -y 40 \
    "'$MOESIM' tui scenarios/quickstart.toml --out '$tmp/out'; echo \$? > '$tmp/exit'; sleep 30"

# 1. The Compare view of the quickstart, with all four strategies and the chosen one starred.
wait_for '1 Compare.*6 Knobs'
wait_for 'ep16-replicated +[0-9]'
for s in ep16 ep8-intra-node ep16-cf1.25 ep16-replicated; do
    grep -q -- " $s " "$tmp/pane" || fail "strategy $s missing from the Compare view"
done
grep -q '★' "$tmp/pane" || fail "no strategy is marked as chosen"
before=$(sed -nE 's/.* ep16-replicated +[0-9.]+ +[0-9.]+ +([0-9]+) .*/\1/p' "$tmp/pane" | head -1)
[[ -n "$before" ]] || fail "no tokens/s for ep16-replicated"
echo "tui-smoke: Compare view shows the quickstart; ep16-replicated at $before tokens/s"

# 2. Knobs: select ep16-replicated (fourth strategy), its slots per GPU (after EP size, TP, ETP and PP), one
#    more slot.
tmux send-keys -t "$session" 6
wait_for 'knobs of ep16 '
tmux send-keys -t "$session" Right Right Right
wait_for 'knobs of ep16-replicated'
tmux send-keys -t "$session" Down Down Down Down
tmux send-keys -t "$session" +
wait_for 'strategy\.3\.slots_per_gpu=9' 120
wait_for '│ep16-replicated +[0-9]+ +[0-9]+ +[-+][0-9.]+%' 120
row=$(grep -E '│ep16-replicated ' "$tmp/pane")
was=$(awk '{print $2}' <<< "${row#│}")
now=$(awk '{print $3}' <<< "${row#│}")
[[ "$was" == "$before" ]] || fail "the previous run's tokens/s ($was) is not the Compare view's ($before)"
[[ "$was" != "$now" ]] || fail "tokens/s did not change after the knob edit ($was → $now)"
echo "tui-smoke: slots_per_gpu 8 → 9 re-simulated: ep16-replicated $was → $now tokens/s"

# 3. Back in Compare the new figure and its change show; `s` saves the plan.
tmux send-keys -t "$session" 1
wait_for "ep16-replicated +[0-9.]+ +[0-9.]+ +$now +[-+][0-9.]+%"
tmux send-keys -t "$session" s
wait_for 'plan saved to'
[[ -s "$tmp/out/plan.json" ]] || fail "plan.json was not written"

# 4. `q` quits with status 0 and leaves the alternate screen (the pane no longer shows the tabs).
# exited_cleanly KEY: sends KEY, waits for the exit status, checks it is 0 and the UI is gone.
exited_cleanly() {
    tmux send-keys -t "$session" "$1"
    for _ in $(seq 1 50); do
        [[ -s "$tmp/exit" ]] && break
        sleep 0.2
    done
    pane > "$tmp/pane" 2> /dev/null || true
    [[ "$(cat "$tmp/exit" 2> /dev/null)" == 0 ]] || fail "moesim tui did not exit with status 0 after $1"
    ! grep -q '1 Compare' "$tmp/pane" || fail "the terminal was not restored after $1"
    rm -f "$tmp/exit"
    tmux kill-session -t "$session"
}
exited_cleanly q

# 5. Without a file: the picker lists scenarios/ with quickstart.toml selected; Enter opens it; Ctrl-C quits.
tmux -u new-session -d -s "$session" -x 120 -y 40 \
    "'$MOESIM' tui --out '$tmp/out'; echo \$? > '$tmp/exit'; sleep 30"
wait_for 'open a scenario'
grep -q 'quickstart.toml' "$tmp/pane" || fail "the picker does not list quickstart.toml"
tmux send-keys -t "$session" Enter
wait_for 'quickstart — olmoe'
exited_cleanly C-c
echo "tui-smoke: ok"
