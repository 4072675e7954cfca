// zmq-green-bench: each workload measured with zmq-green and with a raw libzmq
// baseline written here, alternating, in one run. Prints a table and one JSON
// line per workload. Pin it to one core for stable ratios: taskset -c 0.
//
// Every measurement runs in a forked child, so that each starts from a fresh
// process (no hub, no context, its own peak RSS) and the parent stays free of
// libzmq threads.
#include <zmq/green.hpp>

#include <boost/fiber/all.hpp>

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace green = zmq::green;
using clk = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

struct options {
    std::vector<std::string> workloads{"T1", "T2", "L1", "L2", "S1", "S2", "I1", "E1", "D1"};
    long messages = 1000000;   // T1, T2, E1
    long device_messages = 300000; // D1
    long round_trips = 100000; // L1
    // L2's round trip is ten times L1's; 20,000 still puts 200 samples above
    // the p99 and keeps the default run short.
    long tcp_round_trips = 20000;
    std::vector<int> clients{1000, 10000};
    int client_rounds = 20;
    int reps = 3;
};

double seconds_since(clk::time_point t0)
{
    return std::chrono::duration<double>(clk::now() - t0).count();
}

double peak_rss_kib()
{
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_maxrss);
}

void raise_fd_limit()
{
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
}

int clients_that_fit(int wanted)
{
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    const auto fit = static_cast<long>((lim.rlim_cur - 64) / 3); // 3 fds per tcp client
    return static_cast<int>(std::min<long>(wanted, fit));
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
}

double percentile(std::vector<double>& v, double p)
{
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// Runs fn in a child process and returns what it wrote (numbers). watch, if
// given, runs in this process meanwhile, with the child's pid.
std::vector<double> in_child(const std::function<std::vector<double>()>& fn,
                             const std::function<void(pid_t)>& watch = nullptr)
{
    int fds[2];
    if (::pipe(fds) != 0) {
        std::perror("pipe");
        std::exit(1);
    }
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::close(fds[0]);
        std::vector<double> out;
        try {
            out = fn();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "bench child: %s\n", e.what());
            _exit(1);
        }
        const auto bytes = static_cast<ssize_t>(out.size() * sizeof(double));
        if (::write(fds[1], out.data(), static_cast<size_t>(bytes)) != bytes)
            _exit(1);
        _exit(0);
    }
    ::close(fds[1]);
    if (watch)
        watch(pid);
    std::vector<double> result;
    double v;
    while (::read(fds[0], &v, sizeof v) == static_cast<ssize_t>(sizeof v))
        result.push_back(v);
    ::close(fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::fprintf(stderr, "a measurement failed\n");
        std::exit(1);
    }
    return result;
}

const char payload[64] = {};

// --- T1/T2: PUSH/PULL --------------------------------------------------------

std::vector<double> push_pull_green(long n, const char* endpoint)
{
    green::context_t ctx;
    green::socket_t pull(ctx, zmq::socket_type::pull), push(ctx, zmq::socket_type::push);
    pull.bind(endpoint);
    push.connect(pull.get(zmq::sockopt::last_endpoint));
    const auto t0 = clk::now();
    boost::fibers::fiber producer([&] {
        for (long i = 0; i < n; ++i)
            push.send(zmq::buffer(payload, sizeof payload));
    });
    zmq::message_t m;
    for (long i = 0; i < n; ++i)
        (void)pull.recv(m);
    producer.join();
    return {static_cast<double>(n) / seconds_since(t0) / 1e6};
}

std::vector<double> t1_baseline(long n)
{
    zmq::context_t ctx;
    zmq::socket_t pull(ctx, zmq::socket_type::pull), push(ctx, zmq::socket_type::push);
    pull.bind("inproc://t1");
    push.connect("inproc://t1");
    const auto t0 = clk::now();
    long sent = 0, got = 0;
    zmq::message_t m;
    while (got < n) {
        while (sent < n && push.send(zmq::buffer(payload, sizeof payload), zmq::send_flags::dontwait))
            ++sent;
        while (pull.recv(m, zmq::recv_flags::dontwait))
            ++got;
    }
    return {static_cast<double>(n) / seconds_since(t0) / 1e6};
}

