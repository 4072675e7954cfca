#include "support.hpp"

#include <poll.h>
#include <unistd.h>

#include <array>
#include <memory>
#include <thread>

using namespace std::chrono_literals;
namespace green = zmq::green;
using test::green_test;
using test::str;

namespace {

// Made before main(), maybe before the library's own namespace-scope
// objects, and destroyed after main() returns: as a cppzmq user may have.
green::context_t static_context;
green::socket_t static_socket(static_context, zmq::socket_type::pair);

std::string recv_str(green::socket_t& s)
{
    zmq::message_t m;
    auto r = s.recv(m);
    EXPECT_TRUE(r.has_value());
    return m.to_string();
}

} // namespace

class socket : public green_test {};

TEST_F(socket, a_socket_with_static_storage_works)
{
    static_socket.bind(test::unique_inproc());
    green::socket_t peer(static_context, zmq::socket_type::pair);
    peer.connect(static_socket.get(zmq::sockopt::last_endpoint));
    boost::fibers::fiber echo([&] {
        zmq::message_t m;
        ASSERT_TRUE(static_socket.recv(m));
        static_socket.send(m, zmq::send_flags::none);
    });
    peer.send(zmq::str_buffer("static"));
    EXPECT_EQ(recv_str(peer), "static");
    echo.join();
}

TEST_F(socket, pair_ping_pong)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    test::run_fibers({[&] {
                          ASSERT_TRUE(p.a.send(zmq::str_buffer("message1")));
                          EXPECT_EQ(recv_str(p.a), "message1");
                      },
                      [&] {
                          zmq::message_t m;
                          ASSERT_TRUE(p.b.recv(m));
                          ASSERT_TRUE(p.b.send(m, zmq::send_flags::none));
                      }});
}

TEST_F(socket, pair_multiple_in_order)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    for (int i = 0; i < 10; ++i) {
        ASSERT_TRUE(p.a.send(zmq::buffer(std::string(static_cast<size_t>(i), ' '))));
        ASSERT_TRUE(p.b.send(zmq::buffer(std::string(static_cast<size_t>(i), ' '))));
    }
    for (int i = 0; i < 10; ++i) {
        EXPECT_EQ(recv_str(p.a).size(), static_cast<size_t>(i));
        EXPECT_EQ(recv_str(p.b).size(), static_cast<size_t>(i));
    }
}

TEST_F(socket, req_rep_round_trips_with_large_messages)
{
    test::bound_pair p(ctx, zmq::socket_type::rep, zmq::socket_type::req);
    const std::string big(10000, 'x');
    test::run_fibers({[&] {
                          for (int i = 0; i < 10; ++i) {
                              zmq::message_t m;
                              ASSERT_TRUE(p.a.recv(m));
                              ASSERT_TRUE(p.a.send(m, zmq::send_flags::none));
                          }
                      },
                      [&] {
                          for (int i = 0; i < 10; ++i) {
                              ASSERT_TRUE(p.b.send(zmq::buffer(big)));
                              EXPECT_EQ(recv_str(p.b), big);
                          }
                      }});
}

TEST_F(socket, req_rep_wrong_state_is_efsm)
{
    test::bound_pair p(ctx, zmq::socket_type::rep, zmq::socket_type::req);
    zmq::message_t m;
    try {
        (void)p.b.recv(m);
        FAIL() << "REQ recv before send must fail";
    } catch (const zmq::error_t& e) {
        EXPECT_EQ(e.num(), EFSM);
    }
    try {
        p.a.send(zmq::str_buffer("x"));
        FAIL() << "REP send before recv must fail";
    } catch (const zmq::error_t& e) {
        EXPECT_EQ(e.num(), EFSM);
    }
    test::run_fibers({[&] { EXPECT_EQ(recv_str(p.a), "ping"); p.a.send(zmq::str_buffer("pong")); },
                      [&] {
                          p.b.send(zmq::str_buffer("ping"));
                          EXPECT_EQ(recv_str(p.b), "pong");
                      }});
}

TEST_F(socket, pub_sub_with_subscription_handshake)
{
    green::socket_t pub(ctx, zmq::socket_type::xpub);
    green::socket_t sub(ctx, zmq::socket_type::sub);
    const auto ep = test::unique_inproc();
    pub.bind(ep);
    sub.connect(ep);
    sub.set(zmq::sockopt::subscribe, "x");
    // XPUB hands us the subscription: from then on nothing is dropped.
    EXPECT_EQ(recv_str(pub), std::string("\1x", 2));
    pub.send(zmq::str_buffer("ymessage"));
    pub.send(zmq::str_buffer("xmessage"));
    EXPECT_EQ(recv_str(sub), "xmessage");
    zmq::message_t m;
    EXPECT_FALSE(sub.recv(m, zmq::recv_flags::dontwait));
}

TEST_F(socket, router_dealer_identity_frame)
{
    green::socket_t router(ctx, zmq::socket_type::router);
    green::socket_t dealer(ctx, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::routing_id, "dealer-1");
    const auto ep = test::unique_inproc();
    router.bind(ep);
    dealer.connect(ep);
    dealer.send(zmq::str_buffer("hi"));
    zmq::message_t id, body;
    ASSERT_TRUE(router.recv(id));
    EXPECT_EQ(str(id), "dealer-1");
    EXPECT_TRUE(router.get(zmq::sockopt::rcvmore));
    ASSERT_TRUE(router.recv(body));
    EXPECT_EQ(str(body), "hi");
    EXPECT_FALSE(router.get(zmq::sockopt::rcvmore));
}

TEST_F(socket, recv_into_buffer_reports_truncation)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    p.a.send(zmq::str_buffer("0123456789"));
    char buf[4];
    const auto r = p.b.recv(zmq::buffer(buf));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->size, 4u);
    EXPECT_EQ(r->untruncated_size, 10u);
    EXPECT_TRUE(r->truncated());
    EXPECT_EQ(std::string(buf, 4), "0123");
}

