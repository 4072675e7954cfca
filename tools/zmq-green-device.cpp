// zmq-green-device: runs one zmq::green device from the command line.
#include <zmq/green.hpp>

#include <CLI/CLI.hpp>

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace devices = zmq::green::devices;
using devices::run_mode;

namespace {

struct socket_spec {
    int type = -1;
    std::vector<std::string> binds;
    std::vector<std::string> connects;
};

const std::map<std::string, int> socket_types = {
    {"PAIR", ZMQ_PAIR},     {"PUB", ZMQ_PUB},   {"SUB", ZMQ_SUB},       {"REQ", ZMQ_REQ},
    {"REP", ZMQ_REP},       {"DEALER", ZMQ_DEALER}, {"ROUTER", ZMQ_ROUTER}, {"PULL", ZMQ_PULL},
    {"PUSH", ZMQ_PUSH},     {"XPUB", ZMQ_XPUB}, {"XSUB", ZMQ_XSUB},     {"STREAM", ZMQ_STREAM}};

// SOCKTYPE=ENDPOINTS, ENDPOINTS comma-separated, '@' binds and '>' connects.
// Returns an error message, empty if the spec is valid.
std::string parse_spec(const std::string& text, socket_spec* out)
{
    const auto eq = text.find('=');
    if (eq == std::string::npos)
        return "expected SOCKTYPE=ENDPOINTS, got '" + text + "'";
    std::string name = text.substr(0, eq);
    std::transform(name.begin(), name.end(), name.begin(), ::toupper);
    const auto type = socket_types.find(name);
    if (type == socket_types.end())
        return "unknown socket type '" + text.substr(0, eq) + "'";
    socket_spec spec;
    spec.type = type->second;
    std::istringstream list(text.substr(eq + 1));
    std::string endpoint;
    while (std::getline(list, endpoint, ',')) {
        if (endpoint.size() < 2 || (endpoint[0] != '@' && endpoint[0] != '>'))
            return "endpoint '" + endpoint + "' must start with '@' (bind) or '>' (connect)";
        (endpoint[0] == '@' ? spec.binds : spec.connects).push_back(endpoint.substr(1));
    }
    if (spec.binds.empty() && spec.connects.empty())
        return "no endpoint in '" + text + "'";
    if (out)
        *out = spec;
    return {};
}

template<run_mode M>
std::unique_ptr<devices::background_device> make_device(const std::string& type,
                                                        const socket_spec& in,
                                                        const socket_spec& out,
                                                        const socket_spec& mon,
                                                        const socket_spec& ctrl,
                                                        const std::string& in_prefix,
                                                        const std::string& out_prefix)
{
    const int mon_type = mon.type >= 0 ? mon.type : ZMQ_PUB;
    if (type == "queue")
        return std::make_unique<devices::basic_device<M>>(ZMQ_QUEUE, in.type, out.type);
    if (type == "forwarder")
        return std::make_unique<devices::basic_device<M>>(ZMQ_FORWARDER, in.type, out.type);
    if (type == "streamer")
        return std::make_unique<devices::basic_device<M>>(ZMQ_STREAMER, in.type, out.type);
    if (type == "proxy")
        return std::make_unique<devices::basic_proxy<M>>(in.type, out.type, mon_type);
    if (type == "steerable")
        return std::make_unique<devices::basic_proxy_steerable<M>>(
            in.type, out.type, mon_type, ctrl.type >= 0 ? ctrl.type : ZMQ_PAIR);
    return std::make_unique<devices::basic_monitored_queue<M>>(in.type, out.type, mon_type,
                                                               in_prefix, out_prefix);
}

void print_stats(const zmq::green::proxy_statistics& s)
{
    std::cout << "{\"frontend\":{\"msgs_in\":" << s.frontend_msgs_in
              << ",\"bytes_in\":" << s.frontend_bytes_in << ",\"msgs_out\":" << s.frontend_msgs_out
              << ",\"bytes_out\":" << s.frontend_bytes_out
              << "},\"backend\":{\"msgs_in\":" << s.backend_msgs_in
              << ",\"bytes_in\":" << s.backend_bytes_in << ",\"msgs_out\":" << s.backend_msgs_out
              << ",\"bytes_out\":" << s.backend_bytes_out << "}}" << std::endl;
}

int run(int argc, char** argv)
{
    CLI::App app{"Runs a zmq::green device until SIGINT, SIGTERM or TERMINATE.\n"
                 "ENDPOINTS: comma-separated; '@' binds, '>' connects, e.g. ROUTER=@tcp://*:5559",
                 "zmq-green-device"};
    std::string type;
    std::string in_text, out_text, mon_text, ctrl_text;
    std::string in_prefix = "in", out_prefix = "out";
    std::string run_name = "thread";
    int hwm = -1;
    int linger = 0;
    double stats_seconds = 0;
    const auto spec_check = CLI::Validator(
        [](std::string& s) { return parse_spec(s, nullptr); }, "SOCKTYPE=ENDPOINTS");
    app.add_option("TYPE", type, "queue | forwarder | streamer | proxy | steerable | monitored-queue")
        ->required()
        ->check(CLI::IsMember(
            {"queue", "forwarder", "streamer", "proxy", "steerable", "monitored-queue"}));
    app.add_option("--in", in_text, "frontend socket")->required()->check(spec_check);
    app.add_option("--out", out_text, "backend socket")->required()->check(spec_check);
    auto* mon_opt = app.add_option("--mon", mon_text, "capture/monitor socket")->check(spec_check);
    auto* ctrl_opt = app.add_option("--ctrl", ctrl_text, "control socket (steerable)")->check(spec_check);
    auto* in_prefix_opt = app.add_option("--in-prefix", in_prefix, "monitor prefix, in -> out");
    auto* out_prefix_opt = app.add_option("--out-prefix", out_prefix, "monitor prefix, out -> in");
    app.add_option("--run", run_name, "where the device runs")
        ->check(CLI::IsMember({"fiber", "thread", "process"}));
    app.add_option("--hwm", hwm, "send and receive high-water mark of every socket")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--linger", linger, "ZMQ_LINGER of every socket, ms (-1: forever)")
        ->check(CLI::Range(-1, 1 << 30))
        ->capture_default_str();
    app.add_option("--stats", stats_seconds, "print JSON counters every SECONDS")
        ->check(CLI::PositiveNumber);

    try {
        app.parse(argc, argv);
        const bool monitored = type == "monitored-queue";
        if (*mon_opt && type != "proxy" && type != "steerable" && !monitored)
            throw CLI::ValidationError("--mon", "only proxy, steerable and monitored-queue have one");
        if (*ctrl_opt && type != "steerable")
            throw CLI::ValidationError("--ctrl", "only steerable has a control socket");
        if ((*in_prefix_opt || *out_prefix_opt) && !monitored)
            throw CLI::ValidationError("--in-prefix/--out-prefix", "only for monitored-queue");
        if (monitored && (in_prefix.empty() || out_prefix.empty()))
            throw CLI::ValidationError("--in-prefix/--out-prefix", "must not be empty");
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::cerr << "zmq-green-device: " << e.what() << "\n\n" << app.help();
        return 2;
    }

    socket_spec in, out, mon, ctrl;
    parse_spec(in_text, &in);
    parse_spec(out_text, &out);
    if (!mon_text.empty())
        parse_spec(mon_text, &mon);
    if (!ctrl_text.empty())
        parse_spec(ctrl_text, &ctrl);

    // Blocked before any thread exists, so that only the signalfd sees them.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    const int sfd = signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        std::perror("zmq-green-device: signalfd");
        return 1;
    }

