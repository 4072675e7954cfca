#include "support.hpp"

#include <zmq/green/devices.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <future>
#include <thread>
#include <type_traits>

using namespace std::chrono_literals;
namespace green = zmq::green;
namespace devices = zmq::green::devices;
using test::green_test;

namespace {

using test::recv_strs;
using test::send_strs;
using test::strings;

green::socket_t make(green::context_t& ctx, zmq::socket_type t)
{
    green::socket_t s(ctx, t);
    s.set(zmq::sockopt::linger, 0);
    return s;
}

std::string local(int port) { return "tcp://127.0.0.1:" + std::to_string(port); }

// A REQ that sends until the (possibly still connecting) device answers.
void expect_echo(green::socket_t& req, const std::string& text)
{
    send_strs(req, {text});
    EXPECT_EQ(recv_strs(req), strings{text});
}

// Receives on s until it gets last: the handshake rounds before it may still
// be on their way when one of them has been heard.
void skip_to(green::socket_t& s, const strings& last)
{
    test::close_guard guard(s); // a round that never comes fails, not hangs
    while (recv_strs(s) != last) {
    }
}

} // namespace

class devices_test : public green_test {};

// Scenarios 29 and 30.
TEST_F(devices_test, attributes)
{
    for (int t : {ZMQ_STREAMER, ZMQ_FORWARDER, ZMQ_QUEUE})
        EXPECT_EQ(devices::thread_device(t, ZMQ_PAIR, ZMQ_PAIR).device_type(), t);
    devices::device d(ZMQ_QUEUE, ZMQ_SUB, ZMQ_PUB);
    EXPECT_EQ(d.in_type(), ZMQ_SUB);
    EXPECT_EQ(d.out_type(), ZMQ_PUB);
    EXPECT_EQ(d.mode(), devices::run_mode::caller);
    EXPECT_THROW(devices::thread_device(7, ZMQ_PAIR, ZMQ_PAIR), std::invalid_argument);
    EXPECT_THROW(devices::thread_device(ZMQ_QUEUE, 99, ZMQ_PAIR), std::invalid_argument);
    EXPECT_THROW(devices::thread_monitored_queue(ZMQ_PAIR, ZMQ_PAIR, ZMQ_PUB, ""),
                 std::invalid_argument);
}

// Scenario 31 for every background mode: a single REP socket that connects.
template<class Device>
void single_socket_connect(green::context_t& ctx)
{
    auto req = make(ctx, zmq::socket_type::req);
    req.bind("tcp://127.0.0.1:*");
    Device dev(ZMQ_QUEUE, ZMQ_REP, -1);
    dev.setsockopt_in(zmq::sockopt::linger, 0);
    dev.connect_in(req.get(zmq::sockopt::last_endpoint));
    dev.start();
    expect_echo(req, "hello");
    EXPECT_FALSE(dev.done());
    dev.stop();
    EXPECT_TRUE(dev.done());
    EXPECT_TRUE(dev.join(0ms));
}

TEST_F(devices_test, single_socket_connect_thread) { single_socket_connect<devices::thread_device>(ctx); }
TEST_F(devices_test, single_socket_connect_fiber) { single_socket_connect<devices::fiber_device>(ctx); }
TEST_F(devices_test, single_socket_connect_process) {
    SKIP_FORK_UNDER_ASAN();
    single_socket_connect<devices::process_device>(ctx);
}

// Scenario 31's second round: with out_type -1 the out calls configure the
// one socket too.
TEST_F(devices_test, single_socket_out_calls_reach_the_in_socket)
{
    auto req = make(ctx, zmq::socket_type::req);
    req.bind("tcp://127.0.0.1:*");
    devices::thread_device dev(ZMQ_QUEUE, ZMQ_REP, -1);
    dev.setsockopt_out(zmq::sockopt::linger, 0);
    dev.connect_out(req.get(zmq::sockopt::last_endpoint));
    const int port = dev.bind_out_to_random_port("tcp://127.0.0.1");
    dev.start();
    expect_echo(req, "hello again");
    auto req2 = make(ctx, zmq::socket_type::req);
    req2.connect(local(port));
    expect_echo(req2, "bound too");
    dev.stop();
}

// Scenario 32, twice, with connect_out hitting the same socket.
TEST_F(devices_test, single_socket_bind_to_random_port)
{
    for (int round = 0; round < 2; ++round) {
        devices::thread_device dev(ZMQ_QUEUE, ZMQ_REP, -1);
        dev.setsockopt_in(ZMQ_LINGER, 0);
        const int port = dev.bind_in_to_random_port("tcp://127.0.0.1");
        dev.start();
        ASSERT_EQ(dev.endpoints().size(), 1u);
        EXPECT_EQ(dev.endpoints()[0].socket, "in");
        EXPECT_EQ(dev.endpoints()[0].endpoint, local(port));
        auto req = make(ctx, zmq::socket_type::req);
        req.connect(local(port));
        expect_echo(req, round == 0 ? "hello" : "hello again");
        dev.stop();
    }
}

// Scenarios 33, 36, 46.
TEST_F(devices_test, bind_to_random_port_with_args)
{
    devices::thread_proxy_steerable dev(ZMQ_PULL, ZMQ_PUSH, ZMQ_PUSH, ZMQ_PAIR);
    for (int port : {dev.bind_in_to_random_port("tcp://127.0.0.1", 5000, 5050),
                     dev.bind_out_to_random_port("tcp://127.0.0.1", 5000, 5050),
                     dev.bind_mon_to_random_port("tcp://127.0.0.1", 5000, 5050),
                     dev.bind_ctrl_to_random_port("tcp://127.0.0.1", 5000, 5050)}) {
        EXPECT_GE(port, 5000);
        EXPECT_LT(port, 5050);
    }
}

// Scenario 34.
TEST_F(devices_test, bind_to_random_port_runs_out)
{
    devices::thread_device dev(ZMQ_QUEUE, ZMQ_PAIR, ZMQ_PAIR);
    EXPECT_THROW(
        {
            for (int i = 0; i < 11; ++i)
                dev.bind_in_to_random_port("tcp://127.0.0.1", 10000, 10010);
        },
        devices::bind_error);
    EXPECT_THROW(dev.bind_in_to_random_port("tcp://127.0.0.1", 10, 5), std::invalid_argument);
}

