# once: a single-instance lock on an abstract unix socket, with an inbox.
ktricks_component(once DEPENDS core SOURCES
  src/once/lock_name.cpp
  src/once/lock.cpp
  src/once/message.cpp
  src/once/run.cpp)
