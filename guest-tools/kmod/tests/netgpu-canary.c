// SPDX-License-Identifier: GPL-2.0
/*
 * netgpu-canary: watches for stray DMA. Maps MiB of fresh anonymous memory, fills it with a
 * pattern, checks it a moment later and unmaps it, over and over: pages the driver gave back
 * (unpinned) are soon reused here, so a device that writes a buffer after the driver let go
 * of it shows up as a changed word. Prints "CANARY corrupt ..." with the first words found
 * (a device-to-host copy's data, or a completion record, says which write it was) and
 * "CANARY rounds N corrupt M" on SIGTERM.
 *   netgpu-canary MiB
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	size_t n = (size_t)(argc > 1 ? atoi(argv[1]) : 16) << 20, w = n / 8;
	unsigned long round = 0, bad = 0;

	signal(SIGTERM, on_term);
	printf("CANARY ready\n");
	fflush(stdout);
	while (!stop) {
		uint64_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				   -1, 0);
		uint64_t tag = 0xC0DE000000000000ull | ((uint64_t)(round & 0xffff) << 32);

		if (p == MAP_FAILED) {
			usleep(100000);
			continue;
		}
		for (size_t i = 0; i < w; i++)
			p[i] = tag | i;
		usleep(200000);
		for (size_t i = 0; i < w; i++) {
			if (p[i] == (tag | i))
				continue;
			if (bad++ < 16)
				printf("CANARY corrupt round %lu page %zu offset %zu: %016llx %016llx %016llx %016llx\n",
				       round, i * 8 / 4096, i * 8 % 4096, (unsigned long long)p[i],
				       (unsigned long long)p[i + 1 < w ? i + 1 : i],
				       (unsigned long long)p[i + 2 < w ? i + 2 : i],
				       (unsigned long long)p[i + 3 < w ? i + 3 : i]);
			fflush(stdout);
		}
		munmap(p, n);
		round++;
	}
	printf("CANARY rounds %lu corrupt %lu\n", round, bad);
	return bad ? 1 : 0;
}