// Scenario 35 for every background mode.
template<class Proxy>
void proxy_with_capture(green::context_t& ctx)
{
    Proxy dev(ZMQ_PULL, ZMQ_PUSH, ZMQ_PUSH);
    dev.setsockopt_in(zmq::sockopt::linger, 0);
    dev.setsockopt_out(zmq::sockopt::linger, 0);
    dev.setsockopt_mon(zmq::sockopt::linger, 0);
    const int in = dev.bind_in_to_random_port("tcp://127.0.0.1");
    const int out = dev.bind_out_to_random_port("tcp://127.0.0.1");
    const int mon = dev.bind_mon_to_random_port("tcp://127.0.0.1");
    dev.start();
    auto push = make(ctx, zmq::socket_type::push);
    auto pull = make(ctx, zmq::socket_type::pull);
    auto cap = make(ctx, zmq::socket_type::pull);
    push.connect(local(in));
    pull.connect(local(out));
    cap.connect(local(mon));
    send_strs(push, {"hello"});
    EXPECT_EQ(recv_strs(pull), strings{"hello"});
    EXPECT_EQ(recv_strs(cap), strings{"hello"});
    const auto stats = dev.statistics();
    EXPECT_EQ(stats.frontend_msgs_in, 1u);
    EXPECT_EQ(stats.backend_bytes_out, 5u);
    dev.stop();
    EXPECT_TRUE(dev.done());
}

TEST_F(devices_test, proxy_thread) { proxy_with_capture<devices::thread_proxy>(ctx); }
TEST_F(devices_test, proxy_fiber) { proxy_with_capture<devices::fiber_proxy>(ctx); }
TEST_F(devices_test, proxy_process) {
    SKIP_FORK_UNDER_ASAN();
    proxy_with_capture<devices::process_proxy>(ctx);
}

TEST_F(devices_test, proxy_in_the_calling_fiber_stopped_from_another)
{
    devices::proxy dev(ZMQ_PULL, ZMQ_PUSH, ZMQ_PUB);
    const int in = dev.bind_in_to_random_port("tcp://127.0.0.1");
    const int out = dev.bind_out_to_random_port("tcp://127.0.0.1");
    auto push = make(ctx, zmq::socket_type::push);
    auto pull = make(ctx, zmq::socket_type::pull);
    test::run_fibers({[&] { dev.start(); },
                      [&] {
                          push.connect(local(in));
                          pull.connect(local(out));
                          send_strs(push, {"x"});
                          EXPECT_EQ(recv_strs(pull), strings{"x"});
                          dev.stop();
                      }});
    EXPECT_TRUE(dev.done());
}

// Scenarios 37-41 with a process (the rest of the modes share the code).
template<class Queue>
void monitored_queue_pairs(green::context_t& ctx)
{
    auto alice = make(ctx, zmq::socket_type::pair);
    auto bob = make(ctx, zmq::socket_type::pair);
    auto sub = make(ctx, zmq::socket_type::sub);
    alice.bind("tcp://127.0.0.1:*");
    bob.bind("tcp://127.0.0.1:*");
    sub.bind("tcp://127.0.0.1:*");
    sub.set(zmq::sockopt::subscribe, "");
    Queue dev(ZMQ_PAIR, ZMQ_PAIR, ZMQ_PUB, "foo", "bar");
    dev.setsockopt_in(zmq::sockopt::linger, 0);
    dev.setsockopt_out(zmq::sockopt::linger, 0);
    dev.setsockopt_mon(zmq::sockopt::linger, 0);
    dev.connect_in(alice.get(zmq::sockopt::last_endpoint));
    dev.connect_out(bob.get(zmq::sockopt::last_endpoint));
    dev.connect_mon(sub.get(zmq::sockopt::last_endpoint));
    dev.start();
    // PUB drops until the subscription arrives: handshake until the monitor
    // hears a round. From then on it hears every round, the last one too.
    for (int round = 0;; ++round) {
        const strings sync{"sync", std::to_string(round)};
        send_strs(alice, sync);
        EXPECT_EQ(recv_strs(bob), sync);
        if (sub.poll(ZMQ_POLLIN, 50ms)) {
            skip_to(sub, {"foo", "sync", sync[1]});
            break;
        }
    }
    const strings m1{"hello", "bob"}, m2{"two"}, m3{"three", "", "x"}, reply{"hello", "alice"};
    for (const auto& m : {m1, m2, m3})
        send_strs(alice, m);
    for (const auto& m : {m1, m2, m3})
        EXPECT_EQ(recv_strs(bob), m);
    send_strs(bob, reply);
    EXPECT_EQ(recv_strs(alice), reply);
    for (const auto& m : {m1, m2, m3}) {
        strings expected{"foo"};
        expected.insert(expected.end(), m.begin(), m.end());
        EXPECT_EQ(recv_strs(sub), expected);
    }
    EXPECT_EQ(recv_strs(sub), (strings{"bar", "hello", "alice"}));
    dev.stop();
}

TEST_F(devices_test, monitored_queue_thread) { monitored_queue_pairs<devices::thread_monitored_queue>(ctx); }
TEST_F(devices_test, monitored_queue_fiber) { monitored_queue_pairs<devices::fiber_monitored_queue>(ctx); }
TEST_F(devices_test, monitored_queue_process) {
    SKIP_FORK_UNDER_ASAN();
    monitored_queue_pairs<devices::process_monitored_queue>(ctx);
}

// Scenario 42.
TEST_F(devices_test, monitored_queue_router_router)
{
    devices::thread_monitored_queue dev(ZMQ_ROUTER, ZMQ_ROUTER, ZMQ_PUB);
    dev.setsockopt_in(zmq::sockopt::linger, 0);
    dev.setsockopt_out(zmq::sockopt::linger, 0);
    dev.setsockopt_mon(zmq::sockopt::linger, 0);
    const int in = dev.bind_in_to_random_port("tcp://127.0.0.1");
    const int out = dev.bind_out_to_random_port("tcp://127.0.0.1");
    const int mon = dev.bind_mon_to_random_port("tcp://127.0.0.1");
    dev.start();
    auto a = make(ctx, zmq::socket_type::dealer);
    auto b = make(ctx, zmq::socket_type::dealer);
    auto sub = make(ctx, zmq::socket_type::sub);
    a.set(zmq::sockopt::routing_id, "a");
    b.set(zmq::sockopt::routing_id, "b");
    sub.set(zmq::sockopt::subscribe, "in");
    a.connect(local(in));
    b.connect(local(out));
    sub.connect(local(mon));
    // Ping-pong until both routers know their peer (LIBZMQ-280) and the
    // monitor subscribed. Once b or the monitor has heard a round, it hears
    // every later one: it reads up to this round's, which nothing follows.
    for (int round = 0;; ++round) {
        const std::string n = std::to_string(round);
        send_strs(a, {"b", "ping", n});
        if (b.poll(ZMQ_POLLIN, 50ms)) {
            skip_to(b, {"a", "ping", n});
            send_strs(b, {"a", "pong", n});
            EXPECT_EQ(recv_strs(a), (strings{"b", "pong", n}));
            if (sub.poll(ZMQ_POLLIN, 50ms)) {
                skip_to(sub, {"in", "b", "a", "ping", n});
                break;
            }
        }
    }
    send_strs(a, {"b", "hello", "there"});
    EXPECT_EQ(recv_strs(b), (strings{"a", "hello", "there"}));
    EXPECT_EQ(recv_strs(sub), (strings{"in", "b", "a", "hello", "there"}));
    send_strs(b, {"a", "hello", "there"});
    EXPECT_EQ(recv_strs(a), (strings{"b", "hello", "there"}));
    dev.stop();
}

