#include "support.hpp"

#include <array>

#include <poll.h>
#include <unistd.h>

#include <thread>

using namespace std::chrono_literals;
namespace green = zmq::green;
using test::green_test;

class poll : public green_test {};

TEST_F(poll, pair_sockets_report_level_triggered_events)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    std::vector<zmq_pollitem_t> items{{p.a, 0, ZMQ_POLLIN | ZMQ_POLLOUT, 0},
                                      {p.b, 0, ZMQ_POLLIN | ZMQ_POLLOUT, 0}};
    // Wait for the connection: both become writable.
    while (!(green::poll(items, 100ms) == 2 && items[0].revents == ZMQ_POLLOUT
             && items[1].revents == ZMQ_POLLOUT)) {
    }
    p.a.send(zmq::str_buffer("x"));
    p.b.send(zmq::str_buffer("y"));
    while (!(green::poll(items, 100ms) == 2 && items[0].revents == (ZMQ_POLLIN | ZMQ_POLLOUT)
             && items[1].revents == (ZMQ_POLLIN | ZMQ_POLLOUT))) {
    }
    zmq::message_t m;
    ASSERT_TRUE(p.a.recv(m));
    ASSERT_TRUE(p.b.recv(m));
    EXPECT_EQ(green::poll(items, 0ms), 2);
    EXPECT_EQ(items[0].revents, ZMQ_POLLOUT);
    EXPECT_EQ(items[1].revents, ZMQ_POLLOUT);
}

TEST_F(poll, req_rep_events_follow_the_state_machine)
{
    test::bound_pair p(ctx, zmq::socket_type::rep, zmq::socket_type::req);
    green::socket_t& rep = p.a;
    green::socket_t& req = p.b;
    EXPECT_EQ(req.poll(ZMQ_POLLOUT, 1000ms), ZMQ_POLLOUT);
    EXPECT_EQ(rep.poll(ZMQ_POLLIN | ZMQ_POLLOUT, 0ms), 0);
    req.send(zmq::str_buffer("req"));
    EXPECT_EQ(req.poll(ZMQ_POLLIN | ZMQ_POLLOUT, 0ms), 0);
    EXPECT_EQ(rep.poll(ZMQ_POLLIN, 1000ms), ZMQ_POLLIN);
    zmq::message_t m;
    ASSERT_TRUE(rep.recv(m));
    EXPECT_EQ(rep.poll(ZMQ_POLLOUT, 0ms), ZMQ_POLLOUT);
    rep.send(zmq::str_buffer("rep"));
    EXPECT_EQ(rep.poll(ZMQ_POLLIN | ZMQ_POLLOUT, 0ms), 0);
    EXPECT_EQ(req.poll(ZMQ_POLLIN, 1000ms), ZMQ_POLLIN);
    ASSERT_TRUE(req.recv(m));
    EXPECT_EQ(req.poll(ZMQ_POLLOUT, 0ms), ZMQ_POLLOUT);
}

// pyzmq test_pubsub: a PUB is always writable and never readable, a SUB the
// reverse, and only while a message waits.
TEST_F(poll, pub_and_sub_each_report_their_one_direction)
{
    test::bound_pair p(ctx, zmq::socket_type::pub, zmq::socket_type::sub, test::unique_inproc());
    p.b.set(zmq::sockopt::subscribe, "");
    std::vector<zmq_pollitem_t> items{{p.a, 0, ZMQ_POLLIN | ZMQ_POLLOUT, 0},
                                      {p.b, 0, ZMQ_POLLIN | ZMQ_POLLOUT, 0}};
    EXPECT_EQ(green::poll(items, 0ms), 1);
    EXPECT_EQ(items[0].revents, ZMQ_POLLOUT);
    EXPECT_EQ(items[1].revents, 0);
    // The PUB drops until the subscription has arrived (inproc: a message
    // is in the pipe once the send returns).
    zmq::message_t m;
    while (!(p.a.send(zmq::str_buffer("sync")), p.b.recv(m, zmq::recv_flags::dontwait))) {
    }
    p.a.send(zmq::str_buffer("x"));
    EXPECT_EQ(green::poll(items, 5000ms), 2);
    EXPECT_EQ(items[0].revents, ZMQ_POLLOUT);
    EXPECT_EQ(items[1].revents, ZMQ_POLLIN);
    ASSERT_TRUE(p.b.recv(m));
    EXPECT_EQ(m.to_string(), "x");
    EXPECT_EQ(green::poll(items, 0ms), 1);
    EXPECT_EQ(items[1].revents, 0);
}

