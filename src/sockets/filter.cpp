// ss's filter grammar, compiled to inet_diag bytecode so the kernel does the filtering.
//
// The kernel's bytecode machine (net/ipv4/inet_diag.c, inet_diag_bc_run) walks ops of
// {code, yes, no}: a true condition moves `yes` bytes on, a false one `no` bytes; the socket is
// accepted if the walk lands exactly on the end, rejected if it jumps past it (end + 4). `yes` is
// a u8 and every jump must go forward to an op boundary (inet_diag_bc_audit). So each condition
// here falls through on true (yes = its own length) and jumps on false; `or` and `not` add an
// unconditional JMP (which always takes `no`). Compiling a tree this way needs only forward labels.
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <fmt/format.h>

#include <charconv>
#include <cstring>
#include <map>

#include "ktricks/core/error.hpp"
#include "ktricks/sockets.hpp"

namespace ktricks::sockets {

struct Filter::Node {
    enum Kind { all, any, negate, port, host } kind = all;
    std::vector<std::shared_ptr<const Node>> children;  // all (and), any (or), negate (one)
    bool source = true;                                  // sport/src vs dport/dst
    enum Compare { eq, ge, le } compare = eq;           // port
    int port_value = -1;                                 // port: the port; host: -1 or the port
    int family = AF_UNSPEC;                              // host
    int prefix = 0;
    std::array<std::uint8_t, 16> address{};
};

namespace {

using NodePtr = std::shared_ptr<const Filter::Node>;
using Node = Filter::Node;

struct Token {
    std::string text;
    std::size_t position;  // 1-based character in the filter text
};

std::vector<Token> tokenize(std::string_view text) {
    std::vector<Token> tokens;
    static constexpr std::string_view operators[] = {"==", "!=", ">=", "<=", "&&", "||", "=", "!", ">", "<", "&", "|"};
    std::size_t i = 0;
    while (i < text.size()) {
        char c = text[i];
        if (c == ' ' || c == '\t' || c == '\n') {
            ++i;
            continue;
        }
        if (c == '(' || c == ')') {
            tokens.push_back({std::string(1, c), i + 1});
            ++i;
            continue;
        }
        bool matched = false;
        for (auto op : operators)
            if (text.substr(i, op.size()) == op) {
                tokens.push_back({std::string(op), i + 1});
                i += op.size();
                matched = true;
                break;
            }
        if (matched) continue;
        std::size_t start = i;
        // Addresses contain ':' '[' ']' '/' '.', so a word runs to a space, paren or operator.
        // (string_view::find, not strchr: strchr would "find" a NUL byte and stall the scan.)
        constexpr std::string_view stops = " \t\n()=!<>&|";
        while (i < text.size() && stops.find(text[i]) == std::string_view::npos) ++i;
        tokens.push_back({std::string(text.substr(start, i - start)), start + 1});
    }
    return tokens;
}

const std::map<std::string, std::uint32_t, std::less<>>& state_names() {
    static const std::map<std::string, std::uint32_t, std::less<>> names = [] {
        std::map<std::string, std::uint32_t, std::less<>> m;
        auto bit = [](int s) { return 1u << s; };
        m["established"] = bit(established);
        m["syn-sent"] = bit(syn_sent);
        m["syn-recv"] = bit(syn_recv) | bit(new_syn_recv);
        m["fin-wait-1"] = bit(fin_wait1);
        m["fin-wait-2"] = bit(fin_wait2);
        m["time-wait"] = bit(time_wait);
        m["closed"] = bit(closed);
        m["close-wait"] = bit(close_wait);
        m["last-ack"] = bit(last_ack);
        m["listening"] = bit(listen);
        m["listen"] = bit(listen);
        m["closing"] = bit(closing);
        m["all"] = all_states;
        m["connected"] = all_states & ~(bit(listen) | bit(closed));
        m["synchronized"] = m["connected"] & ~bit(syn_sent);
        m["bucket"] = bit(syn_recv) | bit(time_wait) | bit(new_syn_recv);
        m["big"] = all_states & ~m["bucket"];
        return m;
    }();
    return names;
}

class Parser {
public:
    Parser(std::string_view text) : text_(text), tokens_(tokenize(text)) {}

