# sockets: ss through sock_diag (dumps, inet_diag filter bytecode, socket owners).
ktricks_component(sockets DEPENDS netlink SOURCES
  src/sockets/filter.cpp
  src/sockets/cgroups.cpp
  src/sockets/decode.cpp
  src/sockets/owners.cpp
  src/sockets/sockets.cpp
  src/sockets/watch.cpp)