std::vector<double> t2_baseline(long n)
{
    zmq::context_t ctx;
    zmq::socket_t pull(ctx, zmq::socket_type::pull), push(ctx, zmq::socket_type::push);
    pull.bind("tcp://127.0.0.1:*");
    push.connect(pull.get(zmq::sockopt::last_endpoint));
    const auto t0 = clk::now();
    std::thread producer([&] {
        for (long i = 0; i < n; ++i)
            push.send(zmq::buffer(payload, sizeof payload));
    });
    zmq::message_t m;
    for (long i = 0; i < n; ++i)
        (void)pull.recv(m);
    producer.join();
    return {static_cast<double>(n) / seconds_since(t0) / 1e6};
}

// --- L1/L2: REQ/REP round trips (median and p99, microseconds) ---------------

template<class Socket>
std::vector<double> timed_round_trips(Socket& req, long n, const std::function<void()>& serve_one)
{
    std::vector<double> us;
    us.reserve(static_cast<size_t>(n));
    zmq::message_t m;
    for (long i = 0; i < n; ++i) {
        const auto t0 = clk::now();
        req.send(zmq::buffer(payload, sizeof payload));
        if (serve_one)
            serve_one();
        while (!req.recv(m, serve_one ? zmq::recv_flags::dontwait : zmq::recv_flags::none)) {
        }
        us.push_back(seconds_since(t0) * 1e6);
    }
    const double p50 = percentile(us, 0.5);
    return {p50, percentile(us, 0.99)};
}

// Answers n requests with blocking calls: a green socket parks its fiber,
// a plain one blocks its thread.
template<class Socket>
void echo_requests(Socket& rep, long n)
{
    zmq::message_t m;
    for (long i = 0; i < n; ++i) {
        (void)rep.recv(m);
        rep.send(m, zmq::send_flags::none);
    }
}

std::vector<double> l_green(long n, const char* endpoint)
{
    green::context_t ctx;
    green::socket_t rep(ctx, zmq::socket_type::rep), req(ctx, zmq::socket_type::req);
    rep.bind(endpoint);
    req.connect(rep.get(zmq::sockopt::last_endpoint));
    boost::fibers::fiber server([&] { echo_requests(rep, n); });
    auto r = timed_round_trips(req, n, nullptr);
    server.join();
    return r;
}

std::vector<double> l1_baseline(long n)
{
    zmq::context_t ctx;
    zmq::socket_t rep(ctx, zmq::socket_type::rep), req(ctx, zmq::socket_type::req);
    rep.bind("inproc://l1");
    req.connect("inproc://l1");
    zmq::message_t m;
    return timed_round_trips(req, n, [&] {
        while (!rep.recv(m, zmq::recv_flags::dontwait)) {
        }
        rep.send(m, zmq::send_flags::dontwait);
    });
}

std::vector<double> l2_baseline(long n)
{
    zmq::context_t ctx;
    zmq::socket_t rep(ctx, zmq::socket_type::rep), req(ctx, zmq::socket_type::req);
    rep.bind("tcp://127.0.0.1:*");
    req.connect(rep.get(zmq::sockopt::last_endpoint));
    std::thread server([&] { echo_requests(rep, n); });
    auto r = timed_round_trips(req, n, nullptr);
    server.join();
    return r;
}

// --- S1/S2: many REQ clients against one ROUTER echo, one thread -------------
// Returns {round trips per second, peak RSS KiB per client}.

// The same echo ROUTER for both sides; returns its endpoint.
template<class Socket>
std::string bind_echo_router(Socket& router)
{
    router.set(zmq::sockopt::linger, 0);
    router.set(zmq::sockopt::backlog, 4096); // thousands connect at once
    router.set(zmq::sockopt::sndhwm, 0);
    router.set(zmq::sockopt::rcvhwm, 0);
    router.bind("tcp://127.0.0.1:*");
    return router.get(zmq::sockopt::last_endpoint);
}