// Scenario 43.
TEST_F(devices_test, monitored_queue_default_args)
{
    devices::thread_monitored_queue dev(ZMQ_ROUTER, ZMQ_DEALER, ZMQ_PUB);
    EXPECT_EQ(dev.in_prefix(), "in");
    EXPECT_EQ(dev.out_prefix(), "out");
    dev.start();
    EXPECT_FALSE(dev.done());
    dev.stop();
    EXPECT_TRUE(dev.done());
}

// Scenarios 45 and 47.
template<class Steerable>
void steerable_statistics_terminate(green::context_t& ctx)
{
    Steerable dev(ZMQ_PULL, ZMQ_PUSH, ZMQ_PUSH, ZMQ_PAIR);
    dev.setsockopt_in(zmq::sockopt::linger, 0);
    dev.setsockopt_out(zmq::sockopt::linger, 0);
    dev.setsockopt_mon(zmq::sockopt::linger, 0);
    dev.setsockopt_ctrl(zmq::sockopt::linger, 0);
    const int in = dev.bind_in_to_random_port("tcp://127.0.0.1");
    const int out = dev.bind_out_to_random_port("tcp://127.0.0.1");
    const int mon = dev.bind_mon_to_random_port("tcp://127.0.0.1");
    const int ctl = dev.bind_ctrl_to_random_port("tcp://127.0.0.1");
    dev.start();
    auto push = make(ctx, zmq::socket_type::push);
    auto pull = make(ctx, zmq::socket_type::pull);
    auto cap = make(ctx, zmq::socket_type::pull);
    auto ctrl = make(ctx, zmq::socket_type::pair);
    push.connect(local(in));
    pull.connect(local(out));
    cap.connect(local(mon));
    ctrl.connect(local(ctl));
    send_strs(push, {"hello"});
    EXPECT_EQ(recv_strs(pull), strings{"hello"});
    EXPECT_EQ(recv_strs(cap), strings{"hello"});
    send_strs(ctrl, {"STATISTICS"});
    const auto frames = recv_strs(ctrl);
    ASSERT_EQ(frames.size(), 8u);
    std::uint64_t v[8];
    for (size_t i = 0; i < 8; ++i) {
        ASSERT_EQ(frames[i].size(), 8u);
        std::memcpy(&v[i], frames[i].data(), 8);
    }
    EXPECT_EQ(v[0], 1u);
    EXPECT_EQ(v[1], 5u);
    EXPECT_EQ(v[6], 1u);
    EXPECT_EQ(v[7], 5u);
    send_strs(ctrl, {"TERMINATE"});
    EXPECT_TRUE(dev.join());
    EXPECT_TRUE(dev.done());
}

TEST_F(devices_test, steerable_thread) { steerable_statistics_terminate<devices::thread_proxy_steerable>(ctx); }
TEST_F(devices_test, steerable_fiber) { steerable_statistics_terminate<devices::fiber_proxy_steerable>(ctx); }
TEST_F(devices_test, steerable_process) {
    SKIP_FORK_UNDER_ASAN();
    steerable_statistics_terminate<devices::process_proxy_steerable>(ctx);
}

// A REP control socket (its peer a REQ) gets an answer to every command, as
// libzmq 4.3.5 gives it: the REQ can always send the next one, and TERMINATE
// ends the device normally, not with EFSM.
template<class Steerable>
void steerable_rep_control(green::context_t& ctx)
{
    Steerable dev(ZMQ_PULL, ZMQ_PUSH, ZMQ_PUB, ZMQ_REP);
    dev.setsockopt_in(zmq::sockopt::linger, 0);
    dev.setsockopt_out(zmq::sockopt::linger, 0);
    dev.setsockopt_ctrl(zmq::sockopt::linger, 0);
    const int in = dev.bind_in_to_random_port("tcp://127.0.0.1");
    const int out = dev.bind_out_to_random_port("tcp://127.0.0.1");
    const int ctl = dev.bind_ctrl_to_random_port("tcp://127.0.0.1");
    dev.start();
    auto push = make(ctx, zmq::socket_type::push);
    auto pull = make(ctx, zmq::socket_type::pull);
    auto req = make(ctx, zmq::socket_type::req);
    push.connect(local(in));
    pull.connect(local(out));
    req.connect(local(ctl));
    for (const char* cmd : {"PAUSE", "STATISTICS", "RESUME", "what?"}) {
        SCOPED_TRACE(cmd);
        send_strs(req, {cmd});
        EXPECT_EQ(recv_strs(req).size(), std::string(cmd) == "STATISTICS" ? 8u : 1u);
    }
    send_strs(push, {"hello"});
    EXPECT_EQ(recv_strs(pull), strings{"hello"});
    send_strs(req, {"TERMINATE"});
    EXPECT_EQ(recv_strs(req), strings{""});
    EXPECT_NO_THROW(EXPECT_TRUE(dev.join()));
}

TEST_F(devices_test, steerable_rep_control_thread) { steerable_rep_control<devices::thread_proxy_steerable>(ctx); }
TEST_F(devices_test, steerable_rep_control_fiber) { steerable_rep_control<devices::fiber_proxy_steerable>(ctx); }
TEST_F(devices_test, steerable_rep_control_process) {
    SKIP_FORK_UNDER_ASAN();
    steerable_rep_control<devices::process_proxy_steerable>(ctx);
}

