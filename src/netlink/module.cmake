# netlink: the libmnl-based layer (src/netlink/netlink.cpp) and the tools on it (sockets, procwatch).
pkg_check_modules(LIBMNL REQUIRED IMPORTED_TARGET libmnl)
target_sources(ktricks PRIVATE
  src/netlink/netlink.cpp
)
target_link_libraries(ktricks PUBLIC PkgConfig::LIBMNL)
