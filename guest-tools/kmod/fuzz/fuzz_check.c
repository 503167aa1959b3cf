// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the kernel module's descriptor validation and scatter-list layout:
 * the module's own code (../netgpu_check.h, included as the module includes it), checked
 * against an independent statement of the rules (the opcode table of docs/device-abi.md and
 * docs/guest-driver.md, written out below as data) and against invariants of the result.
 *
 * Input: a 128-byte descriptor as user space would write it, then the device's limits
 * (features, MAX_TRANSFER, MAX_SG_ENTRIES, whether it knows SG_FLAG_DEVICE_WRITE), then a
 * DMA segment count per buffer; short inputs are zero-padded.
 *
 * Build and run: ./run.sh (see there). Built with -DNETGPU_REPLAY_MAIN it is a plain
 * program that runs the files named on its command line (the seed corpus) once.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../netgpu_check.h"

struct fuzz_input {
	struct netgpu_command cmd;
	u64 features;
	u32 max_transfer;
	u32 max_sg;
	u8 dir_flags;
	u8 pad[3];
	u16 nsegs[NETGPU_MAX_BUFS];
};

/* The opcode table, restated: buffers, which the device writes, ASYNC allowed, arg rule. */
struct rule_row {
	u16 op;
	u8 nbufs;
	u8 out_mask;
	bool async_ok;
	u8 arg;
	u64 needs;	/* device feature */
};

