#include "support.hpp"

#include <zmq/green/device.hpp>

#include <cstring>
#include <set>
#include <thread>
#include <type_traits>

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

// Scenario 28 as pyzmq ends it: the fiber running the device is killed.
TEST_F(device, a_killed_device_task_ends_and_leaves_its_socket_usable)
{
    auto rep = make(ctx, zmq::socket_type::rep);
    rep.bind(test::unique_inproc());
    auto req = make(ctx, zmq::socket_type::req);
    req.connect(rep.get(zmq::sockopt::last_endpoint));
    const green::task dev = green::spawn([&] { green::device(green::device_type::queue, rep, rep); });
    send_strs(req, {"hi"});
    EXPECT_EQ(recv_strs(req), strings{"hi"});
    dev.kill();
    EXPECT_TRUE(dev.ready());
    EXPECT_TRUE(dev.killed());
    EXPECT_FALSE(dev.exception());
    // Killed while it waited for the next request: the REP takes it.
    send_strs(req, {"after"});
    EXPECT_EQ(recv_strs(rep), strings{"after"});
}

// The docs: a device ends when one of its sockets is closed. Closing one it
// was not waiting on (a PULL->PUSH proxy parks on the PULL only; a paused
// steerable proxy on its control socket only) must end it too, not leave it
// parked until the next message.
TEST_F(device, closing_a_socket_the_device_does_not_wait_on_ends_it)
{
    for (int which = 0; which < 4; ++which) {
        SCOPED_TRACE(which);
        rig r(ctx, zmq::socket_type::pull, zmq::socket_type::push, zmq::socket_type::push,
              zmq::socket_type::pull);
        auto capture = make(ctx, zmq::socket_type::pub);
        auto control = make(ctx, zmq::socket_type::pair);
        auto steer = make(ctx, zmq::socket_type::pair);
        const auto ca = test::unique_inproc();
        control.bind(ca);
        steer.connect(ca);
        const green::task dev = green::spawn([&] {
            if (which < 2)
                green::proxy(r.front, r.back, capture);
            else
                green::proxy_steerable(r.front, r.back, capture, control);
        });
        // A message through, so the device is past its checks and parked.
        send_strs(r.a, {"one"});
        EXPECT_EQ(recv_strs(r.b), strings{"one"});
        if (which == 3) {
            steer.send(zmq::str_buffer("PAUSE"));
            boost::this_fiber::yield();
        }
        switch (which) {
        case 0: r.back.close(); break;
        case 1: capture.close(); break;
        case 2: r.back.close(); break;
        default: r.front.close(); break;
        }
        // Only a hang guard: it ends at once, or never.
        EXPECT_TRUE(dev.join(5s));
        EXPECT_FALSE(dev.exception());
    }
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
                              // The device had the backwards message first and left it
                              // where it was (inproc: there once the send returned).
                              zmq::message_t left;
                              EXPECT_TRUE(r.back.recv(left, zmq::recv_flags::dontwait));
                              EXPECT_EQ(left.to_string(), "backwards");
                              EXPECT_EQ(r.a.poll(ZMQ_POLLIN, 0ms), 0);
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

// A ROUTER to be both sides of a device, a DEALER "d" connected to it, and
// a PAIR of sockets for the device's control or monitor (side.a).
struct echo_router {
    explicit echo_router(green::context_t& ctx)
        : router(make(ctx, zmq::socket_type::router)), dealer(make(ctx, zmq::socket_type::dealer)),
          side(ctx, zmq::socket_type::pair, zmq::socket_type::pair, test::unique_inproc())
    {
        dealer.set(zmq::sockopt::routing_id, "d");
        const auto addr = test::unique_inproc();
        router.bind(addr);
        dealer.connect(addr);
    }
    green::socket_t router, dealer;
    test::bound_pair side;
};

// libzmq's zmq_proxy takes one socket as both sides (a ROUTER that echoes):
// what it receives counts as the frontend's, what it sends back as the
// backend's (so zmq_proxy_steerable reports it, 4.3.4 as 4.3.5).
TEST_F(device, a_steerable_proxy_on_one_router_echoes_and_counts_as_libzmq)
{
    echo_router r(ctx);
    auto &router = r.router, &dealer = r.dealer;
    auto& control = r.side;
    test::run_fibers({[&] { green::proxy_steerable(router, router, {}, control.a); },
                      [&] {
                          for (int i = 0; i < 2; ++i) {
                              send_strs(dealer, {"hello"});
                              EXPECT_EQ(recv_strs(dealer), strings{"hello"});
                          }
                          send_strs(control.b, {"STATISTICS"});
                          // Two messages of two frames ("d", "hello") in, and back out.
                          EXPECT_EQ(decode_stats(recv_strs(control.b)),
                                    (std::array<std::uint64_t, 8>{4, 12, 0, 0, 0, 0, 4, 12}));
                          send_strs(control.b, {"TERMINATE"});
                      }});
}

// A monitored_queue whose in and out are one ROUTER answers the sender, as
// zmq_proxy does: the identity swap of two ROUTERs would route the reply to a
// peer named by the first frame of the payload, and it would be lost.
TEST_F(device, a_monitored_queue_on_one_router_echoes_to_the_sender)
{
    echo_router r(ctx);
    auto &router = r.router, &dealer = r.dealer;
    auto& mon = r.side;
    test::run_fibers({[&] { green::monitored_queue(router, router, mon.a); },
                      [&] {
                          send_strs(dealer, {"hello", "there"});
                          // A watchdog, not a timing: a lost echo never comes.
                          const bool echoed = dealer.poll(ZMQ_POLLIN, 10s) != 0;
                          EXPECT_TRUE(echoed) << "the echo went to another peer";
                          if (echoed) {
                              EXPECT_EQ(recv_strs(dealer), (strings{"hello", "there"}));
                          }
                          EXPECT_EQ(recv_strs(mon.b), (strings{"in", "d", "hello", "there"}));
                          ctx.shutdown();
                      }});
}

// Ported cppzmq code spells zmq::proxy and zmq::proxy_steerable: on green
// sockets those run the green devices, which park the fiber (the other
// fiber here sends and steers them), not libzmq's, which block the thread.
TEST_F(device, cppzmq_spelling_takes_the_green_path)
{
    rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
          zmq::socket_type::pair);
    test::bound_pair control(ctx, zmq::socket_type::pair, zmq::socket_type::pair,
                             test::unique_inproc());
    test::run_fibers({[&] { zmq::proxy_steerable(r.front, r.back, nullptr, control.a); },
                      [&] {
                          send_strs(r.a, {"steered"});
                          EXPECT_EQ(recv_strs(r.b), strings{"steered"});
                          send_strs(control.b, {"TERMINATE"});
                      }});
    test::run_fibers({[&] { zmq::proxy(r.front, r.back); },
                      [&] {
                          send_strs(r.b, {"back", "again"});
                          EXPECT_EQ(recv_strs(r.a), (strings{"back", "again"}));
                          ctx.shutdown();
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

// A REP frontend must answer before it receives again, and a REQ backend ask:
// the device waits for their turn instead of failing with EFSM.
TEST_F(device, a_rep_frontend_and_a_req_backend_take_turns)
{
    rig r(ctx, zmq::socket_type::rep, zmq::socket_type::req, zmq::socket_type::req,
          zmq::socket_type::rep);
    const green::task dev = green::spawn([&] { green::device(ZMQ_QUEUE, r.front, r.back); });
    test::close_guard ga(r.a); // a reply that never comes fails, not hangs
    test::close_guard gb(r.b);
    for (int i = 0; i < 3; ++i) {
        send_strs(r.a, {"req" + std::to_string(i)});
        EXPECT_EQ(recv_strs(r.b), strings{"req" + std::to_string(i)});
        send_strs(r.b, {"rep" + std::to_string(i)});
        EXPECT_EQ(recv_strs(r.a), strings{"rep" + std::to_string(i)});
    }
    EXPECT_FALSE(dev.ready());
    ctx.shutdown();
    EXPECT_TRUE(dev.join(10s));
    EXPECT_FALSE(dev.exception());
}

// A ROUTER_MANDATORY destination says POLLOUT while any peer has room, and
// refuses a message for a full one. The device then waits for that peer to
// make room (a command, an edge) instead of polling in a loop that never
// yields: the rest of the thread runs, and every message arrives. With the
// fallback re-check off, only the edges can end its waits. In a QUEUE the
// ROUTER is also the source of the other direction; in a STREAMER it is not.
void expect_a_full_mandatory_peer_parks_the_device(int type, zmq::socket_type front_type)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            ::alarm(10); // a spinning device never lets this fiber run again
            green::hub::current().set_fallback_interval(0ms);
            green::context_t c;
            auto front = make(c, front_type);
            auto back = make(c, zmq::socket_type::router, 1);
            back.set(zmq::sockopt::router_mandatory, 1);
            auto a = make(c, front_type == zmq::socket_type::pull ? zmq::socket_type::push
                                                                   : zmq::socket_type::pair);
            auto slow = make(c, zmq::socket_type::dealer, 1);
            auto idle = make(c, zmq::socket_type::dealer, 1); // gives the ROUTER POLLOUT
            slow.set(zmq::sockopt::routing_id, "slow");
            idle.set(zmq::sockopt::routing_id, "idle");
            const auto fa = test::unique_inproc();
            const auto ba = test::unique_inproc();
            front.bind(fa);
            back.bind(ba);
            a.connect(fa);
            slow.connect(ba);
            idle.connect(ba);
            // Both peers known to the ROUTER (a mandatory send to an unknown
            // one fails), and the probes read, before the device starts.
            for (green::socket_t* peer : {&slow, &idle}) {
                const std::string id = peer == &slow ? "slow" : "idle";
                auto probe = [&] {
                    try {
                        if (!back.send(zmq::buffer(id),
                                       zmq::send_flags::sndmore | zmq::send_flags::dontwait))
                            return false;
                    } catch (const zmq::error_t& e) {
                        if (e.num() == EHOSTUNREACH)
                            return false;
                        throw;
                    }
                    back.send(zmq::str_buffer("probe"), zmq::send_flags::dontwait);
                    return true;
                };
                while (!probe())
                    green::sleep_for(1ms); // the peer's handshake is on its way
                if (recv_strs(*peer) != strings{"probe"})
                    std::_Exit(5);
            }
            green::task dev = green::spawn([&] { green::device(type, front, back); });
            constexpr int count = 20; // far more than the pipe to "slow" holds
            for (int i = 0; i < count; ++i)
                send_strs(a, {"slow", std::to_string(i)});
            for (int i = 0; i < count; ++i)
                if (recv_strs(slow) != strings{std::to_string(i)})
                    std::_Exit(2);
            c.shutdown();
            dev.join();
            std::_Exit(green::hub::current().stats().rescues == 0 ? 0 : 4);
        },
        ::testing::ExitedWithCode(0), "");
}

TEST_F(device, a_full_peer_of_a_mandatory_router_parks_a_queue)
{
    expect_a_full_mandatory_peer_parks_the_device(ZMQ_QUEUE, zmq::socket_type::pair);
}

TEST_F(device, a_full_peer_of_a_mandatory_router_parks_a_streamer)
{
    expect_a_full_mandatory_peer_parks_the_device(ZMQ_STREAMER, zmq::socket_type::pull);
}

// A STREAMER's sockets with more messages queued in front of it than two
// bursts of 1,000, and a sink that counts what it relayed.
struct backlogged_streamer {
    static constexpr int backlog = 2500;
    explicit backlogged_streamer(green::context_t& ctx)
        : front(make(ctx, zmq::socket_type::pull, backlog)),
          back(make(ctx, zmq::socket_type::push, backlog)),
          producer(make(ctx, zmq::socket_type::push, backlog)),
          sink(make(ctx, zmq::socket_type::pull, backlog))
    {
        const auto fa = test::unique_inproc(), ba = test::unique_inproc();
        front.bind(fa);
        back.bind(ba);
        producer.connect(fa);
        sink.connect(ba);
        for (int i = 0; i < backlog; ++i)
            send_strs(producer, {"m"});
    }
    // What the device has relayed so far.
    int drain_sink()
    {
        int n = 0;
        zmq::message_t m;
        while (sink.recv(m, zmq::recv_flags::dontwait))
            ++n;
        return n;
    }
    green::socket_t front, back, producer, sink;
};

// poll() returns at once while a source has messages: the device yields
// after a burst, so that a busy one lets the thread's other fibers run.
TEST_F(device, a_busy_device_yields_after_a_burst)
{
    backlogged_streamer s(ctx);
    int relayed_before_others_ran = -1;
    test::run_fibers({[&] { green::device(ZMQ_STREAMER, s.front, s.back); },
                      [&] {
                          relayed_before_others_ran = s.drain_sink();
                          s.front.close(); // ends the device
                      }});
    EXPECT_GT(relayed_before_others_ran, 0);
    EXPECT_LT(relayed_before_others_ran, s.backlog) << "the device drained its source first";
}

// Its yield is a green one: a kill of a busy device's task lands there, not
// only once its sources have run dry.
TEST_F(device, a_busy_device_task_can_be_killed)
{
    backlogged_streamer s(ctx);
    const green::task dev =
        green::spawn([&] { green::device(ZMQ_STREAMER, s.front, s.back); });
    boost::this_fiber::yield(); // it runs its first burst, then yields
    dev.kill(false);
    ASSERT_TRUE(dev.join(10s));
    EXPECT_TRUE(dev.killed());
    EXPECT_LT(s.drain_sink(), s.backlog) << "the kill waited for the source to run dry";
}

// --- bad input -----------------------------------------------------------------

using test::expect_error;

namespace {

// True when monitored_queue accepts Prefix as its in_prefix.
template<class Prefix, class = void>
struct takes_prefix : std::false_type {};
template<class Prefix>
struct takes_prefix<Prefix,
                    std::void_t<decltype(green::monitored_queue(
                        std::declval<green::socket_ref>(), std::declval<green::socket_ref>(),
                        std::declval<green::socket_ref>(), std::declval<Prefix>()))>>
    : std::true_type {};

// Relays one message a -> b through a device running in its own fiber, then
// shuts the device down by closing its frontend.
void expect_relay(rig& r, const std::function<void()>& device)
{
    test::run_fibers({device, [&] {
                          send_strs(r.a, {"still", "works"});
                          EXPECT_EQ(recv_strs(r.b), (strings{"still", "works"}));
                          r.front.close();
                      }});
}

} // namespace

TEST_F(device, BadInput_device_type_out_of_range_is_einval)
{
    rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
          zmq::socket_type::pair);
    for (int type : {0, 4, -1, 42}) {
        try {
            green::device(type, r.front, r.back);
            ADD_FAILURE() << "device type " << type << " accepted";
        } catch (const zmq::error_t& e) {
            EXPECT_EQ(e.num(), EINVAL);
        }
        try {
            green::device(static_cast<green::device_type>(type), r.front, r.back);
            ADD_FAILURE() << "device_type " << type << " accepted";
        } catch (const zmq::error_t& e) {
            EXPECT_EQ(e.num(), EINVAL);
        }
    }
    expect_relay(r, [&] { green::device(green::device_type::streamer, r.front, r.back); });
}

