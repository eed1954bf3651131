// SPDX-License-Identifier: GPL-2.0
/* Sysctl writes: which /proc/sys files were written from inside a lab's namespaces.
 *
 * A reused lab must be exactly as it was built, sysctls included, and reading every file
 * under /proc/sys/net of a namespace costs 12-15 ms (700-850 files). So the lab counts the
 * writes instead, with the hook the kernel has for exactly this: a cgroup/sysctl program
 * (BPF_CGROUP_SYSCTL) runs on every access to a /proc/sys file by a task of its cgroup (the
 * lab attaches it to its own process's cgroup: the test process, `ip netns exec`, control
 * planes it starts). Writes are counted by the writer's network namespace (the one its
 * /proc/sys/net shows) and the file's name; only namespaces listed in `watched`. Every
 * access is allowed: the program only counts. It counts attempts: a handler that cannot
 * take RTNL restarts the syscall (devinet_sysctl_forward: restart_syscall()), and the hook
 * runs again each time, so a count says "written", not how many times.
 *
 * (A kprobe on proc_sys_write would see every task, but kernels without CONFIG_KPROBES,
 * like the lab's own VM, have none; cgroup/sysctl needs only CONFIG_CGROUP_BPF, 5.2+.)
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct ns_common { unsigned int inum; } __attribute__((preserve_access_index));
struct net { struct ns_common ns; } __attribute__((preserve_access_index));
struct nsproxy { struct net *net_ns; } __attribute__((preserve_access_index));
struct task_struct { struct nsproxy *nsproxy; } __attribute__((preserve_access_index));

#define NAME 128

struct write_key {
    __u32 netns;
    char name[NAME];                /* "net/ipv4/conf/veth0/forwarding" */
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);             /* network namespace inode */
    __type(value, __u8);
} watched SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16384);
    __type(key, struct write_key);
    __type(value, __u64);
} writes SEC(".maps");

SEC("cgroup/sysctl")
int sysctl_write(struct bpf_sysctl *ctx)
{
    struct write_key k = {};

    if (!ctx->write)
        return 1;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    k.netns = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
    if (!bpf_map_lookup_elem(&watched, &k.netns))
        return 1;
    if (bpf_sysctl_get_name(ctx, k.name, sizeof(k.name), 0) < 0)
        return 1;
    __u64 *n = bpf_map_lookup_elem(&writes, &k);
    if (n) {
        __sync_fetch_and_add(n, 1);
    } else {
        __u64 one = 1;
        bpf_map_update_elem(&writes, &k, &one, BPF_NOEXIST);
    }
    return 1;
}

char LICENSE[] SEC("license") = "GPL";
