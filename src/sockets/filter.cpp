// ss's filter grammar (iproute2 misc/ssfilter.y) and its two deciders: inet_diag bytecode for the
// kernel and ss's run_ssfilter here. ss applies both to inet sockets (the kernel filters the dump,
// then ss filters again in user space, and the two differ: `autobound` is "no SO_BINDPORT lock" to
// the kernel but "port in ip_local_port_range" to ss), so a listing that is to match ss row for row
// must apply both too. Unix sockets have no kernel filter: ss's user-space rules alone decide, with
// the inode as the "port" and a path or @name as the "address".
//
// The kernel's bytecode machine (net/ipv4/inet_diag.c, inet_diag_bc_run) walks ops of
// {code, yes, no}: a true condition moves `yes` bytes on, a false one `no` bytes; the socket is
// accepted if the walk lands exactly on the end, rejected if it jumps past it (end + 4). `yes` is
// a u8 and every jump must go forward to an op boundary (inet_diag_bc_audit). So each condition
// here falls through on true (yes = its own length) and jumps on false; `or` and `not` add an
// unconditional JMP (which always takes `no`). Compiling a tree this way needs only forward labels.
#include <arpa/inet.h>
#include <fnmatch.h>
#include <linux/inet_diag.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>

#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/sockets.hpp"
#include "sockets/cgroups.hpp"
#include "sockets/decode.hpp"

