# Installing and packaging: the binary with its man pages, completions, docs and systemd units
# (component `runtime`, Debian package `ktricks`), and the library with its headers, pkg-config file
# and CMake package (component `dev`, package `libktricks-dev`). `make deb` builds both with CPack.

# Man pages and completions are generated from the binary's own --help (scripts/gen-cli-docs.py),
# so they cannot drift from it; regenerated whenever the binary changes.
set(KTRICKS_CLI_DOCS ${CMAKE_BINARY_DIR}/cli-docs)
add_custom_command(
  OUTPUT ${KTRICKS_CLI_DOCS}/stamp
  COMMAND ${CMAKE_COMMAND} -E rm -rf ${KTRICKS_CLI_DOCS}
  COMMAND ${PROJECT_SOURCE_DIR}/scripts/gen-cli-docs.py $<TARGET_FILE:ktricks_cli> ${KTRICKS_CLI_DOCS}
  COMMAND ${CMAKE_COMMAND} -E touch ${KTRICKS_CLI_DOCS}/stamp
  DEPENDS ktricks_cli ${PROJECT_SOURCE_DIR}/scripts/gen-cli-docs.py
  COMMENT "Generating man pages and shell completions from ktricks --help"
  VERBATIM)
add_custom_target(cli_docs ALL DEPENDS ${KTRICKS_CLI_DOCS}/stamp)

# Runtime component.
install(DIRECTORY ${KTRICKS_CLI_DOCS}/man-gz/ DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT runtime)
install(FILES ${KTRICKS_CLI_DOCS}/completions/ktricks.bash DESTINATION share/bash-completion/completions
        RENAME ktricks COMPONENT runtime)
install(FILES ${KTRICKS_CLI_DOCS}/completions/_ktricks DESTINATION share/zsh/vendor-completions COMPONENT runtime)
install(FILES ${KTRICKS_CLI_DOCS}/completions/ktricks.fish DESTINATION share/fish/vendor_completions.d
        COMPONENT runtime)
set(KTRICKS_SYSTEMD_UNIT_DIR "lib/systemd/system" CACHE STRING "Where systemd units go (relative to the prefix)")
file(GLOB ktricks_units CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/packaging/systemd/*.service)
install(FILES ${ktricks_units} DESTINATION ${KTRICKS_SYSTEMD_UNIT_DIR} COMPONENT runtime)
file(GLOB ktricks_docs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/*.md)
install(FILES README.md ${ktricks_docs} DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT runtime)

# Debian wants copyright and a gzipped changelog in every package's doc directory.
foreach(component runtime dev)
  if(component STREQUAL runtime)
    set(doc_dir ${CMAKE_INSTALL_DATAROOTDIR}/doc/ktricks)
  else()
    set(doc_dir ${CMAKE_INSTALL_DATAROOTDIR}/doc/libktricks-dev)
  endif()
  install(FILES packaging/copyright DESTINATION ${doc_dir} COMPONENT ${component})
  install(FILES ${CMAKE_BINARY_DIR}/packaging/changelog.Debian.gz DESTINATION ${doc_dir} COMPONENT ${component})
endforeach()
add_custom_command(
  OUTPUT ${CMAKE_BINARY_DIR}/packaging/changelog.Debian.gz
  COMMAND /usr/bin/python3 -c "import gzip,sys; gzip.GzipFile(sys.argv[2],'wb',9,mtime=0).write(open(sys.argv[1],'rb').read())"
          ${PROJECT_SOURCE_DIR}/packaging/changelog ${CMAKE_BINARY_DIR}/packaging/changelog.Debian.gz
  DEPENDS ${PROJECT_SOURCE_DIR}/packaging/changelog
  VERBATIM)
add_custom_target(changelog ALL DEPENDS ${CMAKE_BINARY_DIR}/packaging/changelog.Debian.gz)

# Development component: the static library and what a consumer needs to find and link it.
install(TARGETS ktricks EXPORT ktricksTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
install(DIRECTORY include/ktricks DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)
install(FILES ${CMAKE_BINARY_DIR}/generated/ktricks/version.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ktricks
        COMPONENT dev)
install(EXPORT ktricksTargets NAMESPACE ktricks:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ktricks COMPONENT dev)

# The library is static, so a consumer links its dependencies too: the package config recreates
# the pkg-config imported targets the library was linked with (recorded by ktricks_link_pkg).
get_property(KTRICKS_PKG_LINKS GLOBAL PROPERTY KTRICKS_PKG_LINKS)
get_property(KTRICKS_PKG_REQUIRES GLOBAL PROPERTY KTRICKS_PKG_REQUIRES)
set(KTRICKS_FIND_PKG_MODULES "")
foreach(link ${KTRICKS_PKG_LINKS})
  string(REPLACE "|" ";" parts "${link}")
  list(POP_FRONT parts prefix)
  list(JOIN parts " " modules)
  string(APPEND KTRICKS_FIND_PKG_MODULES "  pkg_check_modules(${prefix} REQUIRED IMPORTED_TARGET GLOBAL ${modules})\n")
endforeach()
include(CMakePackageConfigHelpers)
configure_package_config_file(cmake/ktricksConfig.cmake.in ${CMAKE_BINARY_DIR}/ktricksConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ktricks)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/ktricksConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/ktricksConfig.cmake ${CMAKE_BINARY_DIR}/ktricksConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ktricks COMPONENT dev)
list(REMOVE_DUPLICATES KTRICKS_PKG_REQUIRES)
list(JOIN KTRICKS_PKG_REQUIRES ", " KTRICKS_PC_REQUIRES_PRIVATE)
configure_file(packaging/ktricks.pc.in ${CMAKE_BINARY_DIR}/ktricks.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/ktricks.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

# CPack: `make deb`.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ktricks)
set(CPACK_PACKAGE_VENDOR "ktricks developers")
set(CPACK_PACKAGE_CONTACT "ktricks developers <ktricks@example.invalid>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Linux kernel tricks for networking, IPC and filesystems")
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE ${PROJECT_HOMEPAGE_URL})
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME ktricks)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_STRIP_FILES TRUE)
# CPack writes the summary as the synopsis and indents these lines itself.
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION
"One command with one subcommand per trick: a single-instance lock that
cannot go stale (abstract unix sockets), zero-downtime server reloads
(socket handoff), servers in an empty network namespace, fast socket
listing and process events (netlink), scripts on network events, MySQL
table change detection (inotify) and a FUSE filesystem that shows videos
already transcoded for a smart TV.")
set(CPACK_DEBIAN_DEV_PACKAGE_NAME libktricks-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# The -dev packages of what ktricks_link_pkg linked (the library is static: consumers link them too).
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libfmt-dev, nlohmann-json3-dev, libmnl-dev, libseccomp-dev, \
libmariadb-dev, zlib1g-dev, libtomlplusplus-dev, libavformat-dev, libavcodec-dev, libavfilter-dev, \
libavutil-dev, libswscale-dev, libswresample-dev, libfuse3-dev")
set(CPACK_COMPONENT_DEV_DESCRIPTION_SUMMARY "C++20 library behind the ktricks command (development files)")
set(CPACK_DEBIAN_DEV_DESCRIPTION
"The static library libktricks, its headers, a pkg-config file and a CMake
package, for programs that use the kernel tricks of ktricks directly.")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
