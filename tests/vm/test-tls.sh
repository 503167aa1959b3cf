#!/usr/bin/env bash
# Real-VM test of TLS between vdev and the backend (issue 9): certificates made with the
# operator CLI (`netgpuctl cert`), a backend that speaks TLS only and serves tenant "acme",
# vdev with its [tls] flags; CUDA programs in the guest run through it. Also: a plain client
# is refused by the backend with a reason, and a second vdev that trusts another CA (a second
# PCI device in the same guest) is refused at the handshake: the guest sees that device FATAL
# (backend auth), a program on it fails instead of hanging, and vdev's log names the CA file.
# A third vdev is started before its backend (a second TLS backend, started when the guest
# asks): the guest sees that device FATAL (unreachable), then up without a reset, and runs a
# program on it. Revocation: the backend reads the CA's CRL; a second hypervisor certificate is
# served, revoked with `netgpuctl cert revoke`, and refused by the running backend.
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_load_env
work=$(mktemp -d)
cleanup() {
  kill "${watcher:-}" 2>/dev/null || true
  kill -TERM "${wrong_pid:-}" "${late_pid:-}" 2>/dev/null || true
  if [ -f "$work/late-backend.pid" ]; then kill -TERM "$(cat "$work/late-backend.pid")" 2>/dev/null || true; fi
  rm -f "${late_sock:-}"
  vm_stop_netgpu
  rm -f "${wrong_sock:-}"
  rm -rf "$work"
}
trap cleanup EXIT
target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
[ -n "${NETGPU_VM_BIN_DIR:-}" ] && target=$NETGPU_VM_BIN_DIR
"$REPO_ROOT/scripts/build-bins" || vm_die "cargo build failed (scripts/build-bins)"
inc=$("$REPO_ROOT/scripts/fetch-cuda-headers.sh")
ctl=$target/debug/netgpuctl
rc=0
host_check() {   # name, then a command that must succeed
  local name=$1; shift
  if "$@"; then echo "NETGPU-TEST: PASS host-$name"; else echo "NETGPU-TEST: FAIL host-$name"; rc=1; fi
}

# The operator's certificates: a CA, the GPU host's (its address 127.0.0.1), a hypervisor of
# tenant acme; and another CA, which the misconfigured vdev trusts instead.
pki=$work/pki
"$ctl" cert ca --out "$pki/ca" --name "netgpu test CA" > /dev/null
"$ctl" cert backend --ca "$pki/ca" --name gpu1 --ip 127.0.0.1 --out "$pki/gpu1" > /dev/null
"$ctl" cert hypervisor --ca "$pki/ca" --name hv1 --tenant acme --out "$pki/hv1" > /dev/null
"$ctl" cert hypervisor --ca "$pki/ca" --name hv2 --tenant acme --out "$pki/hv2" > /dev/null
"$ctl" cert ca --out "$pki/other-ca" --name "some other CA" > /dev/null
"$ctl" cert crl --ca "$pki/ca" > /dev/null   # empty so far: hv2 is revoked later
"$ctl" --json cert show "$pki/hv1/hv1.crt" > "$work/hv1.json"
host_check cert-names-tenant grep -q '"tenant": *"acme"' "$work/hv1.json"

# vdev's token belongs to tenant acme too (a token of another tenant than the certificate's
# is refused); lib.sh writes $work/token before it starts the backend.
cat > "$work/backend.toml" <<TOML
[tls]
cert = "$pki/gpu1/gpu1.crt"
key = "$pki/gpu1/gpu1.key"
client_ca = "$pki/ca/ca.crt"
crls = ["$pki/ca/ca.crl"]

[[tenants]]
name = "acme"
memory_quota = "1GiB"
max_sessions = 16
token_files = ["$work/token"]
TOML

# The guest's programs, built in the chroot against cuda.h and libcuda.so.1.
payload=$work/payload
mkdir -p "$payload/lib"
vm_build_kmod "$payload"
rm -f "$payload"/netgpu-selftest "$payload"/netgpu-stress "$payload"/netgpu-mt
cp "$target/debug/libcuda.so" "$payload/lib/libcuda.so.1"
vm_build_cuda_programs "$payload" "$inc" device_memory vector_add

tls_args="--tls-ca $pki/ca/ca.crt --tls-cert $pki/hv1/hv1.crt --tls-key $pki/hv1/hv1.key"
export NETGPU_BACKEND_ARGS="--config $work/backend.toml" NETGPU_VDEV_ARGS="$tls_args" NETGPU_PREBUILT=1
vm_start_netgpu "$work"
for _ in $(seq 100); do grep -q 'listening' "$work/backend.log" && break; sleep 0.1; done

# A plain client is refused, with the reason, and TLS with the hypervisor's certificate works.
if "$target/debug/netgpu-probe" --backend "$NETGPU_BACKEND_ADDR" --token-file "$work/token" > "$work/plain.out" 2>&1; then
  echo "NETGPU-TEST: FAIL host-plain-client-refused (it was served)"; rc=1
else
  cat "$work/plain.out"
  host_check plain-client-refused grep -qi 'tls' "$work/plain.out"
