#include "support.hpp"

#include <zmq/green/device.hpp>

#include <cstring>

using namespace std::chrono_literals;
namespace green = zmq::green;
using test::green_test;

namespace {

using test::recv_strs;
using test::send_strs;
using test::strings;

// A socket with tiny queues, so that a test can fill them.
green::socket_t make(green::context_t& ctx, zmq::socket_type t, int hwm = 1000)
{
    green::socket_t s(ctx, t);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::sndhwm, hwm);
    s.set(zmq::sockopt::rcvhwm, hwm);
    return s;
}

// Two inproc links around a device: client_a <-> front | back <-> client_b.
struct rig {
    rig(green::context_t& ctx, zmq::socket_type ft, zmq::socket_type at, zmq::socket_type bt,
        zmq::socket_type ct, int hwm = 1000)
        : front(make(ctx, ft, hwm)), back(make(ctx, bt, hwm)), a(make(ctx, at, hwm)),
          b(make(ctx, ct, hwm))
    {
        const auto fa = test::unique_inproc(), ba = test::unique_inproc();
        front.bind(fa);
        back.bind(ba);
        a.connect(fa);
        b.connect(ba);
    }
    green::socket_t front, back, a, b;
};

std::array<std::uint64_t, 8> decode_stats(const strings& frames)
{
    std::array<std::uint64_t, 8> v{};
    EXPECT_EQ(frames.size(), 8u);
    for (size_t i = 0; i < 8 && i < frames.size(); ++i) {
        EXPECT_EQ(frames[i].size(), sizeof(std::uint64_t));
        std::memcpy(&v[i], frames[i].data(), sizeof(std::uint64_t));
    }
    return v;
}

} // namespace

class device : public green_test {};

// Scenario 28: one REP socket as both sides echoes; closing it ends the device.
TEST_F(device, green_device_rep_echo)
{
    auto rep = make(ctx, zmq::socket_type::rep);
    rep.bind("tcp://127.0.0.1:*");
    auto req = make(ctx, zmq::socket_type::req);
    req.connect(rep.get(zmq::sockopt::last_endpoint));
    bool returned = false;
    test::run_fibers({[&] {
                          green::device(green::device_type::queue, rep, rep);
                          returned = true;
                      },
                      [&] {
                          for (int i = 0; i < 3; ++i) {
                              send_strs(req, {"hi"});
                              EXPECT_EQ(recv_strs(req), strings{"hi"});
                          }
                          rep.close();
                      }});
    EXPECT_TRUE(returned);
}

TEST_F(device, queue_forwards_both_ways)
{
    rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
          zmq::socket_type::pair);
    test::run_fibers({[&] { green::device(ZMQ_QUEUE, r.front, r.back); },
                      [&] {
                          send_strs(r.a, {"to", "b"});
                          EXPECT_EQ(recv_strs(r.b), (strings{"to", "b"}));
                          send_strs(r.b, {"to a"});
                          EXPECT_EQ(recv_strs(r.a), strings{"to a"});
                          ctx.shutdown();
                      }});
}

TEST_F(device, forwarder_and_streamer_forward_one_way)
{
    for (auto type : {green::device_type::forwarder, green::device_type::streamer}) {
        rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
              zmq::socket_type::pair);
        test::run_fibers({[&] { green::device(type, r.front, r.back); },
                          [&] {
                              send_strs(r.b, {"backwards"});
                              send_strs(r.a, {"forwards"});
                              EXPECT_EQ(recv_strs(r.b), strings{"forwards"});
                              // The device had the backwards message first and left it.
                              EXPECT_EQ(r.a.poll(ZMQ_POLLIN, 100ms), 0);
                              r.front.close();
                          }});
    }
}

