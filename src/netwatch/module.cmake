# netwatch: run scripts on rtnetlink / nl80211 events (built on the netlink layer in src/netlink).
pkg_check_modules(TOMLPLUSPLUS REQUIRED IMPORTED_TARGET tomlplusplus)
target_sources(ktricks PRIVATE
  src/netwatch/decode.cpp
  src/netwatch/dispatcher.cpp
  src/netwatch/record.cpp
  src/netwatch/rules.cpp
  src/netwatch/runner.cpp
  src/netwatch/state.cpp
  src/netwatch/watch.cpp
)
target_link_libraries(ktricks PUBLIC PkgConfig::TOMLPLUSPLUS)
if(TARGET ktricks_cli)
  target_sources(ktricks_cli PRIVATE src/cli/netwatch.cpp src/cli/tour_netwatch.cpp)
endif()