// pyzmq test_recv_into: an empty buffer takes the message and discards it,
// reporting its real size; the next receive gets the next message.
TEST_F(socket, recv_into_an_empty_buffer_discards_the_message)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    test::run_fibers({[&] {
                          const auto r = p.b.recv(zmq::mutable_buffer());
                          ASSERT_TRUE(r);
                          EXPECT_EQ(r->size, 0u);
                          EXPECT_EQ(r->untruncated_size, 10u);
                          EXPECT_EQ(recv_str(p.b), "next");
                      },
                      [&] {
                          p.a.send(zmq::str_buffer("discard me"));
                          p.a.send(zmq::str_buffer("next"));
                      }});
}

TEST_F(socket, dontwait_gives_an_empty_result)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    zmq::message_t m;
    EXPECT_FALSE(p.a.recv(m, zmq::recv_flags::dontwait));
    char buf[1];
    EXPECT_FALSE(p.a.recv(zmq::buffer(buf), zmq::recv_flags::dontwait));
}

TEST_F(socket, rcvtimeo_is_honoured)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    p.a.set(zmq::sockopt::rcvtimeo, 30);
    bool other_ran = false;
    test::run_fibers({[&] {
                          zmq::message_t m;
                          const auto start = std::chrono::steady_clock::now();
                          EXPECT_FALSE(p.a.recv(m));
                          EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
                          EXPECT_TRUE(other_ran); // it parked rather than blocked
                      },
                      [&] { other_ran = true; }});
    p.a.set(zmq::sockopt::rcvtimeo, 0);
    zmq::message_t m;
    EXPECT_FALSE(p.a.recv(m));
}

TEST_F(socket, sndtimeo_is_honoured)
{
    green::socket_t push(ctx, zmq::socket_type::push); // no peer: a send cannot complete
    push.set(zmq::sockopt::linger, 0);
    push.set(zmq::sockopt::sndtimeo, 30);
    const auto start = std::chrono::steady_clock::now();
    EXPECT_FALSE(push.send(zmq::str_buffer("x")));
    EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
}

TEST_F(socket, ten_fibers_blocked_in_recv_are_served_in_fifo_order)
{
    green::socket_t pull(ctx, zmq::socket_type::pull);
    green::socket_t push(ctx, zmq::socket_type::push);
    const auto ep = test::unique_inproc();
    pull.bind(ep);
    push.connect(ep);
    std::vector<std::string> got(10);
    std::vector<std::function<void()>> fibers;
    for (int i = 0; i < 10; ++i)
        fibers.push_back([&, i] { got[static_cast<size_t>(i)] = recv_str(pull); });
    fibers.push_back([&] {
        for (int i = 0; i < 10; ++i)
            push.send(zmq::buffer(std::to_string(i)));
    });
    test::run_fibers(std::move(fibers));
    for (int i = 0; i < 10; ++i)
        EXPECT_EQ(got[static_cast<size_t>(i)], std::to_string(i));
}

TEST_F(socket, sender_parked_at_hwm_resumes_when_the_peer_reads)
{
    green::socket_t push(ctx, zmq::socket_type::push);
    green::socket_t pull(ctx, zmq::socket_type::pull);
    push.set(zmq::sockopt::sndhwm, 1);
    pull.set(zmq::sockopt::rcvhwm, 1);
    const auto ep = test::unique_inproc();
    pull.bind(ep);
    push.connect(ep);
    constexpr int count = 200;
    int sent = 0;
    int parked_while_full = 0;
    test::run_fibers({[&] {
                          for (int i = 0; i < count; ++i) {
                              push.send(zmq::buffer(std::to_string(i)));
                              ++sent;
                          }
                      },
                      [&] {
                          for (int i = 0; i < count; ++i) {
                              // The sender filled the pipe and parked before we read.
                              if (sent < count)
                                  ++parked_while_full;
                              EXPECT_EQ(recv_str(pull), std::to_string(i));
                          }
                      }});
    EXPECT_EQ(sent, count);
    EXPECT_GT(parked_while_full, 0);
}

// ZMQ_EVENTS says POLLOUT while any peer has room, yet a ROUTER_MANDATORY
// send to a full peer fails: the sender parks until that peer reads, or
// until ZMQ_SNDTIMEO, rather than retrying while the level disagrees.
TEST_F(socket, router_mandatory_send_to_a_full_peer_parks_until_it_reads)
{
    test::router_with_a_full_peer r(ctx);
    test::close_guard guard(r.router);
    r.router.set(zmq::sockopt::sndtimeo, 20);
    const green::hub_stats before = green::hub::current().stats();
    EXPECT_FALSE(green::send_multipart(r.router, r.to_full));
    // It ended by its deadline, parked.
    EXPECT_EQ(green::hub::current().stats().timer_wakeups - before.timer_wakeups, 1u);

    r.router.set(zmq::sockopt::sndtimeo, -1);
    test::run_fibers({[&] { EXPECT_TRUE(green::send_multipart(r.router, r.to_full)); },
                      [&] { r.drain_full(); }});
}

// As above with a receiver parked on the router too: the sender then reads
// ZMQ_EVENTS for it after each failed try, a read that may take the command
// the send waits for, so the send re-checks itself while it waits. It still
// honours its timeout, gets through once the peer reads, and the receiver
// still gets its message.
TEST_F(socket, router_mandatory_send_to_a_full_peer_while_a_receiver_waits)
{
    test::router_with_a_full_peer r(ctx);
    test::close_guard guard(r.router);
    test::strings received;
    boost::fibers::fiber receiver([&] { received = test::recv_strs(r.router); });
    boost::this_fiber::yield(); // the receiver parks
    r.router.set(zmq::sockopt::sndtimeo, 20);
    EXPECT_FALSE(green::send_multipart(r.router, r.to_full));
    r.router.set(zmq::sockopt::sndtimeo, -1);
    test::run_fibers({[&] { EXPECT_TRUE(green::send_multipart(r.router, r.to_full)); },
                      [&] { r.drain_full(); }});
    r.idle.send(zmq::str_buffer("late"));
    receiver.join();
    ASSERT_EQ(received.size(), 2u);
    EXPECT_EQ(received[1], "late");
}