TEST_F(device, bad_arguments_are_rejected)
{
    rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
          zmq::socket_type::pair);
    try {
        green::device(42, r.front, r.back);
        FAIL() << "unknown device type accepted";
    } catch (const zmq::error_t& e) {
        EXPECT_EQ(e.num(), EINVAL);
    }
    try {
        green::proxy(green::socket_ref(), r.back);
        FAIL() << "empty socket accepted";
    } catch (const zmq::error_t& e) {
        EXPECT_EQ(e.num(), ENOTSOCK);
    }
    // Scenario 44, made real: missing sockets and empty prefixes.
    auto mon = make(ctx, zmq::socket_type::pub);
    EXPECT_THROW(green::monitored_queue(r.front, r.back, mon, "", "out"), std::invalid_argument);
    EXPECT_THROW(green::monitored_queue(r.front, r.back, mon, "in", ""), std::invalid_argument);
    try {
        green::monitored_queue(r.front, r.back, green::socket_ref());
        FAIL() << "empty monitor socket accepted";
    } catch (const zmq::error_t& e) {
        EXPECT_EQ(e.num(), ENOTSOCK);
    }
}

TEST_F(device, proxy_copies_every_frame_to_capture)
{
    rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
          zmq::socket_type::pair);
    auto cap = make(ctx, zmq::socket_type::pair);
    auto cap_peer = make(ctx, zmq::socket_type::pair);
    const auto addr = test::unique_inproc();
    cap.bind(addr);
    cap_peer.connect(addr);
    test::run_fibers({[&] { green::proxy(r.front, r.back, cap); },
                      [&] {
                          send_strs(r.a, {"x", "y"});
                          EXPECT_EQ(recv_strs(r.b), (strings{"x", "y"}));
                          EXPECT_EQ(recv_strs(cap_peer), (strings{"x", "y"}));
                          send_strs(r.b, {"z"});
                          EXPECT_EQ(recv_strs(r.a), strings{"z"});
                          EXPECT_EQ(recv_strs(cap_peer), strings{"z"});
                          ctx.shutdown();
                      }});
}

TEST_F(device, full_destination_does_not_stall_the_other_direction)
{
    rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
          zmq::socket_type::pair, 1);
    test::run_fibers({[&] { green::device(ZMQ_QUEUE, r.front, r.back); },
                      [&] {
                          // b never reads: a's messages fill every queue on the way.
                          int sent = 0;
                          while (sent < 100000 && r.a.poll(ZMQ_POLLOUT, 200ms) != 0) {
                              ASSERT_TRUE(r.a.send(zmq::str_buffer("fill"), zmq::send_flags::dontwait));
                              ++sent;
                          }
                          EXPECT_GT(sent, 0);
                          send_strs(r.b, {"reply"});
                          EXPECT_EQ(recv_strs(r.a), strings{"reply"});
                          ctx.shutdown();
                      }});
}

TEST_F(device, steerable_proxy_pause_resume_statistics_terminate)
{
    rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
          zmq::socket_type::pair);
    auto ctrl = make(ctx, zmq::socket_type::pair);
    auto ctrl_peer = make(ctx, zmq::socket_type::pair);
    const auto addr = test::unique_inproc();
    ctrl.bind(addr);
    ctrl_peer.connect(addr);
    bool returned = false;
    test::run_fibers(
        {[&] {
             green::proxy_steerable(r.front, r.back, green::socket_ref(), ctrl);
             returned = true;
         },
         [&] {
             send_strs(r.a, {"hello"});
             EXPECT_EQ(recv_strs(r.b), strings{"hello"});
             send_strs(r.b, {"ab", "cde"});
             EXPECT_EQ(recv_strs(r.a), (strings{"ab", "cde"}));

             send_strs(ctrl_peer, {"STATISTICS"});
             const auto v = decode_stats(recv_strs(ctrl_peer));
             EXPECT_EQ(v, (std::array<std::uint64_t, 8>{1, 5, 2, 5, 2, 5, 1, 5}));

             send_strs(ctrl_peer, {"PAUSE"});
             send_strs(ctrl_peer, {"STATISTICS"}); // a handshake: PAUSE was handled
             (void)recv_strs(ctrl_peer);
             send_strs(r.a, {"held"});
             EXPECT_EQ(r.b.poll(ZMQ_POLLIN, 100ms), 0);
             send_strs(ctrl_peer, {"RESUME"});
             EXPECT_EQ(recv_strs(r.b), strings{"held"});

             send_strs(ctrl_peer, {"NONSENSE"}); // ignored, as libzmq does
             send_strs(ctrl_peer, {"TERMINATE"});
         }});
    EXPECT_TRUE(returned);
}

