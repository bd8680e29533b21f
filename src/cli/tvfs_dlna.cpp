#include "cli/tvfs_dlna.hpp"

#include <signal.h>
#include <unistd.h>

#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "ktricks/core/service.hpp"

namespace ktricks::cli {

namespace fs = std::filesystem;

Dlna::Dlna(DlnaOptions options) : options_(std::move(options)) {
    dir_ = fmt::format("{}/minidlna-{}", options_.work_dir, ::getpid());
    fs::create_directories(dir_ + "/db");
    std::ofstream conf(dir_ + "/minidlna.conf", std::ios::trunc);
    conf << fmt::format(
        "media_dir=V,{}\ndb_dir={}/db\nlog_dir={}\nport={}\nnetwork_interface={}\nfriendly_name=ktricks tvfs\n"
        "inotify=no\nnotify_interval=60\nstrict_dlna=no\nenable_tivo=no\n",
        options_.mountpoint, dir_, dir_, options_.port, options_.iface);
}

Dlna::~Dlna() {
    stop();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
}

void Dlna::start(bool rescan) {
    SpawnOptions spawn;
    spawn.argv = {"minidlnad", "-f", dir_ + "/minidlna.conf", "-S", "-P", dir_ + "/minidlna.pid"};
    if (rescan) spawn.argv.push_back("-r");
    spawn.parent_death_signal = SIGTERM;
    child_.emplace(Child::spawn(spawn));
    log_info("minidlna pid {} serving {} on {} port {}{}", child_->pid(), options_.mountpoint, options_.iface,
             options_.port, rescan ? " (rescan)" : "");
}

void Dlna::stop() {
    if (!child_) return;
    child_->signal(SIGTERM);
    if (!child_->wait(std::chrono::seconds(5))) {
        child_->signal(SIGKILL);
        child_->wait();
    }
    child_.reset();
}

}  // namespace ktricks::cli