std::vector<double> s_green(int clients, int rounds)
{
    raise_fd_limit();
    green::context_t ctx(1, clients + 16);
    green::socket_t router(ctx, zmq::socket_type::router);
    const std::string ep = bind_echo_router(router);
    const double rss_before = peak_rss_kib();
    boost::fibers::fiber echo([&] {
        std::vector<zmq::message_t> msg;
        try {
            for (;;) {
                msg.clear();
                (void)green::recv_multipart(router, std::back_inserter(msg));
                green::send_multipart(router, msg);
            }
        } catch (const zmq::error_t&) {
        }
    });
    const auto t0 = clk::now();
    std::vector<boost::fibers::fiber> fibers;
    fibers.reserve(static_cast<size_t>(clients));
    // Closed after the clock stops, as the baseline's are: tearing down
    // connections is not part of the workload.
    std::vector<green::socket_t> sockets(static_cast<size_t>(clients));
    green::stack_pool stacks(64 * 1024);
    // Every client stays, parked, until the figure is read: memory per
    // client is what N live fibers hold, not what is left once they end.
    int finished = 0;
    green::event all_finished;
    green::event release;
    for (auto& socket : sockets)
        fibers.emplace_back(std::allocator_arg, stacks, [&] {
            socket = green::socket_t(ctx, zmq::socket_type::req);
            socket.set(zmq::sockopt::linger, 0);
            socket.connect(ep);
            zmq::message_t m;
            for (int r = 0; r < rounds; ++r) {
                socket.send(zmq::buffer(payload, sizeof payload));
                (void)socket.recv(m);
            }
            if (++finished == clients)
                all_finished.set();
            release.wait();
        });
    all_finished.wait();
    const double elapsed = seconds_since(t0);
    const double per_client = (peak_rss_kib() - rss_before) / clients;
    release.set();
    for (auto& f : fibers)
        f.join();
    sockets.clear();
    router.close();
    echo.join();
    return {static_cast<double>(clients) * rounds / elapsed, per_client};
}

// The hand-written alternative: every socket's ZMQ_FD in one epoll set
// (edge-triggered), and a state machine per client.
std::vector<double> s_baseline(int clients, int rounds)
{
    raise_fd_limit();
    zmq::context_t ctx(1, clients + 16);
    zmq::socket_t router(ctx, zmq::socket_type::router);
    const std::string ep = bind_echo_router(router);
    const double rss_before = peak_rss_kib();
    const int ep_fd = ::epoll_create1(0);
    auto watch = [&](zmq::socket_t& s, void* tag) {
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLET;
        ev.data.ptr = tag;
        ::epoll_ctl(ep_fd, EPOLL_CTL_ADD, s.get(zmq::sockopt::fd), &ev);
    };
    struct client {
        zmq::socket_t socket;
        int done = 0;
        bool awaiting_reply = false;
    };
    const auto t0 = clk::now();
    std::vector<client> cs;
    cs.reserve(static_cast<size_t>(clients));
    watch(router, nullptr);
    for (int c = 0; c < clients; ++c) {
        cs.push_back({zmq::socket_t(ctx, zmq::socket_type::req)});
        cs.back().socket.set(zmq::sockopt::linger, 0);
        cs.back().socket.connect(ep);
        watch(cs.back().socket, &cs.back());
    }
    long remaining = static_cast<long>(clients) * rounds;
    zmq::message_t m;
    auto drive = [&](client& c) {
        for (;;) {
            if (c.done == rounds)
                return;
            if (!c.awaiting_reply) {
                if (!c.socket.send(zmq::buffer(payload, sizeof payload), zmq::send_flags::dontwait))
                    return;
                c.awaiting_reply = true;
            }
            // A failed non-blocking recv has processed the socket's pending
            // commands, so the reply will come with a new edge: no
            // ZMQ_EVENTS read is needed to re-arm it (zmq-green relies on
            // the same fact).
            if (!c.socket.recv(m, zmq::recv_flags::dontwait))
                return;
            c.awaiting_reply = false;
            ++c.done;
            --remaining;
        }
    };
    std::vector<zmq::message_t> msg;
    auto serve = [&] {
        for (;;) {
            msg.clear();
            if (!zmq::recv_multipart(router, std::back_inserter(msg), zmq::recv_flags::dontwait))
                return;
            zmq::send_multipart(router, msg, zmq::send_flags::dontwait);
        }
    };
    for (auto& c : cs)
        drive(c);
    std::vector<epoll_event> events(1024);
    while (remaining > 0) {
        const int n = ::epoll_wait(ep_fd, events.data(), static_cast<int>(events.size()), 1000);
        for (int i = 0; i < n; ++i) {
            if (events[static_cast<size_t>(i)].data.ptr == nullptr)
                serve();
            else
                drive(*static_cast<client*>(events[static_cast<size_t>(i)].data.ptr));
        }
    }
    const double elapsed = seconds_since(t0);
    const double per_client = (peak_rss_kib() - rss_before) / clients;
    ::close(ep_fd);
    return {static_cast<double>(clients) * rounds / elapsed, per_client};
}

