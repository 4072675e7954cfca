// pyzmq's gevent request-reply example (examples/gevent/reqrep.py), in fibers
// of one thread: a REQ client, a REP server, and between them a broker
// (ROUTER for clients, DEALER for servers) made of two fibers, one per
// direction, each a blocking receive-and-forward loop.
//
//   gevent_reqrep [--requests N]      (default 10)
#include "options.hpp"

#include <zmq/green.hpp>

#include <boost/fiber/all.hpp>

#include <iostream>
#include <iterator>
#include <string>
#include <vector>

namespace green = zmq::green;

namespace {

// Forwards whole messages until the context is shut down. Both broker fibers
// use both sockets, one receiving while the other sends: each direction of a
// green socket has its own waiters.
void forward(green::socket_t& from, green::socket_t& to)
{
    try {
        for (;;) {
            std::vector<zmq::message_t> msg;
            (void)green::recv_multipart(from, std::back_inserter(msg));
            green::send_multipart(to, msg);
        }
    } catch (const zmq::error_t& e) {
        // ETERM: main shut the context down, the program is done.
        if (e.num() != ETERM)
            throw;
    }
}

} // namespace

int main(int argc, char** argv)
{
    int requests = 10;
    examples::parse_counts(argc, argv, {{"--requests", &requests}});

    green::context_t ctx;
    green::socket_t frontend(ctx, zmq::socket_type::router);
    green::socket_t backend(ctx, zmq::socket_type::dealer);
    frontend.bind("inproc://frontend");
    backend.bind("inproc://backend");
    boost::fibers::fiber to_servers([&] { forward(frontend, backend); });
    boost::fibers::fiber to_clients([&] { forward(backend, frontend); });

    boost::fibers::fiber server([&] {
        green::socket_t rep(ctx, zmq::socket_type::rep);
        rep.connect("inproc://backend");
        try {
            for (;;) {
                zmq::message_t request;
                (void)rep.recv(request);
                rep.send(zmq::buffer("World, to " + request.to_string()));
            }
        } catch (const zmq::error_t& e) {
            // ETERM: main shut the context down, the program is done.
            if (e.num() != ETERM)
                throw;
        }
    });

    int answered = 0;
    boost::fibers::fiber client([&] {
        green::socket_t req(ctx, zmq::socket_type::req);
        req.connect("inproc://frontend");
        for (int i = 1; i <= requests; ++i) {
            const std::string hello = "Hello " + std::to_string(i);
            req.send(zmq::buffer(hello));
            zmq::message_t reply;
            (void)req.recv(reply);
            std::cout << "client: " << hello << " -> " << reply.to_string() << '\n';
            answered += reply.to_string() == "World, to " + hello;
        }
    });

    client.join();
    // Wakes the broker and the server, parked in recv, with ETERM.
    ctx.shutdown();
    server.join();
    to_servers.join();
    to_clients.join();

    const bool ok = answered == requests;
    std::cout << "gevent_reqrep: " << answered << " of " << requests << " answered: "
              << (ok ? "ok" : "FAILED") << '\n';
    return ok ? 0 : 1;
}