TEST_F(poll, raw_fd_reports_readability)
{
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    std::vector<zmq_pollitem_t> items{{nullptr, fds[0], ZMQ_POLLIN, 0}};
    EXPECT_EQ(green::poll(items, 1ms), 0);
    ASSERT_EQ(::write(fds[1], "x", 1), 1);
    EXPECT_EQ(green::poll(items, 1ms), 1);
    EXPECT_EQ(items[0].revents, ZMQ_POLLIN);
    ::close(fds[0]);
    ::close(fds[1]);
}


// As with poll(2) and cppzmq's zmq::poll, a negative fd turns an item off:
// the poll waits for the others, and times out if there are none.
TEST_F(poll, an_item_with_a_negative_fd_is_skipped)
{
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    std::vector<zmq_pollitem_t> items{{nullptr, -1, ZMQ_POLLIN, 0}, {nullptr, fds[0], ZMQ_POLLIN, 0}};
    EXPECT_EQ(green::poll(items.data(), 1, 1ms), 0);
    test::run_fibers({[&] { EXPECT_EQ(green::poll(items, 5000ms), 1); },
                      [&] { EXPECT_EQ(::write(fds[1], "x", 1), 1); }});
    EXPECT_EQ(items[0].revents, 0);
    EXPECT_EQ(items[1].revents, ZMQ_POLLIN);
    ::close(fds[0]);
    ::close(fds[1]);
}
TEST_F(poll, raw_fd_reports_urgent_data_as_pollpri)
{
    test::tcp_pair tcp;
    green::hub& h = green::hub::current();
    const green::hub_stats before = h.stats();
    int rc = -1;
    short revents = 0;
    test::run_fibers({[&] {
                          zmq_pollitem_t item{nullptr, tcp.receiver, ZMQ_POLLPRI, 0};
                          rc = green::poll(&item, 1, 10000ms);
                          revents = item.revents;
                      },
                      [&] { tcp.send_urgent(); }});
    EXPECT_EQ(rc, 1);
    EXPECT_EQ(revents, ZMQ_POLLPRI);
    // The urgent data woke it, not its timeout.
    EXPECT_EQ(h.stats().timer_wakeups, before.timer_wakeups);
}

// Urgent data does not make the fd readable: a reader is not woken for it,
// and its wait ends at its timeout.
TEST_F(poll, pending_urgent_data_does_not_wake_a_reader)
{
    test::tcp_pair tcp;
    tcp.send_urgent();
    pollfd arrived{tcp.receiver, POLLPRI, 0};
    ASSERT_EQ(::poll(&arrived, 1, 10000), 1);
    green::hub& h = green::hub::current();
    const green::hub_stats before = h.stats();
    int rc = -1;
    bool readable = true;
    const green::task reader = green::spawn([&] {
        zmq_pollitem_t item{nullptr, tcp.receiver, ZMQ_POLLIN, 0};
        rc = green::poll(&item, 1, 20ms);
        readable = green::wait_readable(tcp.receiver, 20ms);
    });
    // A wait that never ends fails the test instead of hanging it.
    if (!reader.join(10s))
        reader.kill();
    EXPECT_EQ(rc, 0);
    EXPECT_FALSE(readable);
    EXPECT_EQ(h.stats().fd_wakeups, before.fd_wakeups);
}

TEST_F(poll, timeout_is_in_milliseconds_and_other_fibers_run)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    bool other_ran = false;
    test::run_fibers({[&] {
                          std::vector<zmq_pollitem_t> items{{p.a, 0, ZMQ_POLLIN, 0}};
                          const auto start = std::chrono::steady_clock::now();
                          EXPECT_EQ(green::poll(items, 50ms), 0);
                          EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
                          EXPECT_TRUE(other_ran);
                      },
                      [&] { other_ran = true; }});
}

TEST_F(poll, zero_timeout_never_yields)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    bool other_ran = false;
    test::run_fibers({[&] {
                          std::vector<zmq_pollitem_t> items{{p.a, 0, ZMQ_POLLIN, 0}};
                          EXPECT_EQ(green::poll(items, 0ms), 0);
                          EXPECT_FALSE(other_ran);
                      },
                      [&] { other_ran = true; }});
}