TEST_F(device, BadInput_socket_types_a_device_cannot_serve)
{
    using st = zmq::socket_type;
    auto push = make(ctx, st::push), pull = make(ctx, st::pull), pub = make(ctx, st::pub),
         sub = make(ctx, st::sub), req = make(ctx, st::req), rep = make(ctx, st::rep),
         router = make(ctx, st::router), pair = make(ctx, st::pair);
    using E = std::invalid_argument;
    // No direction can forward.
    expect_error<E>([&] { green::device(green::device_type::streamer, push, pair); },
                    {"device(streamer)", "frontend", "PUSH", "cannot receive"});
    expect_error<E>([&] { green::device(green::device_type::forwarder, pair, pull); },
                    {"device(forwarder)", "backend", "PULL", "cannot send"});
    expect_error<E>([&] { green::device(ZMQ_QUEUE, push, pub); }, {"nothing can be forwarded"});
    expect_error<E>([&] { green::proxy(pub, pub); }, {"PUB", "both sides", "cannot receive"});
    // Copies need a socket that sends one way.
    expect_error<E>([&] { green::proxy(pull, push, sub); }, {"capture", "SUB", "cannot send"});
    expect_error<E>([&] { green::proxy(pull, push, rep); }, {"capture", "REP"});
    expect_error<E>([&] { green::monitored_queue(pair, router, pull); }, {"mon", "PULL"});
    // Commands are single frames the proxy receives first.
    for (auto* control : {&pub, &req, &router})
        expect_error<E>([&] { green::proxy_steerable(pull, push, {}, *control); }, {"control"});
    // A role played twice.
    expect_error<E>([&] { green::proxy(pull, push, push); },
                    {"capture socket is also the backend"});
    expect_error<E>([&] { green::proxy_steerable(pull, push, {}, pull); },
                    {"control socket is also the frontend"});
    expect_error<E>([&] { green::proxy_steerable(pull, push, pair, pair); },
                    {"control socket is also the capture"});
    expect_error<E>([&] { green::monitored_queue(pair, router, router); },
                    {"mon socket is also the out"});
    // Refused before anything moved: the same sockets still make a device.
    rig r(ctx, st::pair, st::pair, st::pair, st::pair);
    expect_error<E>([&] { green::proxy(r.front, r.back, sub); }, {"capture"});
    expect_relay(r, [&] { green::proxy(r.front, r.back, pub); });
}

