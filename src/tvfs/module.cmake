# tvfs: probe + decision engine (pure), profiles (toml++), and, outside the fuzz build, the FUSE
# filesystem with the FFmpeg libraries: catalog (names), probe cache, output cache (LRU), segments
# (the outputs and their worker), the FUSE operations, the mount and the source watcher.
set(tvfs_sources src/tvfs/profile.cpp src/tvfs/decide.cpp src/tvfs/probe.cpp src/tvfs/mp4_boxes.cpp)
if(NOT KTRICKS_FUZZ)
  list(APPEND tvfs_sources src/tvfs/media.cpp src/tvfs/continuity.cpp src/tvfs/catalog.cpp src/tvfs/probe_cache.cpp src/tvfs/cache.cpp
       src/tvfs/segments.cpp src/tvfs/operations.cpp src/tvfs/mount.cpp src/tvfs/source_watch.cpp)
endif()
ktricks_component(tvfs DEPENDS core SOURCES ${tvfs_sources})
target_compile_definitions(ktricks_tvfs PRIVATE TOML_HEADER_ONLY=1)  # as netwatch (src/netwatch/module.cmake)
ktricks_component_pkg(tvfs TVFS_AV libavformat libavcodec libavfilter libavutil libswscale libswresample)
if(NOT KTRICKS_FUZZ)
  ktricks_component_pkg(tvfs TVFS_FUSE fuse3)
endif()

# The media path once more, built with AddressSanitizer, for the corrupt-media integration test
# (tvfs_test.cpp runs it next to the ktricks binary). Skipped when the whole build is sanitized.
if(NOT KTRICKS_FUZZ AND NOT KTRICKS_SANITIZE AND KTRICKS_TESTS)
  add_executable(tvfs_asan_check src/tvfs/asan_check.cpp src/tvfs/profile.cpp src/tvfs/decide.cpp src/tvfs/probe.cpp
                 src/tvfs/media.cpp src/tvfs/continuity.cpp src/tvfs/mp4_boxes.cpp
                 src/core/error.cpp src/core/fd.cpp)
  target_include_directories(tvfs_asan_check PRIVATE include src)
  target_compile_options(tvfs_asan_check PRIVATE -fsanitize=address -fno-omit-frame-pointer)
  target_link_options(tvfs_asan_check PRIVATE -fsanitize=address)
  target_compile_definitions(tvfs_asan_check PRIVATE TOML_HEADER_ONLY=1)
  target_link_libraries(tvfs_asan_check PRIVATE fmt::fmt-header-only PkgConfig::TVFS_AV ktricks_warnings)
  set_target_properties(tvfs_asan_check PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
endif()
ktricks_toml_sources(src/tvfs/profile.cpp)
