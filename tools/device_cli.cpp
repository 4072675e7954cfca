#include "device_cli.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <map>
#include <ostream>
#include <sstream>

namespace zmq::green::cli {

namespace devices = zmq::green::devices;
using devices::run_mode;

namespace {

const std::map<std::string, int> socket_types = {
    {"PAIR", ZMQ_PAIR},     {"PUB", ZMQ_PUB},       {"SUB", ZMQ_SUB},       {"REQ", ZMQ_REQ},
    {"REP", ZMQ_REP},       {"DEALER", ZMQ_DEALER}, {"ROUTER", ZMQ_ROUTER}, {"PULL", ZMQ_PULL},
    {"PUSH", ZMQ_PUSH},     {"XPUB", ZMQ_XPUB},     {"XSUB", ZMQ_XSUB},     {"STREAM", ZMQ_STREAM}};

// Echoed input must not break the one-line message.
std::string one_line(std::string text)
{
    for (auto& ch : text)
        if (ch == '\n' || ch == '\r')
            ch = ' ';
    return text;
}

// SOCKTYPE=ENDPOINTS, ENDPOINTS comma-separated, '@' binds and '>' connects.
// Returns an error message, empty if the spec is valid.
std::string parse_spec(const std::string& text, socket_spec* out)
{
    const auto eq = text.find('=');
    if (eq == std::string::npos)
        return "expected SOCKTYPE=ENDPOINTS, got '" + text + "'";
    std::string name = text.substr(0, eq);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::toupper(ch)); });
    const auto type = socket_types.find(name);
    if (type == socket_types.end())
        return "unknown socket type '" + text.substr(0, eq) + "'";
    socket_spec spec;
    spec.type = type->second;
    // Split by hand: getline drops the empty endpoint after a trailing comma.
    std::vector<std::string> endpoints;
    for (std::size_t from = eq + 1;;) {
        const auto comma = text.find(',', from);
        endpoints.push_back(text.substr(from, comma - from));
        if (comma == std::string::npos)
            break;
        from = comma + 1;
    }
    for (const std::string& endpoint : endpoints) {
        if (endpoint.size() < 2 || (endpoint[0] != '@' && endpoint[0] != '>'))
            return "endpoint '" + endpoint + "' must start with '@' (bind) or '>' (connect)";
        if (endpoint.find("://") == std::string::npos)
            return "endpoint '" + endpoint.substr(1) + "' is not TRANSPORT://ADDRESS";
        (endpoint[0] == '@' ? spec.binds : spec.connects).push_back(endpoint.substr(1));
    }
    if (out)
        *out = spec;
    return {};
}

template<run_mode M>
std::unique_ptr<devices::background_device> build(const device_config& c)
{
    const int mon_type = c.mon.type >= 0 ? c.mon.type : ZMQ_PUB;
    if (c.type == "queue")
        return std::make_unique<devices::basic_device<M>>(ZMQ_QUEUE, c.in.type, c.out.type);
    if (c.type == "forwarder")
        return std::make_unique<devices::basic_device<M>>(ZMQ_FORWARDER, c.in.type, c.out.type);
    if (c.type == "streamer")
        return std::make_unique<devices::basic_device<M>>(ZMQ_STREAMER, c.in.type, c.out.type);
    if (c.type == "proxy")
        return std::make_unique<devices::basic_proxy<M>>(c.in.type, c.out.type, mon_type);
    if (c.type == "steerable")
        return std::make_unique<devices::basic_proxy_steerable<M>>(
            c.in.type, c.out.type, mon_type, c.ctrl.type >= 0 ? c.ctrl.type : ZMQ_PAIR);
    if (c.type == "monitored-queue")
        return std::make_unique<devices::basic_monitored_queue<M>>(c.in.type, c.out.type, mon_type,
                                                                   c.in_prefix, c.out_prefix);
    throw usage_error("unknown device type '" + c.type + "'");
}

} // namespace

usage_error::usage_error(const std::string& what) : std::runtime_error(one_line(what)) {}