TEST_F(device, BadInput_monitored_queue_prefixes)
{
    rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
          zmq::socket_type::pair);
    auto mon = make(ctx, zmq::socket_type::pub);
    expect_error<std::invalid_argument>([&] { green::monitored_queue(r.front, r.back, mon, ""); },
                                        {"in_prefix", "empty"});
    expect_error<std::invalid_argument>(
        [&] { green::monitored_queue(r.front, r.back, mon, "in", std::string()); },
        {"out_prefix", "empty"});
    // Prefixes are bytes: any std::string, a string literal; never a null pointer.
    static_assert(takes_prefix<std::string>::value);
    static_assert(takes_prefix<const char*>::value);
    static_assert(!takes_prefix<std::nullptr_t>::value);
    static_assert(!takes_prefix<int>::value);
    static_assert(!takes_prefix<std::vector<std::string>>::value);
    // Binary prefixes, NULs included, are fine.
    const std::string binary("\0\xff", 2);
    auto mon_pub = make(ctx, zmq::socket_type::pair), mon_peer = make(ctx, zmq::socket_type::pair);
    const auto addr = test::unique_inproc();
    mon_pub.bind(addr);
    mon_peer.connect(addr);
    test::run_fibers({[&] { green::monitored_queue(r.front, r.back, mon_pub, binary, "o"); },
                      [&] {
                          send_strs(r.a, {"x"});
                          EXPECT_EQ(recv_strs(r.b), strings{"x"});
                          EXPECT_EQ(recv_strs(mon_peer), (strings{binary, "x"}));
                          r.front.close();
                      }});
}

