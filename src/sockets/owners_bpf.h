/* C interface to the BPF socket-owner iterator (owners_bpf.c), used by owners.cpp. */
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

struct socket_owners_bpf;
struct ktricks_owners_bpf {
    struct socket_owners_bpf* skeleton;
    int link_fd;
};

/* Loads the program and its iterator link; 0, or -errno (the failing bpf() call's). */
int ktricks_owners_bpf_load(struct ktricks_owners_bpf* out);
/* A new iterator fd (O_CLOEXEC, as bpf() makes every fd) whose reads give the records; or -errno. */
int ktricks_owners_bpf_open_iterator(const struct ktricks_owners_bpf* loaded);
/* Set by the program on the first read: the reader's tgid in the initial pid namespace. */
unsigned ktricks_owners_bpf_reader_tgid(const struct ktricks_owners_bpf* loaded);
void ktricks_owners_bpf_close(struct ktricks_owners_bpf* loaded);

/* One record as the program writes it. */
struct ktricks_owner_record {
    unsigned inode, pid, fd;
    char comm[16];
};

#ifdef __cplusplus
}
#endif
