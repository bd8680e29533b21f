# mysql-watch: binlog parser, filename decoder, inotify watcher, libmariadb for the redo path.
pkg_check_modules(MARIADB REQUIRED IMPORTED_TARGET libmariadb)
pkg_check_modules(ZLIB REQUIRED IMPORTED_TARGET zlib)
target_sources(ktricks PRIVATE
  src/mysqlwatch/filename.cpp
  src/mysqlwatch/statement.cpp
  src/mysqlwatch/binlog.cpp
  src/mysqlwatch/change.cpp
  src/mysqlwatch/sql.cpp
  src/mysqlwatch/watch.cpp
  src/mysqlwatch/check.cpp
)
target_link_libraries(ktricks PUBLIC PkgConfig::MARIADB PkgConfig::ZLIB)
if(TARGET ktricks_cli)
  target_sources(ktricks_cli PRIVATE src/cli/mysql_watch.cpp src/cli/tour_mysql_watch.cpp)
endif()
