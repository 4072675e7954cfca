// A plain libzmq peer for peers_test, run as a child process so that it can
// be killed with SIGKILL. It prints one line, "ready <endpoint>", once its
// socket is bound or connecting, then serves until killed:
//
//   stress_peer router <endpoint> <generation>
//       binds a ROUTER (retrying while the address is still in use) and
//       answers every [id, payload...] with [id, generation, payload...]
//   stress_peer dealer <endpoint> <routing-id> <generation>
//       connects a DEALER with that routing id and sends
//       [generation, 0], [generation, 1], ... as fast as the peer takes them
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace {

void say_ready(const std::string& endpoint)
{
    std::printf("ready %s\n", endpoint.c_str());
    std::fflush(stdout);
}

int router(const std::string& endpoint, const std::string& generation)
{
    zmq::context_t ctx;
    zmq::socket_t s(ctx, zmq::socket_type::router);
    s.set(zmq::sockopt::linger, 0);
    // The previous incarnation's port can stay busy for a moment after its death.
    for (int attempt = 0;; ++attempt) {
        try {
            s.bind(endpoint);
            break;
        } catch (const zmq::error_t& e) {
            if (e.num() != EADDRINUSE || attempt == 500)
                throw;
            std::this_thread::sleep_for(std::chrono::milliseconds{10});
        }
    }
    say_ready(s.get(zmq::sockopt::last_endpoint));
    for (;;) {
        std::vector<zmq::message_t> parts;
        if (!zmq::recv_multipart(s, std::back_inserter(parts)) || parts.size() < 2)
            continue;
        parts.insert(parts.begin() + 1, zmq::message_t(generation));
        zmq::send_multipart(s, parts);
    }
}

int dealer(const std::string& endpoint, const std::string& routing_id,
           const std::string& generation)
{
    zmq::context_t ctx;
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::routing_id, routing_id);
    s.connect(endpoint);
    say_ready(endpoint);
    for (unsigned long seq = 0;; ++seq) {
        const std::string text = std::to_string(seq);
        s.send(zmq::buffer(generation), zmq::send_flags::sndmore);
        s.send(zmq::buffer(text));
    }
}

} // namespace

int main(int argc, char** argv)
{
    // Never outlive the test, whatever happens to it.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        return 1;
    const std::vector<std::string> args(argv + 1, argv + argc);
    try {
        if (args.size() == 3 && args[0] == "router")
            return router(args[1], args[2]);
        if (args.size() == 4 && args[0] == "dealer")
            return dealer(args[1], args[2], args[3]);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "stress_peer: %s\n", e.what());
        return 1;
    }
    std::fprintf(stderr, "usage: stress_peer router ENDPOINT GENERATION\n"
                         "       stress_peer dealer ENDPOINT ROUTING_ID GENERATION\n");
    return 2;
}
