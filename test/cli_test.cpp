#include "support.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <sstream>

using namespace std::chrono_literals;
namespace green = zmq::green;

namespace {

struct child {
    pid_t pid = -1;
    int out = -1;
    int err = -1;
    std::string buffer;

    explicit child(std::vector<std::string> args)
    {
        int fds[2];
        int err_fds[2];
        EXPECT_EQ(::pipe(fds), 0);
        EXPECT_EQ(::pipe(err_fds), 0);
        pid = ::fork();
        if (pid == 0) {
            ::dup2(fds[1], 1);
            ::dup2(err_fds[1], 2);
            for (int fd : {fds[0], fds[1], err_fds[0], err_fds[1]})
                ::close(fd);
            std::vector<char*> argv;
            args.insert(args.begin(), ZMQ_GREEN_DEVICE_EXE);
            for (auto& a : args)
                argv.push_back(a.data());
            argv.push_back(nullptr);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        ::close(fds[1]);
        ::close(err_fds[1]);
        out = fds[0];
        err = err_fds[0];
    }
    ~child()
    {
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            wait();
        }
        ::close(out);
        ::close(err);
    }

    // Everything the child writes on stderr, until it closes it.
    std::string errors()
    {
        std::string text;
        for (;;) {
            green::wait_readable(err);
            char chunk[256];
            const ssize_t n = ::read(err, chunk, sizeof chunk);
            if (n <= 0)
                return text;
            text.append(chunk, static_cast<size_t>(n));
        }
    }

    // One line of the child's stdout; empty at end of file.
    std::string line()
    {
        for (;;) {
            const auto nl = buffer.find('\n');
            if (nl != std::string::npos) {
                auto l = buffer.substr(0, nl);
                buffer.erase(0, nl + 1);
                return l;
            }
            green::wait_readable(out);
            char chunk[256];
            const ssize_t n = ::read(out, chunk, sizeof chunk);
            if (n <= 0)
                return {};
            buffer.append(chunk, static_cast<size_t>(n));
        }
    }

