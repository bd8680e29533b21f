# handoff: serve, reload, takeover and the live-connection Upgrader (include/ktricks/handoff.hpp).
ktricks_component(handoff DEPENDS core SOURCES
  src/handoff/protocol.cpp
  src/handoff/supervisor.cpp
  src/handoff/control.cpp
  src/handoff/proc_sockets.cpp
  src/handoff/steering.cpp
  src/handoff/takeover.cpp
  src/handoff/upgrader.cpp)

if(NOT KTRICKS_FUZZ)
  # The example server of the live-connection API (Upgrader).
  add_executable(handoff_chat examples/handoff_chat.cpp)
  target_link_libraries(handoff_chat PRIVATE ktricks_handoff ktricks_warnings)
  set_target_properties(handoff_chat PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/examples)

  # A real systemd-socket-activated server for the integration tests: libsystemd's sd_listen_fds
  # and sd_notify are the client side of the protocol serve speaks, not our reading of it.
  pkg_check_modules(LIBSYSTEMD IMPORTED_TARGET libsystemd)
  if(LIBSYSTEMD_FOUND AND KTRICKS_TESTS)
    add_executable(handoff_sd_server tests/integration/handoff_sd_server.cpp)
    target_link_libraries(handoff_sd_server PRIVATE PkgConfig::LIBSYSTEMD ktricks_warnings)
    set_target_properties(handoff_sd_server PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests/helpers)
  endif()
endif()