// --- I1: CPU of 10,000 parked fibers over 2 s --------------------------------
// Both sides hold 1,000 PULL sockets that never receive; the baseline is what
// the same sockets cost a thread blocked in epoll_wait. The parent reads the
// child's CPU time across the window from /proc: measured from inside, the
// window would end with the child's own wake-up, and on this VM that one
// wake of a process that slept costs 0.3 to 3.6 ms, which alone made the
// figure (docs/performance.md).

constexpr int idle_sockets = 1000;
constexpr auto idle_window = 2s;
// The window opens this long after the child says it is parked, so that it
// has gone to sleep; the child sleeps until well after the window's end.
constexpr auto idle_settle = 100ms;
constexpr auto idle_sleep = idle_settle + idle_window + 200ms;

struct task_time {
    double cpu_ns = 0; // on a CPU, all threads
    double slices = 0; // times a thread was scheduled in: its wake-ups
};

// Each thread's /proc/<pid>/task/<tid>/schedstat: run time (ns), wait time
// (ns), time slices.
task_time task_time_of(pid_t pid)
{
    task_time total;
    const std::string dir = "/proc/" + std::to_string(pid) + "/task";
    DIR* tasks = ::opendir(dir.c_str());
    if (tasks == nullptr) {
        std::perror(dir.c_str());
        std::exit(1);
    }
    while (const dirent* e = ::readdir(tasks)) {
        if (e->d_name[0] == '.')
            continue;
        const std::string path = dir + "/" + e->d_name + "/schedstat";
        if (FILE* f = std::fopen(path.c_str(), "r")) {
            unsigned long long run = 0, wait = 0, slices = 0;
            if (std::fscanf(f, "%llu %llu %llu", &run, &wait, &slices) == 3) {
                total.cpu_ns += static_cast<double>(run);
                total.slices += static_cast<double>(slices);
            }
            std::fclose(f);
        }
    }
    ::closedir(tasks);
    return total;
}

struct idle_figures {
    double cpu_ms_per_s;
    double wakes; // in the window, all threads
};