TEST_F(poll, a_send_from_another_fiber_wakes_the_poller)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    short revents = 0;
    test::run_fibers({[&] {
                          std::vector<zmq_pollitem_t> items{{p.b, 0, ZMQ_POLLIN, 0}};
                          EXPECT_EQ(green::poll(items, 10000ms), 1);
                          revents = items[0].revents;
                      },
                      [&] { p.a.send(zmq::str_buffer("wake")); }});
    EXPECT_EQ(revents, ZMQ_POLLIN);
}

TEST_F(poll, socket_poll_wakes_on_send)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    test::run_fibers({[&] { EXPECT_EQ(p.b.poll(ZMQ_POLLIN, 10000ms), ZMQ_POLLIN); },
                      [&] { p.a.send(zmq::str_buffer("wake")); }});
}

namespace {

// Two plain (non-green) cppzmq PAIR sockets, a bound to endpoint, b
// connected to it.
struct plain_pair {
    explicit plain_pair(const std::string& endpoint)
    {
        a.bind(endpoint);
        b.connect(endpoint);
    }
    zmq::context_t ctx;
    zmq::socket_t a{ctx, zmq::socket_type::pair};
    zmq::socket_t b{ctx, zmq::socket_type::pair};
};

} // namespace

TEST_F(poll, plain_cppzmq_sockets_can_be_polled_too)
{
    plain_pair p("inproc://plain");
    auto& a = p.a;
    auto& b = p.b;
    test::run_fibers({[&] {
                          std::vector<zmq_pollitem_t> items{{b, 0, ZMQ_POLLIN, 0}};
                          EXPECT_EQ(green::poll(items, 10000ms), 1);
                      },
                      [&] { a.send(zmq::str_buffer("x"), zmq::send_flags::dontwait); }});
}

// The hub cannot see calls on a plain socket: another fiber's can consume
// the signal of a message the poll waits for. The poll still finds it.
TEST_F(poll, a_plain_socket_signal_another_fiber_consumed_still_ends_the_poll)
{
    plain_pair p("inproc://plain-consumed");
    auto& a = p.a;
    auto& b = p.b;
    int rc = -1;
    const green::task poller = green::spawn([&] {
        zmq_pollitem_t item{b, 0, ZMQ_POLLIN, 0};
        rc = green::poll(&item, 1, -1ms);
    });
    boost::this_fiber::yield(); // it parks
    a.send(zmq::str_buffer("x"), zmq::send_flags::dontwait);
    EXPECT_TRUE(b.get(zmq::sockopt::events) & ZMQ_POLLIN); // consumes the signal
    // A poll that never ends fails the test instead of hanging it.
    if (!poller.join(10s))
        poller.kill();
    EXPECT_EQ(rc, 1);
}

TEST_F(poll, signals_without_events_do_not_wake_the_poller)
{
    green::socket_t router(ctx, zmq::socket_type::router);
    router.bind("tcp://127.0.0.1:*");
    const std::string ep = router.get(zmq::sockopt::last_endpoint);
    const auto before = green::hub::current().stats().fd_wakeups;
    test::run_fibers({[&] {
                          std::vector<zmq_pollitem_t> items{{router, 0, ZMQ_POLLIN, 0}};
                          EXPECT_EQ(green::poll(items, 200ms), 0);
                      },
                      [&] {
                          // Peers connecting and leaving signal the router's fd.
                          for (int i = 0; i < 5; ++i) {
                              green::socket_t peer(ctx, zmq::socket_type::dealer);
                              peer.set(zmq::sockopt::linger, 0);
                              peer.connect(ep);
                              peer.poll(ZMQ_POLLOUT, 1000ms);
                          }
                      }});
    EXPECT_EQ(green::hub::current().stats().fd_wakeups, before);
}