// pyzmq swaps the first two frames and lets the out ROUTER route: a peer
// without ZMQ_ROUTING_ID cannot be named, so what is sent to it is dropped
// by the ROUTER. zmq-green does the same, and the monitor still shows the
// message. With ZMQ_ROUTER_MANDATORY the ROUTER refuses instead
// (EHOSTUNREACH): the message is dropped too, and the queue goes on.
TEST_F(device, BadInput_router_router_monitored_queue_without_identities)
{
    for (bool mandatory : {false, true}) {
        SCOPED_TRACE(mandatory ? "ZMQ_ROUTER_MANDATORY" : "plain ROUTER");
        auto in = make(ctx, zmq::socket_type::router), out = make(ctx, zmq::socket_type::router);
        out.set(zmq::sockopt::router_mandatory, mandatory);
        auto mon = make(ctx, zmq::socket_type::pair), mon_peer = make(ctx, zmq::socket_type::pair);
        const auto in_addr = test::unique_inproc(), out_addr = test::unique_inproc(),
                   mon_addr = test::unique_inproc();
        in.bind(in_addr);
        out.bind(out_addr);
        mon.bind(mon_addr);
        mon_peer.connect(mon_addr);
        auto a = make(ctx, zmq::socket_type::dealer); // no identity
        auto anon = make(ctx, zmq::socket_type::dealer); // no identity either
        auto c = make(ctx, zmq::socket_type::dealer);
        c.set(zmq::sockopt::routing_id, "c");
        a.connect(in_addr);
        anon.connect(out_addr);
        c.connect(out_addr);
        test::run_fibers(
            {[&] { green::monitored_queue(in, out, mon); },
             [&] {
                 // c announces itself; the monitor shows the out ROUTER knows it.
                 send_strs(c, {"nobody", "hi"});
                 EXPECT_EQ(recv_strs(mon_peer), (strings{"out", "nobody", "c", "hi"}));
                 // a cannot name anon: the message is dropped, and monitored.
                 send_strs(a, {"anon", "lost"});
                 const auto lost = recv_strs(mon_peer);
                 ASSERT_EQ(lost.size(), 4u);
                 EXPECT_EQ(lost[0], "in");
                 EXPECT_EQ(lost[1], "anon");
                 const std::string a_id = lost[2]; // the in ROUTER's name for a
                 EXPECT_EQ(lost[3], "lost");
                 // The queue goes on, framing intact.
                 send_strs(a, {"c", "found"});
                 EXPECT_EQ(recv_strs(c), (strings{a_id, "found"}));
                 EXPECT_EQ(recv_strs(mon_peer), (strings{"in", "c", a_id, "found"}));
                 send_strs(c, {a_id, "back"});
                 EXPECT_EQ(recv_strs(a), (strings{"c", "back"}));
                 EXPECT_EQ(recv_strs(mon_peer), (strings{"out", a_id, "c", "back"}));
                 EXPECT_EQ(anon.poll(ZMQ_POLLIN, 0ms), 0);
                 in.close();
             }});
    }
}

