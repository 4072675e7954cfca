// REQ/REP in two fibers of one thread, written in plain blocking style.
#include <zmq/green.hpp>

#include <boost/fiber/all.hpp>

#include <iostream>

int main()
{
    zmq::green::context_t ctx;
    zmq::green::socket_t server(ctx, zmq::socket_type::rep);
    server.bind("inproc://hello");

    boost::fibers::fiber echo([&] {
        for (int i = 0; i < 3; ++i) {
            zmq::message_t request;
            (void)server.recv(request); // parks this fiber, not the thread
            server.send(zmq::buffer("world: " + request.to_string()));
        }
    });

    zmq::green::socket_t client(ctx, zmq::socket_type::req);
    client.connect("inproc://hello");
    for (int i = 0; i < 3; ++i) {
        client.send(zmq::buffer("hello " + std::to_string(i)));
        zmq::message_t reply;
        (void)client.recv(reply);
        std::cout << reply.to_string() << '\n';
    }
    echo.join();
}
