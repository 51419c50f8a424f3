#!/usr/bin/env bash
# Checks what deploy/monitoring ships against the halo it describes: the alerting rules pass
# `promtool check rules` and their unit tests (each alert with a case that fires and one that does
# not); the Grafana dashboard parses, its expressions parse as PromQL, and every metric the rules
# and the dashboard name is one that a live halo describes in its /metrics; and that /metrics
# passes `promtool check metrics`. The live halo (target/debug/halo, or $HALO_BINARY) serves on
# loopback only, from a temporary directory, and is stopped by its pid. No root needed.
# Exit 0 when all hold; 77 (after a `SKIP monitoring_test: ...` line) when a tool is missing
# outside CI; 1 otherwise. The last line says which.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/loopback-config.sh
. scripts/loopback-config.sh

dir=deploy/monitoring
rules=$dir/halo.rules.yml
tests=$dir/halo.rules.test.yml
dashboard=$dir/halo-dashboard.json
halo=${HALO_BINARY:-target/debug/halo}
frontend=127.0.0.1:19481
status=127.0.0.1:19482

fail() {
  echo "monitoring: FAIL: $*"
  exit 1
}

for tool in promtool jq curl; do
  if ! command -v "$tool" >/dev/null; then
    [ "${CI:-}" = "true" ] && fail "$tool is not installed (scripts/setup.sh installs it)"
    echo "SKIP monitoring_test: $tool is not installed (scripts/setup.sh installs it)"
    exit 77
  fi
done
[ -x "$halo" ] || fail "no $halo: build it first (cargo build -p halo)"

work=$(mktemp -d)
pid=
stop() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop EXIT

# The rules: well formed, each alert with its `for`, severity and both annotations, each tested.
promtool check rules "$rules" >"$work/check-rules.log" 2>&1 || { cat "$work/check-rules.log"; fail "promtool check rules $rules"; }
promtool test rules "$tests" >"$work/test-rules.log" 2>&1 || { cat "$work/test-rules.log"; fail "promtool test rules $tests"; }
alerts=$(grep -cE '^ *- alert: ' "$rules")
[ "$alerts" -gt 0 ] || fail "no alert in $rules"
for key in 'for' 'severity' 'summary' 'description'; do
  [ "$(grep -cE "^ *$key: " "$rules")" -eq "$alerts" ] || fail "$rules: not every one of its $alerts alerts has a $key"
done
sed -n 's/^ *- alert: \([A-Za-z0-9_]*\)$/\1/p' "$rules" >"$work/alerts"
while read -r alert; do
  # The line after each `alertname: X` of the tests: `exp_alerts: []` (a case where X does not
  # fire) or `exp_alerts:` followed by the alerts expected (a case where it fires).
  cases=$(awk -v a="$alert" '$1 == "alertname:" && $2 == a { getline; print ($2 == "[]" ? "quiet" : "fires") }' "$tests" | sort -u | paste -sd ' ')
  [ "$cases" = "fires quiet" ] || fail "$tests: $alert needs a case where it fires and one where it does not (has: ${cases:-none})"
done <"$work/alerts"

# The dashboard: JSON with a datasource variable that every panel and target uses, and
# expressions that parse (checked by promtool as recording rules, its variables given values).
jq -e '.schemaVersion >= 36 and (.templating.list | any(.type == "datasource" and .query == "prometheus"))' "$dashboard" >/dev/null ||
  fail "$dashboard: not JSON, an old schemaVersion, or no prometheus datasource variable"
panels=$(jq '[.panels[] | select(.type != "row")] | length' "$dashboard")
jq -e '[.panels[] | select(.type != "row")] | all((.targets | length > 0)
    and .datasource.uid == "${datasource}" and all(.targets[]; .datasource.uid == "${datasource}" and (.expr | length > 0)))' \
  "$dashboard" >/dev/null || fail "$dashboard: a panel without targets, or not on the datasource variable"
jq -e '[.panels[].id] | length == (unique | length)' "$dashboard" >/dev/null || fail "$dashboard: two panels share an id"
exprs=$(jq '[.panels[].targets[]?.expr] | length' "$dashboard")
{
  echo 'groups:'
  echo '  - name: dashboard'
  echo '    rules:'
  jq -r '[.panels[].targets[]?.expr] | to_entries[]
    | "      - record: halo_dashboard:expr_\(.key)\n        expr: \(.value
        | gsub("\\$__rate_interval"; "5m") | gsub("\\$(job|instance)"; ".*") | @json)"' "$dashboard"
} >"$work/dashboard.rules.yml"
promtool check rules "$work/dashboard.rules.yml" >"$work/check-dashboard.log" 2>&1 ||
  { cat "$work/check-dashboard.log"; fail "$dashboard: an expression does not parse"; }

# A live halo: a frontend whose one server refuses, a status endpoint, both on loopback. A reload
# (SIGHUP) makes it describe the last reload with a sample.
loopback_config "$status" "$frontend" >"$work/halo.toml"
"$halo" run -c "$work/halo.toml" --pid-file "$work/halo.pid" </dev/null >"$work/halo.log" 2>&1 &
pid=$!
scrape() { curl -fsS --max-time 2 "http://$status/metrics" >"$work/metrics" 2>/dev/null; }
for _ in $(seq 100); do
  kill -0 "$pid" 2>/dev/null || { cat "$work/halo.log"; fail "halo run exited"; }
  scrape && break
  sleep 0.1
done
scrape || { cat "$work/halo.log"; fail "no /metrics on $status"; }
kill -HUP "$pid"
for _ in $(seq 100); do
  scrape && grep -qx 'halo_last_reload_success 1' "$work/metrics" && break
  sleep 0.1
done
grep -qx 'halo_last_reload_success 1' "$work/metrics" || { cat "$work/halo.log"; fail "no halo_last_reload_success 1 after a reload"; }
grep -qE '^halo_last_reload_timestamp_seconds [0-9.e+]+$' "$work/metrics" || fail "no halo_last_reload_timestamp_seconds after a reload"
problems=$(promtool check metrics <"$work/metrics" 2>&1) || true
[ -z "$problems" ] || fail "promtool check metrics: $problems"

# Every metric that the rules and the dashboard (its panels and its variables) name is one halo
# describes; a histogram's series are named after their family.
sed -n 's/^# HELP \(halo_[a-z_]*\) .*/\1/p' "$work/metrics" | sort -u >"$work/exported"
families=$(wc -l <"$work/exported")
{
  grep -oE 'halo_[a-z_]+' "$rules"
  jq -r '.panels[].targets[]?.expr, (.templating.list[].query | if type == "object" then .query else . end)' "$dashboard" |
    grep -oE 'halo_[a-z_]+'
} | sed -E 's/_(bucket|sum|count)$//' | sort -u >"$work/used"
unknown=$(comm -23 "$work/used" "$work/exported" | paste -sd ' ')
[ -z "$unknown" ] || fail "named by the rules or the dashboard, not exported by halo: $unknown"

echo "monitoring: ok ($alerts alerts checked and unit-tested; dashboard: $panels panels, $exprs expressions that parse; $(wc -l <"$work/used") metric names used, all among the $families families of a live /metrics, which promtool check metrics passes)"