namespace ktricks::sockets {

namespace detail {
bool is_ephemeral(long port) {
    static const std::pair<long, long> range = [] {
        std::ifstream file("/proc/sys/net/ipv4/ip_local_port_range");
        long low = 32768, high = 60999;
        file >> low >> high;
        return std::make_pair(low, high);
    }();
    return port >= range.first && port <= range.second;
}
}  // namespace detail

using detail::is_ephemeral;

struct Filter::Node {
    enum Kind { all, any, negate, port, host, autobound, device, mark, cgroup } kind = all;
    std::vector<std::shared_ptr<const Node>> children;  // all (and), any (or), negate (one)
    bool source = true;                                 // sport/src vs dport/dst
    enum Compare { eq, ge, le } compare = eq;           // port
    long port_value = -1;                               // port: the port; host: -1 (any) or the port
    struct Address {
        int family = AF_UNSPEC;
        int prefix = 0;  // bits compared; 0 matches any address
        std::array<std::uint8_t, 16> bytes{};
    };
    std::vector<Address> addresses;  // host: empty = any address; several for a host name
    bool unix_pattern = false;       // host: `pattern` is an fnmatch pattern for unix names
    std::string pattern;
    std::uint32_t ifindex = 0, mark_value = 0, mark_mask = 0;
    std::uint64_t cgroup_id = 0;
};

namespace {

using NodePtr = std::shared_ptr<const Filter::Node>;
using Node = Filter::Node;

const std::map<std::string, std::uint32_t, std::less<>>& state_names() {
    static const std::map<std::string, std::uint32_t, std::less<>> names = [] {
        std::map<std::string, std::uint32_t, std::less<>> m;
        auto bit = [](int s) { return 1u << s; };
        m["established"] = bit(established);
        m["syn-sent"] = bit(syn_sent);
        m["syn-recv"] = m["syn-rcv"] = bit(syn_recv) | bit(new_syn_recv);
        m["fin-wait-1"] = bit(fin_wait1);
        m["fin-wait-2"] = bit(fin_wait2);
        m["time-wait"] = bit(time_wait);
        m["closed"] = m["close"] = m["unconnected"] = bit(closed);
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

// get_addr_ipv4 of iproute2: 1 to 4 dot-separated numbers in C notation (0x10, 010), missing
// trailing bytes are 0 (so "10.0.0/24" is 10.0.0.0/24).
bool parse_ipv4_short(const std::string& text, std::array<std::uint8_t, 16>& out) {
    const char* cp = text.c_str();
    for (int i = 0; i < 4; ++i) {
        char* end = nullptr;
        errno = 0;
        unsigned long n = std::strtoul(cp, &end, 0);
        if (end == cp || n > 255 || errno) return false;
        if (*cp == '-' || *cp == '+' || *cp == ' ') return false;
        out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n);
        if (*end == '\0') return true;
        if (i == 3 || *end != '.') return false;
        cp = end + 1;
    }
    return true;
}

class Parser {
public:
    Parser(std::string_view text, const FilterContext& context) : text_(text), context_(context) {}

    std::uint32_t parse_states() {
        std::uint32_t states = 0;
        bool seen = false;
        while (true) {
            std::size_t mark = position_;
            Word word = next_word();
            if (word.text != "state" && word.text != "exclude" && word.text != "excl") {
                position_ = mark;
                break;
            }
            bool exclude = word.text != "state";
            Word name = next_word();
            if (name.text.empty()) fail_end("a state name");
            std::string lower(name.text);
            for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            auto mask = parse_state(lower);
            if (!mask)
                fail_at(
                    name, fmt::format("unknown state \"{}\"", printable(name.text)),
                    "established, syn-sent, syn-recv, fin-wait-1, fin-wait-2, time-wait, closed, close-wait, "
                    "last-ack, listening, closing, all, connected, synchronized, bucket, big");
            // ss: the first clause starts from nothing (state) or from everything (exclude).
            if (!seen) states = exclude ? all_states : 0;
            seen = true;
            if (exclude) states &= ~*mask;
            else
                states |= *mask;
        }
        return states;
    }

    NodePtr parse_expression() {
        skip_space();
        if (position_ >= text_.size()) return nullptr;
        NodePtr result = parse_list();
        Word rest = next_token();
        if (!rest.text.empty())
            fail_at(rest, fmt::format("unexpected \"{}\"", printable(rest.text)), "and, or, or the end");
        return result;
    }

    int family() const { return family_; }

private:
    struct Word {
        std::string_view text;
        std::size_t position = 0;  // 1-based character in the filter text
    };

    void skip_space() {
        while (position_ < text_.size() &&
               (text_[position_] == ' ' || text_[position_] == '\t' || text_[position_] == '\n'))
            ++position_;
    }
    // A whitespace-separated word, as ss's lexer reads them.
    Word next_word() {
        skip_space();
        std::size_t start = position_;
        while (position_ < text_.size() && text_[position_] != ' ' && text_[position_] != '\t' &&
               text_[position_] != '\n')
            ++position_;
        return {text_.substr(start, position_ - start), start + 1};
    }
    // A token where a keyword, operator or parenthesis may stand. ss needs spaces around every
    // token; we also split "(sport" and "sport=:22", which ss rejects, so nothing ss accepts changes.
    Word next_token() {
        skip_space();
        std::size_t start = position_;
        if (start >= text_.size()) return {{}, start + 1};
        char c = text_[start];
        if (c == '(' || c == ')') {
            ++position_;
            return {text_.substr(start, 1), start + 1};
        }
        static constexpr std::string_view operators[] = {"==", "!=", ">=", "<=", "&&", "||",
                                                         "=",  "!",  ">",  "<",  "&",  "|"};
        for (auto op : operators)
            if (text_.substr(start, op.size()) == op) {
                position_ += op.size();
                return {text_.substr(start, op.size()), start + 1};
            }
        // (string_view::find, not strchr: strchr would "find" a NUL byte and stall the scan.)
        constexpr std::string_view stops = " \t\n()=!<>&|";
        while (position_ < text_.size() && stops.find(text_[position_]) == std::string_view::npos)
            ++position_;
        return {text_.substr(start, position_ - start), start + 1};
    }
    Word peek_token() {
        std::size_t mark = position_;
        Word word = next_token();
        position_ = mark;
        return word;
    }
    // A condition's value: to the next space (unix patterns may hold any other byte), less closing
    // parentheses glued to it inside a parenthesised group ("( dport = :22)").
    Word next_value(bool may_hold_parens) {
        Word word = next_word();
        if (!may_hold_parens)
            while (depth_ > 0 && word.text.size() > 1 && word.text.back() == ')') {
                word.text.remove_suffix(1);
                --position_;
            }
        return word;
    }

    [[noreturn]] void fail_at(const Word& word, const std::string& what, std::string_view expected) const {
        throw InputError(fmt::format("filter \"{}\": {} at character {} (expected {})", printable(text_),
                                     what, word.position, expected));
    }
    [[noreturn]] void fail_end(std::string_view expected) const {
        throw InputError(
            fmt::format("filter \"{}\": unexpected end (expected {})", printable(text_), expected));
    }

    static bool is_or(std::string_view t) { return t == "or" || t == "||" || t == "|"; }
    static bool is_and(std::string_view t) { return t == "and" || t == "&&" || t == "&"; }

    static NodePtr combine(Node::Kind kind, NodePtr left, NodePtr right) {
        auto node = std::make_shared<Node>();
        node->kind = kind;
        node->children = {std::move(left), std::move(right)};
        return node;
    }
    static NodePtr negate(NodePtr child) {
        auto node = std::make_shared<Node>();
        node->kind = Node::negate;
        node->children = {std::move(child)};
        return node;
    }

    // ssfilter.y's exprlist: `and`, `or` and juxtaposition have equal precedence and group left to
    // right, so "a or b and c" is "(a or b) and c".
    NodePtr parse_list() {
        NodePtr result = parse_unary();
        while (true) {
            Word word = peek_token();
            if (word.text.empty() || word.text == ")") return result;
            Node::Kind kind = Node::all;
            if (is_or(word.text) || is_and(word.text)) {
                next_token();
                kind = is_or(word.text) ? Node::any : Node::all;
            }
            result = combine(kind, std::move(result), parse_unary());
        }
    }

    NodePtr parse_unary() {
        Word keyword = next_token();
        if (keyword.text.empty())
            fail_end("a condition (sport, dport, src, dst, dev, fwmark, cgroup, autobound), not, or (");
        if (keyword.text == "not" || keyword.text == "!") return negate(parse_unary());
        if (keyword.text == "(") {
            ++depth_;
            auto inner = parse_list();
            Word close = next_token();
            if (close.text.empty()) fail_end("\")\"");
            if (close.text != ")")
                fail_at(close, fmt::format("unexpected \"{}\"", printable(close.text)), "\")\"");
            --depth_;
            return inner;
        }
        if (keyword.text == "sport" || keyword.text == "dport") return parse_port(keyword.text == "sport");
        if (keyword.text == "src" || keyword.text == "dst") return parse_host(keyword.text == "src");
        if (keyword.text == "dev") return parse_device();
        if (keyword.text == "fwmark") return parse_mark();
        if (keyword.text == "cgroup") return parse_cgroup();
        if (keyword.text == "autobound") {
            auto node = std::make_shared<Node>();
            node->kind = Node::autobound;
            return node;
        }
        if (keyword.text == "state" || keyword.text == "exclude")
            fail_at(keyword, fmt::format("\"{}\" in the middle of an expression", keyword.text),
                    "state clauses before the expression");
        fail_at(keyword, fmt::format("unknown keyword \"{}\"", printable(keyword.text)),
                "sport, dport, src, dst, dev, fwmark, cgroup, autobound, not, or (");
    }

    enum class Op { eq, ne, gt, lt, ge, le };

    std::optional<Op> parse_op() {
        static const std::map<std::string, Op, std::less<>> ops = {
            {"=", Op::eq},   {"==", Op::eq}, {"eq", Op::eq}, {"!=", Op::ne}, {"ne", Op::ne}, {"neq", Op::ne},
            {">", Op::gt},   {"gt", Op::gt}, {"<", Op::lt},  {"lt", Op::lt}, {">=", Op::ge}, {"ge", Op::ge},
            {"geq", Op::ge}, {"<=", Op::le}, {"le", Op::le}, {"leq", Op::le}};
        std::size_t mark = position_;
        Word word = next_token();
        auto found = ops.find(word.text);
        if (found == ops.end()) {
            position_ = mark;
            return std::nullopt;
        }
        return found->second;
    }

    // A port as ss reads one: a number in C notation, "*" (any), or a service name of the listed
    // kinds' protocols. Returns -1 for any.
    long port_number(const Word& word, std::string_view text) const {
        if (text.empty() || text == "*") return -1;
        std::string z(text);
        char* end = nullptr;
        errno = 0;
        long value = std::strtol(z.c_str(), &end, 0);
        if (end != z.c_str() && *end == '\0' && errno == 0) {
            // ss takes any number (100000 is a port no socket has, and the kernel, reading 16 bits,
            // compares with 34464): a port that cannot exist is an error here.
            if (value < 0 || value > 65535)
                fail_at(word, fmt::format("bad port \"{}\"", printable(text)),
                        "a number 0-65535 or a service name");
            return value;
        }
        long tcp = -1, udp = -1;
        servent entry{}, *result = nullptr;
        char buffer[1024];
        if (context_.udp &&
            ::getservbyname_r(z.c_str(), "udp", &entry, buffer, sizeof(buffer), &result) == 0 && result)
            udp = ntohs(static_cast<std::uint16_t>(result->s_port));
        result = nullptr;
        if (context_.tcp &&
            ::getservbyname_r(z.c_str(), "tcp", &entry, buffer, sizeof(buffer), &result) == 0 && result)
            tcp = ntohs(static_cast<std::uint16_t>(result->s_port));
        if (tcp != -1 && udp != -1 && tcp != udp)
            fail_at(word, fmt::format("ambiguous port \"{}\" (tcp {}, udp {})", printable(text), tcp, udp),
                    "a number");
        if (udp != -1) return udp;
        if (tcp != -1) return tcp;
        fail_at(word, fmt::format("bad port \"{}\"", printable(text)), "a number 0-65535 or a service name");
    }

    NodePtr port_node(bool source, Node::Compare compare, long value) {
        auto node = std::make_shared<Node>();
        node->kind = compare == Node::eq ? Node::host : Node::port;
        node->source = source;
        node->compare = compare;
        node->port_value = value;
        return node;
    }

    // ss's parse_hostcond: a value may name its family (unix:, inet:, inet6:); without one it has
    // the context's. Any family but "unspecified" then confines the listing to it.
    int value_family(const Word& word, std::string_view& text) {
        int family = context_.family;
        if (text.starts_with("unix:")) family = AF_UNIX, text.remove_prefix(5);
        else if (text.starts_with("inet:"))
            family = AF_INET, text.remove_prefix(5);
        else if (text.starts_with("inet6:"))
            family = AF_INET6, text.remove_prefix(6);
        else if (text.starts_with("link:") || text.starts_with("netlink:") || text.starts_with("vsock:"))
            fail_at(word, fmt::format("unsupported address family in \"{}\"", printable(text)),
                    "unix:, inet:, inet6: or no prefix");
        if (family == AF_PACKET)
            fail_at(word, "packet socket addresses are not supported in filters",
                    "-t, -u, -x or -w with addresses");
        // ss's filter_af_set also makes it the family of the values that follow.
        if (family != AF_UNSPEC) family_ = context_.family = family;
        return family;
    }

    NodePtr parse_port(bool source) {
        auto op = parse_op().value_or(Op::eq);
        Word word = next_value(false);
        if (word.text.empty()) fail_end("a port like :443");
        std::string_view text = word.text;
        long port = -1;
        NodePtr unix_names;
        if (value_family(word, text) == AF_UNIX) {
            // With -x (or unix:) ss reads even a port as a name pattern: `sport = :22` compares the
            // name with ":22", and the ordering operators, which have no port, compare with -1.
            auto node = std::make_shared<Node>();
            node->kind = Node::host;
            node->source = source;
            node->unix_pattern = true;
            node->pattern = std::string(text);
            unix_names = node;
        } else {
            if (text.starts_with(':')) text.remove_prefix(1);
            port = port_number(word, text);
        }
        auto equal = [&] { return unix_names ? unix_names : port_node(source, Node::eq, port); };
        // ss: > is "not <=", < is "not >=", != is "not =" (so a port of * compares as -1).
        switch (op) {
            case Op::eq: return equal();
            case Op::ne: return negate(equal());
            case Op::ge: return port_node(source, Node::ge, port);
            case Op::le: return port_node(source, Node::le, port);
            case Op::gt: return negate(port_node(source, Node::le, port));
            case Op::lt: return negate(port_node(source, Node::ge, port));
        }
        return nullptr;
    }

    NodePtr parse_host(bool source) {
        auto op = parse_op().value_or(Op::eq);
        if (op != Op::eq && op != Op::ne)
            fail_at(Word{{}, position_}, "only = and != compare addresses", "= or !=");
        Word word = next_value(true);
        if (word.text.empty()) fail_end("an address like 10.0.0.0/8, [::1]:80 or a unix path");
        std::string_view text = word.text;
        int family = value_family(word, text);
        auto node = std::make_shared<Node>();
        node->kind = Node::host;
        node->source = source;
        if (family == AF_UNIX) {
            node->unix_pattern = true;
            node->pattern = std::string(text);
        } else {
            parse_inet_host(word, text, family, *node);
        }
        // ss takes `src`/`dst` with = or nothing; != is ours (ss: syntax error).
        return op == Op::ne ? negate(node) : NodePtr(node);
    }

    void parse_inet_host(const Word& word, std::string_view text, int family, Node& node) {
        std::string address_text;
        std::string_view port;
        bool has_port = false;
        if (text.starts_with('[')) {
            auto close = text.find(']');
            if (close == std::string_view::npos)
                fail_at(word, fmt::format("bad address \"{}\"", printable(text)), "]");
            address_text = std::string(text.substr(1, close - 1));
            port = text.substr(close + 1);
            has_port = true;
        } else if (text.starts_with('*')) {
            port = text.substr(1);
            has_port = true;
        } else {
            // ss: the port follows the last ':' after any '/', so "::1/128" has none; a bare IPv6
            // address without a prefix needs brackets there ("src ::1" is an error in ss: we take it).
            auto slash = text.find('/');
            auto colon = text.rfind(':');
            bool ipv6_bare = std::count(text.begin(), text.end(), ':') > 1 && slash == std::string_view::npos;
            if (colon != std::string_view::npos && !ipv6_bare &&
                (slash == std::string_view::npos || colon > slash)) {
                address_text = std::string(text.substr(0, colon));
                port = text.substr(colon);
                has_port = true;
            } else {
                address_text = std::string(text);
            }
        }
        if (has_port) {
            if (port.starts_with(':')) port.remove_prefix(1);
            else if (!port.empty() && port != "*")
                fail_at(word, fmt::format("bad address \"{}\"", printable(text)), "ADDR[/PREFIX][:PORT]");
            node.port_value = port_number(word, port);
        }
        if (address_text.empty() || address_text == "*") return;
        std::string prefix_text;
        auto slash = address_text.find('/');
        if (slash != std::string::npos) {
            prefix_text = address_text.substr(slash + 1);
            address_text.resize(slash);
        }
        Node::Address address;
        bool any = address_text == "all" || address_text == "any" || address_text == "default";
        if (any) {
            if (!prefix_text.empty() && address_text != "default")
                fail_at(word, "a prefix length after all/any", "an address");
            return;  // bit length 0: every address
        }
        if (address_text.find(':') != std::string::npos) {
            if (family == AF_INET || ::inet_pton(AF_INET6, address_text.c_str(), address.bytes.data()) != 1)
                fail_at(word, fmt::format("bad address \"{}\"", printable(address_text)),
                        "an IPv4 or IPv6 address, a host name or *");
            address.family = AF_INET6;
        } else if (family != AF_INET6 && parse_ipv4_short(address_text, address.bytes)) {
            address.family = AF_INET;
        } else {
            if (!prefix_text.empty())
                fail_at(word, fmt::format("bad address \"{}\"", printable(address_text)),
                        "an IPv4 or IPv6 address");
            resolve(word, address_text, family, node);
            return;
        }
        int bits = address.family == AF_INET ? 32 : 128;
        address.prefix = bits;
        if (!prefix_text.empty()) {
            unsigned value = 0;
            auto [end, error] =
                std::from_chars(prefix_text.data(), prefix_text.data() + prefix_text.size(), value);
            if (error != std::errc() || end != prefix_text.data() + prefix_text.size() ||
                value > unsigned(bits))
                fail_at(word, fmt::format("bad prefix length \"{}\"", printable(prefix_text)),
                        fmt::format("0-{}", bits));
            address.prefix = static_cast<int>(value);
        }
        node.addresses.push_back(address);
    }

    // A host name, looked up once here (IPv4 addresses first, then IPv6, like ss).
    void resolve(const Word& word, const std::string& name, int family, Node& node) {
        // ss asks gethostbyname2, which takes no numeric forms beyond dotted digits: "0x7f000001"
        // is no host there, though getaddrinfo's inet_aton would read it.
        addrinfo numeric_hints{};
        numeric_hints.ai_flags = AI_NUMERICHOST;
        addrinfo* numeric = nullptr;
        if (::getaddrinfo(name.c_str(), nullptr, &numeric_hints, &numeric) == 0) {
            ::freeaddrinfo(numeric);
            fail_at(word, fmt::format("bad address \"{}\"", printable(name)),
                    "a dotted address, [IPv6] or a host name");
        }
        if (!context_.resolve_names)
            fail_at(word, fmt::format("bad address \"{}\"", printable(name)),
                    "an address (host names are not looked up)");
        for (int wanted : {AF_INET, AF_INET6}) {
            if (family != AF_UNSPEC && family != wanted) continue;
            addrinfo hints{};
            hints.ai_family = wanted;
            hints.ai_socktype = SOCK_STREAM;
            addrinfo* found = nullptr;
            if (::getaddrinfo(name.c_str(), nullptr, &hints, &found) != 0) continue;
            for (addrinfo* a = found; a; a = a->ai_next) {
                Node::Address address;
                address.family = wanted;
                if (wanted == AF_INET) {
                    std::memcpy(address.bytes.data(), &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr,
                                4);
                    address.prefix = 32;
                } else {
                    std::memcpy(address.bytes.data(), &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr,
                                16);
                    address.prefix = 128;
                }
                bool duplicate = false;
                for (auto& known : node.addresses)
                    duplicate |= known.family == address.family && known.bytes == address.bytes;
                if (!duplicate) node.addresses.push_back(address);
            }
            ::freeaddrinfo(found);
        }
        if (node.addresses.empty())
            fail_at(word, fmt::format("bad address \"{}\"", printable(name)),
                    "an IPv4 or IPv6 address or a host name that resolves");
    }

    NodePtr parse_device() {
        auto op = parse_op().value_or(Op::eq);
        if (op != Op::eq && op != Op::ne)
            fail_at(Word{{}, position_}, "only = and != compare devices", "= or !=");
        Word word = next_value(false);
        if (word.text.empty()) fail_end("a device name or index");
        std::string name(word.text);
        auto node = std::make_shared<Node>();
        node->kind = Node::device;
        node->ifindex = ::if_nametoindex(name.c_str());
        if (node->ifindex == 0) {
            char* end = nullptr;
            errno = 0;
            unsigned long n = std::strtoul(name.c_str(), &end, 0);
            if (end == name.c_str() || *end || errno || n > 0xffffffffUL)
                fail_at(word, fmt::format("unknown device \"{}\"", printable(name)),
                        "a device name or index");
            node->ifindex = static_cast<std::uint32_t>(n);
        }
        return op == Op::ne ? negate(node) : NodePtr(node);
    }

    NodePtr parse_mark() {
        auto op = parse_op().value_or(Op::eq);
        if (op != Op::eq && op != Op::ne)
            fail_at(Word{{}, position_}, "only = and != compare marks", "= or !=");
        Word word = next_value(false);
        if (word.text.empty()) fail_end("a mark like 0x10 or 0x10/0xff");
        std::string text(word.text);
        auto number = [&](const std::string& part) {
            char* end = nullptr;
            errno = 0;
            long long n = std::strtoll(part.c_str(), &end, 0);
            if (part.empty() || end == part.c_str() || *end || errno || n < INT32_MIN || n > 0xffffffffLL)
                fail_at(word, fmt::format("bad mark \"{}\"", printable(text)), "MARK or MARK/MASK");
            return static_cast<std::uint32_t>(n);
        };
        auto node = std::make_shared<Node>();
        node->kind = Node::mark;
        auto slash = text.find('/');
        node->mark_value = number(text.substr(0, slash));
        node->mark_mask = slash == std::string::npos ? 0xffffffffu : number(text.substr(slash + 1));
        return op == Op::ne ? negate(node) : NodePtr(node);
    }

    NodePtr parse_cgroup() {
        auto op = parse_op().value_or(Op::eq);
        if (op != Op::eq && op != Op::ne)
            fail_at(Word{{}, position_}, "only = and != compare cgroups", "= or !=");
        Word word = next_value(true);
        if (word.text.empty()) fail_end("a cgroup path like /system.slice");
        auto id = detail::cgroup_id_of(word.text);
        if (!id)
            fail_at(word, fmt::format("no cgroup \"{}\"", printable(word.text)),
                    "a path in the cgroup v2 hierarchy");
        auto node = std::make_shared<Node>();
        node->kind = Node::cgroup;
        node->cgroup_id = *id;
        return op == Op::ne ? negate(node) : NodePtr(node);
    }

    std::string_view text_;
    FilterContext context_;
    std::size_t position_ = 0;
    int depth_ = 0;
    int family_ = 0;
};

// --- compilation --------------------------------------------------------------------------------

bool compilable(const Node& node) {
    if (node.kind == Node::device) return false;  // ss sends no bytecode for dev either
    if (node.kind == Node::host && node.unix_pattern) return false;
    for (auto& child : node.children)
        if (!compilable(*child)) return false;
    return true;
}

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

    void host_condition(const Node& node, const Node::Address* address, int on_false) {
        std::size_t address_size = !address ? 0 : address->family == AF_INET ? 4 : 16;
        std::vector<std::byte> extra(sizeof(inet_diag_hostcond) + address_size);
        inet_diag_hostcond cond{static_cast<std::uint8_t>(address ? address->family : AF_UNSPEC),
                                static_cast<std::uint8_t>(address ? address->prefix : 0),
                                static_cast<int>(node.port_value)};
        std::memcpy(extra.data(), &cond, sizeof(cond));
        if (address) std::memcpy(extra.data() + sizeof(cond), address->bytes.data(), address_size);
        op(node.source ? INET_DIAG_BC_S_COND : INET_DIAG_BC_D_COND, on_false, extra.data(), extra.size());
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
                if (node.compare == Node::ge) code = node.source ? INET_DIAG_BC_S_GE : INET_DIAG_BC_D_GE;
                else
                    code = node.source ? INET_DIAG_BC_S_LE : INET_DIAG_BC_D_LE;
                // The port travels in the `no` field of a second op slot.
                inet_diag_bc_op value{0, 0, static_cast<std::uint16_t>(node.port_value)};
                op(code, on_false, &value, sizeof(value));
                return;
            }
            case Node::host: {
                if (node.addresses.size() <= 1) {
                    host_condition(node, node.addresses.empty() ? nullptr : &node.addresses[0], on_false);
                    return;
                }
                // A host name with several addresses: any of them.
                int end = new_label();
                for (std::size_t i = 0; i < node.addresses.size(); ++i) {
                    bool last = i + 1 == node.addresses.size();
                    int next_alternative = last ? on_false : new_label();
                    host_condition(node, &node.addresses[i], next_alternative);
                    if (!last) {
                        jump(end);
                        place(next_alternative);
                    }
                }
                place(end);
                return;
            }
            case Node::autobound: op(INET_DIAG_BC_AUTO, on_false, nullptr, 0); return;
            case Node::mark: {
                inet_diag_markcond cond{node.mark_value, node.mark_mask};
                op(INET_DIAG_BC_MARK_COND, on_false, &cond, sizeof(cond));
                return;
            }
            case Node::cgroup:
                op(INET_DIAG_BC_CGROUP_COND, on_false, &node.cgroup_id, sizeof(node.cgroup_id));
                return;
            case Node::device: return;  // not compilable (see compilable)
        }
    }