// Unknown, empty, multi-frame and oversized commands are ignored; the proxy
// keeps forwarding and still obeys the real commands afterwards.
TEST_F(device, BadInput_steerable_control_garbage)
{
    for (auto ctrl_type : {zmq::socket_type::pair, zmq::socket_type::rep}) {
        const bool rep = ctrl_type == zmq::socket_type::rep;
        SCOPED_TRACE(rep ? "REP control" : "PAIR control");
        rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
              zmq::socket_type::pair);
        auto ctrl = make(ctx, ctrl_type);
        auto peer = make(ctx, rep ? zmq::socket_type::req : zmq::socket_type::pair);
        const auto addr = test::unique_inproc();
        ctrl.bind(addr);
        peer.connect(addr);
        bool returned = false;
        const std::vector<strings> garbage = {
            {"FOO"},       {""},          {"terminate"},       {std::string("PAUSE\0", 6)},
            {"PAUSE", ""}, {"TERMINATE", "now"}, {"", "TERMINATE"}, {"STATISTICS", "x", "y"},
            {std::string(1 << 20, 'T')}, {"\xff\xfe\x00\x01"}};
        test::run_fibers(
            {[&] {
                 green::proxy_steerable(r.front, r.back, {}, ctrl);
                 returned = true;
             },
             [&] {
                 for (const auto& cmd : garbage) {
                     send_strs(peer, cmd);
                     if (rep) {
                         EXPECT_EQ(recv_strs(peer), strings{""});
                     }
                     send_strs(r.a, {"through"});
                     EXPECT_EQ(recv_strs(r.b), strings{"through"});
                 }
                 send_strs(peer, {"STATISTICS"});
                 EXPECT_EQ(recv_strs(peer).size(), 8u);
                 EXPECT_FALSE(returned);
                 send_strs(peer, {"TERMINATE"});
                 if (rep) {
                     EXPECT_EQ(recv_strs(peer), strings{""});
                 }
             }});
        EXPECT_TRUE(returned);
    }
}

