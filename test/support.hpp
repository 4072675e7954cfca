// Helpers shared by the tests: fibers, socket pairs, limits.
#pragma once

#include <zmq/green.hpp>

#include <boost/fiber/all.hpp>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <mutex>
#include <string>
#include <vector>

// AddressSanitizer's runtime can deadlock a child forked from a process
// whose other threads (libzmq's) hold its locks; glibc alone is fork-safe
// here. Until process devices fork and exec a clean image, skip them there.
#if defined(__SANITIZE_ADDRESS__)
#define ZMQ_GREEN_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ZMQ_GREEN_TEST_ASAN 1
#endif
#endif
#ifdef ZMQ_GREEN_TEST_ASAN
#define SKIP_FORK_UNDER_ASAN() GTEST_SKIP() << "fork from a multi-threaded process under ASan"
#else
#define SKIP_FORK_UNDER_ASAN() (void)0
#endif

// UBSan checks a virtual call's object by writing it to a pipe of its own:
// with no fd left, every such check fails, the library's throw included.
#ifdef ZMQ_GREEN_TEST_UBSAN
#define SKIP_NO_FDS_UNDER_UBSAN() GTEST_SKIP() << "UBSan's vptr check needs fds of its own"
#else
#define SKIP_NO_FDS_UNDER_UBSAN() (void)0
#endif

namespace test {

// Runs each function in its own fiber on this thread and joins them all.
inline void run_fibers(std::vector<std::function<void()>> fns)
{
    std::vector<boost::fibers::fiber> fibers;
    fibers.reserve(fns.size());
    for (auto& fn : fns)
        fibers.emplace_back(std::move(fn));
    for (auto& f : fibers)
        f.join();
}

inline std::string unique_inproc()
{
    static std::atomic<int> n{0};
    return "inproc://test-" + std::to_string(n++);
}

// t1 binds (by default to a random loopback tcp port), t2 connects; linger 0
// on both.
struct bound_pair {
    bound_pair(zmq::green::context_t& ctx, zmq::socket_type t1, zmq::socket_type t2,
               const std::string& endpoint = "tcp://127.0.0.1:*")
        : a(ctx, t1), b(ctx, t2)
    {
        a.set(zmq::sockopt::linger, 0);
        b.set(zmq::sockopt::linger, 0);
        a.bind(endpoint);
        b.connect(a.get(zmq::sockopt::last_endpoint));
    }
    zmq::green::socket_t a;
    zmq::green::socket_t b;
};

inline void raise_fd_limit(rlim_t wanted)
{
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = std::min(wanted, lim.rlim_max);
    setrlimit(RLIMIT_NOFILE, &lim);
}

// CPU time (user + system) of the whole process so far, in seconds.
inline double cpu_seconds()
{
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec)
           + static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// The names in a directory but "." and "..", none if it cannot be read.
inline std::vector<std::string> dir_entries(const std::string& path)
{
    std::vector<std::string> names;
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr)
        return names;
    while (const dirent* entry = ::readdir(dir))
        if (entry->d_name[0] != '.')
            names.emplace_back(entry->d_name);
    ::closedir(dir);
    return names;
}

// How many fds the process has open (entries of /proc/self/fd).
inline int open_fds()
{
    const auto fds = dir_entries("/proc/self/fd");
    if (fds.empty()) // never, when readable: the directory stream has one
        return -1;
    return static_cast<int>(fds.size()) - 1; // the directory stream's own fd
}

// Fault injection for the fallback re-check: loses the edges that fd (a
// socket's ZMQ_FD) announced, as a kernel or library bug would. The hub does
// not expose its epoll set, so it is found through /proc as the set that
// watches fd edge-triggered; its pending events are taken and dropped, and fd
// stays readable. Returns how many events were dropped (-1: no such set).
inline int lose_edges(int fd)
{
    int dropped = -1;
    for (const std::string& name : dir_entries("/proc/self/fd")) {
        std::array<char, 64> target{};
        const std::string link = "/proc/self/fd/" + name;
        if (::readlink(link.c_str(), target.data(), target.size() - 1) < 0
            || std::string(target.data()) != "anon_inode:[eventpoll]")
            continue;
        std::ifstream info("/proc/self/fdinfo/" + name);
        bool watches_fd_by_edge = false;
        for (std::string line; std::getline(info, line);) {
            int tfd = -1;
            unsigned events = 0;
            if (std::sscanf(line.c_str(), "tfd: %d events: %x", &tfd, &events) == 2 && tfd == fd
                && (events & EPOLLET) != 0)
                watches_fd_by_edge = true;
        }
        if (!watches_fd_by_edge)
            continue;
        std::array<epoll_event, 64> events{};
        const int n = ::epoll_wait(std::stoi(name), events.data(), events.size(), 0);
        dropped = std::max(dropped, 0) + std::max(n, 0);
    }
    return dropped;
}