    std::vector<std::byte> code_;
    std::vector<std::size_t> labels_;
    std::vector<std::pair<std::size_t, int>> fixups_;
};

// iproute2's inet_addr_match: the first `bits` bits equal.
bool prefix_match(const std::uint8_t* a, const std::uint8_t* b, int bits) {
    int whole = bits / 8;
    if (std::memcmp(a, b, static_cast<std::size_t>(whole)) != 0) return false;
    int rest = bits % 8;
    if (rest == 0) return true;
    std::uint8_t mask = static_cast<std::uint8_t>(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

// What ss compares an address condition with: for inet sockets the address bytes; for unix
// sockets ss's sockstat holds a pointer to the name (never 0 when there is one) and zeros
// otherwise, so an address condition can only match an unnamed unix socket, and only when the
// compared bits are zero.
bool address_match(const Node::Address& want, const SocketInfo& socket, const Endpoint& end, bool local) {
    if (!is_inet(socket.netid)) {
        bool named = local && !end.name.empty();
        if (named) return false;
        static constexpr std::array<std::uint8_t, 16> zero{};
        return prefix_match(zero.data(), want.bytes.data(), want.prefix);
    }
    if (prefix_match(end.address.data(), want.bytes.data(), want.prefix)) return true;
    // ss's "cursed v4-mapped" rule: an IPv4 condition also matches ::ffff:a.b.c.d.
    static constexpr std::uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return want.family == AF_INET && end.family == AF_INET6 &&
           std::memcmp(end.address.data(), mapped, 12) == 0 &&
           prefix_match(end.address.data() + 12, want.bytes.data(), want.prefix);
}

// ss's run_ssfilter for one socket. Unix sockets: the "port" is the inode (local) or the peer's
// inode (remote); the remote name is always empty (ss shows it as *).
bool evaluate(const Node& node, const SocketInfo& socket) {
    bool unix_socket =
        socket.netid == Netid::u_str || socket.netid == Netid::u_dgr || socket.netid == Netid::u_seq;
    auto port_of = [&](bool local) -> long {
        if (unix_socket) return local ? socket.inode : socket.peer_inode;
        return local ? socket.local.port : socket.peer.port;
    };
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
            long port = port_of(node.source);
            return node.compare == Node::ge ? port >= node.port_value : port <= node.port_value;
        }
        case Node::host: {
            const Endpoint& end = node.source ? socket.local : socket.peer;
            if (node.unix_pattern) {
                if (!unix_socket) return false;
                std::string name = node.source ? end.name : std::string();
                return ::fnmatch(node.pattern.c_str(), name.c_str(), FNM_CASEFOLD) == 0;
            }
            if (node.port_value != -1 && node.port_value != port_of(node.source)) return false;
            if (node.addresses.empty()) return true;
            for (auto& address : node.addresses)
                if (address.prefix == 0 || address_match(address, socket, end, node.source)) return true;
            return false;
        }
        case Node::autobound:
            if (unix_socket) {
                // The kernel autobinds to "@" and five hex digits.
                const std::string& name = socket.local.name;
                return name.empty() || (name.size() == 6 && name[0] == '@' &&
                                        name.find_first_not_of("0123456789abcdef", 1) == std::string::npos);
            }
            return is_ephemeral(socket.local.port);
        case Node::device: return socket.ifindex == node.ifindex;
        case Node::mark: return (socket.mark & node.mark_mask) == node.mark_value;
        case Node::cgroup: return socket.cgroup_id == node.cgroup_id;
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

Filter Filter::parse(std::string_view text) { return parse(text, FilterContext{}); }

Filter Filter::parse(std::string_view text, const FilterContext& context) {
    Parser parser(text, context);
    Filter filter;
    filter.states_ = parser.parse_states();
    filter.root_ = parser.parse_expression();
    filter.family_ = parser.family();
    return filter;
}

std::vector<std::byte> Filter::bytecode() const {
    if (!root_ || !compilable(*root_)) return {};
    return Compiler().compile(*root_);
}

bool Filter::matches(const SocketInfo& socket) const {
    if (states_ && !(states_ & (1u << socket.state))) return false;
    if (!root_) return true;
    if (socket.netid == Netid::p_raw || socket.netid == Netid::p_dgr) return false;
    return evaluate(*root_, socket);
}

}  // namespace ktricks::sockets
