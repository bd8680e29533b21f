# netlink: the libmnl-based layer (dumps, subscriptions, attributes, netns) that sockets, procwatch
# and netwatch are built on.
ktricks_component(netlink DEPENDS core SOURCES src/netlink/netlink.cpp src/netlink/proc_connector.cpp)
ktricks_component_pkg(netlink LIBMNL libmnl)
