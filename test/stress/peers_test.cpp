// Peers that come and go: a plain libzmq peer in a child process is killed
// with SIGKILL mid-stream and started again while fibers are parked on the
// green sockets. The parked fibers must resume with the new peer, the stream
// must go on where the transport allows, and no fd may be left behind.
#include "stress.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <system_error>
#include <vector>

extern char** environ;

using namespace std::chrono_literals;
namespace green = zmq::green;

namespace {

// test/stress/stress_peer.cpp in a child process; its stdout comes back
// through a pipe that the hub watches, so reading it parks only the fiber.
class peer_process {
public:
    explicit peer_process(std::vector<std::string> args)
    {
        int out[2];
        if (::pipe2(out, O_CLOEXEC) != 0)
            throw std::system_error(errno, std::generic_category(), "pipe2");
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
        args.insert(args.begin(), STRESS_PEER_EXE);
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        const int rc = ::posix_spawn(&pid_, STRESS_PEER_EXE, &actions, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        ::close(out[1]);
        if (rc != 0) {
            ::close(out[0]);
            throw std::system_error(rc, std::generic_category(), "posix_spawn " STRESS_PEER_EXE);
        }
        out_ = out[0];
    }
    ~peer_process()
    {
        kill();
        ::close(out_);
    }
    peer_process(const peer_process&) = delete;
    peer_process& operator=(const peer_process&) = delete;

    // The peer's next line, without the newline; empty once it has exited.
    std::string read_line()
    {
        std::string line;
        char c;
        for (;;) {
            const ssize_t n = ::read(out_, &c, 1);
            if (n == 1 && c == '\n')
                return line;
            if (n == 1)
                line += c;
            else if (n == 0)
                return line;
            else if (errno != EINTR)
                green::wait_readable(out_);
        }
    }

    // The endpoint from "ready <endpoint>".
    std::string wait_ready()
    {
        const std::string line = read_line();
        EXPECT_EQ(line.rfind("ready ", 0), 0u) << "peer said: " << line;
        return line.size() > 6 ? line.substr(6) : std::string();
    }

    // SIGKILL, then reap. Parks only the fiber until the pipe reports the
    // death (every end of it closes with the process).
    void kill()
    {
        if (pid_ < 0)
            return;
        ::kill(pid_, SIGKILL);
        while (!read_line().empty()) {
        }
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
        pid_ = -1;
    }

private:
    pid_t pid_ = -1;
    int out_ = -1;
};

// Fibers wait here for a counter to reach a value.
struct progress {
    void add(std::uint64_t& counter)
    {
        ++counter;
        cv.notify_all();
    }
    template<class Pred>
    void wait(Pred pred)
    {
        std::unique_lock<boost::fibers::mutex> lock(mutex);
        cv.wait(lock, pred);
    }
    void notify() { cv.notify_all(); }

