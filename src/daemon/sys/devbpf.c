#include "daemon/sys/devbpf.h"

#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int sys_bpf(int cmd, union bpf_attr *attr)
{
	/* Always the whole union: newer kernels write past a short one (BPF_PROG_QUERY). */
	return (int) syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

static uint64_t dev_key(unsigned major, unsigned minor)
{
	return (uint64_t) major << 32 | minor;
}

int devbpf_map_create(size_t max_entries)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_HASH;
	a.key_size = sizeof(uint64_t);
	a.value_size = sizeof(uint8_t);
	a.max_entries = (unsigned) max_entries;
	snprintf(a.map_name, sizeof(a.map_name), "zgpu_devs");
	int fd = sys_bpf(BPF_MAP_CREATE, &a);
	return fd < 0 ? -errno : fd;
}

int devbpf_map_set(int map_fd, unsigned major, unsigned minor, bool present)
{
	uint64_t key = dev_key(major, minor);
	uint8_t one = 1;
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_fd = (unsigned) map_fd;
	a.key = (uintptr_t) &key;
	if (present) {
		a.value = (uintptr_t) &one;
		a.flags = BPF_ANY;
	}
	return sys_bpf(present ? BPF_MAP_UPDATE_ELEM : BPF_MAP_DELETE_ELEM, &a) < 0 ? -errno : 0;
}

/* ------------------------------------------------------------------------
 * The program, instruction by instruction.
 * ------------------------------------------------------------------------ */

#define INSN(c, d, s, o, i)                                                                        \
	((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})
#define MOV64_REG(d, s)	    INSN(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define MOV64_IMM(d, i)	    INSN(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, i)
#define ALU64_IMM(op, d, i) INSN(BPF_ALU64 | (op) | BPF_K, d, 0, 0, i)
#define ALU64_REG(op, d, s) INSN(BPF_ALU64 | (op) | BPF_X, d, s, 0, 0)
#define LDX_W(d, s, o)	    INSN(BPF_LDX | BPF_MEM | BPF_W, d, s, o, 0)
#define STX_DW(d, s, o)	    INSN(BPF_STX | BPF_MEM | BPF_DW, d, s, o, 0)
#define JEQ_IMM(d, i, o)    INSN(BPF_JMP | BPF_JEQ | BPF_K, d, 0, o, i)
#define CALL(f)		    INSN(BPF_JMP | BPF_CALL, 0, 0, 0, f)
#define EXIT()		    INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
/* A map's fd as a 64-bit immediate: two instructions. */
#define LD_MAP_FD(d, fd)                                                                           \
	INSN(BPF_LD | BPF_DW | BPF_IMM, d, BPF_PSEUDO_MAP_FD, 0, fd), INSN(0, 0, 0, 0, 0)