// The set-up report names every bound endpoint exactly, whatever bytes its
// ipc path holds: a newline in it must not end the endpoint, nor pass for the
// end of the report.
template<class Device>
void endpoint_with_a_newline(green::context_t& ctx)
{
    char dir[] = "/tmp/zg-devices-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    const std::string path = std::string(dir) + "/a\\\nok\nep out b";
    const std::string endpoint = "ipc://" + path;
    {
        Device dev(ZMQ_QUEUE, ZMQ_REP, -1);
        dev.setsockopt_in(zmq::sockopt::linger, 0);
        dev.bind_in(endpoint);
        dev.start();
        EXPECT_FALSE(dev.done());
        const bool exact = dev.endpoints().size() == 1u && dev.endpoints()[0].socket == "in"
                           && dev.endpoints()[0].endpoint == endpoint;
        EXPECT_TRUE(exact) << dev.endpoints().size() << " endpoints, the first '"
                           << (dev.endpoints().empty() ? "" : dev.endpoints()[0].endpoint)
                           << "'";
        if (exact) { // a REQ of another endpoint would wait for ever
            auto req = make(ctx, zmq::socket_type::req);
            req.connect(dev.endpoints()[0].endpoint);
            expect_echo(req, "hello");
        }
        dev.stop();
    }
    ::unlink(path.c_str());
    ::rmdir(dir);
}

TEST_F(devices_test, endpoint_with_a_newline_thread) { endpoint_with_a_newline<devices::thread_device>(ctx); }
TEST_F(devices_test, endpoint_with_a_newline_process) {
    SKIP_FORK_UNDER_ASAN();
    endpoint_with_a_newline<devices::process_device>(ctx);
}

// A child of the owner that is no device's. A device reaps its own process
// by pid: a waitpid(-1) would take this one, or block until it ends.
class bystander_child {
public:
    bystander_child()
    {
        int gate[2];
        if (::pipe(gate) != 0)
            throw std::system_error(errno, std::generic_category(), "pipe");
        pid_ = ::fork();
        if (pid_ == 0) {
            ::close(gate[1]);
            ::alarm(10); // a watchdog for an owner blocked in waitpid(-1)
            char byte;
            [[maybe_unused]] const auto n = ::read(gate[0], &byte, 1);
            ::_exit(7);
        }
        ::close(gate[0]);
        gate_ = gate[1];
    }

    // Nobody reaped it; it then ends, reaped here, and no other child is left.
    void expect_untouched_then_end()
    {
        int status = 0;
        EXPECT_EQ(::waitpid(pid_, &status, WNOHANG), 0) << "the owner's other child was reaped";
        ::close(gate_);
        EXPECT_EQ(::waitpid(pid_, &status, 0), pid_);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 7) << status;
        EXPECT_EQ(::waitpid(-1, &status, WNOHANG), -1) << "a device process was left unreaped";
    }

private:
    pid_t pid_ = -1;
    int gate_ = -1;
};

// A stop() from another fiber while start() reads a device process's set-up:
// the child is reaped once, and start() does not return a device that runs on.
TEST_F(devices_test, a_stop_during_a_process_start_reaps_the_child_once)
{
    SKIP_FORK_UNDER_ASAN();
    bystander_child other;
    {
        devices::process_proxy p(ZMQ_PULL, ZMQ_PUSH);
        p.bind_in_to_random_port("tcp://127.0.0.1");
        bool started = false;
        std::string error;
        test::run_fibers({[&] {
                              try {
                                  p.start(); // parks reading the set-up
                                  started = true;
                              } catch (const devices::device_error& e) {
                                  error = e.what();
                              }
                          },
                          [&] { p.stop(); }});
        EXPECT_TRUE(p.done());
        if (!started) {
            EXPECT_NE(error.find("stop"), std::string::npos) << error;
        }
    }
    other.expect_untouched_then_end();
}

// Two fibers joining a device process that reported its end and lingers
// (a message held for an unreachable peer) both see it exit: one reaps it.
TEST_F(devices_test, two_joins_of_a_process_device_reap_it_once)
{
    SKIP_FORK_UNDER_ASAN();
    bystander_child other;
    {
        devices::process_proxy_steerable p(ZMQ_PULL, ZMQ_PUSH, ZMQ_PUB, ZMQ_REP);
        p.setsockopt_out(zmq::sockopt::linger, 500);
        p.connect_out("tcp://127.0.0.1:1");
        const int in = p.bind_in_to_random_port("tcp://127.0.0.1");
        const int ctl = p.bind_ctrl_to_random_port("tcp://127.0.0.1");
        p.start();
        auto push = make(ctx, zmq::socket_type::push);
        auto req = make(ctx, zmq::socket_type::req);
        push.connect(local(in));
        req.connect(local(ctl));
        send_strs(push, {"held"});
        for (std::uint64_t sent = 0; sent == 0;) { // until "held" waits in the device's out
            send_strs(req, {"STATISTICS"});
            const auto frames = recv_strs(req);
            std::memcpy(&sent, frames.at(6).data(), sizeof sent); // backend messages out
        }
        send_strs(req, {"TERMINATE"});
        recv_strs(req);
        while (!p.done()) // its end reported: the joins wait for its exit
            EXPECT_FALSE(p.join(20ms));
        int joined = 0;
        test::run_fibers({[&] { joined += p.join(10s); }, [&] { joined += p.join(10s); }});
        EXPECT_EQ(joined, 2);
    }
    other.expect_untouched_then_end();
}

// A device's setup error reaches the owner from start().
template<class Device>
void setup_errors(green::context_t& ctx)
{
    auto taken = make(ctx, zmq::socket_type::pull);
    taken.bind("tcp://127.0.0.1:*");
    {
        Device dev(ZMQ_QUEUE, ZMQ_PULL, ZMQ_PUSH);
        dev.bind_in(taken.get(zmq::sockopt::last_endpoint));
        try {
            dev.start();
            FAIL() << "address in use not reported";
        } catch (const devices::device_error& e) {
            EXPECT_EQ(e.num(), EADDRINUSE);
            EXPECT_NE(std::string(e.what()).find("bind in"), std::string::npos) << e.what();
        }
        EXPECT_TRUE(dev.done());
    }
    {
        Device dev(ZMQ_QUEUE, ZMQ_PULL, ZMQ_PUSH);
        dev.connect_out("bogus://nowhere");
        EXPECT_THROW(dev.start(), devices::device_error);
    }
    {
        Device dev(ZMQ_QUEUE, ZMQ_PULL, ZMQ_PUSH);
        dev.start();
        EXPECT_THROW(dev.start(), std::logic_error);
        EXPECT_THROW(dev.bind_in("tcp://127.0.0.1:*"), std::logic_error);
        dev.stop();
    }
}

TEST_F(devices_test, setup_errors_thread) { setup_errors<devices::thread_device>(ctx); }
TEST_F(devices_test, setup_errors_fiber) { setup_errors<devices::fiber_device>(ctx); }
TEST_F(devices_test, setup_errors_process) {
    SKIP_FORK_UNDER_ASAN();
    setup_errors<devices::process_device>(ctx);
}

