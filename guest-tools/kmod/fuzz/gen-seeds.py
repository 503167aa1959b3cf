#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Writes the seed corpus of fuzz_check.c into corpus/: one valid descriptor per opcode (with
the buffers the opcode takes, on a device offering every feature), and the malformed cases
the module must refuse (finding 1's name length that disagrees with the name buffer, a
read-only buffer given as output is an EFAULT at pin time so not here, unknown flags, ...).
Run it again after changing the input layout in fuzz_check.c."""
import os
import struct

FEATURES = 0x7F          # every feature of ABI 1.1 (doorbells ... wire request, out of order)
MAX_TRANSFER = 256 << 20
MAX_SG = 4096
ASYNC = 1 << 1


def seed(op, flags=0, args=(), bufs=(), reserved=0, features=FEATURES, max_transfer=MAX_TRANSFER,
         max_sg=MAX_SG, dir_flags=1, nsegs=(1, 1, 1), sg_count=None, sg_flags=0):
    a = list(args) + [0] * (8 - len(args))
    sg = [(addr, ln, sg_flags) for addr, ln in bufs] + [(0, 0, 0)] * (3 - len(bufs))
    nsegs = tuple(nsegs) + (1,) * (3 - len(nsegs))
    b = struct.pack('<HHI8QII', op, flags, 0, *a, len(bufs) if sg_count is None else sg_count,
                    reserved)
    for addr, ln, fl in sg:
        b += struct.pack('<QII', addr, ln, fl)
    assert len(b) == 128
    b += struct.pack('<QIIB3x3H', features, max_transfer, max_sg, dir_flags, *nsegs)
    return b


U = 0x7f0000001000
seeds = {
    'nop': seed(0x00),
    'device-query': seed(0x01, bufs=[(U, 1024)]),
    'device-query-short': seed(0x01, bufs=[(U, 1000)]),
    'mem-get-info': seed(0x02),
    'ctx-create': seed(0x10),
    'mem-alloc': seed(0x20, args=(1, 4096)),
    'htod': seed(0x22, args=(1, 2, 0), bufs=[(U, 3 << 20)], nsegs=(768,)),
    'htod-async': seed(0x22, flags=ASYNC, args=(1, 2, 0), bufs=[(U, 4096)]),
    'htod-async-no-feature': seed(0x22, flags=ASYNC, bufs=[(U, 4096)], features=0x0F),
    'dtoh': seed(0x23, args=(1, 2, 0), bufs=[(U, 8192)], nsegs=(2,)),
    'dtoh-async': seed(0x23, flags=ASYNC, bufs=[(U, 8192)]),
    'dtoh-too-big': seed(0x23, bufs=[(U, 0xffffffff)]),
    'dtoh-wraps': seed(0x23, bufs=[(0xfffffffffffff000, 0x2000)]),
    'dtod': seed(0x24, args=(1, 2, 3, 4096, 0)),
    'memset-async': seed(0x25, flags=ASYNC, args=(1, 2, 0x40, 1, 4096, 0)),
    'module-load': seed(0x30, args=(1,), bufs=[(U, 5000)], nsegs=(2,)),
    'get-function': seed(0x32, args=(1, 10), bufs=[(U, 10), (U + 4096, 64)]),
    # Finding 1: the name length disagrees with the name buffer (the device would split there).
    'get-function-split-in-name': seed(0x32, args=(1, 4), bufs=[(U, 64), (U + 4096, 64)]),
    'get-function-name-too-long': seed(0x32, args=(1, 2000), bufs=[(U, 2000), (U + 4096, 64)]),
    'get-function-empty-name': seed(0x32, args=(1, 0), bufs=[(U, 0), (U + 4096, 64)]),
    'get-function-one-buffer': seed(0x32, args=(1, 10), bufs=[(U, 10)]),
    'get-global': seed(0x33, args=(1, 6), bufs=[(U, 6)]),
    'get-global-len-mismatch': seed(0x33, args=(1, 7), bufs=[(U, 6)]),
    'launch': seed(0x40, flags=ASYNC, args=(1, 1 | 1 << 32, 1 | 64 << 32, 1 | 1 << 32, 0, 0),
                   bufs=[(U, 28)]),
    'launch-params-too-big': seed(0x40, bufs=[(U, 40000)]),
    'stream-sync': seed(0x52, args=(5,)),
    'event-record-async': seed(0x61, flags=ASYNC, args=(1, 0)),
    'event-sync-async': seed(0x62, flags=ASYNC, args=(1,)),
    'unknown-opcode': seed(0x7777),
    'indirect-flag-from-user': seed(0x23, flags=1, bufs=[(U, 4096)]),
    'sg-flags-from-user': seed(0x23, bufs=[(U, 4096)], sg_flags=2),
    'reserved-set': seed(0x00, reserved=1),
    'sg-count-wrong': seed(0x22, bufs=[(U, 10)], sg_count=3),
    'many-segments': seed(0x32, args=(1, 8), bufs=[(U, 8), (U + 8192, 1 << 20)],
                          nsegs=(2, 300)),
    'too-many-segments': seed(0x23, bufs=[(U, 64 << 20)], nsegs=(4999,), max_sg=4096),
    'no-indirect-feature': seed(0x23, bufs=[(U, 64 << 20)], nsegs=(10,), features=0x11),
    'wire-request': seed(0x70, args=(40,), bufs=[(U, 40), (U + 4096, 1000), (U + 8192, 64)],
                         nsegs=(1, 1, 1)),
    'wire-request-posted': seed(0x70, flags=ASYNC, args=(40,), bufs=[(U, 40), (U, 0), (U, 0)]),
    'wire-request-ctrl-len-mismatch': seed(0x70, args=(39,), bufs=[(U, 40), (U, 0), (U, 64)]),
    'wire-request-ctrl-too-long': seed(0x70, args=(70000,), bufs=[(U, 70000), (U, 0), (U, 64)]),
    'wire-request-no-feature': seed(0x70, args=(40,), bufs=[(U, 40), (U, 0), (U, 64)],
                                    features=0x1F),
    'wire-request-big': seed(0x70, args=(100,), bufs=[(U, 100), (U + 4096, 8 << 20),
                                                      (U + (9 << 20), 4 << 20)],
                             nsegs=(1, 2048, 1024)),
    'old-device-no-dir-flags': seed(0x32, args=(1, 8), bufs=[(U, 8), (U + 8192, 64)],
                                    dir_flags=0),
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus')
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(data)
print(f'{len(seeds)} seeds in {out}')
