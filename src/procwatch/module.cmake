# procwatch: fork, exec and exit events from the proc connector.
ktricks_component(procwatch DEPENDS netlink SOURCES src/procwatch/procwatch.cpp)
