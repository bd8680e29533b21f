# Event sinks: Redis Streams through hiredis, an on-disk spool. Linked by helper programs only
# (mysql-watch), never by the front door (docs/events.md).
ktricks_component(sinks DEPENDS core SOURCES
  src/sinks/target.cpp
  src/sinks/publisher.cpp)
ktricks_component_pkg(sinks HIREDIS hiredis)
