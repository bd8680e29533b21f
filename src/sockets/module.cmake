# sockets: ss through sock_diag (dumps, inet_diag filter bytecode, socket owners).
ktricks_component(sockets DEPENDS netlink SOURCES
  src/sockets/filter.cpp
  src/sockets/cgroups.cpp
  src/sockets/decode.cpp
  src/sockets/owners.cpp
  src/sockets/proc_raw.cpp
  src/sockets/sockets.cpp
  src/sockets/watch.cpp)

# -p through a BPF task_file iterator: bpf/socket_owners.bpf.c compiled with clang -target bpf (CO-RE:
# hand-written kernel types with preserve_access_index, no vmlinux.h), turned into a *light* skeleton
# (bpftool gen skeleton -L: the object and a loader program as bytes in a header). The light skeleton
# needs no libbpf at run time, only <bpf/skel_internal.h> from libbpf-dev at build time, so the front
# door gains no library and no start-up cost (docs/architecture.md). Without clang or bpftool the
# component builds with the /proc walk only.
find_program(KTRICKS_BPF_CLANG NAMES clang clang-14)
find_program(KTRICKS_BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin)
find_path(KTRICKS_SKEL_INTERNAL bpf/skel_internal.h)
if(KTRICKS_BPF_CLANG AND KTRICKS_BPFTOOL AND KTRICKS_SKEL_INTERNAL)
  set(bpf_source ${PROJECT_SOURCE_DIR}/src/sockets/bpf/socket_owners.bpf.c)
  set(bpf_object ${PROJECT_BINARY_DIR}/generated/sockets/socket_owners.bpf.o)
  set(bpf_skeleton ${PROJECT_BINARY_DIR}/generated/sockets/socket_owners.lskel.h)
  add_custom_command(OUTPUT ${bpf_object}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/generated/sockets
    COMMAND ${KTRICKS_BPF_CLANG} -g -O2 -Wall -Werror -target bpf
            -I/usr/include/${CMAKE_LIBRARY_ARCHITECTURE} -c ${bpf_source} -o ${bpf_object}
    DEPENDS ${bpf_source} VERBATIM COMMENT "BPF object socket_owners.bpf.o")
  # bpftool writes the header to stdout; through a temporary file so that a failure leaves none.
  add_custom_command(OUTPUT ${bpf_skeleton}
    COMMAND sh -c "${KTRICKS_BPFTOOL} gen skeleton -L ${bpf_object} name socket_owners_bpf > ${bpf_skeleton}.tmp && mv ${bpf_skeleton}.tmp ${bpf_skeleton}"
    DEPENDS ${bpf_object} VERBATIM COMMENT "BPF light skeleton socket_owners.lskel.h")
  enable_language(C)
  target_sources(ktricks_sockets PRIVATE src/sockets/owners_bpf.c ${bpf_skeleton})
  set_source_files_properties(src/sockets/owners_bpf.c PROPERTIES
    INCLUDE_DIRECTORIES ${PROJECT_BINARY_DIR}/generated/sockets)
  target_compile_definitions(ktricks_sockets PRIVATE KTRICKS_SOCKETS_BPF=1)
else()
  message(STATUS "sockets -p: no clang, bpftool or libbpf-dev: building the /proc walk only")
endif()
