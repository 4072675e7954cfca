#include "support.hpp"

#include <array>
#include <cstddef>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <vector>

namespace green = zmq::green;
using test::green_test;

class multipart : public green_test {};

TEST_F(multipart, round_trip_of_messages_and_buffers)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    std::vector<zmq::message_t> out;
    out.emplace_back(std::string("hi"));
    out.emplace_back(std::string("there"));
    out.emplace_back(std::string("b"));
    EXPECT_EQ(green::send_multipart(p.a, out), 3u);
    std::array<zmq::const_buffer, 2> bufs{zmq::str_buffer("one"), zmq::str_buffer("two")};
    EXPECT_EQ(green::send_multipart(p.a, bufs), 2u);

    std::vector<zmq::message_t> in;
    EXPECT_EQ(green::recv_multipart(p.b, std::back_inserter(in)), 3u);
    ASSERT_EQ(in.size(), 3u);
    EXPECT_EQ(in[0].to_string(), "hi");
    EXPECT_EQ(in[1].to_string(), "there");
    EXPECT_EQ(in[2].to_string(), "b");
    in.clear();
    EXPECT_EQ(green::recv_multipart(p.b, std::back_inserter(in)), 2u);
    EXPECT_EQ(in[1].to_string(), "two");
}

TEST_F(multipart, cppzmq_spelling_takes_the_green_path)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    std::vector<zmq::message_t> in;
    test::run_fibers({[&] {
                          // Parks (nothing sent yet) instead of blocking the thread.
                          EXPECT_EQ(zmq::recv_multipart(p.b, std::back_inserter(in)), 2u);
                      },
                      [&] {
                          std::array<zmq::const_buffer, 2> bufs{zmq::str_buffer("a"),
                                                                zmq::str_buffer("b")};
                          EXPECT_EQ(zmq::send_multipart(p.a, bufs), 2u);
                      }});
    EXPECT_EQ(in.size(), 2u);
}

TEST_F(multipart, recv_multipart_n_rejects_longer_messages)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    std::array<zmq::const_buffer, 3> bufs{zmq::str_buffer("a"), zmq::str_buffer("b"),
                                          zmq::str_buffer("c")};
    green::send_multipart(p.a, bufs);
    std::vector<zmq::message_t> in;
    EXPECT_THROW((void)green::recv_multipart_n(p.b, std::back_inserter(in), 2), std::runtime_error);
    EXPECT_EQ(in.size(), 2u);
}

namespace {

// Receives one message on a fiber of its own, so that a direction still
// owned by the calling fiber cannot serve it. RCVTIMEO guards the test.
test::strings recv_on_another_fiber(green::socket_t& s)
{
    s.set(zmq::sockopt::rcvtimeo, 10000);
    test::strings got;
    boost::fibers::fiber([&] { got = test::recv_strs(s); }).join();
    return got;
}

// An output iterator that throws at the frame numbered fail_at.
struct throwing_output {
    using iterator_category = std::output_iterator_tag;
    using value_type = void;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = void;

    throwing_output& operator*() { return *this; }
    throwing_output& operator++() { return *this; }
    throwing_output& operator++(int) { return *this; }
    throwing_output& operator=(zmq::message_t&&)
    {
        if ((*frames)++ == fail_at)
            throw std::length_error("no room");
        return *this;
    }
    int* frames;
    int fail_at;
};

// An output iterator that yields after each frame, as one that parks would.
struct parking_output {
    using iterator_category = std::output_iterator_tag;
    using value_type = void;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = void;

    parking_output& operator*() { return *this; }
    parking_output& operator++() { return *this; }
    parking_output& operator++(int) { return *this; }
    parking_output& operator=(zmq::message_t&&)
    {
        ++*frames;
        boost::this_fiber::yield();
        return *this;
    }
    int* frames;
};

// Buffers whose iterator calls hook when it steps past the frame numbered
// hook_at: send_multipart has queued that frame and not yet the next.
struct hooked_range {
    struct iterator {
        using iterator_category = std::forward_iterator_tag;
        using value_type = zmq::const_buffer;
        using difference_type = std::ptrdiff_t;
        using pointer = const zmq::const_buffer*;
        using reference = const zmq::const_buffer&;