    std::uint32_t parse_states() {
        std::uint32_t states = 0;
        bool any = false;
        std::uint32_t excluded = 0;
        while (!at_end() && (peek() == "state" || peek() == "exclude")) {
            bool exclude = next().text == "exclude";
            if (at_end()) fail("a state name", std::nullopt);
            const Token& name = next();
            auto mask = parse_state(name.text);
            if (!mask)
                fail_at(name, fmt::format("unknown state \"{}\"", printable(name.text)),
                        "established, syn-sent, syn-recv, fin-wait-1, fin-wait-2, time-wait, closed, close-wait, "
                        "last-ack, listening, closing, all, connected, synchronized, bucket, big");
            if (exclude) excluded |= *mask;
            else states |= *mask, any = true;
        }
        if (excluded) states = (any ? states : all_states) & ~excluded;
        return states;
    }

    NodePtr parse_expression() {
        if (at_end()) return nullptr;
        NodePtr result = parse_or();
        if (!at_end()) fail_at(tokens_[index_], fmt::format("unexpected \"{}\"", printable(peek())), "and, or, or the end");
        return result;
    }

private:
    bool at_end() const { return index_ >= tokens_.size(); }
    std::string_view peek() const { return at_end() ? std::string_view() : std::string_view(tokens_[index_].text); }
    const Token& next() { return tokens_[index_++]; }

    [[noreturn]] void fail_at(const Token& token, const std::string& what, std::string_view expected) const {
        throw InputError(fmt::format("filter \"{}\": {} at character {} (expected {})", printable(text_), what,
                                     token.position, expected));
    }
    [[noreturn]] void fail(std::string_view expected, std::optional<Token> token) const {
        if (token) fail_at(*token, fmt::format("unexpected \"{}\"", printable(token->text)), expected);
        throw InputError(fmt::format("filter \"{}\": unexpected end (expected {})", printable(text_), expected));
    }

    NodePtr parse_or() {
        auto left = parse_and();
        std::vector<NodePtr> parts{left};
        while (!at_end() && (peek() == "or" || peek() == "||" || peek() == "|")) {
            next();
            parts.push_back(parse_and());
        }
        if (parts.size() == 1) return left;
        auto node = std::make_shared<Node>();
        node->kind = Node::any;
        node->children = std::move(parts);
        return node;
    }

    NodePtr parse_and() {
        std::vector<NodePtr> parts{parse_unary()};
        while (!at_end() && peek() != ")" && peek() != "or" && peek() != "||" && peek() != "|") {
            if (peek() == "and" || peek() == "&&" || peek() == "&") next();
            parts.push_back(parse_unary());
        }
        if (parts.size() == 1) return parts[0];
        auto node = std::make_shared<Node>();
        node->kind = Node::all;
        node->children = std::move(parts);
        return node;
    }

    static NodePtr negate(NodePtr child) {
        auto node = std::make_shared<Node>();
        node->kind = Node::negate;
        node->children = {std::move(child)};
        return node;
    }

    NodePtr parse_unary() {
        if (at_end()) fail("a condition (sport, dport, src, dst), not, or (", std::nullopt);
        if (peek() == "not" || peek() == "!") {
            next();
            return negate(parse_unary());
        }
        if (peek() == "(") {
            next();
            auto inner = parse_or();
            if (at_end()) fail("\")\"", std::nullopt);
            if (peek() != ")") fail("\")\"", tokens_[index_]);
            next();
            return inner;
        }
        const Token& keyword = next();
        if (keyword.text == "sport" || keyword.text == "dport") return parse_port(keyword.text == "sport");
        if (keyword.text == "src" || keyword.text == "dst") return parse_host(keyword.text == "src");
        if (keyword.text == "state" || keyword.text == "exclude")
            fail_at(keyword, fmt::format("\"{}\" in the middle of an expression", keyword.text),
                    "state clauses before the expression");
        fail_at(keyword, fmt::format("unknown keyword \"{}\"", printable(keyword.text)),
                "sport, dport, src, dst, not, or (");
    }