// XPUB_NODROP: ZMQ_EVENTS always says POLLOUT, and a send to a full
// subscriber fails until it reads.
TEST_F(socket, xpub_nodrop_send_to_a_full_subscriber_honours_sndtimeo)
{
    green::socket_t pub(ctx, zmq::socket_type::xpub);
    pub.set(zmq::sockopt::xpub_nodrop, 1);
    pub.set(zmq::sockopt::sndhwm, 1);
    const auto ep = test::unique_inproc();
    pub.bind(ep);
    green::socket_t sub(ctx, zmq::socket_type::sub);
    sub.set(zmq::sockopt::rcvhwm, 1);
    sub.set(zmq::sockopt::subscribe, "");
    sub.connect(ep);
    EXPECT_EQ(recv_str(pub), std::string(1, '\1')); // the subscription has arrived
    int queued = 0;
    while (pub.send(zmq::str_buffer("x"), zmq::send_flags::dontwait))
        ++queued;

    test::close_guard guard(pub);
    pub.set(zmq::sockopt::sndtimeo, 20);
    const green::hub_stats before = green::hub::current().stats();
    EXPECT_FALSE(pub.send(zmq::str_buffer("x")));
    EXPECT_EQ(green::hub::current().stats().timer_wakeups - before.timer_wakeups, 1u);

    pub.set(zmq::sockopt::sndtimeo, -1);
    test::run_fibers({[&] { EXPECT_TRUE(pub.send(zmq::str_buffer("x"))); },
                      [&] {
                          for (int i = 0; i <= queued; ++i)
                              EXPECT_EQ(recv_str(sub), "x");
                      }});
}

TEST_F(socket, close_wakes_waiters_with_enotsock)
{
    green::socket_t pull(ctx, zmq::socket_type::pull);
    int errors = 0;
    auto waiter = [&] {
        zmq::message_t m;
        try {
            (void)pull.recv(m);
        } catch (const zmq::error_t& e) {
            EXPECT_EQ(e.num(), ENOTSOCK);
            ++errors;
        }
    };
    test::run_fibers({waiter, waiter, waiter, [&] { pull.close(); }});
    EXPECT_EQ(errors, 3);
}

TEST_F(socket, closed_socket_operations_fail_with_enotsock)
{
    green::socket_t s(ctx, zmq::socket_type::pair);
    s.close();
    EXPECT_EQ(s.handle(), nullptr);
    auto expect_enotsock = [](auto&& fn) {
        try {
            fn();
            ADD_FAILURE() << "no error";
        } catch (const zmq::error_t& e) {
            EXPECT_EQ(e.num(), ENOTSOCK);
        }
    };
    expect_enotsock([&] { s.bind("inproc://x"); });
    expect_enotsock([&] { s.connect("inproc://x"); });
    expect_enotsock([&] { s.set(zmq::sockopt::linger, 0); });
    expect_enotsock([&] { s.send(zmq::str_buffer("x")); });
    expect_enotsock([&] {
        zmq::message_t m;
        (void)s.recv(m);
    });
}

// pyzmq #199: a receive that succeeds at once processes every command the
// socket holds, and drains its fd: the command that lets a parked sender go
// on brings no edge any more. The receive itself must wake the sender.
TEST_F(socket, a_receive_wakes_the_sender_whose_signal_it_consumed)
{
    green::hub::current().set_fallback_interval(0ms);
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair, test::unique_inproc());
    for (auto* s : {&p.a, &p.b}) {
        s->set(zmq::sockopt::sndhwm, 1);
        s->set(zmq::sockopt::rcvhwm, 1);
    }
    p.a.set(zmq::sockopt::sndtimeo, 5000); // a sender never woken fails, not hangs
    int queued = 0;
    while (p.a.send(zmq::str_buffer("fill"), zmq::send_flags::dontwait))
        ++queued;
    bool sent = false;
    boost::fibers::fiber sender([&] { sent = static_cast<bool>(p.a.send(zmq::str_buffer("last"))); });
    boost::this_fiber::yield(); // it finds the pipe full and parks
    // No yield from here to the receive: the hub sees no edge meanwhile.
    for (int i = 0; i < queued; ++i)
        EXPECT_EQ(recv_str(p.b), "fill"); // room again: a command to a
    p.b.send(zmq::str_buffer("reply"));   // and a message
    EXPECT_EQ(recv_str(p.a), "reply");
    sender.join();
    green::hub::current().set_fallback_interval(1000ms);
    ASSERT_TRUE(sent);
    EXPECT_EQ(recv_str(p.b), "last");
}

TEST_F(socket, hundred_thousand_ping_pongs_without_the_fallback)
{
    green::hub& h = green::hub::current();
    h.set_fallback_interval(0ms); // a missed edge would hang: the test times out
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair, test::unique_inproc());
    auto& a = p.a;
    auto& b = p.b;
    constexpr int rounds = 100000;
    test::run_fibers({[&] {
                          zmq::message_t m;
                          for (int i = 0; i < rounds; ++i) {
                              a.send(zmq::str_buffer("ping"));
                              ASSERT_TRUE(a.recv(m));
                          }
                      },
                      [&] {
                          zmq::message_t m;
                          for (int i = 0; i < rounds; ++i) {
                              ASSERT_TRUE(b.recv(m));
                              b.send(m, zmq::send_flags::none);
                          }
                      }});
    h.set_fallback_interval(1000ms);
}