// A controller that does not read its STATISTICS replies must not stall the
// forwarding: replies that do not fit are dropped.
TEST_F(device, BadInput_steerable_statistics_flood_without_reading)
{
    rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
          zmq::socket_type::pair);
    auto ctrl = make(ctx, zmq::socket_type::pair, 1);
    auto peer = make(ctx, zmq::socket_type::pair, 1);
    peer.set(zmq::sockopt::sndhwm, 1000);
    const auto addr = test::unique_inproc();
    ctrl.bind(addr);
    peer.connect(addr);
    bool returned = false;
    test::run_fibers({[&] {
                          green::proxy_steerable(r.front, r.back, {}, ctrl);
                          returned = true;
                      },
                      [&] {
                          for (int i = 0; i < 20; ++i)
                              ASSERT_TRUE(peer.send(zmq::str_buffer("STATISTICS"),
                                                    zmq::send_flags::dontwait));
                          send_strs(r.a, {"first"});
                          EXPECT_EQ(recv_strs(r.b), strings{"first"});
                          // By now the proxy met the full control pipe.
                          send_strs(r.a, {"second"});
                          ASSERT_EQ(r.b.poll(ZMQ_POLLIN, 10s), ZMQ_POLLIN) << "proxy stalled";
                          EXPECT_EQ(recv_strs(r.b), strings{"second"});
                          // What was delivered is whole.
                          while (peer.poll(ZMQ_POLLIN, 0ms))
                              EXPECT_EQ(recv_strs(peer).size(), 8u);
                          send_strs(peer, {"TERMINATE"});
                      }});
    EXPECT_TRUE(returned);
}

