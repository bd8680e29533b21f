# netlink: the libmnl-based layer (src/netlink/netlink.cpp) and the tools on it (sockets, procwatch).
ktricks_link_pkg(LIBMNL libmnl)
target_sources(ktricks PRIVATE
  src/netlink/netlink.cpp
)
target_sources(ktricks PRIVATE
  src/netlink/filter.cpp
  src/netlink/decode.cpp
  src/netlink/owners.cpp
  src/netlink/sockets.cpp
  src/netlink/procwatch.cpp
)
if(TARGET ktricks_cli)
  target_sources(ktricks_cli PRIVATE src/cli/sockets.cpp src/cli/procwatch.cpp src/cli/tour_sockets.cpp)
endif()
