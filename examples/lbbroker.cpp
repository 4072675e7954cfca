// The ZeroMQ guide's load-balancing broker (lbbroker), on one thread: worker
// fibers and client fibers, each a blocking REQ loop, and the broker, which
// polls a ROUTER for the clients and a ROUTER for the workers. A worker says
// READY, then sends each reply; either way it is free again, and the broker
// hands the next request to the worker that has been free the longest. It
// reads clients only while some worker is free, so requests wait in libzmq,
// not in the broker.
//
//   lbbroker [--workers N] [--clients N]      (defaults: 100 workers, 1000 clients)
#include "fd_limit.hpp"
#include "options.hpp"

#include <zmq/green.hpp>

#include <boost/fiber/all.hpp>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <iterator>
#include <string>
#include <vector>

namespace green = zmq::green;

namespace {

using message = std::vector<zmq::message_t>;

void worker(green::context_t& ctx, int& served)
{
    green::socket_t s(ctx, zmq::socket_type::req);
    s.connect("inproc://backend");
    s.send(zmq::str_buffer("READY"));
    try {
        for (;;) {
            message msg; // [client address][empty][request]
            (void)green::recv_multipart(s, std::back_inserter(msg));
            green::send_multipart(s, msg); // the reply: the request itself, to the same client
            ++served;
        }
    } catch (const zmq::error_t& e) {
        // ETERM: main shut the context down, the program is done.
        if (e.num() != ETERM)
            throw;
    }
}

void client(green::context_t& ctx, int id, int& answered)
{
    green::socket_t s(ctx, zmq::socket_type::req);
    s.connect("inproc://frontend");
    const std::string hello = "HELLO from client " + std::to_string(id);
    s.send(zmq::buffer(hello));
    zmq::message_t reply;
    (void)s.recv(reply);
    answered += reply.to_string() == hello;
}

// Routes requests to free workers and replies back, until `expected` replies.
void broker(green::socket_t& frontend, green::socket_t& backend, int expected)
{
    std::deque<zmq::message_t> free_workers; // addresses, longest free first
    for (int replies = 0; replies < expected;) {
        zmq_pollitem_t items[] = {{static_cast<void*>(backend), 0, ZMQ_POLLIN, 0},
                                  {static_cast<void*>(frontend), 0, ZMQ_POLLIN, 0}};
        // Clients only when a worker is free; parks until something is ready.
        green::poll(items, free_workers.empty() ? 1 : 2);

        if (items[0].revents & ZMQ_POLLIN) {
            message msg; // [worker][empty][READY] or [worker][empty][client][empty][reply]
            (void)green::recv_multipart(backend, std::back_inserter(msg));
            free_workers.push_back(std::move(msg[0]));
            if (msg.size() == 5) {
                msg.erase(msg.begin(), msg.begin() + 2);
                green::send_multipart(frontend, msg);
                ++replies;
            }
        }
        if (items[1].revents & ZMQ_POLLIN) {
            message msg; // [client][empty][request]
            (void)green::recv_multipart(frontend, std::back_inserter(msg));
            msg.insert(msg.begin(), zmq::message_t{});
            msg.insert(msg.begin(), std::move(free_workers.front()));
            free_workers.pop_front();
            green::send_multipart(backend, msg);
        }
    }
}

} // namespace

int main(int argc, char** argv)
{
    int workers = 100;
    int clients = 1000;
    examples::parse_counts(argc, argv, {{"--workers", &workers}, {"--clients", &clients}});

    // inproc needs no connection fds: one per socket, plus libzmq's own.
    const int sockets = workers + clients + 2;
    const rlim_t fds = static_cast<rlim_t>(sockets) + 64;
    if (examples::raise_fd_limit(fds) < fds) {
        std::fprintf(stderr, "lbbroker: %d sockets need %llu fds; the hard limit is lower\n",
                     sockets, static_cast<unsigned long long>(fds));
        return 1;
    }
    green::context_t ctx(1, sockets + 16); // ZMQ_MAX_SOCKETS defaults to 1023

    green::socket_t frontend(ctx, zmq::socket_type::router);
    green::socket_t backend(ctx, zmq::socket_type::router);
    frontend.bind("inproc://frontend");
    backend.bind("inproc://backend");

    std::vector<int> served(static_cast<size_t>(workers), 0);
    int answered = 0;
    std::vector<boost::fibers::fiber> worker_fibers;
    for (auto& count : served)
        worker_fibers.emplace_back([&ctx, &count] { worker(ctx, count); });
    std::vector<boost::fibers::fiber> client_fibers;
    for (int id = 0; id < clients; ++id)
        client_fibers.emplace_back([&ctx, id, &answered] { client(ctx, id, answered); });

    broker(frontend, backend, clients);
    for (auto& f : client_fibers)
        f.join();
    ctx.shutdown(); // the workers, parked in recv, get ETERM
    for (auto& f : worker_fibers)
        f.join();

    const auto [least, most] = std::minmax_element(served.begin(), served.end());
    // Every worker is free (READY) before it serves, and free workers are
    // served longest-free first: with at least as many requests as workers,
    // each gets work.
    const bool balanced = clients < workers || *least > 0;
    const bool ok = answered == clients && balanced;
    std::printf("lbbroker: %d of %d clients answered by %d workers (%d to %d requests each), "
                "hub rescues %llu: %s\n",
                answered, clients, workers, *least, *most,
                static_cast<unsigned long long>(green::hub::current().stats().rescues),
                ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