TEST_F(poll, poller_add_modify_remove_wait_all)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    int tag = 7;
    green::poller_t<int> poller;
    poller.add(p.b, green::event_flags::pollin, &tag);
    poller.add(fds[0], green::event_flags::pollin, nullptr);
    EXPECT_EQ(poller.size(), 2u);
    EXPECT_THROW(poller.add(p.b, green::event_flags::pollin, &tag), zmq::error_t);
    std::vector<green::poller_event<int>> events(2);
    EXPECT_EQ(poller.wait_all(events, 0ms), 0u);

    p.a.send(zmq::str_buffer("x"));
    ASSERT_EQ(poller.wait_all(events, 5000ms), 1u);
    EXPECT_TRUE(events[0].socket == p.b);
    EXPECT_EQ(events[0].user_data, &tag);
    EXPECT_EQ(events[0].events, green::event_flags::pollin);

    ASSERT_EQ(::write(fds[1], "x", 1), 1);
    ASSERT_EQ(poller.wait_all(events, 0ms), 2u);
    EXPECT_EQ(events[1].fd, fds[0]);

    poller.modify(p.b, green::event_flags::none);
    ASSERT_EQ(poller.wait_all(events, 0ms), 1u);
    EXPECT_EQ(events[0].fd, fds[0]);

    poller.remove(fds[0]);
    poller.remove(p.b);
    EXPECT_EQ(poller.size(), 0u);
    EXPECT_THROW(poller.remove(p.b), zmq::error_t);
    EXPECT_THROW(poller.wait_all(events, -1ms), zmq::error_t);
    ::close(fds[0]);
    ::close(fds[1]);
}

// Another fiber may change a poller while one waits on it. Adding many
// entries (the list grows) does not disturb the wait; the added entries are
// seen at the next wait_all.
TEST_F(poll, a_poller_grown_by_another_fiber_during_a_wait_still_works)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    green::poller_t<> poller;
    poller.add(p.b, green::event_flags::pollin);
    std::vector<std::array<int, 2>> pipes(64);
    std::vector<green::poller_event<>> events(8);
    size_t got = 0;
    test::run_fibers({[&] { got = poller.wait_all(events, 5000ms); },
                      [&] {
                          for (auto& fds : pipes) {
                              ASSERT_EQ(::pipe(fds.data()), 0);
                              poller.add(fds[0], green::event_flags::pollin);
                          }
                          p.a.send(zmq::str_buffer("x"));
                      }});
    ASSERT_EQ(got, 1u);
    EXPECT_TRUE(events[0].socket == p.b);
    ASSERT_EQ(::write(pipes[5][1], "x", 1), 1);
    ASSERT_EQ(poller.wait_all(events, 0ms), 2u);
    EXPECT_EQ(events[1].fd, pipes[5][0]);
    for (auto& fds : pipes) {
        ::close(fds[0]);
        ::close(fds[1]);
    }
}

// An entry removed while a fiber waits is not reported: its event does not
// end an endless wait with 0, which cppzmq reserves for a timeout.
TEST_F(poll, an_entry_removed_during_a_wait_is_not_reported)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    test::bound_pair q(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    green::poller_t<> poller;
    poller.add(p.b, green::event_flags::pollin);
    poller.add(q.b, green::event_flags::pollin);
    std::vector<green::poller_event<>> events(2);
    size_t got = 0;
    test::run_fibers({[&] { got = poller.wait_all(events, -1ms); },
                      [&] {
                          poller.remove(q.b);
                          q.a.send(zmq::str_buffer("gone"));
                          // The read that finds q.b readable also wakes the
                          // waiter, which runs at the yield, sees q.b ready
                          // but removed, and waits again: only then does
                          // p.b's message come.
                          while (q.b.get(zmq::sockopt::events) == 0)
                              boost::this_fiber::yield();
                          boost::this_fiber::yield();
                          p.a.send(zmq::str_buffer("x"));
                      }});
    ASSERT_EQ(got, 1u);
    EXPECT_TRUE(events[0].socket == p.b);
}

// As socket.a_lost_edge_is_rescued_by_the_fallback_and_counted, for a
// fiber parked in poll (pyzmq's green Poller re-polls every 1.33 s for it).
TEST_F(poll, a_lost_edge_is_rescued_by_the_fallback_and_counted)
{
    std::thread([this] {
        green::hub& h = green::hub::current();
        h.set_fallback_interval(10ms);
        test::bound_pair p(ctx, zmq::socket_type::pull, zmq::socket_type::push,
                           test::unique_inproc());
        int rc = -1;
        boost::fibers::fiber poller([&] {
            zmq_pollitem_t item{p.a, 0, ZMQ_POLLIN, 0};
            rc = green::poll(&item, 1, 10000ms); // a re-check that never comes fails
        });
        boost::this_fiber::yield(); // the poller finds nothing and parks
        const green::hub_stats before = h.stats();
        p.b.send(zmq::str_buffer("lost"));
        EXPECT_EQ(test::lose_edges(p.a.get(zmq::sockopt::fd)), 1);
        poller.join();
        EXPECT_EQ(rc, 1);
        EXPECT_EQ(h.stats().rescues - before.rescues, 1u);
        EXPECT_EQ(h.stats().fd_wakeups, before.fd_wakeups);
    }).join();
}