        reference operator*() const { return range->frames[i]; }
        iterator& operator++()
        {
            if (i == range->hook_at)
                range->hook();
            ++i;
            return *this;
        }
        bool operator==(const iterator& other) const { return i == other.i; }
        bool operator!=(const iterator& other) const { return i != other.i; }
        const hooked_range* range;
        std::size_t i;
    };
    iterator begin() const { return {this, 0}; }
    iterator end() const { return {this, frames.size()}; }
    std::vector<zmq::const_buffer> frames;
    std::size_t hook_at;
    std::function<void()> hook;
};

} // namespace

// Past n frames recv_multipart_n throws, holding the first n. The rest of
// that message is dropped, not handed to the next receiver as a message of
// its own, and the next receiver (on any fiber) gets the next message.
TEST_F(multipart, recv_multipart_n_that_throws_leaves_the_socket_to_the_next_message)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair, test::unique_inproc());
    test::send_strs(p.a, {"a", "b", "c"});
    test::send_strs(p.a, {"next", "one"});
    std::vector<zmq::message_t> in;
    boost::fibers::fiber([&] {
        EXPECT_THROW((void)green::recv_multipart_n(p.b, std::back_inserter(in), 1),
                     std::runtime_error);
    }).join();
    EXPECT_EQ(in.size(), 1u);
    EXPECT_EQ(recv_on_another_fiber(p.b), (test::strings{"next", "one"}));
}

TEST_F(multipart, an_output_iterator_that_throws_leaves_the_socket_to_the_next_message)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair, test::unique_inproc());
    test::send_strs(p.a, {"a", "b", "c"});
    test::send_strs(p.a, {"next"});
    int frames = 0;
    EXPECT_THROW((void)green::recv_multipart(p.b, throwing_output{&frames, 1}), std::length_error);
    EXPECT_EQ(frames, 2);
    EXPECT_EQ(recv_on_another_fiber(p.b), test::strings{"next"});
}

// An output iterator that parks between two frames lets another fiber close
// the socket: the next frame is ENOTSOCK, and nothing touches the closed
// socket's freed state (ASan's build checks).
TEST_F(multipart, a_socket_closed_while_the_receiver_parks_between_frames_is_enotsock)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair, test::unique_inproc());
    test::send_strs(p.a, {"a", "b", "c"});
    int frames = 0;
    int err = 0;
    test::run_fibers({[&] {
                          err = test::errno_of(
                              [&] { (void)green::recv_multipart(p.b, parking_output{&frames}); });
                      },
                      [&] { p.b.close(); }});
    EXPECT_EQ(frames, 1);
    EXPECT_EQ(err, ENOTSOCK);
}

// A non-blocking send meets another fiber's message and yields to it; the
// socket closed meanwhile is ENOTSOCK, not EAGAIN (an empty result).
TEST_F(multipart, a_dontwait_send_that_yields_to_a_message_sees_the_close_meanwhile)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair, test::unique_inproc());
    int err = 0;
    test::run_fibers({[&] {
                          p.a.send(zmq::str_buffer("first"), zmq::send_flags::sndmore);
                          boost::this_fiber::yield(); // the other send yields to this one
                          p.a.close();
                      },
                      [&] {
                          err = test::errno_of([&] {
                              (void)p.a.send(zmq::str_buffer("x"), zmq::send_flags::dontwait);
                          });
                      }});
    EXPECT_EQ(err, ENOTSOCK);
}

// The frames already queued cannot be taken back: the message ends with an
// empty frame, and the next sender's message arrives whole after it.
TEST_F(multipart, a_range_that_throws_mid_message_leaves_the_socket_to_the_next_sender)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair, test::unique_inproc());
    const hooked_range frames{{zmq::str_buffer("a"), zmq::str_buffer("b"), zmq::str_buffer("c")},
                              1, [] { throw std::length_error("no next frame"); }};
    EXPECT_THROW((void)green::send_multipart(p.a, frames), std::length_error);
    p.a.set(zmq::sockopt::sndtimeo, 10000);
    p.b.set(zmq::sockopt::rcvtimeo, 10000);
    boost::fibers::fiber([&] { test::send_strs(p.a, {"next"}); }).join();
    EXPECT_EQ(test::recv_strs(p.b), (test::strings{"a", ""}));
    EXPECT_EQ(test::recv_strs(p.b), test::strings{"next"});
}

