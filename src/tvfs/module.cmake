# tvfs: probe + decision engine (pure), profiles (toml++), and, outside the fuzz build, the FUSE
# filesystem with the FFmpeg libraries.
ktricks_link_pkg(TOMLPLUSPLUS tomlplusplus)
ktricks_link_pkg(TVFS_AV libavformat libavcodec libavfilter libavutil libswscale libswresample)
target_sources(ktricks PRIVATE src/tvfs/profile.cpp src/tvfs/decide.cpp src/tvfs/probe.cpp)
if(NOT KTRICKS_FUZZ)
  ktricks_link_pkg(TVFS_FUSE fuse3)
  target_sources(ktricks PRIVATE src/tvfs/media.cpp src/tvfs/fs.cpp)
endif()
if(TARGET ktricks_cli)
  target_sources(ktricks_cli PRIVATE src/cli/tvfs.cpp src/cli/tour_tvfs.cpp)
endif()
# The media path once more, built with AddressSanitizer, for the corrupt-media integration test
# (tvfs_test.cpp runs it next to the ktricks binary). Skipped when the whole build is sanitized.
if(NOT KTRICKS_FUZZ AND NOT KTRICKS_SANITIZE AND KTRICKS_TESTS)
  add_executable(tvfs_asan_check src/tvfs/asan_check.cpp src/tvfs/profile.cpp src/tvfs/decide.cpp src/tvfs/probe.cpp
                 src/tvfs/media.cpp src/core/error.cpp src/core/fd.cpp)
  target_include_directories(tvfs_asan_check PRIVATE include src)
  target_compile_options(tvfs_asan_check PRIVATE -fsanitize=address -fno-omit-frame-pointer)
  target_link_options(tvfs_asan_check PRIVATE -fsanitize=address)
  target_link_libraries(tvfs_asan_check PRIVATE fmt::fmt PkgConfig::TOMLPLUSPLUS PkgConfig::TVFS_AV ktricks_warnings)
  set_target_properties(tvfs_asan_check PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
endif()