    int wait()
    {
        int status = 0;
        ::waitpid(pid, &status, 0);
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
};

std::string recv_str(green::socket_t& s)
{
    zmq::message_t m;
    EXPECT_TRUE(s.recv(m));
    return m.to_string();
}

} // namespace

class cli : public test::green_test {};

TEST_F(cli, monitored_queue_end_to_end_stopped_by_sigterm)
{
    for (const char* mode : {"thread", "fiber", "process"}) {
        child c({"monitored-queue", "--in", "PULL=@tcp://127.0.0.1:*", "--out",
                 "PUSH=@tcp://127.0.0.1:*", "--mon", "PUSH=@tcp://127.0.0.1:*", "--in-prefix", "I",
                 "--run", mode, "--hwm", "100", "--linger", "0"});
        std::map<std::string, std::string> bound;
        for (int i = 0; i < 3; ++i) {
            const auto l = c.line();
            ASSERT_EQ(l.rfind("bound ", 0), 0u) << l;
            const auto space = l.find(' ', 6);
            bound[l.substr(6, space - 6)] = l.substr(space + 1);
        }
        green::socket_t push(ctx, zmq::socket_type::push), pull(ctx, zmq::socket_type::pull),
            mon(ctx, zmq::socket_type::pull);
        for (auto* s : {&push, &pull, &mon})
            s->set(zmq::sockopt::linger, 0);
        push.connect(bound["in"]);
        pull.connect(bound["out"]);
        mon.connect(bound["mon"]);
        ASSERT_TRUE(push.send(zmq::str_buffer("hello")));
        EXPECT_EQ(recv_str(pull), "hello");
        EXPECT_EQ(recv_str(mon), "I");
        EXPECT_EQ(recv_str(mon), "hello");
        ::kill(c.pid, SIGTERM);
        EXPECT_EQ(c.wait(), 0) << mode;
    }
}

TEST_F(cli, steerable_ends_on_terminate_and_prints_stats)
{
    child c({"steerable", "--in", "PULL=@tcp://127.0.0.1:*", "--out", "PUSH=@tcp://127.0.0.1:*",
             "--ctrl", "PAIR=@tcp://127.0.0.1:*", "--stats", "60", "--maxmsgsize", "1000"});
    std::map<std::string, std::string> bound;
    for (int i = 0; i < 3; ++i) {
        const auto l = c.line();
        const auto space = l.find(' ', 6);
        bound[l.substr(6, space - 6)] = l.substr(space + 1);
    }
    green::socket_t push(ctx, zmq::socket_type::push), pull(ctx, zmq::socket_type::pull),
        ctrl(ctx, zmq::socket_type::pair);
    for (auto* s : {&push, &pull, &ctrl})
        s->set(zmq::sockopt::linger, 0);
    push.connect(bound["in"]);
    pull.connect(bound["out"]);
    ctrl.connect(bound["ctrl"]);
    ASSERT_TRUE(push.send(zmq::str_buffer("hello")));
    EXPECT_EQ(recv_str(pull), "hello");
    ASSERT_TRUE(ctrl.send(zmq::str_buffer("TERMINATE")));
    const auto stats = c.line();
    EXPECT_NE(stats.find("\"frontend\":{\"msgs_in\":1,\"bytes_in\":5"), std::string::npos) << stats;
    EXPECT_EQ(c.wait(), 0);
}

// SIGINT ends the tool as SIGTERM does, with the last counters; socket types
// may be in any case, and the bound lines come in, out, mon, ctrl.
TEST_F(cli, sigint_ends_the_tool_with_0_after_the_last_stats)
{
    child c({"steerable", "--ctrl", "pair=@tcp://127.0.0.1:*", "--mon", "Pub=@tcp://127.0.0.1:*",
             "--out", "push=@tcp://127.0.0.1:*", "--in", "PULL=@tcp://127.0.0.1:*", "--stats",
             "1000"});
    for (const std::string name : {"in", "out", "mon", "ctrl"}) {
        const auto l = c.line();
        EXPECT_EQ(l.rfind("bound " + name + " tcp://127.0.0.1:", 0), 0u) << l;
    }
    ::kill(c.pid, SIGINT);
    const auto stats = c.line();
    EXPECT_EQ(stats.rfind("{\"frontend\":{\"msgs_in\":0,", 0), 0u) << stats;
    EXPECT_EQ(c.wait(), 0);
}

TEST_F(cli, help_exits_0_with_the_usage)
{
    child c({"--help"});
    std::string usage;
    char chunk[256];
    ssize_t n;
    while (green::wait_readable(c.out), (n = ::read(c.out, chunk, sizeof chunk)) > 0)
        usage.append(chunk, static_cast<size_t>(n));
    EXPECT_NE(usage.find("Usage:"), std::string::npos) << usage;
    EXPECT_EQ(c.wait(), 0);
}

TEST_F(cli, bad_arguments_exit_2)
{
    const std::vector<std::vector<std::string>> bad = {
        {},
        {"nonsense", "--in", "PULL=@tcp://127.0.0.1:*", "--out", "PUSH=@tcp://127.0.0.1:*"},
        {"queue", "--in", "PULL=@tcp://127.0.0.1:*"},
        {"queue", "--in", "WHAT=@tcp://127.0.0.1:*", "--out", "PUSH=@tcp://127.0.0.1:*"},
        {"queue", "--in", "PULL=tcp://127.0.0.1:*", "--out", "PUSH=@tcp://127.0.0.1:*"},
        {"queue", "--in", "PULL=@tcp://127.0.0.1:*", "--out", "PUSH=@tcp://127.0.0.1:*", "--mon",
         "PUB=@tcp://127.0.0.1:*"},
        {"queue", "--in", "PULL=@tcp://127.0.0.1:*", "--out", "PUSH=@tcp://127.0.0.1:*", "--run",
         "cloud"},
        {"queue", "--in", "PULL=@tcp://127.0.0.1:*", "--out", "PUSH=@tcp://127.0.0.1:*", "--hwm",
         "lots"},
    };
    for (const auto& args : bad) {
        child c(args);
        EXPECT_EQ(c.wait(), 2) << (args.empty() ? "" : args[0]);
    }
}

TEST_F(cli, unusable_endpoint_exits_1)
{
    child c({"queue", "--in", "PULL=@bogus://x", "--out", "PUSH=@tcp://127.0.0.1:*"});
    EXPECT_EQ(c.wait(), 1);
    child d({"queue", "--in", "PULL=>tcp://no such host:1", "--out", "PUSH=@tcp://127.0.0.1:*",
             "--run", "process"});
    EXPECT_EQ(d.wait(), 1);
}

// The tool blocks SIGINT and SIGTERM to read them from a signalfd; its device
// process must not inherit the mask, or it would ignore SIGTERM.
TEST_F(cli, a_device_process_dies_of_sigterm)
{
    child c({"queue", "--in", "PULL=@tcp://127.0.0.1:*", "--out", "PUSH=@tcp://127.0.0.1:*",
             "--run", "process"});
    ASSERT_EQ(c.line().rfind("bound in ", 0), 0u);
    const std::vector<pid_t> devices = test::child_pids(c.pid);
    ASSERT_EQ(devices.size(), 1u);
    const pid_t device = devices[0];
    ASSERT_EQ(test::status_field(device, "SigBlk"), "0000000000000000");
    ::kill(device, SIGTERM);
    const auto text = c.errors();
    EXPECT_EQ(c.wait(), 1);
    EXPECT_NE(text.find("status 143"), std::string::npos) << text;
}

// A device process whose owner dies ends, even while its out socket holds a
// message for a peer that never comes (--linger -1 would keep it for ever).
TEST_F(cli, an_orphaned_device_process_ends)
{
    child c({"queue", "--in", "PULL=@tcp://127.0.0.1:*", "--out", "PUSH=>tcp://127.0.0.1:1",
             "--run", "process", "--linger", "-1", "--stats", "0.001"});
    const auto bound = c.line();
    ASSERT_EQ(bound.rfind("bound in ", 0), 0u) << bound;
    green::socket_t push(ctx, zmq::socket_type::push);
    push.set(zmq::sockopt::linger, 0);
    push.connect(bound.substr(9));
    ASSERT_TRUE(push.send(zmq::str_buffer("hello")));
    for (;;) { // until the device has sent it on
        const auto stats = c.line();
        ASSERT_FALSE(stats.empty());
        if (stats.find("\"msgs_out\":1,\"bytes_out\":5}}") != std::string::npos)
            break;
    }
    const std::vector<pid_t> devices = test::child_pids(c.pid);
    ASSERT_EQ(devices.size(), 1u);
    const pid_t device = devices[0];
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, device, 0));
    ASSERT_GE(pidfd, 0);
    ::kill(c.pid, SIGKILL);
    c.wait();
    pollfd ended{pidfd, POLLIN, 0};
    const int n = ::poll(&ended, 1, 10000); // a hang guard: it ends at once
    if (n != 1)
        ::kill(device, SIGKILL);
    EXPECT_EQ(n, 1);
    ::close(pidfd);
}