    enum class Op { eq, ne, gt, lt, ge, le };

    std::optional<Op> parse_op() {
        static const std::map<std::string, Op, std::less<>> ops = {
            {"=", Op::eq}, {"==", Op::eq}, {"eq", Op::eq}, {"!=", Op::ne}, {"ne", Op::ne}, {"neq", Op::ne},
            {">", Op::gt}, {"gt", Op::gt}, {"<", Op::lt}, {"lt", Op::lt}, {">=", Op::ge}, {"ge", Op::ge},
            {"<=", Op::le}, {"le", Op::le}};
        if (at_end()) return std::nullopt;
        auto found = ops.find(peek());
        if (found == ops.end()) return std::nullopt;
        next();
        return found->second;
    }

    int parse_port_text(const Token& token, std::string_view text) const {
        unsigned value = 0;
        auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (text.empty() || error != std::errc() || end != text.data() + text.size() || value > 65535)
            fail_at(token, fmt::format("bad port \"{}\"", printable(text)), "a number 0-65535");
        return static_cast<int>(value);
    }

    NodePtr port_node(bool source, Node::Compare compare, int value) {
        auto node = std::make_shared<Node>();
        node->kind = Node::port;
        node->source = source;
        node->compare = compare;
        node->port_value = value;
        return node;
    }

    NodePtr parse_port(bool source) {
        auto op = parse_op().value_or(Op::eq);
        if (at_end()) fail("a port like :443", std::nullopt);
        const Token& value_token = next();
        std::string_view text = value_token.text;
        if (text.starts_with(':')) text.remove_prefix(1);
        int port = parse_port_text(value_token, text);
        auto never = [&] { return negate(port_node(source, Node::ge, 0)); };
        switch (op) {
            case Op::eq: return port_node(source, Node::eq, port);
            case Op::ne: return negate(port_node(source, Node::eq, port));
            case Op::ge: return port_node(source, Node::ge, port);
            case Op::le: return port_node(source, Node::le, port);
            case Op::gt: return port == 65535 ? never() : port_node(source, Node::ge, port + 1);
            case Op::lt: return port == 0 ? never() : port_node(source, Node::le, port - 1);
        }
        return nullptr;
    }

    NodePtr parse_host(bool source) {
        auto op = parse_op().value_or(Op::eq);
        if (op != Op::eq && op != Op::ne) fail_at(tokens_[index_ - 1], "only = and != compare addresses", "= or !=");
        if (at_end()) fail("an address like 10.0.0.0/8 or [::1]:80", std::nullopt);
        const Token& token = next();
        auto node = std::make_shared<Node>();
        node->kind = Node::host;
        node->source = source;
        std::string_view text = token.text;
        std::string_view address, prefix, port;
        if (text.starts_with('[')) {
            auto close = text.find(']');
            if (close == std::string_view::npos) fail_at(token, fmt::format("bad address \"{}\"", printable(text)), "]");
            address = text.substr(1, close - 1);
            std::string_view rest = text.substr(close + 1);
            if (rest.starts_with('/')) {
                auto colon = rest.find(':');
                prefix = rest.substr(1, colon == std::string_view::npos ? std::string_view::npos : colon - 1);
                rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon);
            }
            if (rest.starts_with(':')) port = rest.substr(1);
            else if (!rest.empty()) fail_at(token, fmt::format("bad address \"{}\"", printable(text)), "[ADDR][/PREFIX][:PORT]");
            if (port.empty() && rest.starts_with(':')) fail_at(token, "missing port after ':'", "a port");
        } else if (std::count(text.begin(), text.end(), ':') > 1) {
            // A bare IPv6 address: no port possible without brackets.
            auto slash = text.find('/');
            address = text.substr(0, slash);
            if (slash != std::string_view::npos) prefix = text.substr(slash + 1);
        } else {
            auto colon = text.find(':');
            std::string_view host = text.substr(0, colon);
            if (colon != std::string_view::npos) {
                port = text.substr(colon + 1);
                if (port.empty()) fail_at(token, "missing port after ':'", "a port");
            }
            auto slash = host.find('/');
            address = host.substr(0, slash);
            if (slash != std::string_view::npos) prefix = host.substr(slash + 1);
        }
        if (port == "*") port = {};
        if (!port.empty()) node->port_value = parse_port_text(token, port);
        if (!address.empty() && address != "*") {
            std::string address_z(address);
            if (::inet_pton(AF_INET, address_z.c_str(), node->address.data()) == 1) node->family = AF_INET;
            else if (::inet_pton(AF_INET6, address_z.c_str(), node->address.data()) == 1) node->family = AF_INET6;
            else fail_at(token, fmt::format("bad address \"{}\"", printable(address)), "an IPv4 or IPv6 address or *");
            int bits = node->family == AF_INET ? 32 : 128;
            node->prefix = bits;
            if (!prefix.empty()) {
                unsigned value = 0;
                auto [end, error] = std::from_chars(prefix.data(), prefix.data() + prefix.size(), value);
                if (error != std::errc() || end != prefix.data() + prefix.size() || value > unsigned(bits))
                    fail_at(token, fmt::format("bad prefix length \"{}\"", printable(prefix)),
                            fmt::format("0-{}", bits));
                node->prefix = static_cast<int>(value);
            }
        } else if (!prefix.empty()) {
            fail_at(token, "a prefix length needs an address", "ADDR/PREFIX");
        }
        return op == Op::ne ? negate(node) : NodePtr(node);
    }

