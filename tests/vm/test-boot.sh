#!/usr/bin/env bash
# The first real-VM test: the Debian cloud kernel boots under QEMU 11 (TCG) with a busybox
# initramfs, enumerates PCI, loads a module from the guest kernel (virtio_net), and the guest
# reaches an HTTP server on the host's 127.0.0.1 through QEMU's user-mode network (10.0.2.2).
# No netgpu parts are involved: when this fails, the VM environment itself is broken.
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_load_env
work=$(mktemp -d)
server=""
trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
payload=$work/payload
mkdir -p "$payload" "$work/www"
cp "$(dirname "$0")/guest/boot.sh" "$payload/run.sh"
cp "$(dirname "$0")/guest/lib.sh" "$payload/lib.sh"
echo "$KVER" > "$payload/expect-kernel"
head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/www/token"
cp "$work/www/token" "$payload/token"
vm_payload_kmods "$payload" virtio_net

# A one-file HTTP server on 127.0.0.1 (an ephemeral port, written to $work/port).
python3 - "$work/www" "$work/port" > "$work/http.log" 2>&1 <<'PY' &
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
srv = http.server.HTTPServer(("127.0.0.1", 0), handler)
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os; os.rename(sys.argv[2] + ".tmp", sys.argv[2])
srv.serve_forever()
PY
server=$!
for _ in $(seq 100); do [ -f "$work/port" ] && break; sleep 0.05; done
[ -f "$work/port" ] || { cat "$work/http.log" >&2; vm_die "the host HTTP server did not start"; }
cp "$work/port" "$payload/host-port"

"$(dirname "$0")/mkinitramfs.sh" "$work/initrd.cpio.gz" "$payload"
if ! "$(dirname "$0")/run-vm.sh" --initrd "$work/initrd.cpio.gz" --net --timeout "${VM_TIMEOUT:-60}" \
    --log "$work/serial.log" > /dev/null; then
  cat "$work/serial.log" >&2
fi
vm_results "$work/serial.log"