std::optional<device_config> parse_command_line(int argc, const char* const* argv,
                                                std::ostream& help_out)
{
    CLI::App app{"Runs a zmq::green device until SIGINT, SIGTERM or TERMINATE.\n"
                 "ENDPOINTS: comma-separated; '@' binds, '>' connects, e.g. ROUTER=@tcp://*:5559",
                 "zmq-green-device"};
    device_config c;
    std::string in_text, out_text, mon_text, ctrl_text;
    std::string run_name = "thread";
    const auto spec_check = CLI::Validator(
        [](std::string& s) { return parse_spec(s, nullptr); }, "SOCKTYPE=ENDPOINTS");
    app.add_option("TYPE", c.type, "queue | forwarder | streamer | proxy | steerable | monitored-queue")
        ->required()
        ->check(CLI::IsMember(
            {"queue", "forwarder", "streamer", "proxy", "steerable", "monitored-queue"}));
    app.add_option("--in", in_text, "frontend socket")->required()->check(spec_check);
    app.add_option("--out", out_text, "backend socket")->required()->check(spec_check);
    auto* mon_opt = app.add_option("--mon", mon_text, "capture/monitor socket")->check(spec_check);
    auto* ctrl_opt = app.add_option("--ctrl", ctrl_text, "control socket (steerable)")->check(spec_check);
    auto* in_prefix_opt = app.add_option("--in-prefix", c.in_prefix, "monitor prefix, in -> out");
    auto* out_prefix_opt = app.add_option("--out-prefix", c.out_prefix, "monitor prefix, out -> in");
    app.add_option("--run", run_name, "where the device runs")
        ->check(CLI::IsMember({"fiber", "thread", "process"}));
    app.add_option("--hwm", c.hwm, "send and receive high-water mark of every socket")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--linger", c.linger, "ZMQ_LINGER of every socket, ms (-1: forever)")
        ->check(CLI::Range(-1, 1 << 30))
        ->capture_default_str();
    app.add_option("--maxmsgsize", c.max_message_size,
                   "ZMQ_MAXMSGSIZE of every socket, bytes: a peer sending more is dropped "
                   "(default: no limit)")
        ->check(CLI::Validator(
            [](std::string& s) -> std::string {
                // CLI11 would turn a number past INT64_MAX into INT64_MAX.
                std::int64_t v = -1;
                const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
                if (ec != std::errc() || end != s.data() + s.size() || v < 0)
                    return "BYTES must be a whole number from 0 to "
                           + std::to_string(std::numeric_limits<std::int64_t>::max()) + ", got '"
                           + s + "'";
                return {};
            },
            "BYTES"));
    // Written out: CLI11's range checks let NaN through, and a count of
    // nanoseconds must hold the interval.
    app.add_option("--stats", c.stats_seconds, "print JSON counters every SECONDS (0.001 to 1e9)")
        ->check(CLI::Validator(
            [](std::string& s) -> std::string {
                double v = 0;
                if (!CLI::detail::lexical_cast(s, v) || !(v >= 0.001 && v <= 1e9))
                    return "SECONDS must be a number from 0.001 to 1e9, got '" + s + "'";
                return {};
            },
            "SECONDS"));

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
        help_out << app.help();
        return std::nullopt;
    } catch (const CLI::ParseError& e) {
        throw usage_error(e.what());
    }
    const bool monitored = c.type == "monitored-queue";
    if (*mon_opt && c.type != "proxy" && c.type != "steerable" && !monitored)
        throw usage_error("--mon: only proxy, steerable and monitored-queue have one");
    if (*ctrl_opt && c.type != "steerable")
        throw usage_error("--ctrl: only steerable has a control socket");
    if ((*in_prefix_opt || *out_prefix_opt) && !monitored)
        throw usage_error("--in-prefix/--out-prefix: only for monitored-queue");
    if (monitored && (c.in_prefix.empty() || c.out_prefix.empty()))
        throw usage_error("--in-prefix/--out-prefix: must not be empty");

    const std::pair<const std::string*, socket_spec*> specs[] = {
        {&in_text, &c.in}, {&out_text, &c.out}, {&mon_text, &c.mon}, {&ctrl_text, &c.ctrl}};
    const char* const names[] = {"--in", "--out", "--mon", "--ctrl"};
    for (size_t i = 0; i < 4; ++i) {
        if (specs[i].first->empty())
            continue;
        parse_spec(*specs[i].first, specs[i].second);
        // A SUB only receives what it subscribed to, and nothing here subscribes.
        if (specs[i].second->type == ZMQ_SUB)
            throw usage_error(std::string(names[i]) + ": a SUB socket would receive nothing, "
                              "the tool cannot subscribe (use XSUB)");
    }
    c.run = run_name == "fiber"     ? run_mode::fiber
            : run_name == "process" ? run_mode::process
                                    : run_mode::thread;
    return c;
}

std::unique_ptr<devices::background_device> make_device(const device_config& c)
{
    std::unique_ptr<devices::background_device> dev;
    try {
        if (c.run == run_mode::fiber)
            dev = build<run_mode::fiber>(c);
        else if (c.run == run_mode::process)
            dev = build<run_mode::process>(c);
        else
            dev = build<run_mode::thread>(c);
    } catch (const std::invalid_argument& e) {
        throw usage_error(e.what());
    }

    // Every socket gets the same options; then binds and connects.
    auto* with_mon = dynamic_cast<devices::with_monitor*>(dev.get());
    auto* with_ctrl = dynamic_cast<devices::with_control*>(dev.get());
    for (int opt : {ZMQ_SNDHWM, ZMQ_RCVHWM, ZMQ_LINGER}) {
        if (opt != ZMQ_LINGER && c.hwm < 0)
            continue;
        const int value = opt == ZMQ_LINGER ? c.linger : c.hwm;
        dev->setsockopt_in(opt, value);
        dev->setsockopt_out(opt, value);
        if (with_mon)
            with_mon->setsockopt_mon(opt, value);
        if (with_ctrl)
            with_ctrl->setsockopt_ctrl(opt, value);
    }
    if (c.max_message_size >= 0) {
        const auto limit = c.max_message_size;
        dev->setsockopt_in(zmq::sockopt::maxmsgsize, limit);
        dev->setsockopt_out(zmq::sockopt::maxmsgsize, limit);
        if (with_mon)
            with_mon->setsockopt_mon(zmq::sockopt::maxmsgsize, limit);
        if (with_ctrl)
            with_ctrl->setsockopt_ctrl(zmq::sockopt::maxmsgsize, limit);
    }
    for (const auto& e : c.in.binds)
        dev->bind_in(e);
    for (const auto& e : c.in.connects)
        dev->connect_in(e);
    for (const auto& e : c.out.binds)
        dev->bind_out(e);
    for (const auto& e : c.out.connects)
        dev->connect_out(e);
    if (with_mon) {
        for (const auto& e : c.mon.binds)
            with_mon->bind_mon(e);
        for (const auto& e : c.mon.connects)
            with_mon->connect_mon(e);
    }
    if (with_ctrl) {
        for (const auto& e : c.ctrl.binds)
            with_ctrl->bind_ctrl(e);
        for (const auto& e : c.ctrl.connects)
            with_ctrl->connect_ctrl(e);
    }
    return dev;
}

} // namespace zmq::green::cli