// A fiber that ends between two frames of its own sends (an exception it
// caught, or a kill at a wait) ends its message as a throwing range does, and
// the next sender, a fiber that may run on the dead one's pooled stack, sends
// a message of its own rather than waiting for ever or joining that one.
TEST_F(multipart, a_fiber_that_ends_mid_message_leaves_the_socket_to_the_next_sender)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair, test::unique_inproc());
    p.a.set(zmq::sockopt::sndtimeo, 10000); // a hang fails, after 10 s
    p.b.set(zmq::sockopt::rcvtimeo, 10000);
    boost::fibers::fiber([&] {
        try {
            p.a.send(zmq::str_buffer("a"), zmq::send_flags::sndmore);
            throw std::runtime_error("no next frame");
        } catch (const std::runtime_error&) {
        }
    }).join();
    green::task killed = green::spawn([&] {
        p.a.send(zmq::str_buffer("half"), zmq::send_flags::sndmore);
        green::sleep_for(std::chrono::hours(1));
    });
    boost::this_fiber::yield(); // it sent its first frame and sleeps
    killed.kill();
    bool sent = false;
    green::spawn([&] { sent = static_cast<bool>(p.a.send(zmq::str_buffer("whole"))); }).join();
    EXPECT_TRUE(sent);
    EXPECT_EQ(test::recv_strs(p.b), (test::strings{"a", ""}));
    EXPECT_EQ(test::recv_strs(p.b), (test::strings{"half", ""}));
    EXPECT_EQ(test::recv_strs(p.b), test::strings{"whole"});
}

// A fiber that ends between two frames it receives leaves the rest of its
// message behind it, dropped: the next receiver gets the next message.
TEST_F(multipart, a_fiber_that_ends_mid_receive_leaves_the_socket_to_the_next_receiver)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair, test::unique_inproc());
    p.b.set(zmq::sockopt::rcvtimeo, 10000); // a hang fails, after 10 s
    test::send_strs(p.a, {"a", "b"});
    test::send_strs(p.a, {"next"});
    boost::fibers::fiber([&] {
        zmq::message_t first;
        ASSERT_TRUE(p.b.recv(first));
        EXPECT_TRUE(first.more());
    }).join();
    boost::fibers::fiber([&] { EXPECT_EQ(test::recv_strs(p.b), test::strings{"next"}); }).join();
}

// libzmq refuses a later frame only when the message's pipe has gone (HWM
// counts whole messages), and a PUSH socket then drops frames until a last
// one. This PUSH loses its first peer after a message's first frame; a second
// peer is bound and waits to be connected.
struct push_losing_its_peer {
    explicit push_losing_its_peer(green::context_t& ctx)
        : push(ctx, zmq::socket_type::push),
          first(ctx, zmq::socket_type::pull),
          next(ctx, zmq::socket_type::pull)
    {
        push.set(zmq::sockopt::linger, 0);
        first.bind(gone);
        next.bind(ep);
        push.connect(gone);
    }
    hooked_range message(std::vector<zmq::const_buffer> frames)
    {
        return {std::move(frames), 1, [this] { push.disconnect(gone); }};
    }
    const std::string gone = test::unique_inproc();
    const std::string ep = test::unique_inproc();
    green::socket_t push, first, next;
};

// A send_multipart that gives up there must end its message: else the next
// message, reported sent, is dropped in its place.
TEST_F(multipart, a_later_frame_that_fails_ends_its_message)
{
    push_losing_its_peer p(ctx);
    const auto frames =
        p.message({zmq::str_buffer("a"), zmq::str_buffer("b"), zmq::str_buffer("c")});
    EXPECT_FALSE(green::send_multipart(p.push, frames, zmq::send_flags::dontwait));
    p.push.connect(p.ep);
    EXPECT_TRUE(p.push.send(zmq::str_buffer("next")));
    EXPECT_TRUE(p.push.send(zmq::str_buffer("after")));
    EXPECT_EQ(recv_on_another_fiber(p.next), test::strings{"next"});
}

