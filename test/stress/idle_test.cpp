// No busy-spin after a peer leaves: pyzmq's green poller once spun at 99 %
// CPU for hours after a ROUTER's peer disconnected (the ZMQ_FD stayed
// readable with no events). Here a DEALER or REQ peer talks to a ROUTER and
// closes; then a fiber waits on the ROUTER for a second, in recv, in poll or
// in an io_loop, and the process must stay idle meanwhile.
#include "stress.hpp"

#include <cstring>
#include <iostream>
#include <string>

using namespace std::chrono_literals;
namespace green = zmq::green;

namespace {

enum class wait_kind { recv, poll, io_loop };

struct idle_case {
    zmq::socket_type peer;
    wait_kind wait;
    const char* name;
};

// Waits about a second on the ROUTER, during which nothing arrives.
void wait_idle(green::socket_t& router, wait_kind how)
{
    switch (how) {
    case wait_kind::recv: {
        router.set(zmq::sockopt::rcvtimeo, 1000);
        zmq::message_t m;
        EXPECT_FALSE(router.recv(m));
        break;
    }
    case wait_kind::poll:
        EXPECT_EQ(router.poll(ZMQ_POLLIN, 1000ms), 0);
        break;
    case wait_kind::io_loop: {
        green::io_loop loop;
        loop.add_handler(router, [](short) { ADD_FAILURE() << "the idle ROUTER was ready"; },
                         ZMQ_POLLIN);
        loop.call_later(1000ms, [&] { loop.stop(); });
        loop.start();
        loop.remove_handler(router);
        break;
    }
    }
}

// Waits for the monitor's ZMQ_EVENT_DISCONNECTED.
void wait_disconnected(green::socket_t& monitor)
{
    for (;;) {
        const auto event = test::recv_strs(monitor); // [id:16 value:32], endpoint
        ASSERT_EQ(event.size(), 2u);
        std::uint16_t id = 0;
        std::memcpy(&id, event[0].data(), sizeof id);
        if (id == ZMQ_EVENT_DISCONNECTED)
            return;
    }
}

} // namespace

class idle : public test::green_test, public ::testing::WithParamInterface<idle_case> {};

TEST_P(idle, a_departed_peer_leaves_the_hub_asleep)
{
    const auto param = GetParam();
    green::socket_t router(ctx, zmq::socket_type::router);
    router.set(zmq::sockopt::linger, 0);
    router.bind("tcp://127.0.0.1:*");
    const std::string monitor_endpoint = test::unique_inproc();
    ASSERT_EQ(zmq_socket_monitor(router.handle(), monitor_endpoint.c_str(), ZMQ_EVENT_DISCONNECTED), 0);
    green::socket_t monitor(ctx, zmq::socket_type::pair);
    monitor.set(zmq::sockopt::linger, 0);
    monitor.connect(monitor_endpoint);

    {
        green::socket_t peer(ctx, param.peer);
        peer.set(zmq::sockopt::linger, 0);
        peer.connect(router.get(zmq::sockopt::last_endpoint));
        // A REQ's request stays unanswered: it leaves mid-conversation.
        test::send_strs(peer, param.peer == zmq::socket_type::req ? test::strings{"request"}
                                                                   : test::strings{"", "hello"});
        const auto got = test::recv_strs(router);
        ASSERT_EQ(got.size(), 3u);
        EXPECT_EQ(got.back(), param.peer == zmq::socket_type::req ? "request" : "hello");
    }
    wait_disconnected(monitor);

    const auto before = green::hub::current().stats();
    const double cpu_before = test::cpu_seconds();
    const auto start = std::chrono::steady_clock::now();
    wait_idle(router, param.wait);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double cpu = test::cpu_seconds() - cpu_before;
    const auto after = green::hub::current().stats();

    EXPECT_GE(waited, 0.99);
    const auto wakeups = after.fd_wakeups - before.fd_wakeups;
    std::cout << "idle for " << waited << " s: " << cpu * 1000 << " ms of CPU, " << wakeups
              << " fd wake-ups" << std::endl;
    EXPECT_LT(cpu, 0.05 * waited) << "the process spins while the ROUTER's peer is gone";
    EXPECT_LT(wakeups, 10u) << "the hub keeps waking for a departed peer";
    ASSERT_EQ(zmq_socket_monitor(router.handle(), nullptr, 0), 0);
}

INSTANTIATE_TEST_SUITE_P(
    , idle,
    ::testing::Values(idle_case{zmq::socket_type::dealer, wait_kind::recv, "dealer_left_recv"},
                      idle_case{zmq::socket_type::dealer, wait_kind::poll, "dealer_left_poll"},
                      idle_case{zmq::socket_type::req, wait_kind::recv, "req_left_recv"},
                      idle_case{zmq::socket_type::req, wait_kind::io_loop, "req_left_io_loop"}),
    [](const auto& param_info) { return std::string(param_info.param.name); });