TEST_F(device, steerable_proxy_answers_a_rep_control_socket)
{
    rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
          zmq::socket_type::pair);
    auto ctrl = make(ctx, zmq::socket_type::rep);
    auto req = make(ctx, zmq::socket_type::req);
    const auto addr = test::unique_inproc();
    ctrl.bind(addr);
    req.connect(addr);
    test::run_fibers({[&] { green::proxy_steerable(r.front, r.back, green::socket_ref(), ctrl); },
                      [&] {
                          for (const char* cmd : {"PAUSE", "RESUME", "what?"}) {
                              send_strs(req, {cmd});
                              EXPECT_EQ(recv_strs(req), strings{""});
                          }
                          send_strs(req, {"STATISTICS"});
                          EXPECT_EQ(recv_strs(req).size(), 8u);
                          send_strs(req, {"TERMINATE"});
                          EXPECT_EQ(recv_strs(req), strings{""});
                      }});
}

TEST_F(device, monitored_queue_framing)
{
    rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
          zmq::socket_type::pair);
    auto mon = make(ctx, zmq::socket_type::pair);
    auto mon_peer = make(ctx, zmq::socket_type::pair);
    const auto addr = test::unique_inproc();
    mon.bind(addr);
    mon_peer.connect(addr);
    test::run_fibers({[&] { green::monitored_queue(r.front, r.back, mon, "foo", "bar"); },
                      [&] {
                          send_strs(r.a, {"hello", "bob"});
                          EXPECT_EQ(recv_strs(r.b), (strings{"hello", "bob"}));
                          EXPECT_EQ(recv_strs(mon_peer), (strings{"foo", "hello", "bob"}));
                          send_strs(r.b, {"hi"});
                          EXPECT_EQ(recv_strs(r.a), strings{"hi"});
                          EXPECT_EQ(recv_strs(mon_peer), (strings{"bar", "hi"}));
                          ctx.shutdown();
                      }});
}

TEST_F(device, monitored_queue_router_router_swaps_identities)
{
    rig r(ctx, zmq::socket_type::router, zmq::socket_type::dealer, zmq::socket_type::router,
          zmq::socket_type::dealer);
    auto mon = make(ctx, zmq::socket_type::pair);
    auto mon_peer = make(ctx, zmq::socket_type::pair);
    const auto addr = test::unique_inproc();
    mon.bind(addr);
    mon_peer.connect(addr);
    // Identities must be set before connecting: rebuild the clients.
    r.a.close();
    r.b.close();
    auto a = make(ctx, zmq::socket_type::dealer);
    auto b = make(ctx, zmq::socket_type::dealer);
    a.set(zmq::sockopt::routing_id, "a");
    b.set(zmq::sockopt::routing_id, "b");
    a.connect(r.front.get(zmq::sockopt::last_endpoint));
    b.connect(r.back.get(zmq::sockopt::last_endpoint));
    test::run_fibers({[&] { green::monitored_queue(r.front, r.back, mon); },
                      [&] {
                          // b must be known to the out ROUTER before it can be routed to.
                          send_strs(b, {"a", "ping"});
                          EXPECT_EQ(recv_strs(a), (strings{"b", "ping"}));
                          EXPECT_EQ(recv_strs(mon_peer), (strings{"out", "a", "b", "ping"}));
                          send_strs(a, {"b", "hello", "there"});
                          EXPECT_EQ(recv_strs(b), (strings{"a", "hello", "there"}));
                          EXPECT_EQ(recv_strs(mon_peer),
                                    (strings{"in", "b", "a", "hello", "there"}));
                          ctx.shutdown();
                      }});
}

TEST_F(device, other_fibers_run_while_a_device_forwards)
{
    rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
          zmq::socket_type::pair);
    int ticks = 0;
    test::run_fibers({[&] { green::device(ZMQ_QUEUE, r.front, r.back); },
                      [&] {
                          for (int i = 0; i < 5; ++i) {
                              ++ticks;
                              boost::this_fiber::yield();
                          }
                      },
                      [&] {
                          for (int i = 0; i < 20; ++i) {
                              send_strs(r.a, {std::to_string(i)});
                              EXPECT_EQ(recv_strs(r.b), strings{std::to_string(i)});
                          }
                          ctx.shutdown();
                      }});
    EXPECT_EQ(ticks, 5);
}
