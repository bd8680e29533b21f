# Event sinks: Redis Streams through hiredis, NATS JetStream through libnats, an on-disk spool.
# Linked by helper programs only (mysql-watch, ktricks-publish), never by the front door
# (docs/events.md).
ktricks_component(sinks DEPENDS core SOURCES
  src/sinks/target.cpp
  src/sinks/publisher.cpp
  src/sinks/redis.cpp
  src/sinks/nats.cpp)
ktricks_component_pkg(sinks HIREDIS hiredis)
ktricks_component_pkg(sinks NATS libnats)
if(NOT KTRICKS_FUZZ)
  # examples/events_consume.cpp: reads what --publish sent (Redis or JetStream) and prints it.
  add_executable(events_consume examples/events_consume.cpp)
  target_link_libraries(events_consume PRIVATE ktricks_sinks ktricks_warnings)
  set_target_properties(events_consume PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/examples)
endif()
