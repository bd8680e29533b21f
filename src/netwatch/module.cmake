# netwatch: run scripts on rtnetlink / nl80211 events (built on the netlink layer in src/netlink).
ktricks_link_pkg(TOMLPLUSPLUS tomlplusplus)
target_sources(ktricks PRIVATE
  src/netwatch/decode.cpp
  src/netwatch/dispatcher.cpp
  src/netwatch/record.cpp
  src/netwatch/rules.cpp
  src/netwatch/runner.cpp
  src/netwatch/state.cpp
  src/netwatch/watch.cpp
)
if(TARGET ktricks_cli)
  target_sources(ktricks_cli PRIVATE src/cli/netwatch.cpp src/cli/tour_netwatch.cpp)
endif()