// Runs park in a child, which writes a byte to the fd it is given once
// parked, sleeps for idle_sleep, and writes the time it woke (say_parked,
// say_woken); measures the child from here. A child that woke before the
// window closed (a loaded machine) fails the run rather than skew it.
idle_figures measure_idle(const std::function<void(int parked_fd)>& park)
{
    int parked[2];
    if (::pipe(parked) != 0) {
        std::perror("pipe");
        std::exit(1);
    }
    std::optional<idle_figures> got;
    in_child(
        [&] {
            ::close(parked[0]);
            park(parked[1]);
            return std::vector<double>{};
        },
        [&](pid_t pid) {
            ::close(parked[1]);
            pollfd ready{parked[0], POLLIN, 0};
            if (::poll(&ready, 1, 60'000) != 1) {
                std::fprintf(stderr, "I1: the child did not park within 60 s\n");
                ::kill(pid, SIGKILL);
                std::exit(1);
            }
            char byte;
            if (::read(parked[0], &byte, 1) != 1)
                return; // the child failed: in_child says so
            std::this_thread::sleep_for(idle_settle);
            const task_time before = task_time_of(pid);
            const auto opened = clk::now();
            std::this_thread::sleep_for(idle_window);
            const task_time after = task_time_of(pid);
            const auto closed = clk::now();
            clk::rep woke = 0;
            if (::read(parked[0], &woke, sizeof woke) != static_cast<ssize_t>(sizeof woke))
                return;
            if (woke <= closed.time_since_epoch().count()) {
                std::fprintf(stderr, "I1: the child woke before the window closed\n");
                std::exit(1);
            }
            got = idle_figures{(after.cpu_ns - before.cpu_ns) / 1e6
                                   / std::chrono::duration<double>(closed - opened).count(),
                               after.slices - before.slices};
        });
    ::close(parked[0]);
    if (!got) {
        std::fprintf(stderr, "I1: the child never parked\n");
        std::exit(1);
    }
    return *got;
}

void say_parked(int fd)
{
    if (::write(fd, "p", 1) != 1)
        std::exit(1);
}

// steady_clock is CLOCK_MONOTONIC, the same in the parent.
void say_woken(int fd)
{
    const clk::rep now = clk::now().time_since_epoch().count();
    if (::write(fd, &now, sizeof now) != static_cast<ssize_t>(sizeof now))
        std::exit(1);
    ::close(fd);
}

void i1_green(int parked_fd)
{
    raise_fd_limit();
    green::context_t ctx(1, 2 * idle_sockets);
    std::vector<green::socket_t> pulls;
    for (int i = 0; i < idle_sockets; ++i)
        pulls.emplace_back(ctx, zmq::socket_type::pull);
    std::vector<boost::fibers::fiber> parked;
    green::stack_pool stacks(64 * 1024);
    for (auto& s : pulls)
        for (int j = 0; j < 10; ++j)
            parked.emplace_back(std::allocator_arg, stacks, [&s] {
                zmq::message_t m;
                try {
                    (void)s.recv(m);
                } catch (const zmq::error_t&) {
                }
            });
    boost::this_fiber::yield();
    // The window opens once the parks are over: after the fallback re-check
    // that follows them (1 s later); the next comes 4 s after it, after the
    // child's sleep.
    const green::hub& hub = green::hub::current();
    const std::uint64_t rechecks = hub.stats().rechecks;
    while (hub.stats().rechecks == rechecks)
        boost::this_fiber::sleep_for(50ms);
    say_parked(parked_fd);
    boost::this_fiber::sleep_for(idle_sleep);
    say_woken(parked_fd);
    for (auto& s : pulls)
        s.close();
    for (auto& f : parked)
        f.join();
}

// As S1's baseline waits: each ZMQ_FD in one epoll set. (zmq_poll would read
// every socket's ZMQ_FD and ZMQ_EVENTS on each call: milliseconds for 1,000.)
void i1_baseline(int parked_fd)
{
    raise_fd_limit();
    zmq::context_t ctx(1, 2 * idle_sockets);
    std::vector<zmq::socket_t> pulls;
    const int ep_fd = ::epoll_create1(0);
    for (int i = 0; i < idle_sockets; ++i) {
        pulls.emplace_back(ctx, zmq::socket_type::pull);
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLET;
        ::epoll_ctl(ep_fd, EPOLL_CTL_ADD, pulls.back().get(zmq::sockopt::fd), &ev);
    }
    say_parked(parked_fd);
    const auto until = clk::now() + idle_sleep;
    epoll_event ev{};
    for (auto now = clk::now(); now < until; now = clk::now()) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - now);
        ::epoll_wait(ep_fd, &ev, 1, static_cast<int>(left.count()));
    }
    say_woken(parked_fd);
    ::close(ep_fd);
}

// --- E1: PUSH/PULL inproc through a zmq_stream -------------------------------
// Compared with T1's green side: what the callback layer costs over plain recv.

std::vector<double> e1_green(long n)
{
    green::context_t ctx;
    green::socket_t pull(ctx, zmq::socket_type::pull), push(ctx, zmq::socket_type::push);
    pull.bind("inproc://e1");
    push.connect("inproc://e1");
    green::io_loop loop;
    green::zmq_stream stream(std::move(pull), loop);
    long got = 0;
    stream.on_recv([&](green::zmq_stream::message&) {
        if (++got == n)
            loop.stop();
    });
    const auto t0 = clk::now();
    boost::fibers::fiber producer([&] {
        for (long i = 0; i < n; ++i)
            push.send(zmq::buffer(payload, sizeof payload));
    });
    loop.start();
    const double elapsed = seconds_since(t0);
    producer.join();
    return {static_cast<double>(n) / elapsed / 1e6};
}

