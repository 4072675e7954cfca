// Callback-style streams and blocking-style fibers sharing one thread.
#include <zmq/green.hpp>

#include <boost/fiber/all.hpp>

#include <chrono>
#include <iostream>
#include <string>

namespace green = zmq::green;
using namespace std::chrono_literals;

int main()
{
    green::context_t ctx;
    auto& loop = green::io_loop::current();

    // Callback style: a timer feeds a PUSH stream.
    green::zmq_stream producer(green::socket_t(ctx, zmq::socket_type::push));
    producer.set(zmq::sockopt::linger, 0);
    producer.bind("inproc://work");
    int n = 0;
    green::periodic_callback tick(loop, [&] { producer.send_string("job " + std::to_string(n++)); },
                                  10ms);
    tick.start();

    // Blocking style: a fiber receives jobs one by one, parking while it waits.
    int done = 0;
    boost::fibers::fiber worker([&] {
        green::socket_t pull(ctx, zmq::socket_type::pull);
        pull.set(zmq::sockopt::linger, 0);
        pull.connect("inproc://work");
        for (; done < 5; ++done) {
            zmq::message_t job;
            (void)pull.recv(job);
            std::cout << "worker got " << job.to_string() << '\n';
        }
        loop.stop();
    });

    loop.start();
    worker.join();
    tick.stop();
    return done == 5 ? 0 : 1;
}
