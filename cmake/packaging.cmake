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
set(KTRICKS_SYSTEMD_USER_UNIT_DIR "lib/systemd/user"
    CACHE STRING "Where systemd user units go (relative to the prefix)")
file(GLOB ktricks_user_units CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/packaging/systemd/user/*.service)
install(FILES ${ktricks_user_units} DESTINATION ${KTRICKS_SYSTEMD_USER_UNIT_DIR} COMPONENT runtime)
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

# Development component: one static library per trick component, each with its own CMake export
# set and pkg-config file, so that a consumer links exactly the components it uses (and their
# dependencies, since the libraries are static) and nothing else.
install(DIRECTORY include/ktricks DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)
install(FILES ${CMAKE_BINARY_DIR}/generated/ktricks/version.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ktricks
        COMPONENT dev)
get_property(KTRICKS_COMPONENTS GLOBAL PROPERTY KTRICKS_COMPONENTS)
set(KTRICKS_CONFIG_GRAPH "")
set(KTRICKS_ALL_PC_REQUIRES "")
foreach(component ${KTRICKS_COMPONENTS})
  install(TARGETS ktricks_${component} EXPORT ktricks-${component}-targets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
  install(EXPORT ktricks-${component}-targets NAMESPACE ktricks:: FILE ktricks-${component}-targets.cmake
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ktricks COMPONENT dev)
  get_property(depends GLOBAL PROPERTY KTRICKS_COMPONENT_DEPENDS_${component})
  get_property(packages GLOBAL PROPERTY KTRICKS_COMPONENT_PKG_${component})
  # For ktricksConfig.cmake: what the component needs before its targets can be imported.
  set(pc_requires "")
  foreach(dependency ${depends})
    list(APPEND pc_requires ktricks-${dependency})
  endforeach()
  set(config_packages "")
  foreach(package ${packages})
    string(REPLACE "|" ";" parts "${package}")
    list(POP_FRONT parts prefix)
    list(APPEND pc_requires ${parts})
    list(JOIN parts " " modules)
    string(APPEND config_packages "\n  pkg_check_modules(${prefix} REQUIRED IMPORTED_TARGET GLOBAL ${modules})")
  endforeach()
  string(APPEND KTRICKS_CONFIG_GRAPH "set(_ktricks_depends_${component} \"${depends}\")\n")
  string(APPEND KTRICKS_CONFIG_GRAPH "set(_ktricks_packages_${component} \"${config_packages}\")\n")
  # ktricks-COMPONENT.pc. Requires (not .private): a static library's dependencies are the consumer's.
  if(component STREQUAL "core")
    set(pc_requires nlohmann_json)
    set(KTRICKS_PC_EXTRA_LIBS " -pthread")
    # The libraries were built with {fmt} header-only; a consumer must see the same inline definitions.
    set(KTRICKS_PC_EXTRA_CFLAGS " -std=c++20 -DFMT_HEADER_ONLY=1")
  else()
    set(KTRICKS_PC_EXTRA_LIBS "")
    set(KTRICKS_PC_EXTRA_CFLAGS "")
  endif()
  list(JOIN pc_requires ", " KTRICKS_PC_REQUIRES)
  set(KTRICKS_PC_NAME ktricks-${component})
  set(KTRICKS_PC_LIBS "-L\${libdir} -lktricks-${component}${KTRICKS_PC_EXTRA_LIBS}")
  configure_file(packaging/ktricks.pc.in ${CMAKE_BINARY_DIR}/pkgconfig/ktricks-${component}.pc @ONLY)
  install(FILES ${CMAKE_BINARY_DIR}/pkgconfig/ktricks-${component}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
          COMPONENT dev)
  list(APPEND KTRICKS_ALL_PC_REQUIRES ktricks-${component})
endforeach()
string(APPEND KTRICKS_CONFIG_GRAPH "set(_ktricks_components \"${KTRICKS_COMPONENTS}\")\n")
# ktricks.pc: every component, for a program that wants them all.
list(JOIN KTRICKS_ALL_PC_REQUIRES ", " KTRICKS_PC_REQUIRES)
set(KTRICKS_PC_NAME ktricks)
set(KTRICKS_PC_LIBS "")
set(KTRICKS_PC_EXTRA_CFLAGS "")
configure_file(packaging/ktricks.pc.in ${CMAKE_BINARY_DIR}/pkgconfig/ktricks.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/pkgconfig/ktricks.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

include(CMakePackageConfigHelpers)
configure_package_config_file(cmake/ktricksConfig.cmake.in ${CMAKE_BINARY_DIR}/ktricksConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ktricks)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/ktricksConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/ktricksConfig.cmake ${CMAKE_BINARY_DIR}/ktricksConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ktricks COMPONENT dev)

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
# The libraries are static, so a consumer links their dependencies too: core's always, each other
# component's only when it uses that component (its pkg-config file or find_package COMPONENT says so).
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libfmt-dev, nlohmann-json3-dev")
set(CPACK_DEBIAN_DEV_PACKAGE_RECOMMENDS "libmnl-dev, libseccomp-dev, libmariadb-dev, zlib1g-dev, \
libtomlplusplus-dev, libavformat-dev, libavcodec-dev, libavfilter-dev, libavutil-dev, libswscale-dev, \
libswresample-dev, libfuse3-dev")
set(CPACK_COMPONENT_DEV_DESCRIPTION_SUMMARY "C++20 library behind the ktricks command (development files)")
set(CPACK_DEBIAN_DEV_DESCRIPTION
"The static library libktricks, its headers, a pkg-config file and a CMake
package, for programs that use the kernel tricks of ktricks directly.")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