// --- D1: a queue device with a monitor, tcp ------------------------------------
// producer PUSH -> in PULL [device] out PUSH -> consumer PULL, and the device's
// PUSH monitor -> drain PULL; every hop tcp loopback, every socket the same HWM
// on both sides, the device binding all three. The monitor is PUSH/PULL rather
// than pyzmq's default PUB so that neither side may drop copies: both deliver
// every message to the consumer and to the drain, and the clock stops when both
// have it all. Only the device differs between the sides; its peers are the
// same threads of blocking libzmq calls. One difference is the API's:
// monitored_queue sends [prefix, payload] to the monitor, zmq_proxy's capture
// the bare payload.

constexpr int device_hwm = 1000;

// The device's own sockets, bound on loopback.
template<class Context, class Socket>
struct device_ends {
    Socket in, out, mon;
    std::string in_ep, out_ep, mon_ep;

    explicit device_ends(Context& ctx)
        : in(ctx, zmq::socket_type::pull), out(ctx, zmq::socket_type::push),
          mon(ctx, zmq::socket_type::push)
    {
        in_ep = bind_loopback(in);
        out_ep = bind_loopback(out);
        mon_ep = bind_loopback(mon);
    }

    static std::string bind_loopback(Socket& s)
    {
        s.set(zmq::sockopt::sndhwm, device_hwm);
        s.set(zmq::sockopt::rcvhwm, device_hwm);
        s.bind("tcp://127.0.0.1:*");
        return s.get(zmq::sockopt::last_endpoint);
    }
};

// The device's peers, the same for both sides so that D1 compares the
// devices alone: a producer, a consumer and a monitor drain, each a thread
// of blocking libzmq calls. Returns M msg/s from the first send to the last
// message consumed and drained.
double run_device_peers(long n, long drain_frames, const std::string& in_ep,
                        const std::string& out_ep, const std::string& mon_ep)
{
    zmq::context_t ctx;
    auto peer = [&](zmq::socket_type type, const std::string& ep) {
        zmq::socket_t s(ctx, type);
        s.set(zmq::sockopt::sndhwm, device_hwm);
        s.set(zmq::sockopt::rcvhwm, device_hwm);
        s.connect(ep);
        return s;
    };
    zmq::socket_t producer = peer(zmq::socket_type::push, in_ep);
    zmq::socket_t consumer = peer(zmq::socket_type::pull, out_ep);
    zmq::socket_t drain = peer(zmq::socket_type::pull, mon_ep);
    auto take = [](zmq::socket_t& s, long count) {
        zmq::message_t m;
        for (long i = 0; i < count; ++i)
            (void)s.recv(m);
    };
    const auto t0 = clk::now();
    std::thread produce([&] {
        for (long i = 0; i < n; ++i)
            producer.send(zmq::buffer(payload, sizeof payload));
    });
    std::thread drain_all([&] { take(drain, drain_frames); });
    take(consumer, n);
    drain_all.join();
    const double elapsed = seconds_since(t0);
    produce.join();
    return static_cast<double>(n) / elapsed / 1e6;
}

// monitored_queue() in a fiber; this thread's hub runs it while the peers'
// threads work.
std::vector<double> d1_green(long n)
{
    green::context_t ctx;
    device_ends<green::context_t, green::socket_t> d(ctx);
    boost::fibers::fiber device([&] { green::monitored_queue(d.in, d.out, d.mon); });
    boost::fibers::packaged_task<double()> peers([&] {
        return run_device_peers(n, 2 * n, d.in_ep, d.out_ep, d.mon_ep); // [prefix, payload]
    });
    auto rate = peers.get_future();
    std::thread peer_thread(std::move(peers));
    const double r = rate.get(); // parks this fiber: the device fiber runs
    peer_thread.join();
    ctx.shutdown(); // how a device is stopped: it returns on ETERM
    device.join();
    return {r};
}

