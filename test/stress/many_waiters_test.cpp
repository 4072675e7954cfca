// A thousand fibers parked on one socket in each direction, with multipart
// messages: whole messages, served first come first served, each once.
//
// What FIFO means here, and what the test can see: the fibers waiting in one
// direction of a socket get it in the order they called, and keep it for a
// whole multipart message. With one pipe between the sockets, the n-th
// sender to get the send direction puts the n-th message on the wire, and
// the n-th receiver to get the receive direction takes the n-th message that
// arrives. So receiver n must hold sender n's message.
#include "stress.hpp"

#include <iostream>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace green = zmq::green;

namespace {

constexpr int fibers_per_direction = 1000;

int frames_of(int sender) { return 1 + sender % 4; }

// Frame k of sender s's message: "s:k:n", n frames in all.
std::string frame_text(int sender, int k)
{
    return std::to_string(sender) + ":" + std::to_string(k) + ":"
           + std::to_string(frames_of(sender));
}

// The sender named by a frame, -1 if it is not one of ours.
int sender_of(const std::string& frame)
{
    const auto colon = frame.find(':');
    return colon == std::string::npos ? -1 : std::stoi(frame.substr(0, colon));
}

struct peer_setup {
    std::string transport;
    bool one_socket; // senders and receivers on the same DEALER, echoed back
};

std::string endpoint_for(const std::string& transport)
{
    return transport == "tcp" ? "tcp://127.0.0.1:*" : test::unique_inproc();
}

} // namespace

class many_waiters : public test::green_test, public ::testing::WithParamInterface<peer_setup> {};

TEST_P(many_waiters, thousand_each_way_get_whole_messages_in_arrival_order)
{
    const auto setup = GetParam();
    stress::no_fallback off; // a missed edge hangs the test (ctest TIMEOUT)
    const auto in_type = setup.one_socket ? zmq::socket_type::dealer : zmq::socket_type::pull;
    const auto out_type = setup.one_socket ? zmq::socket_type::dealer : zmq::socket_type::push;
    // Few messages in flight each way: nearly every fiber parks.
    green::socket_t far(ctx, in_type), near(ctx, out_type);
    for (auto* s : {&far, &near}) {
        s->set(zmq::sockopt::linger, 0);
        s->set(zmq::sockopt::sndhwm, 1);
        s->set(zmq::sockopt::rcvhwm, 1);
    }
    far.bind(endpoint_for(setup.transport));
    // Over tcp the kernel's socket buffers take a few hundred small messages
    // past the high-water marks: there the senders first park for want of a
    // peer, and the connection comes once everyone is parked.
    const bool connect_late = setup.transport == "tcp";
    if (!connect_late)
        near.connect(far.get(zmq::sockopt::last_endpoint));
    // Two-socket form: senders on near (PUSH), receivers on far (PULL).
    // One-socket form: both on near (DEALER); far echoes every message back.
    green::socket_t& receiving = setup.one_socket ? near : far;

    std::vector<test::strings> got(fibers_per_direction);
    int senders_done = 0, receivers_done = 0;
    int senders_parked = -1, receivers_parked = -1;
    std::vector<boost::fibers::fiber> fibers;
    for (int r = 0; r < fibers_per_direction; ++r)
        fibers.emplace_back([&, r] {
            got[r] = test::recv_strs(receiving);
            ++receivers_done;
        });
    for (int s = 0; s < fibers_per_direction; ++s)
        fibers.emplace_back([&, s] {
            test::strings parts;
            for (int k = 0; k < frames_of(s); ++k)
                parts.push_back(frame_text(s, k));
            test::send_strs(near, parts);
            ++senders_done;
        });
    if (setup.one_socket)
        fibers.emplace_back([&] {
            for (int i = 0; i < fibers_per_direction; ++i)
                test::send_strs(far, test::recv_strs(far));
        });
    // Runs once every fiber above has run up to its first park.
    fibers.emplace_back([&] {
        senders_parked = fibers_per_direction - senders_done;
        receivers_parked = fibers_per_direction - receivers_done;
        if (connect_late)
            near.connect(far.get(zmq::sockopt::last_endpoint));
    });
    for (auto& f : fibers)
        f.join();

    // All but the few messages the high-water marks let through were parked
    // at once, in both directions.
    std::cout << senders_parked << " senders and " << receivers_parked
              << " receivers were parked at once" << std::endl;
    EXPECT_GE(senders_parked, fibers_per_direction - 50);
    EXPECT_GE(receivers_parked, fibers_per_direction - 50);
    std::vector<int> times_received(fibers_per_direction, 0);
    for (int r = 0; r < fibers_per_direction; ++r) {
        ASSERT_FALSE(got[r].empty()) << "receiver " << r;
        const int sender = sender_of(got[r][0]);
        ASSERT_GE(sender, 0) << got[r][0];
        ASSERT_LT(sender, fibers_per_direction);
        ++times_received[sender];
        EXPECT_EQ(sender, r) << "receiver " << r << " was not served in arrival order";
        ASSERT_EQ(static_cast<int>(got[r].size()), frames_of(sender))
            << "receiver " << r << ": frames lost or mixed in";
        for (int k = 0; k < static_cast<int>(got[r].size()); ++k)
            EXPECT_EQ(got[r][k], frame_text(sender, k))
                << "receiver " << r << ": frames of two messages interleaved";
    }
    for (int s = 0; s < fibers_per_direction; ++s)
        EXPECT_EQ(times_received[s], 1) << "sender " << s;
}

INSTANTIATE_TEST_SUITE_P(, many_waiters,
                         ::testing::Values(peer_setup{"inproc", false}, peer_setup{"tcp", false},
                                           peer_setup{"inproc", true}, peer_setup{"tcp", true}),
                         [](const auto& param_info) {
                             return param_info.param.transport
                                    + (param_info.param.one_socket ? "_one_dealer_both_ways"
                                                             : "_push_to_pull");
                         });