    std::string_view text_;
    std::vector<Token> tokens_;
    std::size_t index_ = 0;
};

// --- compilation --------------------------------------------------------------------------------

class Compiler {
public:
    std::vector<std::byte> compile(const Node& root) {
        int reject = new_label();
        emit(root, reject);
        std::size_t end = code_.size();
        labels_[reject] = end + 4;
        for (auto [position, label] : fixups_) {
            std::size_t target = labels_[label] == npos ? end : labels_[label];
            auto* op = reinterpret_cast<inet_diag_bc_op*>(code_.data() + position);
            op->no = static_cast<std::uint16_t>(target - position);
        }
        return code_;
    }

private:
    static constexpr std::size_t npos = ~std::size_t(0);
    int new_label() {
        labels_.push_back(npos);
        return static_cast<int>(labels_.size() - 1);
    }
    void place(int label) { labels_[label] = code_.size(); }

    // An op that falls through (yes) on true and jumps to `on_false` otherwise.
    void op(std::uint8_t code, int on_false, const void* extra, std::size_t extra_size) {
        std::size_t position = code_.size();
        inet_diag_bc_op header{code, static_cast<std::uint8_t>(sizeof(inet_diag_bc_op) + extra_size), 0};
        code_.resize(position + sizeof(header) + extra_size);
        std::memcpy(code_.data() + position, &header, sizeof(header));
        if (extra_size) std::memcpy(code_.data() + position + sizeof(header), extra, extra_size);
        fixups_.emplace_back(position, on_false);
    }
    void jump(int target) {
        // JMP ignores the condition and always moves `no` bytes; `yes` must still be a valid length.
        op(INET_DIAG_BC_JMP, target, nullptr, 0);
    }