    std::unique_ptr<devices::background_device> dev;
    const auto args = std::tie(type, in, out, mon, ctrl, in_prefix, out_prefix);
    if (run_name == "fiber")
        dev = std::apply(make_device<run_mode::fiber>, args);
    else if (run_name == "process")
        dev = std::apply(make_device<run_mode::process>, args);
    else
        dev = std::apply(make_device<run_mode::thread>, args);

    // Every socket gets the same options; then binds and connects.
    auto* with_mon = dynamic_cast<devices::with_monitor*>(dev.get());
    auto* with_ctrl = dynamic_cast<devices::with_control*>(dev.get());
    for (int opt : {ZMQ_SNDHWM, ZMQ_RCVHWM, ZMQ_LINGER}) {
        if (opt != ZMQ_LINGER && hwm < 0)
            continue;
        const int value = opt == ZMQ_LINGER ? linger : hwm;
        dev->setsockopt_in(opt, value);
        dev->setsockopt_out(opt, value);
        if (with_mon)
            with_mon->setsockopt_mon(opt, value);
        if (with_ctrl)
            with_ctrl->setsockopt_ctrl(opt, value);
    }
    for (const auto& e : in.binds)
        dev->bind_in(e);
    for (const auto& e : in.connects)
        dev->connect_in(e);
    for (const auto& e : out.binds)
        dev->bind_out(e);
    for (const auto& e : out.connects)
        dev->connect_out(e);
    if (with_mon) {
        for (const auto& e : mon.binds)
            with_mon->bind_mon(e);
        for (const auto& e : mon.connects)
            with_mon->connect_mon(e);
    }
    if (with_ctrl) {
        for (const auto& e : ctrl.binds)
            with_ctrl->bind_ctrl(e);
        for (const auto& e : ctrl.connects)
            with_ctrl->connect_ctrl(e);
    }

    try {
        dev->start();
        for (const auto& b : dev->endpoints())
            std::cout << "bound " << b.socket << " " << b.endpoint << "\n";
        std::cout.flush();

        using clock = std::chrono::steady_clock;
        const auto interval = std::chrono::duration_cast<clock::duration>(
            std::chrono::duration<double>(stats_seconds));
        auto next_stats = clock::now() + interval;
        for (;;) {
            // Short slices: the device may also end by itself (TERMINATE).
            if (zmq::green::wait_readable(sfd, std::chrono::milliseconds{100})) {
                signalfd_siginfo info;
                (void)!::read(sfd, &info, sizeof info);
                dev->stop();
                break;
            }
            if (dev->done()) {
                dev->join();
                break;
            }
            if (stats_seconds > 0 && clock::now() >= next_stats) {
                print_stats(dev->statistics());
                next_stats += interval;
            }
        }
        if (stats_seconds > 0)
            print_stats(dev->statistics());
    } catch (const devices::device_error& e) {
        std::cerr << "zmq-green-device: " << e.what() << std::endl;
        return 1;
    }
    ::close(sfd);
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::cerr << "zmq-green-device: " << e.what() << std::endl;
        return 1;
    }
}
