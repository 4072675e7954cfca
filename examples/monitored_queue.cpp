// A monitored queue between clients and workers, all in one thread.
//
// A REQ client talks to a REP worker through zmq::green::monitored_queue
// (ROUTER for the clients, DEALER for the workers), which runs in a fiber of
// its own. The queue also publishes a copy of every message it forwards; a
// SUB prints those copies. When the client is done, shutting the context down
// ends the queue, and the program exits 0.
#include <zmq/green.hpp>

#include <boost/fiber/all.hpp>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

namespace green = zmq::green;

namespace {

constexpr int rounds = 3;

// A frame for printing: text as is, an empty frame as <>, anything else in hex.
std::string show(const zmq::message_t& frame)
{
    if (frame.size() == 0)
        return "<>";
    const auto* bytes = frame.data<unsigned char>();
    bool printable = true;
    for (size_t i = 0; i < frame.size(); ++i)
        printable = printable && bytes[i] >= 0x20 && bytes[i] < 0x7f;
    if (printable)
        return frame.to_string();
    std::string hex = "0x";
    for (size_t i = 0; i < frame.size(); ++i) {
        char digits[3];
        std::snprintf(digits, sizeof digits, "%02x", static_cast<unsigned>(bytes[i]));
        hex += digits;
    }
    return hex;
}

green::socket_t make(green::context_t& ctx, zmq::socket_type type)
{
    green::socket_t s(ctx, type);
    s.set(zmq::sockopt::linger, 0);
    return s;
}

int run()
{
    green::context_t ctx;
    auto clients = make(ctx, zmq::socket_type::router); // the queue's "in" side
    auto workers = make(ctx, zmq::socket_type::dealer); // its "out" side
    auto monitor = make(ctx, zmq::socket_type::xpub);   // where it publishes the copies
    clients.bind("inproc://clients");
    workers.bind("inproc://workers");
    monitor.bind("inproc://monitor");

    // A PUB drops what it sends before a subscription arrives. An XPUB
    // receives the subscription: once it has, the SUB misses nothing.
    auto sub = make(ctx, zmq::socket_type::sub);
    sub.set(zmq::sockopt::subscribe, "");
    sub.connect("inproc://monitor");
    zmq::message_t subscription;
    (void)monitor.recv(subscription); // "\x01" + topic; parks this fiber until it comes

    // Forwards until the context is shut down; the other fibers keep running.
    boost::fibers::fiber queue([&] { green::monitored_queue(clients, workers, monitor, "in", "out"); });

    boost::fibers::fiber worker([&] {
        auto rep = make(ctx, zmq::socket_type::rep);
        rep.connect("inproc://workers");
        for (int i = 0; i < rounds; ++i) {
            zmq::message_t request;
            (void)rep.recv(request);
            rep.send(zmq::buffer("done: " + request.to_string()));
        }
    });

    // Each request and each reply crosses the queue once: two copies per round.
    boost::fibers::fiber printer([&] {
        for (int i = 0; i < 2 * rounds; ++i) {
            std::vector<zmq::message_t> frames;
            (void)green::recv_multipart(sub, std::back_inserter(frames));
            std::string line = "monitor:";
            for (const auto& f : frames)
                line += " [" + show(f) + "]";
            std::cout << line << '\n';
        }
    });

    int failures = 0;
    boost::fibers::fiber client([&] {
        auto req = make(ctx, zmq::socket_type::req);
        req.set(zmq::sockopt::routing_id, "client-1"); // shows up in the monitor's copies
        req.connect("inproc://clients");
        for (int i = 0; i < rounds; ++i) {
            const std::string text = "job " + std::to_string(i);
            req.send(zmq::buffer(text));
            zmq::message_t reply;
            (void)req.recv(reply);
            std::cout << "client: " << text << " -> " << reply.to_string() << '\n';
            if (reply.to_string() != "done: " + text)
                ++failures;
        }
    });

    client.join();
    worker.join();
    printer.join();
    ctx.shutdown(); // the queue sees ETERM and returns normally
    queue.join();
    std::cout << (failures == 0 ? "monitored_queue: ok" : "monitored_queue: FAILED") << '\n';
    return failures == 0 ? 0 : 1;
}

} // namespace

int main()
{
    try {
        return run();
    } catch (const std::exception& e) {
        std::cerr << "monitored_queue: " << e.what() << '\n';
        return 1;
    }
}
