// A million messages through 100 producer and 100 consumer fibers of one
// thread, tiny random high-water marks, and no fallback re-check: a single
// lost wake-up leaves fibers parked forever, which the stall guard reports.
#include "stress.hpp"

#include <cstring>
#include <memory>
#include <random>
#include <vector>

using namespace std::chrono_literals;
namespace green = zmq::green;

namespace {

constexpr int pairs = 10;
constexpr int producers_per_pair = 10;
constexpr int consumers_per_pair = 10;
constexpr int producers = pairs * producers_per_pair;
constexpr int total_messages = 1'000'000 / stress::divisor;
constexpr int per_producer = total_messages / producers;
constexpr std::uint32_t sentinel = 0xffffffff;

struct record {
    std::uint32_t producer;
    std::uint32_t seq;
};

// Producers and consumers block in different ways, so that every wake-up
// path is exercised: the socket's own wait, green::poll, multipart receive.
enum class style { blocking, poll_then_dontwait, multipart };

style style_of(int i) { return static_cast<style>(i % 3); }

void produce(green::socket_t& push, std::uint32_t id, style how)
{
    for (std::uint32_t seq = 0; seq < per_producer; ++seq) {
        const record r{id, seq};
        if (how == style::poll_then_dontwait) {
            // The poller sees POLLOUT, but another fiber may take the slot
            // or own the send direction, and then dontwait fails. The yield
            // lets that fiber run: without it this loop spins forever
            // (poll answers at once, the owner never gets the thread).
            while (!push.send(zmq::buffer(&r, sizeof r), zmq::send_flags::dontwait)) {
                if (push.poll(ZMQ_POLLOUT) == 0)
                    FAIL() << "poll without timeout returned nothing";
                boost::this_fiber::yield();
            }
        } else {
            ASSERT_TRUE(push.send(zmq::buffer(&r, sizeof r)));
        }
    }
}

record receive(green::socket_t& pull, style how)
{
    record r{};
    zmq::message_t m;
    switch (how) {
    case style::blocking:
        EXPECT_TRUE(pull.recv(m));
        break;
    case style::poll_then_dontwait:
        while (!pull.recv(m, zmq::recv_flags::dontwait)) {
            EXPECT_EQ(pull.poll(ZMQ_POLLIN), ZMQ_POLLIN);
            boost::this_fiber::yield(); // as in produce()
        }
        break;
    case style::multipart: {
        std::vector<zmq::message_t> parts;
        EXPECT_EQ(green::recv_multipart(pull, std::back_inserter(parts)), 1u);
        m = std::move(parts.at(0));
        break;
    }
    }
    EXPECT_EQ(m.size(), sizeof r);
    std::memcpy(&r, m.data(), std::min(m.size(), sizeof r));
    return r;
}

void million_messages(const std::string& transport)
{
    stress::no_fallback off;
    const auto before = green::hub::current().stats();
    std::mt19937 rng(stress::seed());
    std::uniform_int_distribution<int> hwm(1, 16);

    green::context_t ctx;
    std::vector<green::socket_t> pushes, pulls;
    for (int p = 0; p < pairs; ++p) {
        pulls.emplace_back(ctx, zmq::socket_type::pull);
        pushes.emplace_back(ctx, zmq::socket_type::push);
        auto& pull = pulls.back();
        auto& push = pushes.back();
        pull.set(zmq::sockopt::rcvhwm, hwm(rng));
        push.set(zmq::sockopt::sndhwm, hwm(rng));
        pull.set(zmq::sockopt::linger, 0);
        push.set(zmq::sockopt::linger, 0);
        pull.bind(transport == "tcp" ? std::string("tcp://127.0.0.1:*") : test::unique_inproc());
        push.connect(pull.get(zmq::sockopt::last_endpoint));
    }

    // Per producer: the next sequence number expected. One producer's
    // messages travel one pipe, so they arrive in order, each exactly once.
    std::vector<std::uint32_t> next(producers, 0);
    std::uint64_t received = 0;
    stress::stall_guard guard(received, 10s, transport + " million messages");

    std::vector<boost::fibers::fiber> producing, consuming;
    for (int p = 0; p < pairs; ++p) {
        for (int i = 0; i < consumers_per_pair; ++i)
            consuming.emplace_back([&, p, i] {
                for (;;) {
                    const record r = receive(pulls[p], style_of(i));
                    if (r.producer == sentinel)
                        return;
                    ASSERT_LT(r.producer, static_cast<std::uint32_t>(producers));
                    ASSERT_EQ(r.producer / producers_per_pair, static_cast<std::uint32_t>(p))
                        << "a message crossed to another socket pair";
                    ASSERT_EQ(r.seq, next[r.producer])
                        << "producer " << r.producer << ": lost, duplicated or reordered";
                    ++next[r.producer];
                    ++received;
                }
            });
        for (int i = 0; i < producers_per_pair; ++i)
            producing.emplace_back([&, p, i] {
                produce(pushes[p], static_cast<std::uint32_t>(p * producers_per_pair + i),
                        style_of(i));
            });
    }
    for (auto& f : producing)
        f.join();
    // After every message of a pair, one end marker per consumer of the pair.
    const record end{sentinel, 0};
    for (auto& push : pushes)
        for (int i = 0; i < consumers_per_pair; ++i)
            ASSERT_TRUE(push.send(zmq::buffer(&end, sizeof end)));
    for (auto& f : consuming)
        f.join();

    EXPECT_EQ(received, static_cast<std::uint64_t>(per_producer) * producers);
    for (int p = 0; p < producers; ++p)
        EXPECT_EQ(next[p], static_cast<std::uint32_t>(per_producer)) << "producer " << p;
    const auto after = green::hub::current().stats();
    EXPECT_EQ(after.rescues, 0u) << "edges were missed";
    EXPECT_GT(after.fd_wakeups, before.fd_wakeups); // the fibers really parked
}

} // namespace

TEST(lost_wakeups, million_messages_inproc) { million_messages("inproc"); }

TEST(lost_wakeups, million_messages_tcp) { million_messages("tcp"); }
