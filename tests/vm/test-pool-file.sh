#!/usr/bin/env bash
# test-pool.sh on the embedded file store instead of etcd.
NETGPU_POOL_STORE=file exec "$(dirname "$0")/test-pool.sh" "$@"
