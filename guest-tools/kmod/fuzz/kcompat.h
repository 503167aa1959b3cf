/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel names netgpu_check.h uses, for building it in user space (the fuzz
 * harness). Little-endian conversions follow the host, as the kernel's do.
 */
#ifndef NETGPU_KCOMPAT_H
#define NETGPU_KCOMPAT_H

#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define le16_to_cpu(x) le16toh(x)
#define le32_to_cpu(x) le32toh(x)
#define le64_to_cpu(x) le64toh(x)
#define cpu_to_le16(x) htole16(x)
#define cpu_to_le32(x) htole32(x)
#define cpu_to_le64(x) htole64(x)

#endif /* NETGPU_KCOMPAT_H */