// The fallback re-check exists for the edge epoll never delivers; here one is
// lost on purpose. The parked receiver still gets its message, and the hub
// counts the rescue that every other test holds at zero. A thread of its own
// keeps this hub's count away from the fixture's.
// A ROUTER_MANDATORY send parked on a full peer while ZMQ_EVENTS says
// POLLOUT (another peer has room) waits for edges. Woken by another fiber's
// EVENTS read, it may find that the peer's read (activate_write) brought an
// edge meanwhile, which the hub took while nobody waited: libzmq's send
// processes commands at most once a millisecond, so its retry can fail with
// the command unread, and it must read the level (processing the command)
// and retry rather than park for an edge that will not come. With the
// fallback re-check off and SNDTIMEO as a guard, a miss is a failed send.
// Each trial yields a different number of times, so that the hub's polls
// fall at each point of that window.
TEST_F(socket, a_mandatory_router_send_sees_the_room_its_peer_made_while_it_was_woken)
{
    std::thread([this] {
        zmq::green::hub::current().set_fallback_interval(0ms);
        for (int trial = 0; trial < 8; ++trial) {
            const auto ep = test::unique_inproc();
            green::socket_t r(ctx, zmq::socket_type::router);
            r.set(zmq::sockopt::router_mandatory, 1);
            r.set(zmq::sockopt::sndhwm, 1);
            r.set(zmq::sockopt::linger, 0);
            r.set(zmq::sockopt::sndtimeo, 2000);
            r.bind(ep);
            green::socket_t d1(ctx, zmq::socket_type::dealer);
            green::socket_t d2(ctx, zmq::socket_type::dealer);
            d1.set(zmq::sockopt::routing_id, "d1");
            d2.set(zmq::sockopt::routing_id, "d2");
            d1.set(zmq::sockopt::rcvhwm, 1);
            d1.set(zmq::sockopt::linger, 0);
            d2.set(zmq::sockopt::linger, 0);
            d1.connect(ep);
            d2.connect(ep);
            d1.send(zmq::str_buffer("hi"));
            d2.send(zmq::str_buffer("hi"));
            test::recv_strs(r);
            test::recv_strs(r);
            // Past libzmq's once-a-millisecond command throttle, so that the
            // fill's first send processes the commands before it.
            boost::this_fiber::sleep_for(3ms);
            bool sent = false;
            boost::fibers::fiber sender([&] {
                const std::array<zmq::const_buffer, 2> msg{zmq::str_buffer("d1"),
                                                           zmq::str_buffer("m")};
                while (green::send_multipart(r, msg, zmq::send_flags::dontwait)) {
                }
                sent = green::send_multipart(r, msg).has_value(); // parks
            });
            for (int k = 0; k <= trial % 4; ++k)
                boost::this_fiber::yield();
            d2.send(zmq::str_buffer("x"));
            test::recv_strs(r); // its EVENTS read wakes the sender (POLLOUT)
            zmq::message_t m;
            ASSERT_TRUE(d1.recv(m)); // room for the sender: activate_write
            sender.join();
            EXPECT_TRUE(sent) << "trial " << trial << ": the send waited for an edge already taken";
        }
    }).join();
}

TEST_F(socket, a_lost_edge_is_rescued_by_the_fallback_and_counted)
{
    std::thread([this] {
        green::hub& h = green::hub::current();
        h.set_fallback_interval(10ms);
        test::parked_receiver(ctx).expect_a_lost_edge_rescued(h);
    }).join();
}

// The requester lets the replier run before it tries to receive, so the
// reply is there when it does: no pipe goes to sleep, and no round trip
// after the first needs an epoll wake-up.
TEST_F(socket, req_rep_fibers_of_one_hub_answer_without_epoll_wakeups)
{
    test::bound_pair p(ctx, zmq::socket_type::rep, zmq::socket_type::req, test::unique_inproc());
    auto& rep = p.a;
    auto& req = p.b;
    constexpr int warm_up = 10, rounds = 1000;
    std::uint64_t wakeups_after_warm_up = 0;
    test::run_fibers({[&] {
                          zmq::message_t m;
                          for (int i = 0; i < warm_up + rounds; ++i) {
                              if (i == warm_up)
                                  wakeups_after_warm_up = green::hub::current().stats().fd_wakeups;
                              req.send(zmq::buffer(&i, sizeof i));
                              ASSERT_TRUE(req.recv(m));
                              ASSERT_EQ(*m.data<int>(), i);
                          }
                      },
                      [&] {
                          zmq::message_t m;
                          for (int i = 0; i < warm_up + rounds; ++i) {
                              ASSERT_TRUE(rep.recv(m));
                              rep.send(m, zmq::send_flags::none);
                          }
                      }});
    EXPECT_EQ(green::hub::current().stats().fd_wakeups, wakeups_after_warm_up);
}

namespace {

// Round trips between a REQ fiber and a REP fiber of this hub, both at HWM
// `hwm` (RCVTIMEO is a hang guard: a lost reply ends them); after_reply runs
// in the REP fiber after each reply. Returns the replies the REQ got.
int rep_round_trips(green::context_t& ctx, const std::string& endpoint, int hwm, int rounds,
                    const std::function<void()>& after_reply)
{
    green::socket_t rep(ctx, zmq::socket_type::rep);
    green::socket_t req(ctx, zmq::socket_type::req);
    for (auto* s : {&rep, &req}) {
        s->set(zmq::sockopt::sndhwm, hwm);
        s->set(zmq::sockopt::rcvhwm, hwm);
        s->set(zmq::sockopt::linger, 0);
        s->set(zmq::sockopt::rcvtimeo, 5000);
    }
    rep.bind(endpoint);
    req.connect(rep.get(zmq::sockopt::last_endpoint));
    int replies = 0;
    test::run_fibers({[&] {
                          zmq::message_t m;
                          for (int i = 0; i < rounds; ++i) {
                              req.send(zmq::buffer(&i, sizeof i));
                              if (!req.recv(m))
                                  break;
                              EXPECT_EQ(*m.data<int>(), i);
                              ++replies;
                          }
                      },
                      [&] {
                          zmq::message_t m;
                          for (int i = 0; i < rounds; ++i) {
                              if (!rep.recv(m))
                                  break;
                              rep.send(m, zmq::send_flags::none);
                              after_reply();
                          }
                      }});
    return replies;
}

} // namespace