fi
host_check tls-probe "$target/debug/netgpu-probe" --backend "$NETGPU_BACKEND_ADDR" --token-file "$work/token" \
  --ca "$pki/ca/ca.crt" --cert "$pki/hv1/hv1.crt" --key "$pki/hv1/hv1.key"
# Revocation: hv2 is served, revoked with the CLI (the backend reloads the CRL), then refused.
probe_hv2() {
  "$target/debug/netgpu-probe" --backend "$NETGPU_BACKEND_ADDR" --token-file "$work/token" \
    --ca "$pki/ca/ca.crt" --cert "$pki/hv2/hv2.crt" --key "$pki/hv2/hv2.key" > "$work/hv2.out" 2>&1
}
host_check hv2-served-before-revocation probe_hv2
"$ctl" cert revoke --ca "$pki/ca" "$pki/hv2/hv2.crt" > /dev/null
if probe_hv2; then echo "NETGPU-TEST: FAIL host-revoked-hv2-refused (it was served)"; rc=1; else
  cat "$work/hv2.out"
  host_check revoked-hv2-refused grep -q 'has been revoked' "$work/hv2.out"
fi

# The misconfigured vdev: trusts the other CA. QEMU gives it the second PCI slot (netgpu1).
wrong_sock=$VM_ROOT/run/netgpu/vdev-wrong-$$.sock
"$target/debug/netgpu-vdev" --socket "$wrong_sock" --backend "$NETGPU_BACKEND_ADDR" --token-file "$work/token" \
  --tls-ca "$pki/other-ca/ca.crt" --tls-cert "$pki/hv1/hv1.crt" --tls-key "$pki/hv1/hv1.key" \
  > "$work/vdev-wrong.log" 2>&1 &
wrong_pid=$!
for _ in $(seq 100); do [ -S "$wrong_sock" ] && break; sleep 0.05; done
[ -S "$wrong_sock" ] || { cat "$work/vdev-wrong.log" >&2; vm_die "the second netgpu-vdev did not start"; }

# The vdev whose backend is not there yet (netgpu2): the same TLS setup, another port.
late_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
late_sock=$VM_ROOT/run/netgpu/vdev-late-$$.sock
# shellcheck disable=SC2086  # $tls_args is a list of flags
"$target/debug/netgpu-vdev" --socket "$late_sock" --backend "127.0.0.1:$late_port" --token-file "$work/token" \
  $tls_args > "$work/vdev-late.log" 2>&1 &
late_pid=$!
for _ in $(seq 100); do [ -S "$late_sock" ] && break; sleep 0.05; done
[ -S "$late_sock" ] || { cat "$work/vdev-late.log" >&2; vm_die "the third netgpu-vdev did not start"; }
dev() { printf '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"/run/netgpu/%s"}}' "$(basename "$1")"; }
export VM_EXTRA_DEVICES="$(dev "$wrong_sock") $(dev "$late_sock")"
# Starts the late backend when the guest has seen its device FATAL.
(
  for _ in $(seq 2400); do
    if grep -q '^NETGPU-HOST: start-late-backend' "$work/serial.log" 2>/dev/null; then
      "$target/debug/netgpu-backend" --listen "127.0.0.1:$late_port" --executor cpu --config "$work/backend.toml" \
        > "$work/backend-late.log" 2>&1 &
      echo $! > "$work/late-backend.pid"
      wait
      exit 0
    fi
    sleep 0.1
  done
) &
watcher=$!

cp "$(dirname "$0")/guest/tls.sh" "$payload/run.sh"
VM_TIMEOUT=240 vm_run_payload "$work" "$payload" || rc=1

for l in vdev-wrong vdev backend; do sed 's/\x1b\[[0-9;]*m//g' "$work/$l.log" > "$work/$l.txt"; done
echo "--- the misconfigured vdev's log"; grep -i 'certificate' "$work/vdev-wrong.txt" | head -n 2 | cut -c1-400 || true
host_check wrong-ca-error-names-the-ca grep -q "not issued by a CA in $pki/other-ca/ca.crt" "$work/vdev-wrong.txt"
host_check backend-sessions-tls-tenant-acme grep -Eq 'session open .*client=netgpu-vdev .*tenant=acme tls=true' "$work/backend.txt"
host_check backend-logged-plain-refusal grep -q 'plain client refused: this backend speaks TLS only' "$work/backend.txt"
host_check backend-logged-revoked grep -q 'presented a revoked certificate' "$work/backend.txt"
for l in vdev-late backend-late; do sed 's/\x1b\[[0-9;]*m//g' "$work/$l.log" > "$work/$l.txt" 2>/dev/null || true; done
grep -E 'cannot open a backend session|backend ready' "$work/vdev-late.txt" | cut -c1-300 || true
host_check late-vdev-ready-without-reset [ "$(grep -c 'backend ready' "$work/vdev-late.txt")" = 1 ]
host_check late-backend-served-tls-acme grep -Eq 'session open .*client=netgpu-vdev .*tenant=acme tls=true' "$work/backend-late.txt"
host_check vdevs-alive kill -0 "$NETGPU_VDEV_PID" "$wrong_pid" "$late_pid"
exit $rc