    boost::fibers::mutex mutex;
    boost::fibers::condition_variable cv;
};

constexpr int receivers = 10;

} // namespace

class peers : public stress::fd_checked_test {};

// The child ROUTER binds a port that the restarted child binds again; the
// green DEALER reconnects on its own. While the peer is dead, receivers stay
// parked, and the sender parks in send once the DEALER's queue is full.
TEST_F(peers, dealer_resumes_when_its_router_is_killed_and_restarted)
{
    const int total = 20000 / stress::divisor;
    const std::uint64_t kill_after = static_cast<std::uint64_t>(total) / 4;
    constexpr int window = 100; // sends ahead of echoes while the peer lives
    green::context_t context;
    auto peer = std::make_unique<peer_process>(std::vector<std::string>{"router", "tcp://127.0.0.1:*", "1"});
    const std::string endpoint = peer->wait_ready();
    green::socket_t dealer(context, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.set(zmq::sockopt::sndhwm, 10);
    dealer.set(zmq::sockopt::sndtimeo, 50);
    dealer.set(zmq::sockopt::reconnect_ivl, 10);
    dealer.connect(endpoint);

    progress p;
    std::uint64_t echoed = 0;
    std::uint64_t echoed_by[3] = {0, 0, 0};
    long last_by[3] = {-1, -1, -1};
    bool outage = false;
    std::uint64_t parked_in_outage = 0;
    long sent = 0;
    long credit = 0; // what was in flight at the restart, lost or still queued

    std::vector<boost::fibers::fiber> fibers;
    for (int r = 0; r < receivers; ++r)
        fibers.emplace_back([&] {
            for (;;) {
                const auto parts = test::recv_strs(dealer);
                ASSERT_EQ(parts.size(), 2u);
                if (parts[1] == "stop")
                    return;
                const int gen = std::stoi(parts[0]);
                ASSERT_TRUE(gen == 1 || gen == 2) << parts[0];
                const long seq = std::stol(parts[1]);
                EXPECT_GT(seq, last_by[gen]) << "generation " << gen << ": duplicate or reordered";
                if (gen == 2) {
                    EXPECT_GT(seq, last_by[1]) << "an echo of the dead peer came after the new one's";
                }
                last_by[gen] = seq;
                ++echoed_by[gen];
                p.add(echoed);
            }
        });
    fibers.emplace_back([&] {
        auto send = [&](const std::string& text) {
            while (!dealer.send(zmq::buffer(text)))
                if (outage)
                    p.add(parked_in_outage); // parked in send for SNDTIMEO
        };
        for (long seq = 0; seq < total; ++seq) {
            p.wait([&] { return outage || seq < static_cast<long>(echoed) + credit + window; });
            send(std::to_string(seq));
            ++sent;
        }
        for (int r = 0; r < receivers; ++r)
            send("stop");
    });
    fibers.emplace_back([&] {
        p.wait([&] { return echoed >= kill_after; });
        outage = true;
        p.notify();
        peer->kill();
        // Not restarted before the sender has been parked on the full queue.
        p.wait([&] { return parked_in_outage > 0; });
        peer = std::make_unique<peer_process>(std::vector<std::string>{"router", endpoint, "2"});
        EXPECT_EQ(peer->wait_ready(), endpoint);
        credit = sent - static_cast<long>(echoed);
        outage = false;
        p.notify();
    });
    for (auto& f : fibers)
        f.join();

    EXPECT_GE(echoed_by[1], kill_after);
    EXPECT_GT(echoed_by[2], 0u) << "the stream did not continue after the restart";
    EXPECT_EQ(last_by[2], total - 1) << "the stream did not reach its end";
    std::cout << echoed_by[1] << " echoed before the kill, " << echoed_by[2] << " after, "
              << total - static_cast<long>(echoed) << " lost with the dead peer" << std::endl;
    peer.reset();
    dealer.close();
    context.close();
}

// The green ROUTER binds; the child DEALER connects with a fixed routing id
// and streams. Its replacement takes the same routing id over (ROUTER_HANDOVER).
// Within one connection nothing may be lost, duplicated or reordered.
TEST_F(peers, router_resumes_when_a_dealer_with_the_same_identity_comes_back)
{
    const std::uint64_t per_generation = 5000 / stress::divisor;
    green::context_t context;
    green::socket_t router(context, zmq::socket_type::router);
    router.set(zmq::sockopt::linger, 0);
    router.set(zmq::sockopt::router_handover, 1);
    router.set(zmq::sockopt::rcvhwm, 10);
    router.bind("tcp://127.0.0.1:*");
    const std::string endpoint = router.get(zmq::sockopt::last_endpoint);

    progress p;
    std::uint64_t received = 0;
    std::uint64_t received_by[3] = {0, 0, 0};
    long next_by[3] = {0, 0, 0};
    int ended = 0;
    std::vector<boost::fibers::fiber> fibers;
    for (int r = 0; r < receivers; ++r)
        fibers.emplace_back([&] {
            try {
                for (;;) {
                    const auto parts = test::recv_strs(router);
                    ASSERT_EQ(parts.size(), 3u);
                    EXPECT_EQ(parts[0], "peer");
                    const int gen = std::stoi(parts[1]);
                    ASSERT_TRUE(gen == 1 || gen == 2) << parts[1];
                    EXPECT_EQ(std::stol(parts[2]), next_by[gen])
                        << "generation " << gen << ": lost, duplicated or reordered";
                    next_by[gen] = std::stol(parts[2]) + 1;
                    ++received_by[gen];
                    p.add(received);
                }
            } catch (const zmq::error_t& e) {
                EXPECT_EQ(e.num(), ENOTSOCK);
                ++ended;
            }
        });
    fibers.emplace_back([&] {
        for (const char* gen : {"1", "2"}) {
            peer_process peer({"dealer", endpoint, "peer", gen});
            peer.wait_ready();
            const auto& count = received_by[std::stoi(gen)];
            p.wait([&] { return count >= per_generation; });
            // Killed mid-stream: the receivers park until the next one connects.
        }
        router.close();
    });
    for (auto& f : fibers)
        f.join();

    EXPECT_GE(received_by[1], per_generation);
    EXPECT_GE(received_by[2], per_generation) << "the stream did not continue after the restart";
    EXPECT_EQ(ended, receivers) << "parked receivers must end with ENOTSOCK when the router closes";
    context.close();
}