// The same under ZMQ_SNDTIMEO: the later frame waits for a peer, in vain.
TEST_F(multipart, a_later_frame_that_times_out_ends_its_message)
{
    push_losing_its_peer p(ctx);
    p.push.set(zmq::sockopt::sndtimeo, 1);
    const auto frames =
        p.message({zmq::str_buffer("a"), zmq::str_buffer("b"), zmq::str_buffer("c")});
    EXPECT_FALSE(green::send_multipart(p.push, frames));
    p.push.set(zmq::sockopt::sndtimeo, -1);
    p.push.connect(p.ep);
    EXPECT_TRUE(p.push.send(zmq::str_buffer("next")));
    EXPECT_TRUE(p.push.send(zmq::str_buffer("after")));
    EXPECT_EQ(recv_on_another_fiber(p.next), test::strings{"next"});
}

namespace {

// The second peer connected from the start, a two-frame message whose last
// frame is refused fails, and the next message reaches that peer alone.
void expect_a_refused_last_frame_to_leave_nothing(green::context_t& ctx, zmq::send_flags flags)
{
    push_losing_its_peer p(ctx);
    p.push.connect(p.ep);
    const auto frames = p.message({zmq::str_buffer("a"), zmq::str_buffer("b")});
    EXPECT_FALSE(green::send_multipart(p.push, frames, flags));
    EXPECT_TRUE(p.push.send(zmq::str_buffer("next")));
    EXPECT_EQ(recv_on_another_fiber(p.next), test::strings{"next"});
}

} // namespace

// A refused last frame leaves no message open: nothing more may be sent,
// or another peer would get it as a message of its own.
TEST_F(multipart, a_last_frame_that_fails_leaves_nothing_behind)
{
    expect_a_refused_last_frame_to_leave_nothing(ctx, zmq::send_flags::dontwait);
}

// Nor does a blocking send retry it: the load balancer would take the last
// frame for a message of its own and hand it to the other peer.
TEST_F(multipart, a_blocking_send_does_not_retry_a_refused_last_frame)
{
    expect_a_refused_last_frame_to_leave_nothing(ctx, zmq::send_flags::none);
}

TEST_F(multipart, dontwait_with_nothing_queued_is_empty)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    std::vector<zmq::message_t> in;
    EXPECT_FALSE(green::recv_multipart(p.b, std::back_inserter(in), zmq::recv_flags::dontwait));
    EXPECT_TRUE(in.empty());
}

TEST_F(multipart, frames_of_concurrent_fibers_never_interleave)
{
    green::socket_t push(ctx, zmq::socket_type::push);
    green::socket_t pull(ctx, zmq::socket_type::pull);
    push.set(zmq::sockopt::sndhwm, 2); // senders park between messages
    pull.set(zmq::sockopt::rcvhwm, 2);
    const auto ep = test::unique_inproc();
    pull.bind(ep);
    push.connect(ep);
    constexpr int senders = 10, per_sender = 50;
    std::vector<std::function<void()>> fibers;
    for (int s = 0; s < senders; ++s)
        fibers.push_back([&, s] {
            for (int i = 0; i < per_sender; ++i) {
                // Frame by frame, as cppzmq code does it: ownership lasts to the last frame.
                const std::string tag = std::to_string(s);
                push.send(zmq::buffer(tag), zmq::send_flags::sndmore);
                boost::this_fiber::yield();
                push.send(zmq::buffer(tag + "-" + std::to_string(i)), zmq::send_flags::sndmore);
                push.send(zmq::buffer(tag), zmq::send_flags::none);
            }
        });
    std::vector<int> next(senders, 0);
    auto receiver = [&] {
        for (int n = 0; n < senders * per_sender / 2; ++n) {
            std::vector<zmq::message_t> msg;
            ASSERT_EQ(green::recv_multipart(pull, std::back_inserter(msg)), 3u);
            const int s = std::stoi(msg[0].to_string());
            EXPECT_EQ(msg[2].to_string(), msg[0].to_string());
            EXPECT_EQ(msg[1].to_string(), msg[0].to_string() + "-" + std::to_string(next[static_cast<size_t>(s)]++));
        }
    };
    fibers.push_back(receiver);
    fibers.push_back(receiver); // two receivers: whole messages each
    test::run_fibers(std::move(fibers));
    for (int s = 0; s < senders; ++s)
        EXPECT_EQ(next[static_cast<size_t>(s)], per_sender);
}