TEST_F(poll, closing_a_polled_socket_is_enotsock)
{
    green::socket_t s(ctx, zmq::socket_type::pull);
    test::run_fibers({[&] {
                          std::vector<zmq_pollitem_t> items{{s, 0, ZMQ_POLLIN, 0}};
                          try {
                              green::poll(items, 10000ms);
                              ADD_FAILURE() << "poll returned";
                          } catch (const zmq::error_t& e) {
                              EXPECT_EQ(e.num(), ENOTSOCK);
                          }
                      },
                      [&] { s.close(); }});
}

// --- bad input -----------------------------------------------------------------

// -1 waits without limit; other negative timeouts are a mistake (zmq_poll
// would wait forever, hiding it), refused before anything waits.
TEST_F(poll, BadInput_timeouts_below_minus_one_are_invalid)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    for (auto timeout : {-2ms, -5ms, std::chrono::milliseconds::min()}) {
        std::vector<zmq_pollitem_t> items{{p.b, 0, ZMQ_POLLIN, 0}};
        try {
            green::poll(items, timeout);
            ADD_FAILURE() << "accepted " << timeout.count();
        } catch (const std::invalid_argument& e) {
            EXPECT_NE(std::string(e.what()).find("timeout"), std::string::npos) << e.what();
        }
        EXPECT_THROW((void)p.b.poll(ZMQ_POLLIN, timeout), std::invalid_argument);
    }
    test::run_fibers({[&] {
                          std::vector<zmq_pollitem_t> items{{p.b, 0, ZMQ_POLLIN, 0}};
                          EXPECT_EQ(green::poll(items, -1ms), 1);
                          zmq::message_t m;
                          ASSERT_TRUE(p.b.recv(m));
                      },
                      [&] { p.a.send(zmq::str_buffer("late")); }});
}

TEST_F(poll, BadInput_huge_timeout_is_a_long_wait_not_an_overflow)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    test::run_fibers({[&] {
                          std::vector<zmq_pollitem_t> items{{p.b, 0, ZMQ_POLLIN, 0}};
                          EXPECT_EQ(green::poll(items, std::chrono::milliseconds::max()), 1);
                      },
                      [&] { p.a.send(zmq::str_buffer("late")); }});
}

// poller_t's deadline saturates too, as poll's: a timeout past the clock's
// range (in nanoseconds) is a long wait. Added to the clock unchecked, it
// overflowed (UndefinedBehaviorSanitizer stops there) and could wrap to a
// deadline already passed; min() overflowed before its check.
TEST_F(poll, BadInput_poller_huge_timeout_is_a_long_wait_not_an_overflow)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    green::poller_t<> poller;
    poller.add(p.b, green::event_flags::pollin);
    std::vector<green::poller_event<>> events(1);
    const std::chrono::milliseconds millennium = std::chrono::hours(24 * 365 * 1000);
    size_t got = 0;
    test::run_fibers({[&] { got = poller.wait_all(events, millennium); },
                      [&] { p.a.send(zmq::str_buffer("late")); }});
    EXPECT_EQ(got, 1u);
    EXPECT_EQ(poller.wait_all(events, std::chrono::milliseconds::max()), 1u);
    EXPECT_THROW(poller.wait_all(events, std::chrono::milliseconds::min()), std::invalid_argument);
}

TEST_F(poll, BadInput_bad_items_are_errors_and_poll_goes_on)
{
    int not_a_socket = 0;
    std::vector<zmq_pollitem_t> garbage{{&not_a_socket, 0, ZMQ_POLLIN, 0}};
    try {
        green::poll(garbage, 10ms);
        ADD_FAILURE() << "a pointer that is no socket accepted";
    } catch (const zmq::error_t& e) {
        EXPECT_EQ(e.num(), ENOTSOCK);
    }
    // An fd that is not open is reported, as by poll(2), not waited for.
    std::vector<zmq_pollitem_t> closed_fd{{nullptr, 9999, ZMQ_POLLIN, 0}};
    EXPECT_EQ(green::poll(closed_fd, -1ms), 1);
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    p.a.send(zmq::str_buffer("x"));
    std::vector<zmq_pollitem_t> good{{p.b, 0, ZMQ_POLLIN, 0}};
    EXPECT_EQ(green::poll(good, 5000ms), 1);
}