// The destructor stops the device.
TEST_F(devices_test, join_times_out_while_running_and_destructor_stops_thread)
{
    devices::thread_device dev(ZMQ_STREAMER, ZMQ_PULL, ZMQ_PUSH);
    // Below -1 is no timeout, as for every other wait: not "for ever".
    EXPECT_THROW(dev.join(-2ms), std::invalid_argument);
    dev.start();
    EXPECT_FALSE(dev.join(10ms));
    for (auto timeout : {-2ms, std::chrono::milliseconds::min()})
        EXPECT_THROW(dev.join(timeout), std::invalid_argument);
    EXPECT_FALSE(dev.done());
}

TEST_F(devices_test, join_times_out_while_running_and_destructor_stops_process)
{
    SKIP_FORK_UNDER_ASAN();
    devices::process_device dev(ZMQ_FORWARDER, ZMQ_SUB, ZMQ_PUB);
    dev.start();
    EXPECT_FALSE(dev.join(10ms));
    EXPECT_FALSE(dev.done());
}

// The destructor stops the worker only after the derived parts (the type,
// the prefixes) are gone: the worker must not need them. A worker that had
// not yet started forwarding called into the destroyed object.
TEST_F(devices_test, destroying_a_started_device_is_safe)
{
    for (int i = 0; i < 200; ++i) {
        devices::thread_device dev(ZMQ_QUEUE, ZMQ_PAIR, ZMQ_PAIR);
        dev.start();
        devices::thread_monitored_queue mq(ZMQ_PAIR, ZMQ_PAIR, ZMQ_PUB,
                                           "a prefix longer than a short string's buffer");
        mq.start();
    }
}

// A device process keeps no fd of its owner but its own pipe ends: not the
// owner's sockets, and not another device's stop pipe, which would then
// never close.
TEST_F(devices_test, a_device_process_keeps_no_fd_of_its_owner)
{
    SKIP_FORK_UNDER_ASAN();
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    devices::process_device dev(ZMQ_QUEUE, ZMQ_PAIR, ZMQ_PAIR);
    dev.start();
    ::close(fds[1]);
    // At its end only if no process holds the write end any more.
    pollfd p{fds[0], POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 1);
    ::close(fds[0]);
    dev.stop();
}

// Nor does it run its owner's signal handlers: as across an exec, a caught
// signal is back to its default there, so SIGTERM ends the device.
TEST_F(devices_test, a_device_process_catches_no_signal_of_its_owner)
{
    SKIP_FORK_UNDER_ASAN();
    struct sigaction caught {}, old{};
    caught.sa_handler = [](int) {};
    sigemptyset(&caught.sa_mask);
    ASSERT_EQ(::sigaction(SIGTERM, &caught, &old), 0);
    devices::process_device dev(ZMQ_QUEUE, ZMQ_PAIR, ZMQ_PAIR);
    dev.start();
    ::sigaction(SIGTERM, &old, nullptr);
    const std::vector<pid_t> children = test::child_pids();
    ASSERT_EQ(children.size(), 1u);
    const auto caught_mask = std::stoull(test::status_field(children[0], "SigCgt"), nullptr, 16);
    EXPECT_EQ(caught_mask & (1ull << (SIGTERM - 1)), 0u) << "SigCgt " << std::hex << caught_mask;
    dev.stop();
}

TEST_F(devices_test, a_device_process_stops_while_a_later_one_runs)
{
    SKIP_FORK_UNDER_ASAN();
    devices::process_device a(ZMQ_QUEUE, ZMQ_PULL, ZMQ_PUSH);
    a.start();
    devices::process_device b(ZMQ_QUEUE, ZMQ_PULL, ZMQ_PUSH);
    b.start();
    a.stop();
    EXPECT_TRUE(a.done());
    EXPECT_FALSE(b.done());
}

namespace {

// Another thread that looks green sockets up, as fast as it can, until
// destroyed: green::poll looks up each item not of its own thread, here
// many copies of a plain socket, then refuses the green socket of another
// thread that ends the list. Past its limit the thread kills this process's
// children instead: a device process stuck in its setup then fails start()
// rather than hang the test.
class green_lookups {
public:
    green_lookups(void* foreign_green_socket, std::chrono::seconds limit)
        : thread_([this, foreign_green_socket, limit] { run(foreign_green_socket, limit); })
    {
    }
    ~green_lookups()
    {
        done_ = true;
        thread_.join();
    }
    green_lookups(const green_lookups&) = delete;
    green_lookups& operator=(const green_lookups&) = delete;

private:
    void run(void* foreign_green_socket, std::chrono::seconds limit)
    {
        zmq::context_t ctx;
        zmq::socket_t plain(ctx, zmq::socket_type::pair);
        std::vector<zmq_pollitem_t> items(256, {plain.handle(), 0, ZMQ_POLLIN, 0});
        items.push_back({foreign_green_socket, 0, ZMQ_POLLIN, 0});
        const auto give_up = std::chrono::steady_clock::now() + limit;
        while (!done_) {
            if (std::chrono::steady_clock::now() > give_up) {
                for (pid_t pid : test::child_pids())
                    ::kill(pid, SIGKILL);
                return;
            }
            try {
                green::poll(items, 0ms);
                ADD_FAILURE() << "poll took a green socket of another thread";
                return;
            } catch (const green::thread_error&) {
            }
        }
    }

    std::atomic<bool> done_{false};
    std::thread thread_;
};

} // namespace

// The registry of green sockets has a lock, which another thread may hold
// at the moment a device process forks; that thread does not follow into
// the child, whose first green socket would wait for the lock for ever.
TEST_F(devices_test, a_device_process_starts_while_another_thread_looks_up_green_sockets)
{
    SKIP_FORK_UNDER_ASAN();
    auto mine = make(ctx, zmq::socket_type::pair);
    green_lookups other(mine.handle(), 20s);
    for (int i = 0; i < 100; ++i) {
        devices::process_device dev(ZMQ_QUEUE, ZMQ_PAIR, ZMQ_PAIR);
        dev.start();
        dev.stop();
    }
}

namespace {

// A port of 127.0.0.1 that nothing listens on.
int unused_port()
{
    sockaddr_in addr{};
    ::close(test::bound_loopback_socket(addr));
    return ntohs(addr.sin_port);
}

// A steerable PULL -> PUSH device whose PUSH has forwarded one message to
// out_port, where nothing listens: with libzmq's default linger it holds
// the message for ever.
template<class Steerable>
struct holding_device {
    Steerable dev{ZMQ_PULL, ZMQ_PUSH, ZMQ_PUB, ZMQ_PAIR};
    green::socket_t push;
    green::socket_t ctrl;

