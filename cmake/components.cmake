# One static library per trick ("component"), each linking only what it needs:
#
#   ktricks_component(NAME SOURCES src... [DEPENDS component...])
#       the target ktricks_NAME (alias ktricks::NAME, file libktricks-NAME.a), public headers from
#       include/, private ones from src/; DEPENDS are other components (core, netlink), never a trick.
#   ktricks_component_pkg(NAME PREFIX [ARCHIVE libfoo.a] module...)
#       links the component with pkg-config MODULEs (imported target PkgConfig::PREFIX, shared with
#       tests and tools) and records them for its installed CMake package and pkg-config file.
#       ARCHIVE: link that static archive instead of the shared library when the -dev package ships
#       one (a component the front door carries but rarely runs: its code is then mapped only when it
#       is called, not loaded by ld.so at every start; see docs/architecture.md).
#
# The graph is recorded in global properties so that cmake/packaging.cmake can write one export set,
# one pkg-config file (ktricks-NAME.pc) and one find_package COMPONENT per component.

function(ktricks_component name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "SOURCES;DEPENDS")
  set(target ktricks_${name})
  add_library(${target} STATIC ${arg_SOURCES})
  add_library(ktricks::${name} ALIAS ${target})
  set_target_properties(${target} PROPERTIES OUTPUT_NAME ktricks-${name} EXPORT_NAME ${name})
  target_include_directories(${target}
    PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
           $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/generated>
           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
    PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(${target} PRIVATE $<BUILD_INTERFACE:ktricks_warnings>)
  foreach(dependency ${arg_DEPENDS})
    target_link_libraries(${target} PUBLIC ktricks_${dependency})
  endforeach()
  set_property(GLOBAL APPEND PROPERTY KTRICKS_COMPONENTS ${name})
  set_property(GLOBAL PROPERTY KTRICKS_COMPONENT_DEPENDS_${name} ${arg_DEPENDS})
  # The umbrella target `ktricks` (tests, fuzzers, the tour) links every component.
  target_link_libraries(ktricks INTERFACE ${target})
endfunction()

function(ktricks_component_pkg name prefix)
  cmake_parse_arguments(PARSE_ARGV 2 arg "" "ARCHIVE" "")
  set(modules ${arg_UNPARSED_ARGUMENTS})
  if(NOT TARGET PkgConfig::${prefix})
    pkg_check_modules(${prefix} REQUIRED IMPORTED_TARGET GLOBAL ${modules})
  endif()
  set(link PkgConfig::${prefix})
  if(arg_ARCHIVE)
    find_library(KTRICKS_${prefix}_ARCHIVE NAMES ${arg_ARCHIVE} HINTS ${${prefix}_LIBRARY_DIRS} NO_CACHE)
    if(KTRICKS_${prefix}_ARCHIVE)
      set(link ${KTRICKS_${prefix}_ARCHIVE})
      target_include_directories(ktricks_${name} SYSTEM PUBLIC ${${prefix}_INCLUDE_DIRS})
    endif()
  endif()
  # PUBLIC: the libraries are static, and some headers name these libraries' types (libmnl).
  target_link_libraries(ktricks_${name} PUBLIC ${link})
  list(JOIN modules "|" modules)
  set_property(GLOBAL APPEND PROPERTY KTRICKS_COMPONENT_PKG_${name} "${prefix}|${modules}")
endfunction()

# ktricks_toml_sources(SOURCE...): the files that include toml++ (used header-only). toml++ 3.3
# (Debian 12) reaches TOML_UNREACHABLE in impl::is_non_ascii_horizontal_whitespace for code points
# U+00A1..U+0499 outside strings (fixed upstream in 3.4): undefined behaviour inside toml++, as it was
# in Debian's shared libtomlplusplus, where no sanitizer saw it. In sanitized builds UBSan would stop
# every fuzz run at the first such byte, hiding everything after it; so in those files only, the
# `unreachable` check is off (all other checks stay on).
function(ktricks_toml_sources)
  if(KTRICKS_FUZZ OR KTRICKS_SANITIZE)
    set_source_files_properties(${ARGN} DIRECTORY ${PROJECT_SOURCE_DIR} PROPERTIES COMPILE_OPTIONS -fno-sanitize=unreachable)
  endif()
endfunction()
