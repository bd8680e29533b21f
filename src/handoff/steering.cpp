// See steering.hpp. The program, in the notation of the kernel's eBPF assembler:
//
//     r6 = r1                       ; the context (struct sk_reuseport_md)
//     *(u32 *)(r10 - 4) = 0         ; key 0, on the stack
//     r2 = map ll                   ; the one-entry REUSEPORT_SOCKARRAY
//     r1 = r6
//     r3 = r10 ; r3 += -4           ; &key
//     r4 = 0                        ; flags
//     call bpf_sk_select_reuseport  ; selects map[0] for this connection (or migration)
//     r0 = SK_PASS ; exit
//
// SK_PASS is returned even if the selection failed (map[0] empty: only possible while serve swaps
// sockets it still holds, which it never does): the kernel then falls back to its hash choice
// among the group, which is what a plain SO_REUSEPORT group does. SK_DROP would refuse the client.
#include "handoff/steering.hpp"

#include <linux/bpf.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cstdint>

#include "ktricks/core/error.hpp"

namespace ktricks::handoff::detail {
namespace {

long bpf(int command, bpf_attr& attr) { return ::syscall(SYS_bpf, command, &attr, sizeof(attr)); }

constexpr bpf_insn insn(std::uint8_t code, std::uint8_t dst, std::uint8_t src, std::int16_t off,
                        std::int32_t imm) {
    bpf_insn i{};
    i.code = code;
    i.dst_reg = dst & 0xf;
    i.src_reg = src & 0xf;
    i.off = off;
    i.imm = imm;
    return i;
}

}  // namespace

ReuseportSteering ReuseportSteering::create() {
    ReuseportSteering steering;
    bpf_attr attr{};
    attr.map_type = BPF_MAP_TYPE_REUSEPORT_SOCKARRAY;
    attr.key_size = sizeof(std::uint32_t);
    attr.value_size = sizeof(std::uint64_t);  // a socket fd from user space, the socket cookie to BPF
    attr.max_entries = 1;
    steering.map_ = Fd(static_cast<int>(bpf(BPF_MAP_CREATE, attr)));
    if (!steering.map_) throw_errno("bpf(BPF_MAP_CREATE)", "REUSEPORT_SOCKARRAY for SO_REUSEPORT steering");

    const std::array<bpf_insn, 11> program{
        insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_1, 0, 0),
        insn(BPF_ST | BPF_MEM | BPF_W, BPF_REG_10, 0, -4, 0),
        insn(BPF_LD | BPF_DW | BPF_IMM, BPF_REG_2, BPF_PSEUDO_MAP_FD, 0, steering.map_.get()),
        insn(0, 0, 0, 0, 0),
        insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_1, BPF_REG_6, 0, 0),
        insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_10, 0, 0),
        insn(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_3, 0, 0, -4),
        insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_4, 0, 0, 0),
        insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_select_reuseport),
        insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, SK_PASS),
        insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
    };
    static const char license[] = "GPL";  // bpf_sk_select_reuseport is not GPL-only; any string works
    attr = {};
    attr.prog_type = BPF_PROG_TYPE_SK_REUSEPORT;
    attr.expected_attach_type = BPF_SK_REUSEPORT_SELECT_OR_MIGRATE;
    attr.insns = reinterpret_cast<std::uint64_t>(program.data());
    attr.insn_cnt = program.size();
    attr.license = reinterpret_cast<std::uint64_t>(license);
    steering.program_ = Fd(static_cast<int>(bpf(BPF_PROG_LOAD, attr)));
    if (!steering.program_)
        throw_errno("bpf(BPF_PROG_LOAD)", "SK_REUSEPORT select-or-migrate program for SO_REUSEPORT steering");
    return steering;
}

void ReuseportSteering::attach(int socket) const {
    int fd = program_.get();
    if (::setsockopt(socket, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &fd, sizeof(fd)) < 0)
        throw_errno("setsockopt(SO_ATTACH_REUSEPORT_EBPF)", "the listener's reuseport group");
}

void ReuseportSteering::steer_to(int socket) const {
    std::uint32_t key = 0;
    std::uint64_t value = static_cast<std::uint64_t>(socket);
    bpf_attr attr{};
    attr.map_fd = static_cast<std::uint32_t>(map_.get());
    attr.key = reinterpret_cast<std::uint64_t>(&key);
    attr.value = reinterpret_cast<std::uint64_t>(&value);
    attr.flags = BPF_ANY;
    if (bpf(BPF_MAP_UPDATE_ELEM, attr) < 0) throw_errno("bpf(BPF_MAP_UPDATE_ELEM)", "the steering map");
}

}  // namespace ktricks::handoff::detail