    void emit(const Node& node, int on_false) {
        switch (node.kind) {
            case Node::all:
                for (auto& child : node.children) emit(*child, on_false);
                return;
            case Node::any: {
                int end = new_label();
                for (std::size_t i = 0; i + 1 < node.children.size(); ++i) {
                    int next_alternative = new_label();
                    emit(*node.children[i], next_alternative);
                    jump(end);
                    place(next_alternative);
                }
                emit(*node.children.back(), on_false);
                place(end);
                return;
            }
            case Node::negate: {
                int child_false = new_label();
                emit(*node.children[0], child_false);
                jump(on_false);
                place(child_false);
                return;
            }
            case Node::port: {
                std::uint8_t code;
                if (node.compare == Node::eq) {
                    // S_EQ/D_EQ exist only since 4.16; a portless hostcond with a port works everywhere.
                    inet_diag_hostcond cond{AF_UNSPEC, 0, node.port_value};
                    op(node.source ? INET_DIAG_BC_S_COND : INET_DIAG_BC_D_COND, on_false, &cond, sizeof(cond));
                    return;
                }
                if (node.compare == Node::ge) code = node.source ? INET_DIAG_BC_S_GE : INET_DIAG_BC_D_GE;
                else code = node.source ? INET_DIAG_BC_S_LE : INET_DIAG_BC_D_LE;
                // The port travels in the `no` field of a second op slot.
                inet_diag_bc_op value{0, 0, static_cast<std::uint16_t>(node.port_value)};
                op(code, on_false, &value, sizeof(value));
                return;
            }
            case Node::host: {
                std::size_t address_size = node.family == AF_INET ? 4 : node.family == AF_INET6 ? 16 : 0;
                std::vector<std::byte> extra(sizeof(inet_diag_hostcond) + address_size);
                inet_diag_hostcond cond{static_cast<std::uint8_t>(node.family), static_cast<std::uint8_t>(node.prefix),
                                        node.port_value};
                std::memcpy(extra.data(), &cond, sizeof(cond));
                std::memcpy(extra.data() + sizeof(cond), node.address.data(), address_size);
                op(node.source ? INET_DIAG_BC_S_COND : INET_DIAG_BC_D_COND, on_false, extra.data(), extra.size());
                return;
            }
        }
    }

    std::vector<std::byte> code_;
    std::vector<std::size_t> labels_;
    std::vector<std::pair<std::size_t, int>> fixups_;
};

bool prefix_match(const std::uint8_t* a, const std::uint8_t* b, int bits) {
    int whole = bits / 8;
    if (std::memcmp(a, b, static_cast<std::size_t>(whole)) != 0) return false;
    int rest = bits % 8;
    if (rest == 0) return true;
    std::uint8_t mask = static_cast<std::uint8_t>(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

// inet_diag_bc_run's decision for one condition, in user space.
bool evaluate(const Node& node, const SocketInfo& socket) {
    switch (node.kind) {
        case Node::all:
            for (auto& child : node.children)
                if (!evaluate(*child, socket)) return false;
            return true;
        case Node::any:
            for (auto& child : node.children)
                if (evaluate(*child, socket)) return true;
            return false;
        case Node::negate: return !evaluate(*node.children[0], socket);
        case Node::port: {
            int port = node.source ? socket.local.port : socket.peer.port;
            if (node.compare == Node::eq) return port == node.port_value;
            if (node.compare == Node::ge) return port >= node.port_value;
            return port <= node.port_value;
        }
        case Node::host: {
            const Endpoint& end = node.source ? socket.local : socket.peer;
            if (node.port_value != -1 && node.port_value != end.port) return false;
            if (node.family == AF_UNSPEC) return true;
            if (node.family != end.family) {
                static constexpr std::uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
                return end.family == AF_INET6 && node.family == AF_INET &&
                       std::memcmp(end.address.data(), mapped, 12) == 0 &&
                       prefix_match(end.address.data() + 12, node.address.data(), node.prefix);
            }
            return prefix_match(end.address.data(), node.address.data(), node.prefix);
        }
    }
    return false;
}

}  // namespace

std::optional<std::uint32_t> parse_state(std::string_view name) {
    auto& names = state_names();
    auto found = names.find(name);
    if (found == names.end()) return std::nullopt;
    return found->second;
}

Filter Filter::parse(std::string_view text) {
    Parser parser(text);
    Filter filter;
    filter.states_ = parser.parse_states();
    filter.root_ = parser.parse_expression();
    return filter;
}

std::vector<std::byte> Filter::bytecode() const {
    if (!root_) return {};
    return Compiler().compile(*root_);
}

bool Filter::matches(const SocketInfo& socket) const {
    if (states_ && !(states_ & (1u << socket.state))) return false;
    if (!root_) return true;
    if (!is_inet(socket.netid)) return false;
    return evaluate(*root_, socket);
}

}  // namespace ktricks::sockets
