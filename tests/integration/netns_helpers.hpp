// Netns: a named network namespace a test makes for itself.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "process_helpers.hpp"

namespace ktricks::test {

// A named network namespace (ip netns add), deleted with everything in it when the test ends.
class Netns {
public:
    Netns() {
        static std::atomic<int> counter{0};
        name_ = fmt::format("ktns-{}-{}", ::getpid(), counter++);
        auto result = run({"ip", "netns", "add", name_});
        if (result.status != 0) throw std::runtime_error("ip netns add: " + result.err);
        ip("link set lo up");
    }
    ~Netns() { run({"ip", "netns", "del", name_}); }
    Netns(const Netns&) = delete;
    Netns& operator=(const Netns&) = delete;

    const std::string& name() const noexcept { return name_; }
    // Runs `ip -n NS ARGS` (ARGS split on spaces) and fails the test if it fails.
    void ip(const std::string& args) const {
        std::vector<std::string> argv = {"ip", "-n", name_};
        for (const auto& word : lines_of(replace_spaces(args))) argv.push_back(word);
        auto result = run(argv);
        ASSERT_EQ(result.status, 0) << result.describe;
    }
    // `ip -n NS -batch FILE`
    void batch(const std::string& file) const {
        auto result = run({"ip", "-n", name_, "-force", "-batch", file}, {}, std::chrono::seconds(60));
        ASSERT_EQ(result.status, 0) << result.describe;
    }
    std::vector<std::string> exec_prefix() const { return {"ip", "netns", "exec", name_}; }

private:
    static std::string replace_spaces(std::string text) {
        std::replace(text.begin(), text.end(), ' ', '\n');
        return text;
    }
    std::string name_;
};

}  // namespace ktricks::test