    holding_device(green::context_t& ctx, int out_port)
        : push(make(ctx, zmq::socket_type::push)), ctrl(make(ctx, zmq::socket_type::pair))
    {
        const int in = dev.bind_in_to_random_port("tcp://127.0.0.1");
        const int ctl = dev.bind_ctrl_to_random_port("tcp://127.0.0.1");
        dev.connect_out(local(out_port));
        dev.start();
        push.connect(local(in));
        ctrl.connect(local(ctl));
        send_strs(push, {"hello"});
        for (std::uint64_t sent = 0; sent == 0;) {
            send_strs(ctrl, {"STATISTICS"});
            const auto frames = recv_strs(ctrl);
            std::memcpy(&sent, frames.at(6).data(), sizeof sent); // backend messages out
        }
    }

    void terminate()
    {
        send_strs(ctrl, {"TERMINATE"});
        while (!dev.done())
            EXPECT_FALSE(dev.join(20ms));
    }
};

} // namespace

// The device has stopped forwarding, and its socket still holds a message:
// join(timeout) says so in time, and join() waits until the peer takes it.
template<class Steerable>
void join_times_out_while_a_forwarded_message_waits(green::context_t& ctx)
{
    const int port = unused_port();
    holding_device<Steerable> h(ctx, port);
    h.terminate();
    EXPECT_FALSE(h.dev.join(50ms));
    auto pull = make(ctx, zmq::socket_type::pull);
    pull.bind(local(port));
    EXPECT_TRUE(h.dev.join());
    EXPECT_EQ(recv_strs(pull), strings{"hello"});
}

TEST_F(devices_test, join_times_out_while_a_forwarded_message_waits_thread)
{
    join_times_out_while_a_forwarded_message_waits<devices::thread_proxy_steerable>(ctx);
}
TEST_F(devices_test, join_times_out_while_a_forwarded_message_waits_fiber)
{
    join_times_out_while_a_forwarded_message_waits<devices::fiber_proxy_steerable>(ctx);
}
TEST_F(devices_test, join_times_out_while_a_forwarded_message_waits_process)
{
    SKIP_FORK_UNDER_ASAN();
    join_times_out_while_a_forwarded_message_waits<devices::process_proxy_steerable>(ctx);
}

// stop() ends the device even when a socket holds a message its peer never
// takes, while forwarding or after TERMINATE: the message is dropped.
template<class Steerable>
void stop_drops_what_the_sockets_hold(green::context_t& ctx)
{
    const int port = unused_port();
    holding_device<Steerable> running(ctx, port);
    running.dev.stop();
    EXPECT_TRUE(running.dev.join(0ms));
    holding_device<Steerable> ended(ctx, port);
    ended.terminate();
    ended.dev.stop();
    EXPECT_TRUE(ended.dev.join(0ms));
}

TEST_F(devices_test, stop_drops_what_the_sockets_hold_thread)
{
    stop_drops_what_the_sockets_hold<devices::thread_proxy_steerable>(ctx);
}
TEST_F(devices_test, stop_drops_what_the_sockets_hold_fiber)
{
    stop_drops_what_the_sockets_hold<devices::fiber_proxy_steerable>(ctx);
}
TEST_F(devices_test, stop_drops_what_the_sockets_hold_process)
{
    SKIP_FORK_UNDER_ASAN();
    stop_drops_what_the_sockets_hold<devices::process_proxy_steerable>(ctx);
}

// --- bad input -----------------------------------------------------------------

using test::expect_error;

namespace {

// A PULL -> PUSH streamer on random ports relays one message.
void expect_streamer_works(green::context_t& ctx)
{
    devices::thread_device dev(ZMQ_STREAMER, ZMQ_PULL, ZMQ_PUSH);
    dev.setsockopt_in(ZMQ_LINGER, 0);
    dev.setsockopt_out(ZMQ_LINGER, 0);
    const int in = dev.bind_in_to_random_port("tcp://127.0.0.1");
    const int out = dev.bind_out_to_random_port("tcp://127.0.0.1");
    dev.start();
    auto push = make(ctx, zmq::socket_type::push), pull = make(ctx, zmq::socket_type::pull);
    push.connect(local(in));
    pull.connect(local(out));
    send_strs(push, {"still works"});
    EXPECT_EQ(recv_strs(pull), strings{"still works"});
    dev.stop();
}

} // namespace

TEST_F(devices_test, BadInput_socket_types_a_background_device_cannot_serve)
{
    using E = std::invalid_argument;
    expect_error<E>([] { devices::thread_device(ZMQ_STREAMER, ZMQ_PUSH, ZMQ_PULL); },
                    {"device(streamer)", "in socket (PUSH) cannot receive"});
    expect_error<E>([] { devices::process_device(ZMQ_QUEUE, ZMQ_PUB, ZMQ_PUB); },
                    {"nothing can be forwarded"});
    expect_error<E>([] { devices::fiber_device(ZMQ_QUEUE, ZMQ_PUSH, -1); },
                    {"PUSH", "both sides"});
    expect_error<E>([] { devices::thread_proxy(ZMQ_PULL, ZMQ_PUSH, ZMQ_SUB); },
                    {"mon socket (SUB) cannot send"});
    expect_error<E>([] { devices::thread_proxy_steerable(ZMQ_PULL, ZMQ_PUSH, ZMQ_PUB, ZMQ_PUB); },
                    {"ctrl socket (PUB)"});
    expect_error<E>([] { devices::thread_proxy_steerable(ZMQ_PULL, ZMQ_PUSH, ZMQ_PUB, ZMQ_REQ); },
                    {"ctrl socket (REQ)"});
    expect_error<E>([] { devices::thread_monitored_queue(ZMQ_PAIR, ZMQ_PAIR, ZMQ_PULL); },
                    {"mon socket (PULL)"});
    expect_error<E>([] { devices::thread_monitored_queue(ZMQ_PAIR, ZMQ_PAIR, -1); },
                    {"mon socket type is required"});
    // 12 is ZMQ_SERVER, a draft type: no multipart, no ZMQ_FD.
    expect_error<E>([] { devices::thread_device(ZMQ_QUEUE, 12, ZMQ_PAIR); },
                    {"invalid in socket type 12"});
    expect_streamer_works(ctx);
}