// libzmq's REP drops a reply, silently, when its count of the replies its
// peer has read says the pipe is full, and that count advances only when the
// REP processes commands. A REP whose receives all succeed at once (here,
// after the lockstep yield) would process none: at HWM 1 the third reply was
// lost. Every reply must arrive, at any HWM.
TEST_F(socket, rep_at_a_small_hwm_loses_no_reply_its_peer_has_read)
{
    for (const int hwm : {1, 2, 7, 60}) {
        SCOPED_TRACE("hwm " + std::to_string(hwm));
        EXPECT_EQ(rep_round_trips(ctx, test::unique_inproc(), hwm, 1000, [] {}), 1000);
    }
}

// The REP's check comes as the request arrives, not as the reply leaves: a
// REP that pauses after each reply (other work; here a green sleep) finds
// the next request already queued, over tcp, where the pipe's HWM is the
// REP's SNDHWM alone.
TEST_F(socket, rep_that_pauses_after_its_replies_loses_none_over_tcp)
{
    EXPECT_EQ(rep_round_trips(ctx, "tcp://127.0.0.1:*", 1, 20, [] { green::sleep_for(10ms); }), 20);
}

// The same yield when the replier is another thread: the requester still
// gets every reply, while another fiber of its hub waits on a socket.
TEST_F(socket, req_to_a_rep_thread_while_another_fiber_waits)
{
    const auto ep = test::unique_inproc();
    void* rep = zmq_socket(ctx.handle(), ZMQ_REP); // plain and blocking
    ASSERT_NE(rep, nullptr);
    ASSERT_EQ(zmq_bind(rep, ep.c_str()), 0);
    constexpr int rounds = 1000;
    std::thread replier([&] {
        for (int i = 0; i < rounds; ++i) {
            int n = 0;
            zmq_recv(rep, &n, sizeof n, 0);
            zmq_send(rep, &n, sizeof n, 0);
        }
        zmq_close(rep);
    });
    green::socket_t idle(ctx, zmq::socket_type::pull);
    idle.bind(test::unique_inproc());
    green::socket_t req(ctx, zmq::socket_type::req);
    req.connect(ep);
    test::run_fibers({[&] {
                          zmq::message_t m;
                          EXPECT_THROW((void)idle.recv(m), zmq::error_t); // closed below
                      },
                      [&] {
                          zmq::message_t m;
                          for (int i = 0; i < rounds; ++i) {
                              req.send(zmq::buffer(&i, sizeof i));
                              ASSERT_TRUE(req.recv(m));
                              ASSERT_EQ(*m.data<int>(), i);
                          }
                          idle.close();
                      }});
    replier.join();
}

