# tvfs: probe + decision engine (pure), profiles (toml++), and, outside the fuzz build, the FUSE
# filesystem with the FFmpeg libraries.
pkg_check_modules(TOMLPLUSPLUS REQUIRED IMPORTED_TARGET tomlplusplus)
target_sources(ktricks PRIVATE src/tvfs/profile.cpp src/tvfs/decide.cpp)
target_link_libraries(ktricks PUBLIC PkgConfig::TOMLPLUSPLUS)
if(NOT KTRICKS_FUZZ)
  pkg_check_modules(TVFS_FUSE REQUIRED IMPORTED_TARGET fuse3)
  pkg_check_modules(TVFS_AV REQUIRED IMPORTED_TARGET libavformat libavcodec libavfilter libavutil libswscale libswresample)
  target_sources(ktricks PRIVATE src/tvfs/probe.cpp src/tvfs/media.cpp src/tvfs/fs.cpp)
  target_link_libraries(ktricks PUBLIC PkgConfig::TVFS_FUSE PkgConfig::TVFS_AV)
endif()
if(TARGET ktricks_cli)
  target_sources(ktricks_cli PRIVATE src/cli/tvfs.cpp src/cli/tour_tvfs.cpp)
endif()
