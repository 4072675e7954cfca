#include "support.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <stdexcept>
#include <thread>

using namespace std::chrono_literals;
namespace green = zmq::green;
using test::green_test;
using message = green::zmq_stream::message;

namespace {

message make(std::initializer_list<std::string> parts)
{
    message m;
    for (const auto& p : parts)
        m.emplace_back(p.data(), p.size());
    return m;
}

// A PUSH/PULL pair over inproc with n messages already in the pipe.
test::bound_pair with_backlog(green::context_t& ctx, int n)
{
    test::bound_pair p(ctx, zmq::socket_type::push, zmq::socket_type::pull, test::unique_inproc());
    for (int i = 0; i < n; ++i)
        p.a.send(zmq::str_buffer("m"));
    return p;
}

// got holds 0 .. n-1, each once, in order.
void expect_in_order(const std::vector<int>& got, int n)
{
    ASSERT_EQ(got.size(), static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
        ASSERT_EQ(got[static_cast<std::size_t>(i)], i) << "out of order";
}

std::vector<std::string> strings(const message& m)
{
    std::vector<std::string> out;
    for (const auto& f : m)
        out.push_back(f.to_string());
    return out;
}

} // namespace

class zmq_stream : public green_test {
protected:
    void SetUp() override
    {
        // A hang is reported as a failure, never waited out.
        guard_ = loop.call_later(20s, [this] {
            guard_fired_ = true;
            loop.stop();
        });
        // Tests that expect errors install their own handler.
        loop.set_error_handler(test::collect_errors(unexpected_errors_));
    }
    void TearDown() override
    {
        loop.remove_timeout(guard_);
        EXPECT_FALSE(guard_fired_) << "the loop did not finish in time";
        EXPECT_EQ(unexpected_errors_, std::vector<std::string>{});
        EXPECT_EQ(loop.stats().rescues, 0u);
        green_test::TearDown();
    }
    // Declared first: streams must go before their loop.
    green::io_loop loop;
    green::timeout_handle guard_;
    bool guard_fired_ = false;
    std::vector<std::string> unexpected_errors_;
};

// pyzmq push_pull fixture: the PUSH stream binds, the PULL stream connects.
struct push_pull {
    push_pull(green::context_t& ctx, green::io_loop& loop, const std::string& ep = test::unique_inproc())
        : push(green::socket_t(ctx, zmq::socket_type::push), loop),
          pull(green::socket_t(ctx, zmq::socket_type::pull), loop)
    {
        push.set(zmq::sockopt::linger, 0);
        pull.set(zmq::sockopt::linger, 0);
        push.bind(ep);
        pull.connect(ep);
    }
    green::zmq_stream push;
    green::zmq_stream pull;
};

// eventloop.rst: a queued send waits until the socket is able to send. A
// PUSH with no peer cannot; the peer that connects later gets the message,
// on_send reports it once, and no edge is lost (the fixture counts rescues).
TEST_F(zmq_stream, a_send_queued_before_any_peer_waits_for_one)
{
    green::zmq_stream push(green::socket_t(ctx, zmq::socket_type::push), loop);
    push.set(zmq::sockopt::linger, 0);
    push.bind("tcp://127.0.0.1:*");
    const std::string ep = push.socket().get(zmq::sockopt::last_endpoint);
    int reported = 0;
    push.send_string("early", [&](const message&, const green::send_status& status) {
        EXPECT_TRUE(status) << status.message();
        ++reported;
    });
    green::socket_t pull(ctx, zmq::socket_type::pull);
    pull.set(zmq::sockopt::linger, 0);
    std::string got;
    boost::fibers::fiber receiver;
    // Two iterations later the stream has tried, and found no peer.
    loop.add_callback([&] {
        loop.add_callback([&] {
            EXPECT_EQ(push.queued(), 1u);
            pull.connect(ep);
            receiver = boost::fibers::fiber([&] {
                zmq::message_t m;
                ASSERT_TRUE(pull.recv(m));
                got = m.to_string();
                loop.stop();
            });
        });
    });
    loop.start();
    receiver.join();
    EXPECT_EQ(got, "early");
    EXPECT_EQ(reported, 1);
    EXPECT_EQ(push.queued(), 0u);
}

// pyzmq test_callable_check, in C++ terms: an empty function is "None".
TEST_F(zmq_stream, empty_callbacks_pause_and_real_ones_resume)
{
    push_pull s(ctx, loop);
    EXPECT_FALSE(s.pull.receiving());
    s.pull.on_recv([](message&) {});
    EXPECT_TRUE(s.pull.receiving());
    s.pull.on_recv(nullptr);
    EXPECT_FALSE(s.pull.receiving());
    s.pull.on_recv_stream([](green::zmq_stream&, message&) {});
    EXPECT_TRUE(s.pull.receiving());
    s.pull.stop_on_recv();
    EXPECT_FALSE(s.pull.receiving());
    s.push.on_send([](const message&, const green::send_status&) {});
    s.push.stop_on_send();
    EXPECT_FALSE(s.push.sending());
}

// pyzmq test_on_recv_basic: the message waits before on_recv is set.
TEST_F(zmq_stream, a_message_waiting_before_on_recv_is_delivered)
{
    push_pull s(ctx, loop);
    s.push.send_multipart(make({"basic"}));
    s.push.flush(ZMQ_POLLOUT);
    ASSERT_EQ(s.pull.socket().poll(ZMQ_POLLIN, 5000ms), ZMQ_POLLIN);
    std::vector<std::string> got;
    s.pull.on_recv([&](message& m) {
        got = strings(m);
        loop.stop();
    });
    loop.start();
    EXPECT_EQ(got, (std::vector<std::string>{"basic"}));
}

// pyzmq test_on_recv_wake: the loop sleeps, then a send wakes it.
TEST_F(zmq_stream, a_message_arriving_later_wakes_the_loop)
{
    test::bound_pair p(ctx, zmq::socket_type::push, zmq::socket_type::pull);
    green::zmq_stream pull(std::move(p.b), loop);
    std::vector<std::string> got;
    pull.on_recv_strings([&](std::vector<std::string>& m) {
        got = m;
        loop.stop();
    });
    test::run_fibers({[&] { loop.start(); },
                      [&] {
                          EXPECT_GT(loop.stats().parks, 0u); // the loop is asleep
                          p.a.send(zmq::str_buffer("wake"), zmq::send_flags::sndmore);
                          p.a.send(zmq::str_buffer("up"));
                      }});
    EXPECT_EQ(got, (std::vector<std::string>{"wake", "up"}));
}

// The echo server of eventloop.rst, answering a blocking client fiber.
TEST_F(zmq_stream, echo_server_answers_a_blocking_client_on_the_same_thread)
{
    green::zmq_stream server(green::socket_t(ctx, zmq::socket_type::rep), loop);
    server.set(zmq::sockopt::linger, 0);
    server.bind("tcp://127.0.0.1:*");
    const std::string ep = server.get(zmq::sockopt::last_endpoint);
    server.on_recv_stream([](green::zmq_stream& stream, message& msg) {
        stream.send_multipart(std::move(msg));
    });
    std::vector<std::string> replies;
    test::run_fibers({[&] { loop.start(); },
                      [&] {
                          green::socket_t client(ctx, zmq::socket_type::req);
                          client.set(zmq::sockopt::linger, 0);
                          client.connect(ep);
                          for (int i = 0; i < 50; ++i) {
                              client.send(zmq::buffer("hello " + std::to_string(i)));
                              zmq::message_t reply;
                              ASSERT_TRUE(client.recv(reply));
                              replies.push_back(reply.to_string());
                          }
                          loop.stop();
                      }});
    ASSERT_EQ(replies.size(), 50u);
    EXPECT_EQ(replies[49], "hello 49");
    // A reply queued by on_recv goes out in the same handler call, without a
    // level read to find POLLOUT first: per request, one read to find the
    // request and one to find nothing more (it was three). Commands of
    // libzmq's I/O thread (the connection's setup, say) bring edges, and
    // reads, of their own: some slack, short of a third read per request.
    EXPECT_LE(loop.stats().level_checks, 2u * 50 + 50 / 2);
}

// REQ sends and receives by turns: the requests queued behind the first go
// out one reply at a time, none lost to EFSM.
TEST_F(zmq_stream, requests_queued_on_a_req_stream_go_out_one_per_reply)
{
    green::socket_t server(ctx, zmq::socket_type::rep);
    server.set(zmq::sockopt::linger, 0);
    server.bind("tcp://127.0.0.1:*");
    green::zmq_stream client(green::socket_t(ctx, zmq::socket_type::req), loop);
    client.set(zmq::sockopt::linger, 0);
    client.connect(server.get(zmq::sockopt::last_endpoint));
    std::vector<std::string> replies;
    std::vector<int> statuses;
    client.on_recv([&](message& msg) {
        replies.push_back(msg.at(0).to_string());
        if (replies.size() == 3)
            loop.stop();
    });
    client.on_send([&](const message&, const green::send_status& s) { statuses.push_back(s.error); });
    for (const char* r : {"a", "b", "c"})
        client.send_string(r);
    test::run_fibers({[&] { loop.start(); },
                      [&] {
                          server.set(zmq::sockopt::rcvtimeo, 5000);
                          for (int i = 0; i < 3; ++i) {
                              zmq::message_t m;
                              if (!server.recv(m)) {
                                  loop.stop();
                                  FAIL() << "request " << i << " never came";
                              }
                              server.send(m, zmq::send_flags::none);
                          }
                      }});
    EXPECT_EQ(replies, (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(statuses, (std::vector<int>{0, 0, 0}));
}

TEST_F(zmq_stream, hundred_streams_share_the_loop_fairly)
{
    // A stream receives at most 32 messages per loop iteration (docs/eventloop.md).
    constexpr int burst = 32, n = 100, per_stream = 3 * burst;
    std::vector<green::socket_t> senders;
    std::vector<std::unique_ptr<green::zmq_stream>> streams;
    std::vector<int> counts(n, 0);
    int total = 0;
    int worst_spread = 0;
    for (int i = 0; i < n; ++i) {
        const auto ep = test::unique_inproc();
        senders.emplace_back(ctx, zmq::socket_type::push);
        senders.back().set(zmq::sockopt::linger, 0);
        senders.back().bind(ep);
        streams.push_back(std::make_unique<green::zmq_stream>(
            green::socket_t(ctx, zmq::socket_type::pull), loop));
        streams.back()->set(zmq::sockopt::linger, 0);
        streams.back()->connect(ep);
        // inproc: the messages are in the pipe once send returns.
        for (int k = 0; k < per_stream; ++k)
            ASSERT_TRUE(senders.back().send(zmq::str_buffer("m"), zmq::send_flags::dontwait));
    }
    for (int i = 0; i < n; ++i)
        streams[static_cast<size_t>(i)]->on_recv([&, i](message&) {
            ++counts[static_cast<size_t>(i)];
            const auto [lo, hi] = std::minmax_element(counts.begin(), counts.end());
            worst_spread = std::max(worst_spread, *hi - *lo);
            if (++total == n * per_stream)
                loop.stop();
        });
    loop.start();
    EXPECT_EQ(total, n * per_stream);
    // One burst per stream per round: no stream ever gets more than a burst ahead.
    EXPECT_LE(worst_spread, burst);
    EXPECT_GT(worst_spread, 1); // bursts, not one message per iteration
    streams.clear();
}

TEST_F(zmq_stream, pausing_on_recv_leaves_messages_in_libzmq_under_hwm)
{
    const auto ep = test::unique_inproc();
    green::socket_t sender(ctx, zmq::socket_type::push);
    sender.set(zmq::sockopt::sndhwm, 10);
    sender.set(zmq::sockopt::linger, 0);
    sender.bind(ep);
    green::zmq_stream pull(green::socket_t(ctx, zmq::socket_type::pull), loop);
    pull.set(zmq::sockopt::rcvhwm, 10);
    pull.set(zmq::sockopt::linger, 0);
    pull.connect(ep);

    int received = 0;
    int sent = 0;
    bool blocked = false;
    auto count = [&](message&) { ++received; };
    pull.on_recv(count);
    pull.on_recv(nullptr); // paused before anything arrives
    test::run_fibers({[&] { loop.start(); },
                      [&] {
                          // Back-pressure: with nobody receiving, sends stop at the HWMs.
                          for (int i = 0; i < 1000; ++i) {
                              if (!sender.send(zmq::str_buffer("x"), zmq::send_flags::dontwait)) {
                                  blocked = true;
                                  break;
                              }
                              ++sent;
                              boost::this_fiber::yield(); // give the loop every chance
                          }
                          EXPECT_TRUE(blocked);
                          EXPECT_EQ(received, 0);
                          pull.on_recv(count);
                          // Now the stream drains and the sender gets through.
                          for (int i = 0; i < 100; ++i) {
                              ASSERT_TRUE(sender.send(zmq::str_buffer("y")));
                              ++sent;
                          }
                          while (received < sent)
                              boost::this_fiber::yield();
                          loop.stop();
                      }});
    EXPECT_LT(sent - 100, 1000);
    EXPECT_EQ(received, sent);
}

TEST_F(zmq_stream, flush_honours_events_and_limits)
{
    push_pull s(ctx, loop);
    for (int i = 0; i < 5; ++i)
        s.push.send_string(std::to_string(i));
    EXPECT_TRUE(s.push.sending());
    EXPECT_EQ(s.push.flush(ZMQ_POLLIN), 0u); // nothing to receive
    EXPECT_EQ(s.push.queued(), 5u);
    EXPECT_EQ(s.push.flush(ZMQ_POLLOUT, 2), 2u);
    EXPECT_EQ(s.push.queued(), 3u);
    EXPECT_EQ(s.push.flush(), 3u);
    EXPECT_FALSE(s.push.sending());
    EXPECT_EQ(s.push.flush(), 0u);

    std::vector<std::string> got;
    s.pull.on_recv([&](message& m) { got.push_back(m[0].to_string()); });
    ASSERT_EQ(s.pull.socket().poll(ZMQ_POLLIN, 5000ms), ZMQ_POLLIN);
    EXPECT_EQ(s.pull.flush(ZMQ_POLLIN, 2), 2u);
    EXPECT_EQ(got, (std::vector<std::string>{"0", "1"}));
    EXPECT_EQ(s.pull.flush(ZMQ_POLLOUT), 0u); // nothing queued to send
    EXPECT_EQ(s.pull.flush(ZMQ_POLLIN), 3u);
    EXPECT_EQ(got, (std::vector<std::string>{"0", "1", "2", "3", "4"}));
    EXPECT_THROW(s.pull.flush(0x100), std::invalid_argument);

    // Without a callback, flush receives and drops.
    s.pull.stop_on_recv();
    s.push.send_string("dropped");
    s.push.flush(ZMQ_POLLOUT);
    ASSERT_EQ(s.pull.socket().poll(ZMQ_POLLIN, 5000ms), ZMQ_POLLIN);
    EXPECT_EQ(s.pull.flush(ZMQ_POLLIN), 1u);
    EXPECT_EQ(got.size(), 5u);
}

TEST_F(zmq_stream, a_hundred_thousand_queued_sends_drain_in_order)
{
    constexpr int n = 100000;
    push_pull s(ctx, loop);
    int next_sent = 0, next_received = 0, send_calls = 0;
    bool order_ok = true;
    s.push.on_send([&](const message& m, const green::send_status& status) {
        ++send_calls;
        if (!status || m.size() != 1 || m[0].to_string() != std::to_string(next_sent++))
            order_ok = false;
    });
    s.pull.on_recv([&](message& m) {
        if (m[0].to_string() != std::to_string(next_received++))
            order_ok = false;
        if (next_received == n)
            loop.stop();
    });
    for (int i = 0; i < n; ++i)
        s.push.send_string(std::to_string(i));
    EXPECT_EQ(s.push.queued(), static_cast<size_t>(n)); // nothing sent synchronously
    loop.start();
    EXPECT_TRUE(order_ok);
    EXPECT_EQ(next_received, n);
    EXPECT_EQ(send_calls, n);
    EXPECT_FALSE(s.push.sending());
}

// Sends go out in bursts of at most 32 per loop iteration (docs/eventloop.md),
// as receives do: not one message per iteration, and not all at once.
TEST_F(zmq_stream, queued_sends_go_out_in_bursts)
{
    constexpr int burst = 32, n = 3 * burst + 5;
    push_pull s(ctx, loop);
    std::map<std::uint64_t, int> sends_per_iteration;
    int sent = 0;
    s.push.on_send([&](const message&, const green::send_status& status) {
        EXPECT_TRUE(status);
        ++sends_per_iteration[loop.stats().iterations];
        if (++sent == n)
            loop.stop();
    });
    for (int i = 0; i < n; ++i)
        s.push.send_string(std::to_string(i));
    loop.start();
    ASSERT_EQ(sent, n);
    int most = 0;
    for (const auto& [iteration, count] : sends_per_iteration)
        most = std::max(most, count);
    EXPECT_EQ(most, burst);
    EXPECT_GE(sends_per_iteration.size(), 4u);
}

// A burst cut short by its bound proves the socket ready: the loop calls the
// stream again without a ZMQ_EVENTS read. Only the bursts that drain it end
// with one.
TEST_F(zmq_stream, a_busy_stream_is_called_again_without_a_level_read)
{
    constexpr int burst = 32, bursts = 10, n = bursts * burst;
    auto p = with_backlog(ctx, n);
    green::zmq_stream stream(std::move(p.b), loop);
    int got = 0;
    stream.on_recv([&](message&) {
        if (++got == n)
            loop.stop();
    });
    loop.start();
    ASSERT_EQ(got, n);
    EXPECT_GE(loop.stats().iterations, static_cast<std::uint64_t>(bursts));
    EXPECT_LE(loop.stats().level_checks, 2u); // the first, and none between bursts
}

// A presumption that turns out wrong (the last burst took exactly the bound)
// costs one empty call; the next message still arrives by its edge.
TEST_F(zmq_stream, a_stream_drained_by_a_full_burst_still_gets_the_next_message)
{
    constexpr int burst = 32;
    auto p = with_backlog(ctx, burst);
    green::zmq_stream stream(std::move(p.b), loop);
    int got = 0;
    stream.on_recv([&](message&) {
        if (++got == burst + 1)
            loop.stop();
    });
    test::run_fibers({[&] { loop.start(); },
                      [&] {
                          // Until the loop has tried again, found nothing and parked.
                          while (loop.stats().parks == 0 && loop.running())
                              boost::this_fiber::yield();
                          EXPECT_EQ(got, burst);
                          p.a.send(zmq::str_buffer("late"));
                      }});
    EXPECT_EQ(got, burst + 1);
}

namespace {

// sender's level says POLLOUT, yet libzmq refuses msg (the queued filler
// messages fill the pipe to receiver). A stream with msg queued waits for the
// receiver to make room: the loop parks rather than retrying the send on
// every iteration, and msg arrives, as `last`, once the receiver reads. With
// the fallback re-check off, only the socket's edges end the loop's waits.
void expect_a_refused_send_parks_the_loop(green::io_loop& loop, green::socket_t& sender,
                                          green::socket_t& receiver, int fillers,
                                          const test::strings& filler, message msg,
                                          const test::strings& last)
{
    ASSERT_GT(fillers, 0);
    ASSERT_TRUE(sender.get(zmq::sockopt::events) & ZMQ_POLLOUT);
    loop.set_fallback_interval(0ms);
    receiver.set(zmq::sockopt::rcvtimeo, 10000); // a lost message fails, not hangs
    green::zmq_stream stream(sender, loop);
    int reported = 0;
    stream.send_multipart(std::move(msg), [&](const message&, const green::send_status& status) {
        EXPECT_TRUE(status) << status.message();
        ++reported;
    });
    const green::io_loop_stats before = loop.stats();
    bool spun = false;
    test::strings got;
    test::run_fibers({[&] { loop.start(); },
                      [&] {
                          // The stream tried at the loop's first iteration; a
                          // loop that waits parks at its next.
                          while (loop.stats().parks == before.parks) {
                              if (loop.stats().iterations - before.iterations > 100) {
                                  spun = true;
                                  loop.stop();
                                  return;
                              }
                              boost::this_fiber::yield();
                          }
                          for (int i = 0; i < fillers; ++i)
                              EXPECT_EQ(test::recv_strs(receiver), filler);
                          got = test::recv_strs(receiver);
                          loop.stop();
                      }});
    EXPECT_FALSE(spun) << "the loop retried the refused send on every iteration, never parking";
    EXPECT_EQ(got, last);
    EXPECT_EQ(reported, 1);
    EXPECT_EQ(stream.queued(), 0u);
}

} // namespace

// A ROUTER_MANDATORY says POLLOUT while any peer has room ("idle"), and
// refuses a message for a full one.
TEST_F(zmq_stream, a_router_mandatory_send_to_a_full_peer_parks_the_loop_until_it_reads)
{
    test::router_with_a_full_peer r(ctx);
    expect_a_refused_send_parks_the_loop(loop, r.router, r.full, r.queued, {"x"},
                                         make({"full", "last"}), {"last"});
}

// An XPUB_NODROP always says POLLOUT, and refuses a message while a
// subscriber's pipe is full.
TEST_F(zmq_stream, an_xpub_nodrop_send_to_a_full_subscriber_parks_the_loop_until_it_reads)
{
    green::socket_t pub(ctx, zmq::socket_type::xpub);
    green::socket_t sub(ctx, zmq::socket_type::sub);
    for (auto* s : {&pub, &sub})
        s->set(zmq::sockopt::linger, 0);
    pub.set(zmq::sockopt::xpub_nodrop, 1);
    pub.set(zmq::sockopt::sndhwm, 1);
    const auto ep = test::unique_inproc();
    pub.bind(ep);
    sub.set(zmq::sockopt::rcvhwm, 1);
    sub.set(zmq::sockopt::subscribe, "");
    sub.connect(ep);
    ASSERT_EQ(test::recv_strs(pub), test::strings{std::string(1, '\1')}); // subscribed
    int queued = 0;
    while (pub.send(zmq::str_buffer("x"), zmq::send_flags::dontwait))
        ++queued;
    expect_a_refused_send_parks_the_loop(loop, pub, sub, queued, {"x"}, make({"last"}), {"last"});
}

TEST_F(zmq_stream, a_per_send_callback_replaces_on_send_for_good)
{
    push_pull s(ctx, loop);
    int first = 0, second = 0;
    s.push.on_send([&](const message&, const green::send_status&) { ++first; });
    s.push.send_string("a");
    s.push.send_string("b", [&](const message&, const green::send_status&) { ++second; });
    s.push.send_string("c");
    EXPECT_EQ(s.push.flush(ZMQ_POLLOUT), 3u);
    EXPECT_EQ(first, 0); // replaced before any send ran
    EXPECT_EQ(second, 3);
}

TEST_F(zmq_stream, send_errors_reach_on_send_as_status)
{
    green::zmq_stream router(green::socket_t(ctx, zmq::socket_type::router), loop);
    router.set(zmq::sockopt::router_mandatory, true);
    router.set(zmq::sockopt::linger, 0);
    const auto ep = test::unique_inproc();
    router.bind(ep);
    // With ROUTER_MANDATORY, POLLOUT needs a peer: connect one and hear from it.
    green::socket_t peer(ctx, zmq::socket_type::dealer);
    peer.set(zmq::sockopt::linger, 0);
    peer.connect(ep);
    peer.send(zmq::str_buffer("hi"));
    router.on_recv([&](message&) { router.send_multipart(make({"nobody", "", "hello"})); });
    int status = 0;
    std::vector<std::string> echoed;
    router.on_send_stream([&](green::zmq_stream& st, const message& m, const green::send_status& s) {
        EXPECT_EQ(&st, &router);
        status = s.error;
        echoed = strings(m);
        loop.stop();
    });
    loop.start();
    EXPECT_EQ(status, EHOSTUNREACH);
    EXPECT_EQ(echoed, (std::vector<std::string>{"nobody", "", "hello"}));
    EXPECT_FALSE(router.closed());
}

TEST_F(zmq_stream, exceptions_in_callbacks_are_reported_and_the_stream_goes_on)
{
    push_pull s(ctx, loop);
    std::vector<std::string> errors;
    loop.set_error_handler(test::collect_errors(errors));
    int calls = 0;
    s.pull.on_recv([&](message&) {
        if (++calls == 2)
            loop.stop();
        throw std::runtime_error("callback failed");
    });
    s.push.send_string("1");
    s.push.send_string("2");
    loop.start();
    EXPECT_EQ(calls, 2);
    EXPECT_EQ(errors.size(), 2u);
    EXPECT_FALSE(s.pull.closed());
}

TEST_F(zmq_stream, close_inside_a_callback)
{
    push_pull s(ctx, loop);
    bool close_called = false;
    int calls = 0;
    s.pull.set_close_callback([&] { close_called = true; });
    s.pull.on_recv([&](message&) {
        ++calls;
        s.pull.close();
        EXPECT_TRUE(s.pull.closed());
        loop.call_later(5ms, [&] { loop.stop(); });
    });
    s.push.send_string("1");
    s.push.send_string("2");
    loop.start();
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(close_called);
    EXPECT_THROW(s.pull.on_recv([](message&) {}), std::logic_error);
    EXPECT_THROW(s.pull.send_string("x"), std::logic_error);
    s.pull.close(); // idempotent
}

// The replaced callback keeps running with its own captures: small ones (held
// inside std::function) and large ones (on the heap).
TEST_F(zmq_stream, a_callback_that_replaces_itself_keeps_its_captures)
{
    struct state {
        green::io_loop& loop;
        push_pull s;
        std::vector<std::string> seen;
        green::zmq_stream::recv_callback record_next;
    } st{loop, push_pull(ctx, loop), {}, {}};
    st.record_next = [&st](message& m) {
        st.seen.push_back("next " + m[0].to_string());
        st.loop.stop();
    };
    int small_tag = 7; // not const: the lambda must hold a copy
    auto small = [p = &st, small_tag](message& m) {
        p->s.pull.on_recv(p->record_next);
        p->seen.push_back("small " + std::to_string(small_tag) + " " + m[0].to_string());
    };
    static_assert(sizeof small <= 16, "std::function keeps it inside itself");
    st.s.pull.on_recv(small);
    st.s.push.send_string("1");
    st.s.push.flush(ZMQ_POLLOUT);
    ASSERT_EQ(st.s.pull.socket().poll(ZMQ_POLLIN, 5000ms), ZMQ_POLLIN);
    EXPECT_EQ(st.s.pull.flush(ZMQ_POLLIN, 1), 1u);

    const std::string large_tag(100, 'x');
    st.s.pull.on_recv([p = &st, large_tag](message& m) {
        p->s.pull.on_recv(p->record_next);
        p->seen.push_back("large " + large_tag.substr(0, 3) + " " + m[0].to_string());
    });
    st.s.push.send_string("2");
    st.s.push.send_string("3");
    loop.start();
    EXPECT_EQ(st.seen, (std::vector<std::string>{"small 7 1", "large xxx 2", "next 3"}));
}

// A callback that flushes receives the next message in a nested call; its own
// message stays as it was.
TEST_F(zmq_stream, a_flush_inside_on_recv_leaves_the_outer_message_intact)
{
    push_pull s(ctx, loop);
    std::vector<std::string> seen;
    s.pull.on_recv([&](message& m) {
        const std::string before = m[0].to_string();
        if (before == "outer") {
            EXPECT_EQ(s.pull.flush(ZMQ_POLLIN, 1), 1u);
        }
        seen.push_back(before + "=" + m[0].to_string() + "/" + std::to_string(m.size()));
        if (seen.size() == 2)
            loop.stop();
    });
    s.push.send_multipart(make({"outer"}));
    s.push.send_multipart(make({"inner", "frame"}));
    s.push.flush(ZMQ_POLLOUT);
    loop.start();
    EXPECT_EQ(seen, (std::vector<std::string>{"inner=inner/2", "outer=outer/1"}));
}

// Each message's callback flushing for the next nests a flush per message:
// ten thousand of them on a fiber's stack overflowed it. Past a few levels
// the nested flush leaves the messages to the flush below it.
TEST_F(zmq_stream, a_callback_that_flushes_for_each_message_does_not_overflow_the_stack)
{
    constexpr int n = 10000;
    std::vector<int> got;
    green::spawn([&] {
        green::io_loop inner;
        auto ep = test::unique_inproc();
        green::socket_t push(ctx, zmq::socket_type::push);
        push.set(zmq::sockopt::sndhwm, 0);
        push.bind(ep);
        green::socket_t pull_socket(ctx, zmq::socket_type::pull);
        pull_socket.set(zmq::sockopt::rcvhwm, 0);
        pull_socket.connect(ep);
        for (int i = 0; i < n; ++i)
            push.send(zmq::buffer(std::to_string(i)));
        green::zmq_stream pull(std::move(pull_socket), inner);
        pull.on_recv([&](message& m) {
            got.push_back(std::stoi(m[0].to_string()));
            if (got.size() < static_cast<std::size_t>(n))
                pull.flush(ZMQ_POLLIN, 1);
            else
                inner.stop();
        });
        inner.start();
    }).join();
    expect_in_order(got, n);
}

// An unlimited flush whose callback flushes one more: past the nesting cap
// the nested flushes leave messages and mark the stream flushed, which must
// neither stop the outer flush short nor make it count without receiving.
TEST_F(zmq_stream, an_unlimited_flush_over_nested_flushes_takes_every_message_once)
{
    constexpr int n = 40;
    push_pull s(ctx, loop);
    std::vector<int> got;
    std::size_t nested = 0;
    s.pull.on_recv([&](message& m) {
        got.push_back(std::stoi(m[0].to_string()));
        nested += s.pull.flush(ZMQ_POLLIN, 1);
    });
    for (int i = 0; i < n; ++i)
        s.push.send_string(std::to_string(i));
    s.push.flush(ZMQ_POLLOUT);
    const std::size_t outer = s.pull.flush(ZMQ_POLLIN);
    EXPECT_EQ(outer + nested, static_cast<std::size_t>(n)) << "each message counted once";
    expect_in_order(got, n);
}

// A callback 16 flushes deep that flushes until the next message comes, as a
// REQ stream's callback waiting for its reply would: its first flush is
// refused, the next ones go one level deeper and bring the message. Refused
// every time, the callback spun for ever.
TEST_F(zmq_stream, a_callback_at_the_nesting_cap_that_flushes_until_a_message_comes_gets_it)
{
    constexpr int n = 20;
    push_pull s(ctx, loop);
    std::vector<int> got;
    int flushes_waiting = 0;
    s.pull.on_recv([&](message& m) {
        got.push_back(std::stoi(m[0].to_string()));
        if (got.size() != 16) {
            s.pull.flush(ZMQ_POLLIN, 1);
            return;
        }
        const std::size_t want = got.size() + 1; // 16 flushes deep
        while (got.size() < want && ++flushes_waiting < 1000) // a spin guard only
            s.pull.flush(ZMQ_POLLIN, 1);
    });
    for (int i = 0; i < n; ++i)
        s.push.send_string(std::to_string(i));
    s.push.flush(ZMQ_POLLOUT);
    ASSERT_EQ(s.pull.socket().poll(ZMQ_POLLIN, 5000ms), ZMQ_POLLIN);
    EXPECT_EQ(s.pull.flush(ZMQ_POLLIN, 1), 1u);
    EXPECT_EQ(flushes_waiting, 2) << "the waiting callback's first flush is refused, its second nests";
    EXPECT_EQ(got.size(), 17u);
    s.pull.flush(ZMQ_POLLIN); // the rest
    expect_in_order(got, n);
}

// Callbacks that each wait in flush for the next message nest without end,
// as in pyzmq: past 32 levels flush throws, where the stack would overflow.
TEST_F(zmq_stream, flushes_nested_past_the_limit_throw_rather_than_overflow_the_stack)
{
    constexpr std::size_t n = 100;
    push_pull s(ctx, loop);
    std::size_t got = 0;
    std::vector<std::string> errors;
    std::vector<std::size_t> failed_at;
    s.pull.on_recv([&](message&) {
        const std::size_t want = ++got + 1;
        int spins = 0; // a guard only
        try {
            while (got < want && got < n && ++spins < 1000)
                s.pull.flush(ZMQ_POLLIN, 1);
        } catch (const std::runtime_error& e) {
            errors.emplace_back(e.what());
            failed_at.push_back(got);
        }
    });
    for (std::size_t i = 0; i < n; ++i)
        s.push.send_string("m");
    s.push.flush(ZMQ_POLLOUT);
    ASSERT_EQ(s.pull.socket().poll(ZMQ_POLLIN, 5000ms), ZMQ_POLLIN);
    while (got < n && s.pull.flush(ZMQ_POLLIN, 1) == 1) {
    }
    EXPECT_EQ(got, n);
    EXPECT_EQ(failed_at, (std::vector<std::size_t>{32, 64, 96})) << "one failure per chain";
    ASSERT_FALSE(errors.empty());
    EXPECT_NE(errors[0].find("nested 32 deep"), std::string::npos) << errors[0];
}

// The nesting cap counts the calling fiber's flushes: a callback parked 16
// flushes deep in one fiber must not turn another fiber's first flush away.
TEST_F(zmq_stream, a_flush_nests_only_on_its_own_fibers_flushes)
{
    push_pull s(ctx, loop);
    green::event release;
    std::vector<std::string> got;
    s.pull.on_recv([&](message& m) {
        got.push_back(m[0].to_string());
        if (got.size() < 16)
            s.pull.flush(ZMQ_POLLIN, 1);
        else if (got.size() == 16)
            release.wait(5000ms); // parks 16 flushes deep
    });
    for (int i = 0; i < 20; ++i)
        s.push.send_string(std::to_string(i));
    s.push.flush(ZMQ_POLLOUT);
    ASSERT_EQ(s.pull.socket().poll(ZMQ_POLLIN, 5000ms), ZMQ_POLLIN);
    std::size_t other = 0;
    test::run_fibers({[&] { EXPECT_EQ(s.pull.flush(ZMQ_POLLIN, 1), 1u); },
                      [&] {
                          ASSERT_EQ(got.size(), 16u); // the first fiber is parked
                          other = s.pull.flush(ZMQ_POLLIN, 1);
                          release.set();
                      }});
    EXPECT_EQ(other, 1u) << "the second fiber's flush was taken for a nested one";
    ASSERT_EQ(got.size(), 17u);
    EXPECT_EQ(got.back(), "16");
}

// A flush marks the stream flushed until the loop's next round of callbacks.
// One whose callback parks over that round, begun while an earlier flush's
// mark was set, must leave a mark that the loop resets again: kept for good,
// it held the loop's dispatch of the stream back for ever.
TEST_F(zmq_stream, a_flush_whose_callback_parks_over_the_loops_callbacks_leaves_no_lasting_mark)
{
    push_pull s(ctx, loop);
    green::event release;
    std::vector<std::string> got;
    s.pull.on_recv([&](message& m) {
        got.push_back(m[0].to_string());
        if (got.back() == "park")
            release.wait(5000ms);
        if (got.back() == "last")
            loop.stop();
    });
    s.push.send_string("first");
    s.push.send_string("park");
    s.push.flush(ZMQ_POLLOUT);
    ASSERT_EQ(s.pull.socket().poll(ZMQ_POLLIN, 5000ms), ZMQ_POLLIN);
    ASSERT_EQ(s.pull.flush(ZMQ_POLLIN, 1), 1u); // marked, its reset queued
    test::run_fibers({[&] { EXPECT_EQ(s.pull.flush(ZMQ_POLLIN, 1), 1u); },
                      [&] {
                          // The first round resets the mark under the parked
                          // flush; the second lets that flush end.
                          loop.add_callback([&] {
                              loop.add_callback([&] {
                                  release.set();
                                  loop.add_callback([&] { s.push.send_string("last"); });
                              });
                          });
                          loop.start();
                      }});
    EXPECT_EQ(got, (std::vector<std::string>{"first", "park", "last"}));
}

// A callback that pauses receiving inside a flush: the flush stops there,
// and the messages after it wait in libzmq for the next on_recv. The flush
// went on receiving them without a callback, dropping them.
TEST_F(zmq_stream, stop_on_recv_inside_a_flush_leaves_the_rest_waiting)
{
    push_pull s(ctx, loop);
    std::vector<std::string> got;
    s.pull.on_recv([&](message& m) {
        got.push_back(m[0].to_string());
        s.pull.stop_on_recv();
    });
    for (int i = 0; i < 3; ++i)
        s.push.send_string(std::to_string(i));
    s.push.flush(ZMQ_POLLOUT);
    ASSERT_EQ(s.pull.socket().poll(ZMQ_POLLIN, 5000ms), ZMQ_POLLIN);
    EXPECT_EQ(s.pull.flush(), 1u);
    EXPECT_FALSE(s.pull.receiving());
    s.pull.on_recv([&](message& m) {
        got.push_back(m[0].to_string());
        if (got.size() == 3)
            loop.stop();
    });
    loop.start();
    EXPECT_EQ(got, (std::vector<std::string>{"0", "1", "2"}));
}

TEST_F(zmq_stream, destroying_a_stream_inside_its_own_callback)
{
    auto ep = test::unique_inproc();
    green::zmq_stream push(green::socket_t(ctx, zmq::socket_type::push), loop);
    push.set(zmq::sockopt::linger, 0);
    push.bind(ep);
    auto pull = std::make_unique<green::zmq_stream>(green::socket_t(ctx, zmq::socket_type::pull), loop);
    pull->connect(ep);
    bool close_called = false;
    pull->set_close_callback([&] { close_called = true; });
    pull->on_recv_stream([&](green::zmq_stream&, message&) {
        pull.reset();
        loop.add_callback([&] { loop.stop(); });
    });
    push.send_string("1");
    push.send_string("2");
    loop.start();
    EXPECT_FALSE(pull);
    EXPECT_TRUE(close_called);
}

// pyzmq test_shadow_socket_close: the socket closes behind the stream's back.
TEST_F(zmq_stream, a_socket_closed_behind_the_stream_degrades_to_a_warning)
{
    test::bound_pair p(ctx, zmq::socket_type::push, zmq::socket_type::pull);
    green::zmq_stream pull(green::socket_ref(p.b), loop);
    for (int i = 0; i < 10; ++i)
        p.a.send(zmq::str_buffer("m"));
    int got = 0;
    pull.on_recv([&](message&) {
        if (++got == 1) {
            p.b.close(); // the owner closes it while more dispatches are due
            loop.call_later(10ms, [&] { loop.stop(); });
        }
    });
    testing::internal::CaptureStderr();
    loop.start();
    EXPECT_TRUE(pull.closed());
    pull.close();
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("zmq_stream"), std::string::npos) << err;
    EXPECT_EQ(got, 1);
}

TEST_F(zmq_stream, a_terminated_context_degrades_to_a_warning)
{
    green::context_t other;
    green::zmq_stream pull(green::socket_t(other, zmq::socket_type::pull), loop);
    pull.on_recv([](message&) {});
    bool closed = false;
    pull.set_close_callback([&] { closed = true; });
    loop.add_callback([&] { other.shutdown(); });
    loop.call_later(20ms, [&] { loop.stop(); });
    testing::internal::CaptureStderr();
    loop.start();
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_TRUE(closed);
    EXPECT_TRUE(pull.closed());
    EXPECT_NE(err.find("terminating its context"), std::string::npos) << err;
    other.close(); // the stream closed its socket: this returns
}

TEST_F(zmq_stream, streams_on_the_current_loop_and_close_all)
{
    // pyzmq's historical tests: an explicit loop, closed with all_fds.
    green::socket_t a(ctx, zmq::socket_type::pair);
    green::socket_t b(ctx, zmq::socket_type::pair);
    const auto ep = test::unique_inproc();
    a.bind(ep);
    b.connect(ep);
    {
        green::zmq_stream sa(green::socket_ref(a), loop);
        green::zmq_stream sb(green::socket_ref(b), loop);
        std::string got;
        sb.on_recv([&](message& m) {
            got = m[0].to_string();
            loop.stop();
        });
        sa.send_string("explicit");
        loop.start();
        EXPECT_EQ(got, "explicit");
        EXPECT_EQ(&sa.loop(), &loop);
    }
    {
        green::zmq_stream def{green::socket_ref(a)};
        EXPECT_EQ(&def.loop(), &green::io_loop::current());
    }
    loop.add_handler(a, [](short) {}, ZMQ_POLLIN);
    loop.add_handler(b, [](short) {}, ZMQ_POLLIN);
    loop.remove_timeout(guard_);
    loop.close(true);
    EXPECT_EQ(a.handle(), nullptr);
    EXPECT_EQ(b.handle(), nullptr);
}

// pyzmq #1177: a ZMQ_STREAM socket's fd says only that something may have
// happened; the stream must take the connection notice and the data.
TEST_F(zmq_stream, a_stream_socket_serves_a_raw_tcp_client)
{
    green::zmq_stream server(green::socket_t(ctx, zmq::socket_type::stream), loop);
    server.set(zmq::sockopt::linger, 0);
    server.bind("tcp://127.0.0.1:*");
    const std::string ep = server.get(zmq::sockopt::last_endpoint);
    std::vector<std::string> seen;
    server.on_recv([&](message& m) {
        ASSERT_EQ(m.size(), 2u);
        seen.push_back(m[1].to_string());
        if (m[1].size() != 0) {
            message reply;
            reply.push_back(std::move(m[0]));
            reply.emplace_back("world", 5);
            server.send_multipart(std::move(reply));
        }
    });
    std::string answer;
    test::run_fibers({[&] { loop.start(); },
                      [&] {
                          sockaddr_in addr{};
                          addr.sin_family = AF_INET;
                          addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                          addr.sin_port = htons(static_cast<std::uint16_t>(
                              std::stoi(ep.substr(ep.rfind(':') + 1))));
                          const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                          ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
                          ASSERT_EQ(::write(fd, "hello", 5), 5);
                          char buf[16];
                          while (answer.size() < 5 && green::wait_readable(fd, 10s)) {
                              const ssize_t n = ::read(fd, buf, sizeof buf);
                              if (n <= 0)
                                  break;
                              answer.append(buf, static_cast<size_t>(n));
                          }
                          ::close(fd);
                          loop.stop();
                      }});
    EXPECT_EQ(answer, "world");
    ASSERT_GE(seen.size(), 2u);
    EXPECT_EQ(seen[0], ""); // the connection
    EXPECT_EQ(seen[1], "hello");
}

// pyzmq #374: senders that queue their messages without waiting and exit at
// once (closing socket and context, with the default linger) lose none of
// them on the way to a stream.
TEST_F(zmq_stream, senders_that_exit_at_once_deliver_every_message)
{
    constexpr int senders = 10, each = 100;
    green::zmq_stream pull(green::socket_t(ctx, zmq::socket_type::pull), loop);
    pull.set(zmq::sockopt::linger, 0);
    pull.bind("tcp://127.0.0.1:*");
    const std::string ep = pull.get(zmq::sockopt::last_endpoint);
    std::map<std::string, int> got;
    int total = 0;
    pull.on_recv([&](message& m) {
        ++got[m.at(0).to_string()];
        if (++total == senders * each)
            loop.stop();
    });
    std::vector<std::thread> threads;
    for (int t = 0; t < senders; ++t)
        threads.emplace_back([&ep, t] {
            green::context_t own;
            green::socket_t push(own, zmq::socket_type::push);
            push.connect(ep);
            for (int i = 0; i < each; ++i)
                EXPECT_TRUE(push.send(zmq::buffer(std::to_string(t) + ":" + std::to_string(i)),
                                      zmq::send_flags::dontwait));
        });
    loop.start();
    for (auto& t : threads)
        t.join();
    EXPECT_EQ(total, senders * each);
    EXPECT_EQ(got.size(), static_cast<size_t>(senders * each)); // each message once
}

TEST_F(zmq_stream, a_closed_socket_cannot_make_a_stream)
{
    green::socket_t s;
    EXPECT_THROW(green::zmq_stream(std::move(s), loop), zmq::error_t);
    EXPECT_THROW(green::zmq_stream(green::socket_ref(), loop), zmq::error_t);
    push_pull p(ctx, loop);
    EXPECT_THROW(p.push.send_multipart({}), std::invalid_argument);
}

// --- bad input -----------------------------------------------------------------

TEST_F(zmq_stream, BadInput_misuse_leaves_the_stream_usable)
{
    push_pull p(ctx, loop);
    EXPECT_THROW(p.push.send_multipart({}), std::invalid_argument);
    for (short events : {short{ZMQ_POLLERR}, short{0x100}, short{-1}})
        EXPECT_THROW(p.pull.flush(events), std::invalid_argument) << events;
    std::vector<std::string> got;
    p.pull.on_recv([&](message& m) {
        got = strings(m);
        loop.stop();
    });
    p.push.send_multipart(make({"still", "works"}));
    loop.start();
    EXPECT_EQ(got, (std::vector<std::string>{"still", "works"}));
    p.push.close();
    EXPECT_THROW(p.push.send_string("x"), std::logic_error);
    EXPECT_THROW(p.push.on_recv([](message&) {}), std::logic_error);
    EXPECT_THROW((void)p.push.socket(), std::logic_error);
}

// pyzmq hands a stream one message per loop iteration; a burst here hands
// several, but none after the callback that stopped the loop, and the rest
// wait in libzmq for the next run.
TEST_F(zmq_stream, a_stop_in_on_recv_ends_the_burst)
{
    auto p = with_backlog(ctx, 5);
    green::zmq_stream pull(std::move(p.b), loop);
    int got = 0;
    pull.on_recv([&](message&) {
        ++got;
        loop.stop();
    });
    loop.start();
    EXPECT_EQ(got, 1);
    loop.start(); // one more each run: nothing was lost
    EXPECT_EQ(got, 2);
    pull.on_recv([&](message&) {
        if (++got == 5)
            loop.stop();
    });
    loop.start();
    EXPECT_EQ(got, 5);
}

// What a stream holds belongs to its thread; another thread's calls are
// refused before they change anything.
TEST_F(zmq_stream, BadInput_calls_from_another_thread_are_thread_errors)
{
    test::bound_pair p(ctx, zmq::socket_type::push, zmq::socket_type::pull, test::unique_inproc());
    green::zmq_stream push(std::move(p.a), loop);
    int threw = 0;
    std::thread([&] {
        const auto expect_thread_error = [&](const std::function<void()>& fn) {
            try {
                fn();
            } catch (const green::thread_error& e) {
                threw += std::string(e.what()).find("zmq_stream") != std::string::npos ? 1 : 0;
            }
        };
        expect_thread_error([&] { push.send_string("lost"); });
        expect_thread_error([&] { push.on_recv([](message&) {}); });
        expect_thread_error([&] { push.on_send(nullptr); });
        expect_thread_error([&] { (void)push.flush(); });
        expect_thread_error([&] { push.set_close_callback(nullptr); });
        expect_thread_error([&] { push.close(); });
        expect_thread_error([&] { (void)push.closed(); });
    }).join();
    EXPECT_EQ(threw, 7);
    EXPECT_EQ(push.queued(), 0u);
    EXPECT_FALSE(push.receiving());
    EXPECT_FALSE(push.closed());
    push.send_string("kept");
    push.on_send([&](const message&, const green::send_status&) { loop.stop(); });
    loop.start();
    zmq::message_t m;
    ASSERT_TRUE(p.b.recv(m));
    EXPECT_EQ(m.to_string(), "kept");
}

// A thread's objects of thread storage made before its hub are destroyed
// after it. A stream and its loop among them still close on their own
// thread, rather than taking it for another.
TEST_F(zmq_stream, a_stream_of_thread_storage_closes_at_its_threads_exit)
{
    std::thread([] {
        struct held {
            green::context_t ctx;
            green::io_loop loop;
            std::unique_ptr<green::zmq_stream> stream;
        };
        thread_local std::unique_ptr<held> h; // before the hub
        h = std::make_unique<held>();
        green::socket_t s(h->ctx, zmq::socket_type::pull);
        s.bind(test::unique_inproc());
        h->stream = std::make_unique<green::zmq_stream>(std::move(s), h->loop);
        h->stream->on_recv([](message&) {});
    }).join();
}

// A socket type that cannot send refuses at send, as libzmq does, instead of
// queuing a message that would wait for ever; the stream stays usable.
TEST_F(zmq_stream, BadInput_sending_on_a_socket_type_that_cannot_is_enotsup)
{
    for (auto type : {zmq::socket_type::pull, zmq::socket_type::sub}) {
        green::socket_t s(ctx, type);
        s.set(zmq::sockopt::linger, 0);
        s.bind(test::unique_inproc());
        green::zmq_stream stream(std::move(s), loop);
        bool called = false;
        auto on_sent = [&](const message&, const green::send_status&) { called = true; };
        EXPECT_EQ(test::errno_of([&] { stream.send_string("x", on_sent); }), ENOTSUP);
        EXPECT_EQ(test::errno_of([&] { stream.send_multipart(make({"a", "b"})); }), ENOTSUP);
        EXPECT_EQ(stream.queued(), 0u);
        EXPECT_FALSE(called);
    }
    push_pull p(ctx, loop);
    std::vector<std::string> got;
    p.pull.on_recv([&](message& m) {
        got = strings(m);
        loop.stop();
    });
    p.push.send_string("pushes still send");
    loop.start();
    EXPECT_EQ(got, std::vector<std::string>{"pushes still send"});
}

// A stream must be made on the thread that owns its socket. The check comes
// before the stream takes the socket, so the caller still has it.
TEST_F(zmq_stream, BadInput_socket_of_another_thread_is_thread_error)
{
    green::socket_t s(ctx, zmq::socket_type::pull);
    s.set(zmq::sockopt::linger, 0);
    int threw = 0;
    std::thread([&] {
        try {
            green::zmq_stream stream{green::socket_ref(s)};
        } catch (const green::thread_error&) {
            ++threw;
        }
        try {
            green::zmq_stream stream(std::move(s));
        } catch (const green::thread_error&) {
            ++threw;
        }
    }).join();
    EXPECT_EQ(threw, 2);
    ASSERT_NE(s.handle(), nullptr) << "the failed stream took the socket";
    // The loop of another thread is refused too, and the socket kept.
    std::unique_ptr<green::io_loop> foreign;
    std::thread([&] { foreign = std::make_unique<green::io_loop>(); }).join();
    EXPECT_THROW(green::zmq_stream(std::move(s), *foreign), green::thread_error);
    ASSERT_NE(s.handle(), nullptr);
    const auto ep = test::unique_inproc();
    s.bind(ep);
    green::zmq_stream stream(std::move(s), loop);
    green::socket_t push(ctx, zmq::socket_type::push);
    push.set(zmq::sockopt::linger, 0);
    push.connect(ep);
    std::string got;
    stream.on_recv([&](message& m) {
        got = m[0].to_string();
        loop.stop();
    });
    push.send(zmq::str_buffer("x"));
    loop.start();
    EXPECT_EQ(got, "x");
}

// close(linger) sets the owned socket's ZMQ_LINGER before closing it: a message
// for a peer that never comes then does not hold up the context's close().
TEST_F(zmq_stream, close_with_a_linger_lets_the_context_close)
{
    green::context_t own;
    green::zmq_stream push(green::socket_t(own, zmq::socket_type::push), loop);
    push.connect("tcp://127.0.0.1:1"); // nothing listens there
    push.send_string("never delivered");
    ASSERT_EQ(push.flush(ZMQ_POLLOUT), 1u); // now in libzmq's queue
    push.close(0);
    own.close(); // with libzmq's default linger, for ever
}

// A stream's state belongs to its thread, and a destructor cannot throw.
TEST_F(zmq_stream, BadInput_destroying_a_stream_on_another_thread_terminates_naming_it)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    auto stream = std::make_unique<green::zmq_stream>(
        green::socket_t(ctx, zmq::socket_type::pull), loop);
    EXPECT_DEATH(std::thread([&] { stream.reset(); }).join(), "thread_error");
}

// A kill met in a wait inside on_recv ends the task that runs the loop (it
// is no callback error), and the burst with it: the rest of the messages
// come in the next run.
TEST_F(zmq_stream, a_kill_inside_on_recv_ends_the_run_and_loses_nothing)
{
    int reported = 0;
    loop.set_error_handler([&](std::exception_ptr) { ++reported; });
    push_pull s(ctx, loop);
    std::vector<std::string> got;
    s.pull.on_recv([&](message& m) {
        got.push_back(m.at(0).to_string());
        if (got.size() == 1)
            green::sleep_for(10s);
        if (got.size() == 3)
            loop.stop();
    });
    for (const char* text : {"a", "b", "c"})
        s.push.send_string(text);
    green::task t = green::spawn([&] { loop.start(); });
    ASSERT_TRUE(test::kill_once(t, [&] { return !got.empty(); }))
        << "the killed task still runs the loop";
    EXPECT_EQ(reported, 0) << "the kill went to the error handler";
    EXPECT_EQ(got, std::vector<std::string>{"a"});

    loop.start();
    EXPECT_EQ(got, (std::vector<std::string>{"a", "b", "c"}));
}

// Nor does the reply that on_recv queued before the kill go out in that run:
// after a kill, the stream runs nothing more until the next start().
TEST_F(zmq_stream, a_kill_inside_on_recv_sends_nothing_more_in_that_run)
{
    const auto ep = test::unique_inproc();
    green::zmq_stream server(green::socket_t(ctx, zmq::socket_type::pair), loop);
    server.set(zmq::sockopt::linger, 0);
    server.bind(ep);
    green::socket_t client(ctx, zmq::socket_type::pair);
    client.set(zmq::sockopt::linger, 0);
    client.connect(ep);
    bool in_callback = false;
    int sent_callbacks = 0;
    server.on_send([&](const message&, const green::send_status&) {
        ++sent_callbacks;
        loop.stop();
    });
    server.on_recv([&](message&) {
        server.send_string("reply");
        if (!std::exchange(in_callback, true))
            green::sleep_for(10s);
    });
    client.send(zmq::str_buffer("request"));
    green::task t = green::spawn([&] { loop.start(); });
    ASSERT_TRUE(test::kill_once(t, [&] { return in_callback; }));
    zmq::message_t m;
    EXPECT_FALSE(client.recv(m, zmq::recv_flags::dontwait)) << "sent after the kill";
    EXPECT_EQ(sent_callbacks, 0);

    loop.start(); // until the reply went out
    ASSERT_TRUE(client.recv(m, zmq::recv_flags::dontwait));
    EXPECT_EQ(m.to_string(), "reply");
    EXPECT_EQ(sent_callbacks, 1);
}