TEST_F(devices_test, BadInput_monitored_queue_prefixes)
{
    using E = std::invalid_argument;
    expect_error<E>([] { devices::thread_monitored_queue(ZMQ_PAIR, ZMQ_PAIR, ZMQ_PUB, ""); },
                    {"in_prefix", "empty"});
    expect_error<E>([] { devices::thread_monitored_queue(ZMQ_PAIR, ZMQ_PAIR, ZMQ_PUB, "in", ""); },
                    {"out_prefix", "empty"});
    // A null pointer is no prefix: it does not compile, and at run time
    // std::string refuses it before the device sees it.
    static_assert(!std::is_constructible_v<devices::thread_monitored_queue, int, int, int,
                                           std::nullptr_t>);
    static_assert(!std::is_constructible_v<devices::thread_monitored_queue, int, int, int,
                                           const char*, std::nullptr_t>);
    static_assert(!std::is_constructible_v<devices::thread_monitored_queue, int, int, int, int>);
    static_assert(std::is_constructible_v<devices::thread_monitored_queue, int, int, int,
                                          const char*, std::string>);
    const char* null_prefix = nullptr;
    EXPECT_THROW(devices::thread_monitored_queue(ZMQ_PAIR, ZMQ_PAIR, ZMQ_PUB, null_prefix),
                 std::logic_error);
    devices::thread_monitored_queue ok(ZMQ_PAIR, ZMQ_PAIR, ZMQ_PUB, std::string("\0", 1), "o");
    EXPECT_EQ(ok.in_prefix().size(), 1u);
}

TEST_F(devices_test, BadInput_random_port_arguments)
{
    devices::thread_device dev(ZMQ_STREAMER, ZMQ_PULL, ZMQ_PUSH);
    using E = std::invalid_argument;
    // Only tcp has a port: an ipc path would take ":*" literally.
    expect_error<E>([&] { dev.bind_in_to_random_port("ipc:///tmp/zmq-green-no-port"); },
                    {"tcp://", "ipc:///tmp/zmq-green-no-port"});
    expect_error<E>([&] { dev.bind_in_to_random_port("inproc://x"); }, {"inproc://x"});
    expect_error<E>([&] { dev.bind_in_to_random_port("tcp://127.0.0.1", 0, 100); }, {"[0, 100)"});
    expect_error<E>([&] { dev.bind_in_to_random_port("tcp://127.0.0.1", 100, 100); },
                    {"[100, 100)"});
    expect_error<E>([&] { dev.bind_in_to_random_port("tcp://127.0.0.1", 100, 70000); },
                    {"70000"});
    expect_error<E>([&] { dev.bind_in_to_random_port("tcp://127.0.0.1", 100, 200, 0); },
                    {"max_tries 0"});
    expect_error<E>([&] { dev.bind_in_to_random_port("tcp://127.0.0.1:5555"); },
                    {"without a port", "'tcp://127.0.0.1:5555'"});
    expect_error<E>([&] { dev.bind_in_to_random_port("tcp://[::1]:5555"); },
                    {"without a port", "'tcp://[::1]:5555'"});
    expect_error<devices::bind_error>([&] { dev.bind_in_to_random_port("tcp://", 1000, 2000); },
                                      {"'tcp://'"});
    // Nothing was recorded: the device still configures and runs.
    dev.setsockopt_in(ZMQ_LINGER, 0);
    dev.setsockopt_out(ZMQ_LINGER, 0);
    const int in = dev.bind_in_to_random_port("tcp://127.0.0.1");
    const int out = dev.bind_out_to_random_port("tcp://127.0.0.1");
    dev.start();
    ASSERT_EQ(dev.endpoints().size(), 2u);
    auto push = make(ctx, zmq::socket_type::push), pull = make(ctx, zmq::socket_type::pull);
    push.connect(local(in));
    pull.connect(local(out));
    send_strs(push, {"x"});
    EXPECT_EQ(recv_strs(pull), strings{"x"});
    dev.stop();
}

// As pyzmq's setsockopt(zmq.MAXMSGSIZE, 1000): libzmq's 64-bit options take
// an int too.
TEST_F(devices_test, int_values_for_64_bit_options)
{
    devices::thread_device dev(ZMQ_STREAMER, ZMQ_PULL, ZMQ_PUSH);
    dev.setsockopt_in(ZMQ_MAXMSGSIZE, 1000);
    dev.setsockopt_out(ZMQ_AFFINITY, 1);
    dev.setsockopt_in(ZMQ_LINGER, 0);
    dev.setsockopt_out(ZMQ_LINGER, 0);
    const int in = dev.bind_in_to_random_port("tcp://127.0.0.1");
    const int out = dev.bind_out_to_random_port("tcp://127.0.0.1");
    dev.start();
    auto push = make(ctx, zmq::socket_type::push), pull = make(ctx, zmq::socket_type::pull);
    push.connect(local(in));
    pull.connect(local(out));
    send_strs(push, {"within the limit"});
    EXPECT_EQ(recv_strs(pull), strings{"within the limit"});
    dev.stop();
}

// Bad endpoints and options surface from start() as device_error naming the
// socket and what was done; the next device is unaffected.
template<class Device>
void bad_setup(green::context_t& ctx)
{
    const struct {
        std::function<void(Device&)> configure;
        int errnum;
        const char* names;
    } cases[] = {
        {[](Device& d) { d.bind_in("bogus://x"); }, EPROTONOSUPPORT, "bind in bogus://x"},
        {[](Device& d) { d.bind_out("tcp://127.0.0.1"); }, EINVAL, "bind out tcp://127.0.0.1"},
        {[](Device& d) { d.connect_in(""); }, EINVAL, "connect in"},
        {[](Device& d) { d.setsockopt_out(9999, 1); }, EINVAL, "set option 9999 to 1 on out"},
        {[](Device& d) { d.setsockopt_in(ZMQ_SNDHWM, -5); }, EINVAL,
         "set option ZMQ_SNDHWM (23) to -5 on in"},
        {[](Device& d) { d.setsockopt_in(ZMQ_SNDHWM, std::string("x\n")); }, EINVAL,
         "set option ZMQ_SNDHWM (23) to \"x\\x0a\" on in"},
        {[](Device& d) { d.setsockopt_out(zmq::sockopt::routing_id, std::string(256, 'r')); },
         EINVAL, "set option ZMQ_ROUTING_ID (5) to \"rrr"},
        {[](Device& d) { d.setsockopt_in(ZMQ_CURVE_SECRETKEY, std::string("secret")); }, EINVAL,
         "ZMQ_CURVE_SECRETKEY (49) to 6 bytes, not shown on in"},
    };
    for (const auto& c : cases) {
        Device dev(ZMQ_STREAMER, ZMQ_PULL, ZMQ_PUSH);
        c.configure(dev);
        try {
            dev.start();
            ADD_FAILURE() << c.names << ": no error";
        } catch (const devices::device_error& e) {
            EXPECT_EQ(e.num(), c.errnum) << e.what();
            EXPECT_NE(std::string(e.what()).find(c.names), std::string::npos) << e.what();
        }
        EXPECT_TRUE(dev.done());
        EXPECT_TRUE(dev.join(0ms)); // the error was reported once, by start()
    }
    expect_streamer_works(ctx);
}