TEST_F(multipart, send_multipart_waits_for_a_message_another_fiber_has_begun)
{
    test::bound_pair p(ctx, zmq::socket_type::pull, zmq::socket_type::push, test::unique_inproc());
    green::socket_t& pull = p.a;
    green::socket_t& push = p.b;
    constexpr int rounds = 20;
    std::vector<std::function<void()>> fibers;
    // Frame by frame, yielding inside the message: the others find the
    // direction owned and must queue behind it.
    fibers.push_back([&] {
        for (int i = 0; i < rounds; ++i) {
            push.send(zmq::str_buffer("a"), zmq::send_flags::sndmore);
            boost::this_fiber::yield();
            push.send(zmq::str_buffer("a"), zmq::send_flags::sndmore);
            boost::this_fiber::yield();
            push.send(zmq::str_buffer("a"), zmq::send_flags::none);
        }
    });
    for (const char* tag : {"b", "c"})
        fibers.push_back([&, tag] {
            const std::array<zmq::const_buffer, 3> frames{zmq::buffer(tag, 1), zmq::buffer(tag, 1),
                                                          zmq::buffer(tag, 1)};
            for (int i = 0; i < rounds; ++i) {
                ASSERT_EQ(green::send_multipart(push, frames), 3u);
                boost::this_fiber::yield();
            }
        });
    fibers.push_back([&] {
        for (int n = 0; n < 3 * rounds; ++n) {
            std::vector<zmq::message_t> msg;
            ASSERT_EQ(green::recv_multipart(pull, std::back_inserter(msg)), 3u);
            EXPECT_EQ(msg[1].to_string(), msg[0].to_string());
            EXPECT_EQ(msg[2].to_string(), msg[0].to_string());
        }
    });
    test::run_fibers(std::move(fibers));
}

// As cppzmq's: sndmore on send_multipart means more frames follow from later
// sends, for an envelope say; the message is whole at the peer, and another
// fiber's message waits for its end instead of coming between.
TEST_F(multipart, send_multipart_with_sndmore_leaves_the_message_to_the_next_send)
{
    test::bound_pair p(ctx, zmq::socket_type::pull, zmq::socket_type::push, test::unique_inproc());
    green::socket_t& pull = p.a;
    green::socket_t& push = p.b;
    std::vector<std::vector<std::string>> got;
    test::run_fibers(
        {[&] {
             const std::array<zmq::const_buffer, 2> envelope{zmq::str_buffer("id"),
                                                             zmq::str_buffer("")};
             EXPECT_EQ(zmq::send_multipart(push, envelope, zmq::send_flags::sndmore), 2u);
             EXPECT_EQ(green::send_multipart(push, envelope, zmq::send_flags::sndmore), 2u);
             boost::this_fiber::yield(); // the other sender runs, and must wait
             push.send(zmq::str_buffer("body"), zmq::send_flags::none);
         },
         [&] {
             const std::array<zmq::const_buffer, 1> other{zmq::str_buffer("other")};
             EXPECT_EQ(green::send_multipart(push, other), 1u);
         },
         [&] {
             for (int n = 0; n < 2; ++n) {
                 std::vector<zmq::message_t> msg;
                 ASSERT_TRUE(green::recv_multipart(pull, std::back_inserter(msg)));
                 got.emplace_back();
                 for (auto& m : msg)
                     got.back().push_back(m.to_string());
             }
         }});
    EXPECT_EQ(got, (std::vector<std::vector<std::string>>{{"id", "", "id", "", "body"},
                                                          {"other"}}));
}
