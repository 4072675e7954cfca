// Uses an installed zmq-green: REQ/REP between two fibers of one thread, with
// a green poll. Exits 0 when every reply came back right.
#include <zmq/green.hpp>

#include <boost/fiber/all.hpp>

#include <chrono>
#include <iostream>
#include <string>

int main()
{
    static_assert(ZMQ_GREEN_VERSION_MAJOR >= 0, "zmq/green.hpp defines the version");

    zmq::green::context_t ctx;
    zmq::green::socket_t server(ctx, zmq::socket_type::rep);
    server.bind("inproc://consumer");

    boost::fibers::fiber echo([&] {
        for (int i = 0; i < 3; ++i) {
            zmq::message_t request;
            (void)server.recv(request); // parks this fiber, not the thread
            server.send(request, zmq::send_flags::none);
        }
    });

    zmq::green::socket_t client(ctx, zmq::socket_type::req);
    client.connect("inproc://consumer");
    int right = 0;
    for (int i = 0; i < 3; ++i) {
        const std::string text = "request " + std::to_string(i);
        client.send(zmq::buffer(text));
        zmq::pollitem_t items[] = {{static_cast<void*>(client), 0, ZMQ_POLLIN, 0}};
        zmq::green::poll(items, 1, std::chrono::milliseconds{-1});
        zmq::message_t reply;
        if (client.recv(reply, zmq::recv_flags::dontwait) && reply.to_string() == text)
            ++right;
    }
    echo.join();
    std::cout << "consumer: " << right << " of 3 replies right\n";
    return right == 3 ? 0 : 1;
}