// zmq_proxy with a capture socket in its own thread.
std::vector<double> d1_baseline(long n)
{
    zmq::context_t ctx;
    device_ends<zmq::context_t, zmq::socket_t> d(ctx);
    std::thread device([&] { zmq_proxy(d.in.handle(), d.out.handle(), d.mon.handle()); });
    const double r = run_device_peers(n, n, d.in_ep, d.out_ep, d.mon_ep);
    ctx.shutdown(); // zmq_proxy returns on ETERM
    device.join();
    return {r};
}

// --- driver -------------------------------------------------------------------

struct row {
    std::string id, unit;
    double green, baseline;
};

row measure(const std::string& id, const std::string& unit, int reps,
            const std::function<double()>& green_run, const std::function<double()>& base_run)
{
    std::vector<double> g, b;
    for (int r = 0; r < reps; ++r) { // alternate, so drift hits both sides alike
        g.push_back(green_run());
        b.push_back(base_run());
    }
    return {id, unit, median(g), median(b)};
}

std::vector<std::string> split(const std::string& s)
{
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= s.size()) {
        const size_t comma = s.find(',', start);
        out.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        if (comma == std::string::npos)
            break;
        start = comma + 1;
    }
    return out;
}

[[noreturn]] void usage()
{
    std::fprintf(stderr,
                 "usage: zmq-green-bench [--workloads T1,T2,L1,L2,S1,S2,I1,E1,D1] [--messages N]\n"
                 "                       [--device-messages N] [--round-trips N]\n"
                 "                       [--tcp-round-trips N] [--clients N,N] [--client-rounds N]\n"
                 "                       [--reps N]\n");
    std::exit(2);
}

long parse_positive(const char* s)
{
    char* end = nullptr;
    const long v = s ? std::strtol(s, &end, 10) : 0;
    if (!s || *end != '\0' || v <= 0)
        usage();
    return v;
}

} // namespace

