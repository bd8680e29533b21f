# mysql-watch: binlog parser, filename decoder, inotify watcher, libmariadb for the redo path.
ktricks_link_pkg(MARIADB libmariadb)
ktricks_link_pkg(ZLIB zlib)
target_sources(ktricks PRIVATE
  src/mysqlwatch/filename.cpp
  src/mysqlwatch/statement.cpp
  src/mysqlwatch/binlog.cpp
  src/mysqlwatch/change.cpp
  src/mysqlwatch/sql.cpp
  src/mysqlwatch/watch.cpp
  src/mysqlwatch/check.cpp
)
if(TARGET ktricks_cli)
  target_sources(ktricks_cli PRIVATE src/cli/mysql_watch.cpp src/cli/tour_mysql_watch.cpp)
endif()