// The tool waits for signals in slices of 100 ms; the counters must still
// come at the interval asked for, not at most ten a second.
TEST_F(cli, stats_come_at_the_requested_interval)
{
    child c({"queue", "--in", "PULL=@tcp://127.0.0.1:*", "--out", "PUSH=@tcp://127.0.0.1:*",
             "--stats", "0.001"});
    ASSERT_EQ(c.line().rfind("bound in ", 0), 0u);
    ASSERT_EQ(c.line().rfind("bound out ", 0), 0u);
    // 200 lines take 0.2 s; ten a second would take 20 s. The deadline is
    // only a hang guard, 50 times what is due.
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    int lines = 0;
    while (lines < 200 && std::chrono::steady_clock::now() < deadline) {
        ASSERT_EQ(c.line().rfind("{\"frontend\":", 0), 0u);
        ++lines;
    }
    EXPECT_EQ(lines, 200);
}

// --- bad input -----------------------------------------------------------------

namespace {

const std::vector<std::string> good_in = {"--in", "PULL=@tcp://127.0.0.1:*"};
const std::vector<std::string> good_out = {"--out", "PUSH=@tcp://127.0.0.1:*"};

std::vector<std::string> args(std::initializer_list<std::vector<std::string>> parts)
{
    std::vector<std::string> all;
    for (const auto& p : parts)
        all.insert(all.end(), p.begin(), p.end());
    return all;
}

// Under AddressSanitizer a fiber device makes ASan warn, once, about Boost.Context's stack
// switch: three lines that are not the tool's.
std::string without_sanitizer_notes(const std::string& text)
{
    std::istringstream lines(text);
    std::string kept, line;
    while (std::getline(lines, line))
        if (line.rfind("==", 0) != 0 && line.rfind("False positive error reports", 0) != 0
            && line.rfind("For details see", 0) != 0)
            kept += line + '\n';
    return kept;
}

// Runs the tool; it must exit with code and one stderr line containing needle.
void expect_refused(const std::vector<std::string>& argv, int code, const std::string& needle)
{
    std::string shown;
    for (const auto& a : argv)
        shown += a + ' ';
    child c(argv);
    const auto text = without_sanitizer_notes(c.errors());
    EXPECT_EQ(c.wait(), code) << shown;
    ASSERT_FALSE(text.empty()) << shown;
    EXPECT_EQ(text.find('\n'), text.size() - 1) << "not one line: " << text;
    EXPECT_EQ(text.rfind("zmq-green-device: ", 0), 0u) << text;
    EXPECT_NE(text.find(needle), std::string::npos) << "'" << needle << "' not in: " << text;
}

} // namespace

