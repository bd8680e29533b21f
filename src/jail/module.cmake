# jail: a server in an empty network namespace, serving only the sockets handed to it.
ktricks_component(jail DEPENDS core SOURCES
  src/jail/allow.cpp
  src/jail/protocol.cpp
  src/jail/sandbox.cpp
  src/jail/intercept.cpp
  src/jail/broker.cpp
  src/jail/client.cpp
  src/jail/run.cpp
  src/jail/generations.cpp)
ktricks_component_pkg(jail SECCOMP ARCHIVE libseccomp.a libseccomp)

# A LISTEN_FDS server for the jail's integration tests and benchmark (also copied into a container).
if(KTRICKS_TESTS AND NOT KTRICKS_FUZZ)
  add_executable(jail_test_server tests/integration/jail_test_server.cpp)
  target_link_libraries(jail_test_server PRIVATE ktricks_jail ktricks_warnings)
  set_target_properties(jail_test_server PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
  # The escape suite's attacker, run inside a jail (tests/integration/jail_test.cpp, Escape*).
  add_executable(jail_test_escape tests/integration/jail_test_escape.cpp)
  target_link_libraries(jail_test_escape PRIVATE ktricks_warnings)
  set_target_properties(jail_test_escape PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
endif()