int main(int argc, char** argv)
{
    options opt;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
        if (a == "--workloads" && v)
            opt.workloads = split(argv[++i]);
        else if (a == "--messages")
            opt.messages = parse_positive(v), ++i;
        else if (a == "--device-messages")
            opt.device_messages = parse_positive(v), ++i;
        else if (a == "--round-trips")
            opt.round_trips = parse_positive(v), ++i;
        else if (a == "--tcp-round-trips")
            opt.tcp_round_trips = parse_positive(v), ++i;
        else if (a == "--clients" && v) {
            opt.clients.clear();
            for (const auto& c : split(argv[++i]))
                opt.clients.push_back(static_cast<int>(parse_positive(c.c_str())));
        } else if (a == "--client-rounds")
            opt.client_rounds = static_cast<int>(parse_positive(v)), ++i;
        else if (a == "--reps")
            opt.reps = static_cast<int>(parse_positive(v)), ++i;
        else
            usage();
    }
    const std::map<std::string, int> known{{"T1", 0}, {"T2", 0}, {"L1", 0}, {"L2", 0},
                                           {"S1", 0}, {"S2", 0}, {"I1", 0}, {"E1", 0},
                                           {"D1", 0}};
    for (const auto& w : opt.workloads)
        if (!known.count(w)) {
            std::fprintf(stderr, "zmq-green-bench: unknown workload '%s'\n", w.c_str());
            usage();
        }
    auto wanted = [&](const char* id) {
        return std::find(opt.workloads.begin(), opt.workloads.end(), id) != opt.workloads.end();
    };

    std::vector<row> rows;
    const long n = opt.messages;
    if (wanted("T1"))
        rows.push_back(measure("T1", "M msg/s", opt.reps,
                               [&] { return in_child([&] { return push_pull_green(n, "inproc://t1"); })[0]; },
                               [&] { return in_child([&] { return t1_baseline(n); })[0]; }));
    if (wanted("T2"))
        rows.push_back(measure("T2", "M msg/s", opt.reps,
                               [&] { return in_child([&] { return push_pull_green(n, "tcp://127.0.0.1:*"); })[0]; },
                               [&] { return in_child([&] { return t2_baseline(n); })[0]; }));
    for (const char* id : {"L1", "L2"}) {
        if (!wanted(id))
            continue;
        const bool inproc = id[1] == '1';
        const long rt = inproc ? opt.round_trips : opt.tcp_round_trips;
        std::vector<double> g99, b99;
        auto green_run = [&] {
            auto r = in_child([&] { return l_green(rt, inproc ? "inproc://l" : "tcp://127.0.0.1:*"); });
            g99.push_back(r[1]);
            return r[0];
        };
        auto base_run = [&] {
            auto r = in_child([&] { return inproc ? l1_baseline(rt) : l2_baseline(rt); });
            b99.push_back(r[1]);
            return r[0];
        };
        rows.push_back(measure(id, "us median", opt.reps, green_run, base_run));
        rows.push_back({std::string(id) + ".p99", "us p99", median(g99), median(b99)});
    }
    for (int clients : opt.clients) {
        if (!wanted("S1") && !wanted("S2"))
            break;
        // Asked in a child: the limit that counts is the one the children get.
        const int count = static_cast<int>(in_child([&] {
            raise_fd_limit();
            return std::vector<double>{static_cast<double>(clients_that_fit(clients))};
        })[0]);
        if (count < clients)
            std::printf("note: the fd limit allows %d clients, not %d\n", count, clients);
        std::vector<double> gm, bm;
        auto green_run = [&] {
            auto r = in_child([&] { return s_green(count, opt.client_rounds); });
            gm.push_back(r[1]);
            return r[0];
        };
        auto base_run = [&] {
            auto r = in_child([&] { return s_baseline(count, opt.client_rounds); });
            bm.push_back(r[1]);
            return r[0];
        };
        const std::string n_label = "@" + std::to_string(count);
        row s1 = measure("S1" + n_label, "round trips/s", opt.reps, green_run, base_run);
        if (wanted("S1"))
            rows.push_back(s1);
        if (wanted("S2"))
            rows.push_back({"S2" + n_label, "KiB/client", median(gm), median(bm)});
    }
    if (wanted("I1")) {
        std::vector<double> gw, bw;
        rows.push_back(measure(
            "I1", "CPU ms/s", opt.reps,
            [&] {
                const idle_figures f = measure_idle(i1_green);
                gw.push_back(f.wakes);
                return f.cpu_ms_per_s;
            },
            [&] {
                const idle_figures f = measure_idle(i1_baseline);
                bw.push_back(f.wakes);
                return f.cpu_ms_per_s;
            }));
        rows.push_back({"I1.wakes", "per 2 s", median(gw), median(bw)});
    }
    if (wanted("E1")) // its baseline is T1's green side
        rows.push_back(measure("E1", "M msg/s", opt.reps,
                               [&] { return in_child([&] { return e1_green(n); })[0]; },
                               [&] { return in_child([&] { return push_pull_green(n, "inproc://t1"); })[0]; }));
    if (wanted("D1")) {
        const long dn = opt.device_messages;
        rows.push_back(measure("D1", "M msg/s", opt.reps,
                               [&] { return in_child([&] { return d1_green(dn); })[0]; },
                               [&] { return in_child([&] { return d1_baseline(dn); })[0]; }));
    }

    std::printf("\n%-12s %-14s %12s %12s %8s\n", "workload", "unit", "zmq-green", "libzmq", "ratio");
    for (const auto& r : rows) {
        const double ratio = r.baseline > 0 ? r.green / r.baseline : 0.0;
        std::printf("%-12s %-14s %12.3f %12.3f %8.3f\n", r.id.c_str(), r.unit.c_str(), r.green,
                    r.baseline, ratio);
    }
    std::printf("\n");
    for (const auto& r : rows) {
        const double ratio = r.baseline > 0 ? r.green / r.baseline : 0.0;
        std::printf("{\"id\":\"%s\",\"unit\":\"%s\",\"green\":%.6g,\"baseline\":%.6g,\"ratio\":%.6g}\n",
                    r.id.c_str(), r.unit.c_str(), r.green, r.baseline, ratio);
    }
    return 0;
}
