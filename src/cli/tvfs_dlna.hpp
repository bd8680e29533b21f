// minidlna serving a tvfs mount, for `ktricks tvfs --dlna`.
#pragma once

#include <optional>
#include <string>

#include "ktricks/core/child.hpp"

namespace ktricks::cli {

struct DlnaOptions {
    std::string mountpoint;  // absolute
    std::string work_dir;    // its configuration, database and log go in WORK_DIR/minidlna-PID
    std::string iface = "lo";
    int port = 8200;
};

// minidlna, restarted with -r (incremental rescan) after the source changes: a running minidlna
// cannot be told to rescan, and its own inotify sees nothing behind a FUSE mount.
class Dlna {
public:
    explicit Dlna(DlnaOptions options);  // writes the configuration
    ~Dlna();                             // stops it and removes its directory
    Dlna(const Dlna&) = delete;
    Dlna& operator=(const Dlna&) = delete;

    void start(bool rescan);
    void stop();  // SIGTERM, SIGKILL after 5 s
    void restart() {
        stop();
        start(true);
    }

private:
    DlnaOptions options_;
    std::string dir_;
    std::optional<Child> child_;
};

}  // namespace ktricks::cli
