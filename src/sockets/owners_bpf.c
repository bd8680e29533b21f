/* The light skeleton of bpf/socket_owners.bpf.c (bpftool gen skeleton -L) is C only (void* casts);
 * this file gives owners.cpp a small C interface to it. The light skeleton needs no libbpf at run
 * time: its loader program does the CO-RE relocations in the kernel, so nothing is linked and
 * nothing parses the kernel's BTF in user space (see docs/architecture.md). */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "socket_owners.lskel.h"
#include "sockets/owners_bpf.h"

int ktricks_owners_bpf_load(struct ktricks_owners_bpf* out) {
    struct socket_owners_bpf* skeleton = socket_owners_bpf__open_and_load();
    if (!skeleton) return errno ? -errno : -EINVAL;
    int link = skel_link_create(skeleton->progs.socket_owners.prog_fd, 0, BPF_TRACE_ITER);
    if (link < 0) {
        int error = errno;
        socket_owners_bpf__destroy(skeleton);
        return -error;
    }
    out->skeleton = skeleton;
    out->link_fd = link;
    return 0;
}

int ktricks_owners_bpf_open_iterator(const struct ktricks_owners_bpf* loaded) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.iter_create.link_fd = (__u32)loaded->link_fd;
    int fd = skel_sys_bpf(BPF_ITER_CREATE, &attr, sizeof(attr));
    return fd < 0 ? -errno : fd;
}

unsigned ktricks_owners_bpf_reader_tgid(const struct ktricks_owners_bpf* loaded) {
    return loaded->skeleton->bss->reader_tgid;
}

void ktricks_owners_bpf_close(struct ktricks_owners_bpf* loaded) {
    if (loaded->link_fd >= 0) close(loaded->link_fd);
    if (loaded->skeleton) socket_owners_bpf__destroy(loaded->skeleton);
    loaded->link_fd = -1;
    loaded->skeleton = 0;
}
