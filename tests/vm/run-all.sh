#!/usr/bin/env bash
# Runs the real-VM tests (provisioning first, cached) and prints one summary line:
#   vm-tests: N passed, M failed
# (after a line with the total time).
#   tests/vm/run-all.sh              every tests/vm/test-*.sh, test-boot first
#   tests/vm/run-all.sh boot kmod    only test-boot.sh and test-kmod.sh
# NETGPU_VM_TESTS="boot kmod" does the same as arguments. Exit status 1 when any failed.
set -uo pipefail
here=$(dirname "$0")
t0=$SECONDS
"$here/provision.sh" > /dev/null || { echo "vm-tests: provisioning failed (see above)" >&2; exit 1; }
names=("$@")
if [ ${#names[@]} -eq 0 ] && [ -n "${NETGPU_VM_TESTS:-}" ]; then
  read -r -a names <<< "$NETGPU_VM_TESTS"
fi
tests=()
if [ ${#names[@]} -eq 0 ]; then
  # test-boot checks the environment itself: run it first.
  tests=("$here/test-boot.sh")
  for t in "$here"/test-*.sh; do
    [ "$t" = "$here/test-boot.sh" ] || tests+=("$t")
  done
else
  for n in "${names[@]}"; do
    n=${n#test-}; n=${n%.sh}
    [ -x "$here/test-$n.sh" ] || { echo "vm-tests: no test $here/test-$n.sh" >&2; exit 2; }
    tests+=("$here/test-$n.sh")
  done
fi
passed=0; failed=0; failures=()
for t in "${tests[@]}"; do
  name=$(basename "$t" .sh)
  start=$SECONDS
  if "$t"; then
    passed=$((passed + 1)); echo "vm: PASS $name ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "vm: FAIL $name ($((SECONDS - start)) s)"
  fi
done
echo "vm: total $((SECONDS - t0)) s"
echo "vm-tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || { echo "failed: ${failures[*]}" >&2; exit 1; }
