// pyzmq's gevent poller example (examples/gevent/poll.py, with a SUB in place
// of its second PULL), in fibers of one thread: one fiber waits on a PULL and
// a SUB at once with zmq::green::poller_t, while two others feed them, a PUSH
// with jobs and a PUB with news. The waiting fiber parks in wait_all; the
// feeders run meanwhile.
//
//   gevent_poller [--count N]      N jobs, and at least N news (default 10)
#include "options.hpp"

#include <zmq/green.hpp>

#include <boost/fiber/all.hpp>

#include <chrono>
#include <iostream>
#include <string>
#include <vector>

namespace green = zmq::green;
using namespace std::chrono_literals;

int main(int argc, char** argv)
{
    int count = 10;
    examples::parse_counts(argc, argv, {{"--count", &count}});

    green::context_t ctx;
    green::socket_t jobs(ctx, zmq::socket_type::pull);
    jobs.bind("inproc://jobs");
    green::socket_t news(ctx, zmq::socket_type::sub);
    news.set(zmq::sockopt::subscribe, "");
    news.bind("inproc://news");

    bool done = false;

    // PUSH loses nothing: every job reaches the PULL, in order.
    boost::fibers::fiber pusher([&] {
        green::socket_t push(ctx, zmq::socket_type::push);
        push.connect("inproc://jobs");
        for (int i = 0; i < count; ++i) {
            push.send(zmq::buffer("job " + std::to_string(i)));
            boost::this_fiber::sleep_for(2ms); // gevent.sleep(1) in the original
        }
    });

    // PUB drops what it sends before the subscription arrives: publish until
    // the receiver has had enough.
    boost::fibers::fiber publisher([&] {
        green::socket_t pub(ctx, zmq::socket_type::pub);
        pub.connect("inproc://news");
        int n = 0;
        while (!done) {
            pub.send(zmq::buffer("news " + std::to_string(n++)));
            boost::this_fiber::sleep_for(3ms);
        }
    });

    green::poller_t<> poller;
    poller.add(jobs, green::event_flags::pollin);
    poller.add(news, green::event_flags::pollin);
    std::vector<green::poller_event<>> events(poller.size());

    int jobs_seen = 0;
    int news_seen = 0;
    int wrong = 0;
    int last_news = -1;
    while (jobs_seen < count || news_seen < count) {
        const size_t ready = poller.wait_all(events, -1ms); // parks until one is readable
        for (size_t i = 0; i < ready; ++i) {
            zmq::message_t msg;
            (void)events[i].socket.recv(msg); // readable: returns at once
            const std::string text = msg.to_string();
            std::cout << text << '\n';
            if (events[i].socket == jobs) {
                // Jobs come in the order they were pushed.
                wrong += text != "job " + std::to_string(jobs_seen);
                ++jobs_seen;
            } else {
                // News may start late, but then they come in order.
                const int n = std::stoi(text.substr(5));
                wrong += n <= last_news;
                last_news = n;
                ++news_seen;
            }
        }
    }
    done = true;
    pusher.join();
    publisher.join();

    const bool ok = jobs_seen == count && wrong == 0;
    std::cout << "gevent_poller: " << jobs_seen << " jobs, " << news_seen << " news, " << wrong
              << " wrong: " << (ok ? "ok" : "FAILED") << '\n';
    return ok ? 0 : 1;
}