// Items that ask for nothing are no items: without a timeout, nothing could
// end the wait. Null items are EFAULT, as in zmq_poll, whatever the timeout.
TEST_F(poll, BadInput_nothing_to_wait_for_without_a_timeout_is_efault)
{
    EXPECT_EQ(test::errno_of([] { green::poll(nullptr, 0, -1ms); }), EFAULT);
    EXPECT_EQ(test::errno_of([] { green::poll(nullptr, 3, 0ms); }), EFAULT);
    EXPECT_EQ(test::errno_of([] { green::poll(nullptr, 3, -1ms); }), EFAULT);
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    std::vector<zmq_pollitem_t> idle{
        {p.b, 0, 0, 0}, {nullptr, 0, 0, 0}, {nullptr, -1, ZMQ_POLLIN, 0}};
    EXPECT_EQ(test::errno_of([&] { green::poll(idle, -1ms); }), EFAULT);
    EXPECT_EQ(test::errno_of([&] { p.b.poll(0, -1ms); }), EFAULT);
    green::poller_t<> poller;
    poller.add(p.b, green::event_flags::none);
    std::vector<green::poller_event<>> events(1);
    EXPECT_EQ(test::errno_of([&] { poller.wait_all(events, -1ms); }), EFAULT);
    // With a timeout they wait it out, as zmq_poll does.
    EXPECT_EQ(green::poll(idle, 1ms), 0);
    EXPECT_EQ(poller.wait_all(events, 1ms), 0u);
    // One item asking is enough to wait for.
    poller.modify(p.b, green::event_flags::pollin);
    p.a.send(zmq::str_buffer("x"));
    EXPECT_EQ(poller.wait_all(events, -1ms), 1u);
}

TEST_F(poll, BadInput_poller_misuse_leaves_it_usable)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    green::poller_t<> poller;
    EXPECT_EQ(test::errno_of([&] { poller.add(green::socket_ref(), green::event_flags::pollin); }),
              ENOTSOCK);
    EXPECT_EQ(test::errno_of([&] { poller.add(-1, green::event_flags::pollin); }), EBADF);
    EXPECT_EQ(test::errno_of([&] { poller.modify(p.b, green::event_flags::pollin); }), EINVAL);
    EXPECT_EQ(test::errno_of([&] { poller.remove(p.b); }), EINVAL);
    std::vector<green::poller_event<>> events(1);
    EXPECT_EQ(test::errno_of([&] { poller.wait_all(events, -1ms); }), EFAULT);
    poller.add(p.b, green::event_flags::pollin);
    EXPECT_EQ(test::errno_of([&] { poller.add(p.b, green::event_flags::pollout); }), EINVAL);
    p.a.send(zmq::str_buffer("x"));
    EXPECT_EQ(poller.wait_all(events, 5000ms), 1u);
    // Nowhere to put what it finds, though something is ready.
    std::vector<green::poller_event<>> no_room;
    EXPECT_EQ(test::errno_of([&] { poller.wait_all(no_room, 0ms); }), EFAULT);
    EXPECT_EQ(poller.wait_all(events, 0ms), 1u);
}

// poll() on a thread that does not own a green socket must refuse it, as
// socket_t::poll and the pollitem conversion do; otherwise that thread uses
// the socket and eats the signals its owner's fibers wait for.
TEST_F(poll, BadInput_foreign_green_socket_is_thread_error)
{
    green::socket_t s(ctx, zmq::socket_type::pair);
    bool threw = false;
    std::thread([&] {
        std::vector<zmq_pollitem_t> items{{s.handle(), 0, ZMQ_POLLIN, 0}};
        try {
            green::poll(items, 0ms);
        } catch (const green::thread_error&) {
            threw = true;
        }
    }).join();
    EXPECT_TRUE(threw);
}

// A thread without a hub gets one from its first green poll.
TEST_F(poll, BadInput_thread_without_a_hub)
{
    std::thread([] {
        EXPECT_EQ(green::hub::installed(), nullptr);
        int fds[2];
        ASSERT_EQ(::pipe(fds), 0);
        ASSERT_EQ(::write(fds[1], "x", 1), 1);
        std::vector<zmq_pollitem_t> items{{nullptr, fds[0], ZMQ_POLLIN, 0}};
        EXPECT_EQ(green::poll(items, 1000ms), 1);
        EXPECT_NE(green::hub::installed(), nullptr);
        ::close(fds[0]);
        ::close(fds[1]);
    }).join();
}