// A SUB control socket (libzmq's man page uses one) cannot answer
// STATISTICS; the proxy skips the reply instead of failing.
TEST_F(device, BadInput_statistics_on_a_sub_control_socket)
{
    rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
          zmq::socket_type::pair);
    auto ctrl = make(ctx, zmq::socket_type::sub);
    auto controller = make(ctx, zmq::socket_type::xpub);
    const auto addr = test::unique_inproc();
    controller.bind(addr);
    ctrl.connect(addr);
    ctrl.set(zmq::sockopt::subscribe, "");
    EXPECT_EQ(recv_strs(controller), strings{std::string("\1", 1)}); // subscribed
    bool returned = false;
    test::run_fibers({[&] {
                          green::proxy_steerable(r.front, r.back, {}, ctrl);
                          returned = true;
                      },
                      [&] {
                          send_strs(controller, {"STATISTICS"});
                          send_strs(r.a, {"after"});
                          EXPECT_EQ(recv_strs(r.b), strings{"after"});
                          EXPECT_FALSE(returned);
                          send_strs(controller, {"TERMINATE"});
                      }});
    EXPECT_TRUE(returned);
}

TEST_F(device, BadInput_device_on_a_foreign_thread_is_thread_error)
{
    rig r(ctx, zmq::socket_type::pair, zmq::socket_type::pair, zmq::socket_type::pair,
          zmq::socket_type::pair);
    bool threw = false;
    std::thread([&] {
        try {
            green::device(ZMQ_QUEUE, r.front, r.back);
        } catch (const green::thread_error&) {
            threw = true;
        }
    }).join();
    EXPECT_TRUE(threw);
    expect_relay(r, [&] { green::device(ZMQ_QUEUE, r.front, r.back); });
}
