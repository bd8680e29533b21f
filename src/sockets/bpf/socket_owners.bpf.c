// BPF task_file iterator: one record per open socket file of each process (thread-group leader),
// read in one pass by `ktricks sockets -p` (src/sockets/owners.cpp) instead of a readlink per
// descriptor under /proc/*/fd.
//
// The kernel types below are hand-written with only the fields read here; preserve_access_index
// makes every access a CO-RE relocation, resolved at load time against the running kernel's BTF
// (/sys/kernel/btf/vmlinux, in the kernel: the light skeleton's loader), so the build does not
// depend on the build machine's kernel headers or BTF.
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
#include <bpf/bpf_helpers.h>

#define KERNEL_TYPE __attribute__((preserve_access_index))
struct super_block {
    unsigned long s_magic;
} KERNEL_TYPE;
struct inode {
    unsigned long i_ino;
    struct super_block* i_sb;
} KERNEL_TYPE;
struct file {
    struct inode* f_inode;
} KERNEL_TYPE;
struct task_struct {
    int pid;
    int tgid;
    char comm[16];
} KERNEL_TYPE;
struct seq_file;
struct bpf_iter_meta {
    struct seq_file* seq;
} KERNEL_TYPE;
struct bpf_iter__task_file {
    struct bpf_iter_meta* meta;
    struct task_struct* task;
    __u32 fd;
    struct file* file;
} KERNEL_TYPE;

// include/uapi/linux/magic.h: the filesystem of every socket file. A /proc/PID/fd link reads
// "socket:[INODE]" exactly for these files (an O_PATH descriptor of a unix socket's path is not one).
#define SOCKFS_MAGIC 0x534F434B

// The record layout shared with owners.cpp (struct BpfOwnerRecord): 28 bytes, no padding.
struct owner_record {
    __u32 inode;
    __u32 pid;
    __u32 fd;
    char comm[16];
};

// The reader's tgid as the kernel numbers it (initial pid namespace). User space compares it with
// getpid(): if they differ it runs in a child pid namespace and the tgids here are not its pids.
__u32 reader_tgid = 0;

SEC("iter/task_file")
int socket_owners(struct bpf_iter__task_file* ctx) {
    struct task_struct* task = ctx->task;
    struct file* file = ctx->file;
    if (!reader_tgid) reader_tgid = bpf_get_current_pid_tgid() >> 32;
    if (!task || !file) return 0;
    // ss reads /proc/PID/fd, the thread-group leader's table. The iterator already skips threads that
    // share their leader's table; one that unshared it (unshare(CLONE_FILES)) is not in ss either.
    if (task->pid != task->tgid) return 0;
    struct inode* inode = file->f_inode;
    if (!inode || inode->i_sb->s_magic != SOCKFS_MAGIC) return 0;
    struct owner_record record = {};
    record.inode = (__u32)inode->i_ino;
    record.pid = (__u32)task->tgid;
    record.fd = ctx->fd;
    __builtin_memcpy(record.comm, task->comm, sizeof(record.comm));
    bpf_seq_write(ctx->meta->seq, &record, sizeof(record));
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