int devbpf_prog_load(int gated_map_fd, int allowed_map_fd, char *err, size_t errlen)
{
	const struct bpf_insn prog[] = {
		/* key = major << 32 | minor, on the stack */
		LDX_W(BPF_REG_2, BPF_REG_1, offsetof(struct bpf_cgroup_dev_ctx, major)),
		LDX_W(BPF_REG_3, BPF_REG_1, offsetof(struct bpf_cgroup_dev_ctx, minor)),
		ALU64_IMM(BPF_LSH, BPF_REG_2, 32),
		ALU64_REG(BPF_OR, BPF_REG_2, BPF_REG_3),
		STX_DW(BPF_REG_10, BPF_REG_2, -8),
		/* not one of the nodes we lend: allowed */
		LD_MAP_FD(BPF_REG_1, gated_map_fd),
		MOV64_REG(BPF_REG_2, BPF_REG_10),
		ALU64_IMM(BPF_ADD, BPF_REG_2, -8),
		CALL(BPF_FUNC_map_lookup_elem),
		JEQ_IMM(BPF_REG_0, 0, 6), /* -> allow */
		/* one we lend: allowed only while this cgroup's app holds it */
		LD_MAP_FD(BPF_REG_1, allowed_map_fd),
		MOV64_REG(BPF_REG_2, BPF_REG_10),
		ALU64_IMM(BPF_ADD, BPF_REG_2, -8),
		CALL(BPF_FUNC_map_lookup_elem),
		JEQ_IMM(BPF_REG_0, 0, 2), /* -> deny */
		/* allow: */
		MOV64_IMM(BPF_REG_0, 1),
		EXIT(),
		/* deny: */
		MOV64_IMM(BPF_REG_0, 0),
		EXIT(),
	};
	static char log[4096];
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
	a.insns = (uintptr_t) prog;
	a.insn_cnt = sizeof(prog) / sizeof(prog[0]);
	a.license = (uintptr_t) "Dual MIT/GPL";
	a.log_buf = (uintptr_t) log;
	a.log_size = sizeof(log);
	a.log_level = 1;
	snprintf(a.prog_name, sizeof(a.prog_name), "%s", DEVBPF_PROG_NAME);
	log[0] = '\0';
	int fd = sys_bpf(BPF_PROG_LOAD, &a);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "the kernel refused the gating program: %s%s%.200s",
			 strerror(e), log[0] ? "; verifier: " : "", log);
		return -e;
	}
	return fd;
}

static int attach_op(int cmd, int cgroup_fd, int prog_fd)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.target_fd = (unsigned) cgroup_fd;
	a.attach_bpf_fd = (unsigned) prog_fd;
	a.attach_type = BPF_CGROUP_DEVICE;
	if (cmd == BPF_PROG_ATTACH)
		a.attach_flags = BPF_F_ALLOW_MULTI;
	return sys_bpf(cmd, &a) < 0 ? -errno : 0;
}

int devbpf_attach(int cgroup_fd, int prog_fd)
{
	return attach_op(BPF_PROG_ATTACH, cgroup_fd, prog_fd);
}

int devbpf_detach(int cgroup_fd, int prog_fd)
{
	return attach_op(BPF_PROG_DETACH, cgroup_fd, prog_fd);
}

/* What the kernel says of the program behind fd (its id and name); -1 if it cannot. */
static int prog_info(int fd, struct bpf_prog_info *info)
{
	memset(info, 0, sizeof(*info));
	union bpf_attr in;
	memset(&in, 0, sizeof(in));
	in.info.bpf_fd = (unsigned) fd;
	in.info.info_len = sizeof(*info);
	in.info.info = (uintptr_t) info;
	return sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &in);
}

int devbpf_detach_stale(int cgroup_fd, int keep_prog_fd)
{
	struct bpf_prog_info info;
	uint32_t keep = keep_prog_fd >= 0 && prog_info(keep_prog_fd, &info) == 0 ? info.id : 0;
	uint32_t ids[64];
	union bpf_attr q;
	memset(&q, 0, sizeof(q));
	q.query.target_fd = (unsigned) cgroup_fd;
	q.query.attach_type = BPF_CGROUP_DEVICE;
	q.query.prog_ids = (uintptr_t) ids;
	q.query.prog_cnt = sizeof(ids) / sizeof(ids[0]);
	if (sys_bpf(BPF_PROG_QUERY, &q) < 0)
		return -errno;
	int detached = 0;
	for (uint32_t i = 0; i < q.query.prog_cnt; i++) {
		if (ids[i] == keep)
			continue;
		union bpf_attr g;
		memset(&g, 0, sizeof(g));
		g.prog_id = ids[i];
		int fd = sys_bpf(BPF_PROG_GET_FD_BY_ID, &g);
		if (fd < 0)
			continue;
		if (prog_info(fd, &info) == 0 &&
		    strncmp(info.name, DEVBPF_PROG_NAME, sizeof(info.name)) == 0 &&
		    devbpf_detach(cgroup_fd, fd) == 0)
			detached++;
		close(fd);
	}
	return detached;
}
