// NATS JetStream through libnats: a synchronous publish that returns with the stream's
// acknowledgement (the message is stored, replicated to a quorum in a cluster), with Nats-Msg-Id =
// the event's id so the stream drops a repeat (a send whose acknowledgement was lost) within its
// duplicate window (2 minutes by default).
#include <nats/nats.h>

#include <fmt/format.h>

#include <vector>

#include "backend.hpp"

namespace ktricks::sinks::detail {
namespace {

// The status and the library's own explanation of the last failure on this thread.
std::string describe(std::string_view call, natsStatus status, jsErrCode code = static_cast<jsErrCode>(0)) {
    natsStatus last = NATS_OK;
    const char* text = nats_GetLastError(&last);
    std::string out = fmt::format("{}: {}", call, natsStatus_GetText(status));
    if (text && *text && std::string_view(text) != natsStatus_GetText(status))
        out += fmt::format(" ({})", text);
    if (code) out += fmt::format(" [JetStream error {}]", static_cast<int>(code));
    return out;
}

class Nats final : public Backend {
public:
    Nats(const Target& target, std::chrono::milliseconds timeout) : target_(target), timeout_(timeout) {}
    ~Nats() override { disconnect(); }

    bool connected() const noexcept override { return js_ != nullptr; }

    std::string connect() override {
        auto fault = open();
        if (!fault.empty()) disconnect();
        return fault;
    }

    std::string send(const std::string& subject, std::string_view id, std::string_view payload) override {
        std::string msg_id(id);  // libnats wants a C string
        jsPubOptions options;
        jsPubOptions_Init(&options);
        options.MsgId = msg_id.c_str();
        options.MaxWait = timeout_.count();
        jsPubAck* ack = nullptr;
        jsErrCode code = static_cast<jsErrCode>(0);
        natsStatus status = js_Publish(&ack, js_, subject.c_str(), payload.data(),
                                       static_cast<int>(payload.size()), &options, &code);
        if (status == NATS_NO_RESPONDERS)
            return fmt::format("no JetStream stream takes subject {} (create one, or add ?stream=NAME)",
                               subject);
        if (status != NATS_OK) return describe(fmt::format("publish {}", subject), status, code);
        duplicates_ += ack && ack->Duplicate;
        jsPubAck_Destroy(ack);
        return {};
    }

    void disconnect() noexcept override {
        if (js_) jsCtx_Destroy(js_);
        if (connection_) natsConnection_Destroy(connection_);
        if (options_) natsOptions_Destroy(options_);
        js_ = nullptr;
        connection_ = nullptr;
        options_ = nullptr;
    }

    std::uint64_t take_duplicates() noexcept override { return std::exchange(duplicates_, 0); }

private:
    std::string open() {
        std::vector<const char*> servers;
        for (const auto& server : target_.servers) servers.push_back(server.c_str());
        natsStatus status = natsOptions_Create(&options_);
        if (status != NATS_OK) return describe("natsOptions_Create", status);
        // No reconnection inside libnats: the Publisher owns retries, and a failed send must fail
        // now (into the spool), not wait in libnats' reconnect buffer, which is memory only.
        auto set = [](std::string_view call, natsStatus result) {
            return result == NATS_OK ? std::string() : describe(call, result);
        };
        std::string fault;
        for (auto step : {
                 set("natsOptions_SetServers",
                     natsOptions_SetServers(options_, servers.data(), static_cast<int>(servers.size()))),
                 // Servers in the order written (the first that answers), not shuffled.
                 set("natsOptions_SetNoRandomize", natsOptions_SetNoRandomize(options_, true)),
                 set("natsOptions_SetTimeout", natsOptions_SetTimeout(options_, timeout_.count())),
                 set("natsOptions_SetAllowReconnect", natsOptions_SetAllowReconnect(options_, false)),
                 set("natsOptions_SetName", natsOptions_SetName(options_, "ktricks")),
             })
            if (fault.empty()) fault = step;
        if (fault.empty() && !target_.user.empty())
            fault = set("natsOptions_SetUserInfo",
                        natsOptions_SetUserInfo(options_, target_.user.c_str(), target_.password.c_str()));
        if (fault.empty() && !target_.token.empty())
            fault = set("natsOptions_SetToken", natsOptions_SetToken(options_, target_.token.c_str()));
        if (fault.empty() && !target_.creds_file.empty())
            fault =
                set("natsOptions_SetUserCredentialsFromFiles " + target_.creds_file,
                    natsOptions_SetUserCredentialsFromFiles(options_, target_.creds_file.c_str(), nullptr));
        if (fault.empty() && target_.tls)
            fault = set("natsOptions_SetSecure", natsOptions_SetSecure(options_, true));
        if (fault.empty() && !target_.ca_file.empty())
            fault = set("natsOptions_LoadCATrustedCertificates " + target_.ca_file,
                        natsOptions_LoadCATrustedCertificates(options_, target_.ca_file.c_str()));
        if (fault.empty() && !target_.cert_file.empty())
            fault = set("natsOptions_LoadCertificatesChain " + target_.cert_file,
                        natsOptions_LoadCertificatesChain(options_, target_.cert_file.c_str(),
                                                          target_.key_file.c_str()));
        if (!fault.empty()) return fault;
        if ((status = natsConnection_Connect(&connection_, options_)) != NATS_OK)
            return describe("connect", status);
        jsOptions js_options;
        jsOptions_Init(&js_options);
        js_options.Wait = timeout_.count();
        if ((status = natsConnection_JetStream(&js_, connection_, &js_options)) != NATS_OK)
            return describe("natsConnection_JetStream", status);
        if (!target_.stream.empty()) return ensure_stream();
        return {};
    }

    // ?stream=NAME: the stream exists, or is made to take the subject template's subjects.
    std::string ensure_stream() {
        jsStreamInfo* info = nullptr;
        jsErrCode code = static_cast<jsErrCode>(0);
        natsStatus status = js_GetStreamInfo(&info, js_, target_.stream.c_str(), nullptr, &code);
        if (status == NATS_OK) {
            jsStreamInfo_Destroy(info);
            return {};
        }
        if (status != NATS_NOT_FOUND) return describe("stream info " + target_.stream, status, code);
        std::string filter = subject_filter(target_.name);
        const char* subjects[] = {filter.c_str()};
        jsStreamConfig config;
        jsStreamConfig_Init(&config);
        config.Name = target_.stream.c_str();
        config.Subjects = subjects;
        config.SubjectsLen = 1;
        config.Storage = js_FileStorage;
        config.Replicas = target_.replicas;
        status = js_AddStream(&info, js_, &config, nullptr, &code);
        if (status != NATS_OK)
            return describe(fmt::format("add stream {} for {}", target_.stream, filter), status, code);
        jsStreamInfo_Destroy(info);
        return {};
    }

    Target target_;
    std::chrono::milliseconds timeout_;
    natsOptions* options_ = nullptr;
    natsConnection* connection_ = nullptr;
    jsCtx* js_ = nullptr;
    std::uint64_t duplicates_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_nats(const Target& target, std::chrono::milliseconds timeout) {
    return std::make_unique<Nats>(target, timeout);
}

}  // namespace ktricks::sinks::detail
