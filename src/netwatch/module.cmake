# netwatch: run scripts on rtnetlink / nl80211 events (built on the netlink layer).
ktricks_component(netwatch DEPENDS netlink SOURCES
  src/netwatch/decode.cpp
  src/netwatch/dispatcher.cpp
  src/netwatch/leases.cpp
  src/netwatch/record.cpp
  src/netwatch/rules.cpp
  src/netwatch/state.cpp
  src/netwatch/watch.cpp)
# toml++ header-only (its default; Debian's pkg-config file would select the shared library): the
# front door maps no C++ shared library at all, so it can link libstdc++ statically.
target_compile_definitions(ktricks_netwatch PRIVATE TOML_HEADER_ONLY=1)
ktricks_toml_sources(src/netwatch/rules.cpp)