static const struct rule_row rules[] = {
	{ NETGPU_OP_NOP, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_DEVICE_QUERY, 1, 1, false, NETGPU_ARG_INFO, 0 },
	{ NETGPU_OP_MEM_GET_INFO, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_CTX_CREATE, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_CTX_DESTROY, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_CTX_SYNCHRONIZE, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_MEM_ALLOC, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_MEM_FREE, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_MEMCPY_HTOD, 1, 0, true, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_MEMCPY_DTOH, 1, 1, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_MEMCPY_DTOD, 0, 0, true, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_MEMSET, 0, 0, true, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_MODULE_LOAD, 1, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_MODULE_UNLOAD, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_MODULE_GET_FUNCTION, 2, 2, false, NETGPU_ARG_NAME, 0 },
	{ NETGPU_OP_MODULE_GET_GLOBAL, 1, 0, false, NETGPU_ARG_NAME, 0 },
	{ NETGPU_OP_LAUNCH_KERNEL, 1, 0, true, NETGPU_ARG_PARAMS, 0 },
	{ NETGPU_OP_STREAM_CREATE, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_STREAM_DESTROY, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_STREAM_SYNCHRONIZE, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_STREAM_QUERY, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_EVENT_CREATE, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_EVENT_RECORD, 0, 0, true, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_EVENT_SYNCHRONIZE, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_EVENT_QUERY, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_EVENT_ELAPSED_TIME, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_EVENT_DESTROY, 0, 0, false, NETGPU_ARG_NONE, 0 },
	{ NETGPU_OP_WIRE_REQUEST, 3, 4, true, NETGPU_ARG_WIRE, NETGPU_FEATURE_WIRE_REQUEST },
};

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define CHECK(cond)								\
	do {									\
		if (!(cond)) {							\
			fprintf(stderr, "fuzz_check: %s:%d: %s\n", __FILE__,	\
				__LINE__, #cond);				\
			abort();						\
		}								\
	} while (0)

/* The verdict the rules give, written independently of netgpu_check_cmd(). */
static bool oracle_valid(const struct netgpu_command *c, const struct netgpu_limits *lim,
			 const struct rule_row **row)
{
	u16 op = le16toh(c->opcode), flags = le16toh(c->flags);
	u64 total = 0;
	size_t i;

	*row = NULL;
	for (i = 0; i < ARRAY_SIZE(rules); i++)
		if (rules[i].op == op)
			*row = &rules[i];
	if (!*row)
		return false;
	if ((*row)->needs && !(lim->features & (*row)->needs))
		return false;
	if (flags != 0 && flags != NETGPU_CMD_FLAG_ASYNC)
		return false;
	if (flags == NETGPU_CMD_FLAG_ASYNC &&
	    (!(*row)->async_ok || !(lim->features & NETGPU_FEATURE_ASYNC)))
		return false;
	if (c->reserved != 0 || le32toh(c->sg_count) != (*row)->nbufs)
		return false;
	for (i = 0; i < (*row)->nbufs; i++) {
		u64 a = le64toh(c->sg[i].addr), n = le32toh(c->sg[i].len);

		if (c->sg[i].flags != 0 || a > UINT64_MAX - n)
			return false;
		total += n;
	}
	if (total > lim->max_transfer)
		return false;
	switch ((*row)->arg) {
	case NETGPU_ARG_NAME:
		return le32toh(c->sg[0].len) >= 1 && le32toh(c->sg[0].len) <= NETGPU_MAX_NAME_LEN &&
		       le64toh(c->args[1]) == le32toh(c->sg[0].len);
	case NETGPU_ARG_PARAMS:
		return le32toh(c->sg[0].len) <= NETGPU_MAX_PARAM_BUFFER;
	case NETGPU_ARG_INFO:
		return le32toh(c->sg[0].len) >= NETGPU_DEVICE_INFO_SIZE;
	case NETGPU_ARG_WIRE:
		return le32toh(c->sg[0].len) >= 1 && le32toh(c->sg[0].len) <= 65536 &&
		       le64toh(c->args[0]) == le32toh(c->sg[0].len);
	default:
		return true;
	}
}

/* Builds the device's scatter list from fuzzed segment counts and checks its layout. */
static void check_layout(const struct netgpu_command *user, const struct netgpu_cmd_spec *spec,
			 const struct netgpu_limits *lim, const u16 *nsegs_in)
{
	u32 nsegs[NETGPU_MAX_BUFS] = {}, k = 0, i, j, total = 0;
	struct netgpu_sg_entry *table = NULL, *e;
	struct netgpu_command *cmd;
	struct netgpu_sg_plan plan;
	int ret;

	for (i = 0; i < spec->nbufs; i++) {
		/* A buffer has at most one segment per page, none when empty. */
		nsegs[i] = spec->bufs[i].len ? nsegs_in[i] % 5000 + 1 : 0;
		total += nsegs[i];
	}
	ret = netgpu_sg_plan(lim, nsegs, spec->nbufs, &plan);
	if (total > lim->max_sg ||
	    (total > NETGPU_INLINE_SG_ENTRIES && !(lim->features & NETGPU_FEATURE_SG_INDIRECT))) {
		CHECK(ret == -E2BIG);
		return;
	}
	CHECK(ret == 0);
	CHECK(plan.entries == total);
	CHECK(plan.indirect == (total > NETGPU_INLINE_SG_ENTRIES));
	cmd = malloc(sizeof(*cmd));
	CHECK(cmd);
	memcpy(cmd, user, sizeof(*cmd));
	if (plan.indirect) {
		table = calloc(total, sizeof(*table));
		CHECK(table);
	}
	netgpu_sg_begin(cmd);
	for (i = 0; i < spec->nbufs; i++) {
		u32 fl = netgpu_sg_flags(lim, spec->bufs[i].device_writes);

		for (j = 0; j < nsegs[i]; j++)
			CHECK(netgpu_sg_put(cmd, table, &plan, k++, ((u64)i << 48) | j, j + 1,
					    fl) == 0);
	}
	CHECK(netgpu_sg_put(cmd, table, &plan, k, 0, 0, 0) == -EINVAL);
	netgpu_sg_finish(cmd, &plan, 0xabc000);
	CHECK(le32toh(cmd->sg_count) == total);
	CHECK(((le16toh(cmd->flags) & NETGPU_CMD_FLAG_SG_INDIRECT) != 0) == plan.indirect);
	CHECK((le16toh(cmd->flags) & ~NETGPU_CMD_FLAG_SG_INDIRECT) == spec->flags);
	if (plan.indirect) {
		CHECK(le64toh(cmd->sg[0].addr) == 0xabc000);
		CHECK(le32toh(cmd->sg[0].len) == total * sizeof(struct netgpu_sg_entry));
		CHECK(cmd->sg[0].flags == 0);
	}
	/* Entries in order, each buffer's own, flagged exactly when the device writes it. */
	k = 0;
	for (i = 0; i < spec->nbufs; i++) {
		for (j = 0; j < nsegs[i]; j++, k++) {
			bool w = spec->bufs[i].device_writes && lim->dir_flags;

			e = plan.indirect ? &table[k] : &cmd->sg[k];
			CHECK(le64toh(e->addr) == (((u64)i << 48) | j));
			CHECK(le32toh(e->len) == j + 1);
			CHECK(le32toh(e->flags) == (w ? NETGPU_SG_FLAG_DEVICE_WRITE : 0));
		}
	}
	/* Output entries only after every input entry: the device splits on the flag. */
	if (lim->dir_flags) {
		bool seen_out = false;

		for (k = 0; k < total; k++) {
			e = plan.indirect ? &table[k] : &cmd->sg[k];
			if (le32toh(e->flags) & NETGPU_SG_FLAG_DEVICE_WRITE)
				seen_out = true;
			else
				CHECK(!seen_out);
		}
	}
	if (!plan.indirect)
		for (k = total; k < NETGPU_INLINE_SG_ENTRIES; k++)
			CHECK(cmd->sg[k].addr == 0 && cmd->sg[k].len == 0 && cmd->sg[k].flags == 0);
	free(table);
	free(cmd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in;
	struct netgpu_limits lim;
	struct netgpu_cmd_spec spec;
	struct netgpu_command *cmd;
	const struct rule_row *row;
	bool valid;
	u32 i;
	int ret;

	memset(&in, 0, sizeof(in));
	memcpy(&in, data, size < sizeof(in) ? size : sizeof(in));
	lim.features = in.features;
	lim.max_transfer = in.max_transfer < NETGPU_MAX_TRANSFER ? in.max_transfer :
								   NETGPU_MAX_TRANSFER;
	lim.max_sg = in.max_sg < NETGPU_MAX_SG_ENTRIES ? in.max_sg : NETGPU_MAX_SG_ENTRIES;
	lim.dir_flags = in.dir_flags & 1;
	/* Exactly one descriptor on the heap, so any read past it is caught. */
	cmd = malloc(sizeof(*cmd));
	CHECK(cmd);
	memcpy(cmd, &in.cmd, sizeof(*cmd));

	ret = netgpu_check_cmd(cmd, &lim, &spec);
	valid = oracle_valid(cmd, &lim, &row);
	CHECK((ret == 0) == valid);
	CHECK(ret == 0 || ret == -EINVAL || ret == -EFAULT || ret == -E2BIG);
	if (ret == 0) {
		u64 total = 0;

		CHECK(spec.opcode == le16toh(cmd->opcode));
		CHECK(spec.flags == le16toh(cmd->flags));
		CHECK(spec.nbufs == row->nbufs && spec.nbufs <= NETGPU_MAX_BUFS);
		for (i = 0; i < spec.nbufs; i++) {
			CHECK(spec.bufs[i].uaddr == le64toh(cmd->sg[i].addr));
			CHECK(spec.bufs[i].len == le32toh(cmd->sg[i].len));
			/* Pinned writable exactly where the device writes. */
			CHECK(spec.bufs[i].device_writes == ((row->out_mask >> i) & 1));
			/* No input buffer after an output buffer. */
			if (i > 0 && !spec.bufs[i].device_writes)
				CHECK(!spec.bufs[i - 1].device_writes);
			total += spec.bufs[i].len;
		}
		CHECK(spec.total == total && total <= lim.max_transfer);
		check_layout(cmd, &spec, &lim, in.nsegs);
	}
	free(cmd);
	return 0;
}

#ifdef NETGPU_REPLAY_MAIN
int main(int argc, char **argv)
{
	static uint8_t buf[1 << 16];
	int i;

	for (i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		size_t n;

		if (!f) {
			perror(argv[i]);
			return 1;
		}
		n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		LLVMFuzzerTestOneInput(buf, n);
	}
	printf("fuzz_check: %d inputs replayed, no failure\n", argc - 1);
	return 0;
}
#endif