// Binds a new tcp socket to a free port of 127.0.0.1; returns the socket
// and sets addr to where it is bound.
// Looks at counter() every millisecond, from the calling fiber, until it has
// grown `times` times. spans[k] (k >= 2) is the longest the time between its
// growth k-1 and growth k can have been: each growth happened after the last
// look that had not seen it. A lower bound on that time holds for spans[k].
inline std::vector<double>
spans_between_increments_ms(const std::function<std::uint64_t()>& counter, std::uint64_t times)
{
    using clock = std::chrono::steady_clock;
    std::vector<clock::time_point> seen(times + 1), before(times + 1);
    const std::uint64_t first = counter();
    for (std::uint64_t k = 1; k <= times;) {
        const auto now = clock::now();
        for (const std::uint64_t grown = counter() - first; k <= grown && k <= times; ++k)
            seen[k] = now;
        if (k <= times) {
            before[k] = now;
            boost::this_fiber::sleep_for(std::chrono::milliseconds(1));
        }
    }
    std::vector<double> spans(times + 1);
    for (std::uint64_t k = 2; k <= times; ++k)
        spans[k] = std::chrono::duration<double, std::milli>(seen[k] - before[k - 1]).count();
    return spans;
}

// A fiber of this thread parked in a PULL's receive, for the tests that lose
// an edge on purpose. A re-check that never comes fails the receive (10 s
// RCVTIMEO), not ctest's timeout.
struct parked_receiver {
    explicit parked_receiver(zmq::green::context_t& ctx)
        : p(ctx, zmq::socket_type::pull, zmq::socket_type::push, unique_inproc())
    {
        p.a.set(zmq::sockopt::rcvtimeo, 10000);
        receiver = boost::fibers::fiber([this] {
            zmq::message_t m;
            if (p.a.recv(m))
                got = m.to_string();
        });
        boost::this_fiber::yield(); // it finds nothing and parks
    }
    ~parked_receiver()
    {
        if (receiver.joinable())
            receiver.join();
    }
    // Sends it a message whose edge is taken out of the hub's epoll set: only
    // the hub's fallback re-check can deliver it, and counts one rescue.
    void expect_a_lost_edge_rescued(zmq::green::hub& h)
    {
        const zmq::green::hub_stats before = h.stats();
        p.b.send(zmq::str_buffer("lost"));
        EXPECT_EQ(lose_edges(p.a.get(zmq::sockopt::fd)), 1);
        receiver.join();
        EXPECT_EQ(got, "lost");
        EXPECT_EQ(h.stats().rescues - before.rescues, 1u);
        EXPECT_EQ(h.stats().fd_wakeups, before.fd_wakeups);
    }
    bound_pair p;
    std::string got = "nothing";
    boost::fibers::fiber receiver;
};

inline int bound_loopback_socket(sockaddr_in& addr)
{
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), len), 0);
    EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    return fd;
}

// A connected loopback tcp pair: tcp carries urgent (out-of-band) data.
struct tcp_pair {
    tcp_pair()
    {
        sockaddr_in addr{};
        const int listener = bound_loopback_socket(addr);
        EXPECT_EQ(::listen(listener, 1), 0);
        sender = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        EXPECT_EQ(::connect(sender, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        receiver = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        ::close(listener);
    }
    ~tcp_pair()
    {
        ::close(sender);
        ::close(receiver);
    }
    tcp_pair(const tcp_pair&) = delete;
    tcp_pair& operator=(const tcp_pair&) = delete;

    void send_urgent() const { EXPECT_EQ(::send(sender, "!", 1, MSG_OOB), 1); }

    int sender = -1;
    int receiver = -1;
};

// A field of /proc/PID/status, e.g. SigBlk.
inline std::string status_field(pid_t pid, const std::string& name)
{
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind(name + ":", 0) == 0)
            return line.substr(line.find_first_not_of(" \t", name.size() + 1));
    return {};
}

// The processes parent has forked and not yet reaped, from every thread.
inline std::vector<pid_t> child_pids(pid_t parent = ::getpid())
{
    std::vector<pid_t> pids;
    const std::string tasks = "/proc/" + std::to_string(parent) + "/task/";
    for (const std::string& task : dir_entries(tasks)) {
        std::ifstream children(tasks + task + "/children");
        for (pid_t pid; children >> pid;)
            pids.push_back(pid);
    }
    return pids;
}

inline std::string str(const zmq::message_t& m) { return m.to_string(); }

using strings = std::vector<std::string>;

// Sends parts as one multipart message.
inline void send_strs(zmq::green::socket_t& s, const strings& parts)
{
    std::vector<zmq::const_buffer> bufs;
    for (const auto& p : parts)
        bufs.push_back(zmq::buffer(p));
    ASSERT_TRUE(zmq::green::send_multipart(s, bufs));
}

// Receives one multipart message as strings.
inline strings recv_strs(zmq::green::socket_t& s)
{
    std::vector<zmq::message_t> msgs;
    EXPECT_TRUE(zmq::green::recv_multipart(s, std::back_inserter(msgs)));
    strings out;
    for (auto& m : msgs)
        out.push_back(m.to_string());
    return out;
}

// Once reached() (the task has got where the test wants it, parked), kills
// t and waits for it: true if it ended, killed, within 5 s.
inline bool kill_once(const zmq::green::task& t, const std::function<bool()>& reached)
{
    while (!reached())
        boost::this_fiber::yield();
    t.kill(false);
    return t.join(std::chrono::seconds{5}) && t.killed();
}

// An io_loop error handler that keeps the what() of each error in `into`.
inline zmq::green::io_loop::error_handler collect_errors(std::vector<std::string>& into)
{
    return [&into](std::exception_ptr e) {
        if (!e) {
            into.emplace_back("<no exception>");
            return;
        }
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            into.emplace_back(ex.what());
        } catch (...) {
            into.emplace_back("<not a std::exception>");
        }
    };
}