TEST_F(devices_test, BadInput_setup_thread) { bad_setup<devices::thread_device>(ctx); }
TEST_F(devices_test, BadInput_setup_fiber) { bad_setup<devices::fiber_device>(ctx); }
TEST_F(devices_test, BadInput_setup_process)
{
    SKIP_FORK_UNDER_ASAN();
    bad_setup<devices::process_device>(ctx);
}

// --- kills, scoped timeouts and failed starts ----------------------------------

// A kill of the task that runs a caller-mode device is how a green device is
// ended (gevent's Greenlet.kill): the task ends, killed, and the device with
// it. Run on a thread of its own: the failure was a task stuck for ever.
TEST_F(devices_test, killing_the_task_that_runs_a_caller_mode_device_ends_both)
{
    auto outcome = std::make_shared<std::promise<std::pair<bool, bool>>>();
    auto result = outcome->get_future();
    std::thread runner([outcome] {
        green::context_t c;
        int in = 0;
        int out = 0;
        const green::task t = green::spawn([&] {
            devices::proxy dev(ZMQ_PULL, ZMQ_PUSH, ZMQ_PUB);
            in = dev.bind_in_to_random_port("tcp://127.0.0.1");
            out = dev.bind_out_to_random_port("tcp://127.0.0.1");
            dev.start(); // forwards in this fiber until it is killed
        });
        while (out == 0)
            boost::this_fiber::yield();
        auto push = make(c, zmq::socket_type::push);
        auto pull = make(c, zmq::socket_type::pull);
        push.connect(local(in));
        pull.connect(local(out));
        send_strs(push, {"through"});
        EXPECT_EQ(recv_strs(pull), strings{"through"}); // the device runs
        t.kill(false);
        const bool joined = t.join(10s);
        outcome->set_value({joined, t.killed()});
        if (!joined) // the stuck fiber's thread and hub must outlive it
            for (;;)
                std::this_thread::sleep_for(1h);
    });
    if (result.wait_for(20s) != std::future_status::ready) {
        runner.detach();
        FAIL() << "the test's thread hangs";
    }
    const auto [joined, killed] = result.get();
    if (joined)
        runner.join(); // what it owns is gone before the process ends
    else
        runner.detach();
    EXPECT_TRUE(joined) << "the killed task is stuck in the device's destructor";
    EXPECT_TRUE(killed);
}

// A kill that meets start() while it waits for the worker's set-up stops the
// worker, instead of joining a device nobody stops.
TEST_F(devices_test, a_kill_during_start_stops_the_device)
{
    const green::task t = green::spawn([] {
        devices::thread_proxy_steerable dev(ZMQ_PULL, ZMQ_PUSH);
        dev.bind_ctrl_to_random_port("tcp://127.0.0.1");
        dev.start(); // its first green wait: the kill is already pending
        dev.join();
    });
    t.kill(false);
    EXPECT_TRUE(t.join(10s)) << "start() joins a device nobody stops";
    EXPECT_TRUE(t.killed());
}

// stop(), and so the destructor, waits for the worker even inside a scoped
// timeout that has expired: it must not leave a thread unjoined (which
// terminates the process) or a child unreaped.
TEST_F(devices_test, destroying_a_thread_device_inside_an_expired_scoped_timeout)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            green::scoped_timeout limit(50ms);
            {
                devices::thread_device dev(ZMQ_QUEUE, ZMQ_PAIR, ZMQ_PAIR);
                dev.start();
                try {
                    dev.join(); // ends by the scoped timeout
                } catch (const green::timeout_error&) {
                }
            }
            std::_Exit(0);
        },
        ::testing::ExitedWithCode(0), "");
}

TEST_F(devices_test, destroying_a_process_device_inside_an_expired_scoped_timeout_reaps_it)
{
    SKIP_FORK_UNDER_ASAN();
    {
        green::scoped_timeout limit(50ms);
        devices::process_device dev(ZMQ_QUEUE, ZMQ_PAIR, ZMQ_PAIR);
        dev.start();
        EXPECT_THROW(dev.join(), green::timeout_error);
    }
    int status = 0;
    EXPECT_EQ(::waitpid(-1, &status, WNOHANG), -1) << "a device process was left unreaped";
    EXPECT_EQ(errno, ECHILD);
}

// A start() that fails (out of fds here) leaves a device that its
// destructor's stop() leaves alone: not a null dereference, not a wait for a
// worker that never started.
TEST_F(devices_test, BadInput_a_start_that_runs_out_of_fds_leaves_a_destructible_device)
{
    SKIP_NO_FDS_UNDER_UBSAN();
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    for (int left : {1, 2}) { // out of fds at the first or at the second eventfd
        SCOPED_TRACE(left);
        EXPECT_EXIT(
            {
                ::alarm(10); // a hang dies of SIGALRM
                green::hub::current();
                bool threw = false;
                {
                    devices::thread_device dev(ZMQ_QUEUE, ZMQ_PAIR, ZMQ_PAIR);
                    // Only `left` more fds can be opened.
                    int free_seen = 0;
                    int limit = 0;
                    for (int fd = 0; free_seen <= left; ++fd)
                        if (::fcntl(fd, F_GETFD) == -1 && ++free_seen == left + 1)
                            limit = fd;
                    rlimit lim{};
                    ::getrlimit(RLIMIT_NOFILE, &lim);
                    lim.rlim_cur = static_cast<rlim_t>(limit);
                    ::setrlimit(RLIMIT_NOFILE, &lim);
                    try {
                        dev.start();
                    } catch (const std::exception&) {
                        threw = true;
                    }
                } // ~thread_device: stop()
                std::_Exit(threw ? 0 : 3);
            },
            ::testing::ExitedWithCode(0), "");
    }
}

// A kill that meets a process device's start() while it reads the child's
// set-up stops the child, as it does a thread's.
TEST_F(devices_test, a_kill_during_a_process_start_stops_the_child)
{
    SKIP_FORK_UNDER_ASAN();
    devices::process_proxy p(ZMQ_PULL, ZMQ_PUSH);
    p.bind_in_to_random_port("tcp://127.0.0.1");
    const green::task t = green::spawn([&] { p.start(); });
    t.kill(false); // pending at start()'s first green wait
    EXPECT_TRUE(t.join(10s));
    EXPECT_TRUE(t.killed());
    EXPECT_TRUE(p.done()) << "the device process runs on";
    int status = 0;
    EXPECT_EQ(::waitpid(-1, &status, WNOHANG), -1) << "a device process was left unreaped";
}
