#include "support.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>

using namespace std::chrono_literals;
namespace green = zmq::green;

namespace {

struct child {
    pid_t pid = -1;
    int out = -1;
    std::string buffer;

    explicit child(std::vector<std::string> args)
    {
        int fds[2];
        EXPECT_EQ(::pipe(fds), 0);
        pid = ::fork();
        if (pid == 0) {
            ::dup2(fds[1], 1);
            ::close(fds[0]);
            ::close(fds[1]);
            std::vector<char*> argv;
            args.insert(args.begin(), ZMQ_GREEN_DEVICE_EXE);
            for (auto& a : args)
                argv.push_back(a.data());
            argv.push_back(nullptr);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        ::close(fds[1]);
        out = fds[0];
    }
    ~child()
    {
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            wait();
        }
        ::close(out);
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
             "--ctrl", "PAIR=@tcp://127.0.0.1:*", "--stats", "60"});
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