// The errno of the zmq::error_t that fn throws; 0 if it throws none.
inline int errno_of(const std::function<void()>& fn)
{
    try {
        fn();
    } catch (const zmq::error_t& e) {
        return e.num();
    }
    return 0;
}

// fn must throw E, and E's what() must contain every needle: bad input gets
// an error that names the problem.
template<class E>
void expect_error(const std::function<void()>& fn, std::initializer_list<const char*> needles)
{
    try {
        fn();
        ADD_FAILURE() << "no exception";
    } catch (const E& e) {
        for (const char* needle : needles)
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
                << "'" << needle << "' not in: " << e.what();
    }
}

// Closes s unless the scope ends within limit: a call that would never
// return then fails its test with ENOTSOCK instead of hanging it. Only a
// guard: a passing test never gets near the limit.
class close_guard {
public:
    explicit close_guard(zmq::green::socket_t& s,
                         std::chrono::milliseconds limit = std::chrono::seconds{10})
        : fiber_([this, &s, limit] {
              std::unique_lock<boost::fibers::mutex> lock(mutex_);
              if (!ended_.wait_for(lock, limit, [this] { return done_; }))
                  s.close();
          })
    {
    }
    ~close_guard()
    {
        {
            std::lock_guard<boost::fibers::mutex> lock(mutex_);
            done_ = true;
        }
        ended_.notify_all();
        fiber_.join();
    }
    close_guard(const close_guard&) = delete;
    close_guard& operator=(const close_guard&) = delete;

private:
    boost::fibers::mutex mutex_;
    boost::fibers::condition_variable ended_;
    bool done_ = false;
    boost::fibers::fiber fiber_;
};

// A ROUTER_MANDATORY router with SNDHWM 1 and two dealers: it has filled the
// pipe to "full", while "idle" has room, so ZMQ_EVENTS says POLLOUT.
struct router_with_a_full_peer {
    explicit router_with_a_full_peer(zmq::green::context_t& ctx)
        : router(ctx, zmq::socket_type::router), full(ctx, zmq::socket_type::dealer),
          idle(ctx, zmq::socket_type::dealer)
    {
        for (auto* s : {&router, &full, &idle})
            s->set(zmq::sockopt::linger, 0);
        router.set(zmq::sockopt::router_mandatory, 1);
        router.set(zmq::sockopt::sndhwm, 1);
        const auto ep = unique_inproc();
        router.bind(ep);
        full.set(zmq::sockopt::routing_id, "full");
        full.set(zmq::sockopt::rcvhwm, 1);
        for (auto* dealer : {&full, &idle}) {
            dealer->connect(ep);
            dealer->send(zmq::str_buffer("hello")); // the router learns its routing id
            EXPECT_EQ(recv_strs(router).size(), 2u);
        }
        while (zmq::green::send_multipart(router, to_full, zmq::send_flags::dontwait))
            ++queued;
        EXPECT_TRUE(router.get(zmq::sockopt::events) & ZMQ_POLLOUT);
    }

    // full reads what was queued for it, and one more.
    void drain_full()
    {
        for (int i = 0; i <= queued; ++i)
            EXPECT_EQ(recv_strs(full), strings{"x"});
    }

    zmq::green::socket_t router, full, idle;
    const std::array<zmq::const_buffer, 2> to_full{zmq::str_buffer("full"), zmq::str_buffer("x")};
    int queued = 0;
};

// Every test ends with the fallback re-check having rescued nothing: a rescue
// means an edge was missed.
class green_test : public ::testing::Test {
protected:
    void TearDown() override { EXPECT_EQ(zmq::green::hub::current().stats().rescues, 0u); }
    zmq::green::context_t ctx;
};

} // namespace test
