# mysql-watch: binlog parser, filename decoder, inotify watcher, libmariadb for the redo path.
ktricks_component(mysqlwatch DEPENDS core SOURCES
  src/mysqlwatch/filename.cpp
  src/mysqlwatch/statement.cpp
  src/mysqlwatch/binlog.cpp
  src/mysqlwatch/rows.cpp
  src/mysqlwatch/change.cpp
  src/mysqlwatch/sql.cpp
  src/mysqlwatch/watch.cpp
  src/mysqlwatch/check.cpp
  src/mysqlwatch/state.cpp)
ktricks_component_pkg(mysqlwatch MARIADB libmariadb)
ktricks_component_pkg(mysqlwatch ZLIB zlib)
