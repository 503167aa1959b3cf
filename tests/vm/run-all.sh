#!/usr/bin/env bash
# Runs every real-VM test (provisioning first, cached) and prints one summary line.
set -uo pipefail
here=$(dirname "$0")
"$here/provision.sh" || exit 1
passed=0; failed=0; failures=()
for t in "$here"/test-*.sh; do
  name=$(basename "$t" .sh)
  start=$SECONDS
  if "$t"; then
    passed=$((passed + 1)); echo "vm: PASS $name ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "vm: FAIL $name ($((SECONDS - start)) s)"
  fi
done
echo "vm-tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || { echo "failed: ${failures[*]}" >&2; exit 1; }