TEST_F(cli, BadInput_bad_flags_exit_2_with_one_line_naming_the_problem)
{
    const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
        {args({{"queue"}, good_in, good_out, {"--frobnicate"}}), "--frobnicate"},
        {args({{"queue"}, good_in, {"--out"}}), "--out"},
        {args({{"queue"}, good_in}), "--out"},
        {{}, "TYPE"},
        {args({{"nonsense"}, good_in, good_out}), "nonsense"},
        {args({{"queue"}, {"--in", "WHAT=@tcp://127.0.0.1:*"}, good_out}), "WHAT"},
        {args({{"queue"}, {"--in", "PULL"}, good_out}), "SOCKTYPE=ENDPOINTS"},
        {args({{"queue"}, {"--in", "PULL=tcp://127.0.0.1:*"}, good_out}), "'@'"},
        {args({{"queue"}, {"--in", "PULL=@127.0.0.1:5555"}, good_out}), "TRANSPORT://"},
        {args({{"queue"}, {"--in", "PULL=@tcp://a,,@tcp://b"}, good_out}), "endpoint ''"},
        {args({{"queue"}, {"--in", "PULL=@tcp://127.0.0.1:*,"}, good_out}), "endpoint ''"},
        {args({{"queue"}, {"--in", "PULL=,@tcp://127.0.0.1:*"}, good_out}), "endpoint ''"},
        {args({{"streamer"}, {"--in", "PUSH=@tcp://127.0.0.1:*"},
               {"--out", "PULL=@tcp://127.0.0.1:*"}}),
         "PUSH"},
        {args({{"proxy"}, good_in, good_out, {"--mon", "PULL=@tcp://127.0.0.1:*"}}), "mon"},
        {args({{"steerable"}, good_in, good_out, {"--ctrl", "PUB=@tcp://127.0.0.1:*"}}), "ctrl"},
        {args({{"forwarder"}, {"--in", "SUB=@tcp://127.0.0.1:*"}, good_out}), "SUB"},
        {args({{"queue"}, good_in, good_out, {"--mon", "PUB=@tcp://127.0.0.1:*"}}), "--mon"},
        {args({{"queue"}, good_in, good_out, {"--ctrl", "PAIR=@tcp://127.0.0.1:*"}}), "--ctrl"},
        {args({{"queue"}, good_in, good_out, {"--in-prefix", "x"}}), "--in-prefix"},
        {args({{"monitored-queue"}, good_in, good_out, {"--out-prefix", ""}}), "empty"},
        {args({{"queue"}, good_in, good_out, {"--run", "cloud"}}), "cloud"},
        {args({{"queue"}, good_in, good_out, {"--hwm", "lots"}}), "--hwm"},
        {args({{"queue"}, good_in, good_out, {"--hwm", "-3"}}), "--hwm"},
        {args({{"queue"}, good_in, good_out, {"--linger", "-5"}}), "--linger"},
        {args({{"queue"}, good_in, good_out, {"--maxmsgsize", "-5"}}), "--maxmsgsize"},
        {args({{"queue"}, good_in, good_out, {"--maxmsgsize", "99999999999999999999"}}),
         "--maxmsgsize: BYTES must be a whole number from 0 to 9223372036854775807, got "
         "'99999999999999999999'"},
        {args({{"queue"}, good_in, good_out, {"--hwm", "99999999999"}}), "--hwm"},
        {args({{"queue"}, good_in, good_out, {"--stats", "nan"}}), "SECONDS"},
        {args({{"queue"}, good_in, good_out, {"--stats", "1e300"}}), "SECONDS"},
        {args({{"queue"}, good_in, good_out, {"--stats", "0"}}), "SECONDS"},
    };
    for (const auto& [argv, needle] : cases)
        expect_refused(argv, 2, needle);
}

TEST_F(cli, BadInput_unusable_endpoints_exit_1_with_one_line)
{
    expect_refused(args({{"queue"}, {"--in", "PULL=@bogus://x"}, good_out}), 1, "bogus://x");
    expect_refused(args({{"queue"}, {"--in", "PULL=@tcp://a\nb:1"}, good_out}), 1, "tcp://a b:1");
    expect_refused(
        args({{"queue"}, {"--in", "PULL=>tcp://no such host:1"}, good_out, {"--run", "process"}}), 1,
        "no such host");
    expect_refused(
        args({{"queue"}, {"--in", "PULL=@tcp://127.0.0.1"}, good_out, {"--run", "fiber"}}), 1,
        "bind in tcp://127.0.0.1");
}