// A plain blocking REP that echoes up to `rounds` int requests in its own
// thread, giving up after 5 s without one (so a failed test cannot hang).
class echo_rep_thread {
public:
    echo_rep_thread(zmq::green::context_t& ctx, int rounds)
        : rep_(zmq_socket(ctx.handle(), ZMQ_REP))
    {
        EXPECT_NE(rep_, nullptr);
        EXPECT_EQ(zmq_bind(rep_, "tcp://127.0.0.1:*"), 0);
        char ep[256];
        size_t size = sizeof ep;
        EXPECT_EQ(zmq_getsockopt(rep_, ZMQ_LAST_ENDPOINT, ep, &size), 0);
        endpoint = ep;
        const int timeout_ms = 5000;
        zmq_setsockopt(rep_, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
        thread_ = std::thread([this, rounds] {
            for (int i = 0; i < rounds; ++i) {
                int n = 0;
                if (zmq_recv(rep_, &n, sizeof n, 0) < 0)
                    return;
                zmq_send(rep_, &n, sizeof n, 0);
            }
        });
    }
    // A REQ socket of this thread's hub, connected to the echo.
    zmq::green::socket_t connected_req(zmq::green::context_t& ctx) const
    {
        zmq::green::socket_t req(ctx, zmq::socket_type::req);
        req.set(zmq::sockopt::linger, 0);
        req.connect(endpoint);
        return req;
    }
    ~echo_rep_thread()
    {
        thread_.join();
        int linger = 0;
        zmq_setsockopt(rep_, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(rep_);
    }
    std::string endpoint;

private:
    void* rep_;
    std::thread thread_;
};

// The reply's edge came (the hub saw it while the requester waited on
// something else) before the receive: libzmq has not processed the reply's
// command, and no second edge will come for it.
TEST_F(socket, req_receives_a_reply_whose_edge_came_before_the_receive)
{
    constexpr int rounds = 20;
    echo_rep_thread rep(ctx, rounds);
    green::socket_t req = rep.connected_req(ctx);
    // A second fd on the socket's eventfd: waiting on it runs the hub's
    // epoll, which reports the same edge to the socket.
    const int signal_fd = ::dup(req.get(zmq::sockopt::fd));
    ASSERT_GE(signal_fd, 0);
    for (int i = 0; i < rounds; ++i) {
        req.send(zmq::buffer(&i, sizeof i));
        ASSERT_TRUE(green::wait_readable(signal_fd, 5s));
        zmq::message_t m;
        ASSERT_TRUE(req.recv(m));
        ASSERT_EQ(*m.data<int>(), i);
    }
    ::close(signal_fd);
}

// A bind between the send and the receive processes libzmq's commands,
// which may take the reply's signal: the receive must look for it.
TEST_F(socket, req_receives_a_reply_whose_signal_a_bind_took)
{
    constexpr int rounds = 20;
    echo_rep_thread rep(ctx, rounds);
    green::socket_t req = rep.connected_req(ctx);
    const int fd = req.get(zmq::sockopt::fd);
    for (int i = 0; i < rounds; ++i) {
        req.send(zmq::buffer(&i, sizeof i));
        // Block the thread, so the hub sees no edge, until the reply has
        // signalled the socket.
        pollfd pfd{fd, POLLIN, 0};
        ASSERT_EQ(::poll(&pfd, 1, 5000), 1);
        req.bind(test::unique_inproc());
        zmq::message_t m;
        ASSERT_TRUE(req.recv(m));
        ASSERT_EQ(*m.data<int>(), i);
    }
}

// Two repliers, each sending a late copy of the reply the other gives: the
// requester's libzmq drops those inside a failed receive, and the fiber
// still wakes for its real reply.
TEST_F(socket, req_ignores_late_replies_from_its_other_peer)
{
    green::socket_t req(ctx, zmq::socket_type::req);
    req.set(zmq::sockopt::linger, 0);
    req.set(zmq::sockopt::routing_id, "requester");
    req.set(zmq::sockopt::req_correlate, true);
    std::vector<green::socket_t> routers;
    for (int r = 0; r < 2; ++r) {
        routers.emplace_back(ctx, zmq::socket_type::router);
        routers.back().set(zmq::sockopt::linger, 0);
        routers.back().bind("tcp://127.0.0.1:*");
        req.connect(routers.back().get(zmq::sockopt::last_endpoint));
    }
    constexpr int rounds = 200;
    test::run_fibers({[&] {
                          for (int n = 0; n < rounds; ++n) {
                              std::vector<zmq_pollitem_t> items{
                                  {routers[0].handle(), 0, ZMQ_POLLIN, 0},
                                  {routers[1].handle(), 0, ZMQ_POLLIN, 0}};
                              ASSERT_GE(green::poll(items, 5000), 1);
                              auto& self = routers[items[0].revents & ZMQ_POLLIN ? 0 : 1];
                              auto& other = routers[&self == &routers[0] ? 1 : 0];
                              const test::strings request = test::recv_strs(self);
                              // routing id, request id, delimiter, body
                              ASSERT_EQ(request.size(), 4u);
                              test::send_strs(other, {request[0], request[1], "", "late"});
                              test::send_strs(self, request);
                          }
                      },
                      [&] {
                          for (int i = 0; i < rounds; ++i) {
                              req.send(zmq::buffer(std::to_string(i)));
                              ASSERT_EQ(recv_str(req), std::to_string(i));
                          }
                      }});
}

TEST_F(socket, tcp_ping_pong_across_two_threads)
{
    // Each thread has its own hub; messages cross between their epolls.
    green::socket_t rep(ctx, zmq::socket_type::rep);
    rep.bind("tcp://127.0.0.1:*");
    const std::string ep = rep.get(zmq::sockopt::last_endpoint);
    std::thread client([&] {
        green::socket_t req(ctx, zmq::socket_type::req);
        req.connect(ep);
        for (int i = 0; i < 1000; ++i) {
            req.send(zmq::buffer(std::to_string(i)));
            EXPECT_EQ(recv_str(req), std::to_string(i));
        }
    });
    for (int i = 0; i < 1000; ++i) {
        zmq::message_t m;
        ASSERT_TRUE(rep.recv(m));
        rep.send(m, zmq::send_flags::none);
    }
    client.join();
}

TEST_F(socket, use_from_a_foreign_thread_is_a_clear_error)
{
    green::socket_t s(ctx, zmq::socket_type::pair);
    std::thread([&] {
        EXPECT_THROW(s.send(zmq::str_buffer("x")), green::thread_error);
        EXPECT_THROW(s.bind("inproc://foreign"), green::thread_error);
        EXPECT_THROW(s.set(zmq::sockopt::linger, 0), green::thread_error);
        zmq::message_t m;
        EXPECT_THROW((void)s.recv(m), green::thread_error);
        EXPECT_THROW((void)static_cast<void*>(s), green::thread_error); // for a pollitem
    }).join();
    s.bind("inproc://owner"); // still usable by its own thread
}

// Green connect and bind run on a stack of the thread, made at the thread's
// first connect, after Boost.Fiber's own per-thread state: at thread exit it
// goes first, and the fibers Boost.Fiber then runs to their end still connect.
TEST_F(socket, a_fiber_that_runs_on_after_its_thread_function_returns_can_still_connect)
{
    green::socket_t pull(ctx, zmq::socket_type::pull);
    pull.set(zmq::sockopt::linger, 0);
    pull.set(zmq::sockopt::rcvtimeo, 5000); // a failure must not hang
    pull.bind("tcp://127.0.0.1:*");
    const std::string ep = pull.get(zmq::sockopt::last_endpoint);
    bool reconnected = false;
    std::thread([&] {
        auto push = std::make_shared<green::socket_t>(ctx, zmq::socket_type::push);
        // Closed as the fiber ends: its message must still go out.
        push->set(zmq::sockopt::linger, 5000);
        push->connect(ep);
        auto gate = std::make_shared<green::socket_t>(ctx, zmq::socket_type::pull);
        boost::fibers::fiber([&, push, gate] {
            zmq::message_t m;
            EXPECT_THROW((void)gate->recv(m), zmq::error_t); // closed below
            push->disconnect(ep); // after the thread function has returned
            push->connect(ep);
            push->send(zmq::str_buffer("after"));
            reconnected = true;
        }).detach();
        boost::this_fiber::yield(); // it parks
        gate->close();              // and runs once this function has returned
    }).join();
    EXPECT_TRUE(reconnected);
    EXPECT_EQ(recv_str(pull), "after");
}

TEST_F(socket, reading_events_wakes_a_waiter_whose_signal_it_consumed)
{
    green::hub::current().set_fallback_interval(0ms);
    green::socket_t a(ctx, zmq::socket_type::pair);
    green::socket_t b(ctx, zmq::socket_type::pair);
    const auto ep = test::unique_inproc();
    a.bind(ep);
    b.connect(ep);
    test::run_fibers({[&] { EXPECT_EQ(recv_str(b), "x"); },
                      [&] {
                          a.send(zmq::str_buffer("x"));
                          // b's signal is pending; this read consumes it.
                          EXPECT_TRUE(b.get(zmq::sockopt::events) & ZMQ_POLLIN);
                      }});
    green::hub::current().set_fallback_interval(1000ms);
}

TEST_F(socket, moved_sockets_keep_working)
{
    green::socket_t a(ctx, zmq::socket_type::pair);
    green::socket_t b(ctx, zmq::socket_type::pair);
    const auto ep = test::unique_inproc();
    a.bind(ep);
    b.connect(ep);
    green::socket_t moved(std::move(a));
    EXPECT_EQ(a.handle(), nullptr);
    moved.send(zmq::str_buffer("x"));
    EXPECT_EQ(recv_str(b), "x");
    green::socket_ref ref = b;
    EXPECT_TRUE(ref == b);
    EXPECT_FALSE(ref == moved);
}

// cppzmq code tests poller events and optional sockets against nullptr.
TEST_F(socket, a_socket_ref_compares_with_nullptr_as_cppzmqs_does)
{
    green::socket_t s(ctx, zmq::socket_type::pair);
    const green::socket_ref none = nullptr;
    EXPECT_FALSE(none);
    EXPECT_TRUE(none == nullptr);
    EXPECT_TRUE(nullptr == none);
    EXPECT_FALSE(none != nullptr);
    const green::socket_ref ref = s;
    EXPECT_TRUE(ref != nullptr);
    EXPECT_TRUE(nullptr != ref);
    EXPECT_FALSE(ref == nullptr);
    EXPECT_FALSE(s == nullptr);
    s.close();
    EXPECT_TRUE(green::socket_ref(s) == nullptr);
}

TEST_F(socket, bad_socket_type_and_endpoint_are_errors)
{
    EXPECT_THROW(green::socket_t(ctx, 999), zmq::error_t);
    green::socket_t s(ctx, zmq::socket_type::pair);
    try {
        s.bind("nonsense://x");
        FAIL();
    } catch (const zmq::error_t& e) {
        EXPECT_EQ(e.num(), EPROTONOSUPPORT);
    }
    EXPECT_THROW(s.connect("tcp://"), zmq::error_t);
}

// --- bad input -----------------------------------------------------------------

using test::errno_of;

namespace {

// s (a PAIR) still binds, connects and carries a message.
void expect_usable(green::context_t& ctx, green::socket_t& s)
{
    const auto ep = test::unique_inproc();
    s.bind(ep);
    green::socket_t peer(ctx, zmq::socket_type::pair);
    peer.connect(ep);
    peer.send(zmq::str_buffer("ok"));
    EXPECT_EQ(recv_str(s), "ok");
}

} // namespace

TEST_F(socket, BadInput_invalid_socket_types_are_einval)
{
    // 12 is ZMQ_SERVER: libzmq has it, but a thread-safe socket has no ZMQ_FD to wait on.
    for (int type : {-1, 12, 999}) {
        EXPECT_EQ(errno_of([&] { green::socket_t(ctx, type); }), EINVAL) << type;
    }
    green::socket_t s(ctx, zmq::socket_type::pair);
    expect_usable(ctx, s);
}

TEST_F(socket, BadInput_invalid_endpoints_keep_the_socket_usable)
{
    green::socket_t s(ctx, zmq::socket_type::pair);
    const struct {
        const char* endpoint;
        int bind_errno;
        int connect_errno;
    } cases[] = {
        {"", EINVAL, EINVAL},
        {"nonsense://x", EPROTONOSUPPORT, EPROTONOSUPPORT},
        {"tcp://", EINVAL, EINVAL},
        {"tcp://127.0.0.1", EINVAL, EINVAL}, // no port
        {"tcp://*:abc", EINVAL, EINVAL},
        {"tcp://no such host:1", ENODEV, EINVAL},
        {"inproc://", EINVAL, EINVAL},
        {"ipc://", EINVAL, EINVAL},
        {"udp://127.0.0.1:5555", ENOCOMPATPROTO, ENOCOMPATPROTO}, // PAIR cannot use udp
    };
    for (const auto& c : cases) {
        EXPECT_EQ(errno_of([&] { s.bind(c.endpoint); }), c.bind_errno) << c.endpoint;
        EXPECT_EQ(errno_of([&] { s.connect(c.endpoint); }), c.connect_errno) << c.endpoint;
    }
    EXPECT_EQ(errno_of([&] { s.unbind("tcp://127.0.0.1:1"); }), ENOENT);
    EXPECT_EQ(errno_of([&] { s.disconnect("inproc://never-connected"); }), ENOENT);
    expect_usable(ctx, s);
}

// With a fiber waiting, each call reads ZMQ_EVENTS afterwards for it: that
// read must not replace the call's errno.
TEST_F(socket, BadInput_endpoint_errors_keep_their_errno_while_a_fiber_waits)
{
    green::socket_t s(ctx, zmq::socket_type::pair);
    int waiter_errno = 0;
    boost::fibers::fiber waiter([&] {
        waiter_errno = errno_of([&] {
            zmq::message_t m;
            (void)s.recv(m);
        });
    });
    boost::this_fiber::yield(); // it finds nothing and parks
    EXPECT_EQ(errno_of([&] { s.bind("nonsense://x"); }), EPROTONOSUPPORT);
    EXPECT_EQ(errno_of([&] { s.connect("tcp://"); }), EINVAL);
    EXPECT_EQ(errno_of([&] { s.unbind("tcp://127.0.0.1:1"); }), ENOENT);
    EXPECT_EQ(errno_of([&] { s.disconnect("inproc://never-connected"); }), ENOENT);
    s.close();
    waiter.join();
    EXPECT_EQ(waiter_errno, ENOTSOCK);
}

TEST_F(socket, BadInput_null_endpoint_is_einval)
{
    green::socket_t s(ctx, zmq::socket_type::pair);
    const char* none = nullptr;
    EXPECT_EQ(errno_of([&] { s.bind(none); }), EINVAL);
    EXPECT_EQ(errno_of([&] { s.connect(none); }), EINVAL);
    EXPECT_EQ(errno_of([&] { s.unbind(none); }), EINVAL);
    EXPECT_EQ(errno_of([&] { s.disconnect(none); }), EINVAL);
    expect_usable(ctx, s);
}

// cppzmq's socket_t converts to socket_ref as an rvalue, and tests as bool
// without touching the socket's owner (a non-const operator bool): code
// doing either ports unchanged.
TEST_F(socket, socket_ref_from_an_rvalue_and_bool_tests_as_cppzmqs)
{
    green::socket_t s(ctx, zmq::socket_type::pair);
    auto handle_of = [](green::socket_ref r) { return r.handle(); };
    EXPECT_EQ(handle_of(std::move(s)), s.handle()); // nothing moved: a reference
    int tested = 0;
    std::thread([&] {
        tested += s ? 1 : 0;
        tested += !s ? 0 : 1;
        tested += static_cast<bool>(s) ? 1 : 0;
    }).join();
    EXPECT_EQ(tested, 3);
    expect_usable(ctx, s);
}

TEST_F(socket, BadInput_foreign_thread_poll_is_thread_error)
{
    green::socket_t s(ctx, zmq::socket_type::pair);
    bool threw = false;
    std::thread([&] {
        try {
            (void)s.poll(ZMQ_POLLIN, 0ms);
        } catch (const green::thread_error& e) {
            threw = std::string(e.what()).find("thread") != std::string::npos;
        }
    }).join();
    EXPECT_TRUE(threw);
    expect_usable(ctx, s);
}

// A socket_t closed on a foreign thread must stay open and owned: otherwise
// nobody can close it any more, and its context's close() waits forever.
TEST_F(socket, BadInput_close_on_a_foreign_thread_keeps_the_socket)
{
    // Its own context: if the socket leaks, closing the context would hang.
    auto* local = new green::context_t;
    {
        green::socket_t s(*local, zmq::socket_type::pair);
        testing::internal::CaptureStderr();
        std::thread([&] { s.close(); }).join();
        const std::string err = testing::internal::GetCapturedStderr();
        EXPECT_NE(err.find("thread that does not own it"), std::string::npos) << err;
        if (s.handle() == nullptr)
            FAIL() << "the socket_t lost its socket (the context is leaked, not closed)";
        expect_usable(*local, s);
    }
    delete local;
}

// Assigning to a socket_t closes what it held: on a foreign thread that
// close is refused, and so is the assignment, which would lose it open.
TEST_F(socket, BadInput_assignment_on_a_foreign_thread_keeps_the_socket)
{
    auto* local = new green::context_t; // if the socket leaks, closing it would hang
    {
        green::socket_t s(*local, zmq::socket_type::pair);
        std::thread([&] {
            EXPECT_THROW(s = green::socket_t(), green::thread_error);
        }).join();
        if (s.handle() == nullptr)
            FAIL() << "the socket_t lost its socket (the context is leaked, not closed)";
        expect_usable(*local, s);
    }
    delete local;
}

// Green calls install a hub on a thread that has none; a socket whose
// thread has ended can still be closed from another thread.
TEST_F(socket, BadInput_threads_without_a_hub)
{
    green::socket_t orphan;
    std::thread([&] {
        EXPECT_EQ(green::hub::installed(), nullptr);
        green::socket_t s(ctx, zmq::socket_type::pair);
        EXPECT_NE(green::hub::installed(), nullptr);
        expect_usable(ctx, s);
        orphan = green::socket_t(ctx, zmq::socket_type::pair);
    }).join();
    std::thread([&] {
        EXPECT_EQ(green::hub::installed(), nullptr);
        orphan.close(); // its hub is gone: nobody else could close it
        EXPECT_EQ(orphan.handle(), nullptr);
    }).join();
}

// The owner of a direction must get its turn while another fiber polls the
// socket and retries a non-blocking receive: the failing call yields.
TEST_F(socket, a_poll_and_dontwait_loop_lets_the_blocked_owner_run)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    int received = 0;
    test::run_fibers({[&] {
                          zmq::message_t m;
                          ASSERT_TRUE(p.b.recv(m)); // owns the receive direction
                          ++received;
                      },
                      [&] {
                          p.a.send(zmq::str_buffer("one"));
                          zmq::message_t m;
                          while (received == 0) {
                              zmq_pollitem_t item{p.b.handle(), 0, ZMQ_POLLIN, 0};
                              if (green::poll(&item, 1, 0ms) > 0 && p.b.recv(m, zmq::recv_flags::dontwait))
                                  ++received;
                          }
                      }});
    EXPECT_EQ(received, 1);
}

// As in zmq.green (pyzmq #622): sends and receives that succeed at once do not
// yield, so the thread's other fibers wait until this one parks.
TEST_F(socket, calls_that_succeed_at_once_do_not_yield)
{
    green::socket_t pub(ctx, zmq::socket_type::pub);
    pub.bind(test::unique_inproc());
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair, test::unique_inproc());
    bool other_ran = false;
    boost::fibers::fiber other([&] { other_ran = true; });
    for (int i = 0; i < 1000; ++i) {
        ASSERT_TRUE(pub.send(zmq::str_buffer("dropped"))); // no subscriber: never blocks
        ASSERT_TRUE(p.a.send(zmq::str_buffer("x")));
        zmq::message_t m;
        ASSERT_TRUE(p.b.recv(m));
    }
    EXPECT_FALSE(other_ran);
    other.join();
    EXPECT_TRUE(other_ran);
}
