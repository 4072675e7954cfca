#include "support.hpp"

#include <array>
#include <iterator>

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
