# procwatch: fork, exec and exit events from the proc connector.
ktricks_component(procwatch DEPENDS netlink SOURCES src/procwatch/procwatch.cpp)

if(NOT KTRICKS_FUZZ)
  # Two tricks on one caller-owned EventLoop (docs/architecture.md, "A watcher on your loop").
  add_executable(two_tricks examples/two_tricks.cpp)
  target_link_libraries(two_tricks PRIVATE ktricks_netwatch ktricks_procwatch ktricks_warnings)
  set_target_properties(two_tricks PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/examples)
endif()
