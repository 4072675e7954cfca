// pyzmq's simplest gevent example (examples/gevent/simple.py) as a PUB/SUB
// pair, in two fibers of one thread: a publisher ticks on two topics, a
// subscriber takes one of them. Both are plain blocking code.
//
//   gevent_pubsub [--count N]      the subscriber stops after N ticks (default 10)
#include "options.hpp"

#include <zmq/green.hpp>

#include <boost/fiber/all.hpp>

#include <chrono>
#include <iostream>
#include <string>

namespace green = zmq::green;
using namespace std::chrono_literals;

int main(int argc, char** argv)
{
    int count = 10;
    examples::parse_counts(argc, argv, {{"--count", &count}});

    green::context_t ctx;
    green::socket_t pub(ctx, zmq::socket_type::pub);
    pub.bind("inproc://ticks");

    // Fibers of one thread share plain variables: no lock, no atomic.
    bool enough = false;

    boost::fibers::fiber publisher([&] {
        // A subscriber gets only what is published after its subscription
        // reached the publisher, so publish until it has enough rather than
        // a fixed number of times.
        long n = 0;
        while (!enough) {
            pub.send(zmq::buffer((n % 2 == 0 ? "even " : "odd ") + std::to_string(n)));
            ++n;
            // A send that succeeds does not yield (nor does it in gevent):
            // pace the ticks, which also lets the subscriber run.
            boost::this_fiber::sleep_for(1ms);
        }
    });

    int received = 0;
    int wrong = 0;
    boost::fibers::fiber subscriber([&] {
        green::socket_t sub(ctx, zmq::socket_type::sub);
        sub.set(zmq::sockopt::subscribe, "even ");
        sub.connect("inproc://ticks");
        long last = -1;
        for (; received < count; ++received) {
            zmq::message_t tick;
            (void)sub.recv(tick); // parks this fiber; the publisher runs meanwhile
            const std::string text = tick.to_string();
            std::cout << "subscriber: " << text << '\n';
            // Only the topic it subscribed to, and after the first, no gaps.
            const bool even = text.rfind("even ", 0) == 0;
            const long n = even ? std::stol(text.substr(5)) : -1;
            if (!even || (last >= 0 && n != last + 2))
                ++wrong;
            last = n;
        }
        enough = true;
    });

    subscriber.join();
    publisher.join();
    const bool ok = received == count && wrong == 0;
    std::cout << "gevent_pubsub: " << received << " ticks, " << wrong << " wrong: "
              << (ok ? "ok" : "FAILED") << '\n';
    return ok ? 0 : 1;
}
