// One thread: a ROUTER echo server fiber and thousands of REQ client fibers,
// each written in plain blocking style, doing round trips over tcp loopback.
//
//   many_clients [--clients N] [--rounds R]      (defaults: 10000 clients, 20 rounds)
#include "fd_limit.hpp"
#include "options.hpp"

#include <zmq/green.hpp>

#include <boost/fiber/all.hpp>

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string>
#include <vector>

namespace green = zmq::green;
using namespace std::chrono_literals;

namespace {

// Each client costs about three fds: its socket's signal fd and both ends of
// its tcp connection.
constexpr rlim_t fds_per_client = 3;
constexpr rlim_t spare_fds = 64;

// Raises the fd limit as far as allowed; returns how many clients fit.
int clients_that_fit(int wanted)
{
    const rlim_t needed = static_cast<rlim_t>(wanted) * fds_per_client + spare_fds;
    const rlim_t limit = examples::raise_fd_limit(needed);
    if (limit >= needed)
        return wanted;
    const int fit = limit > spare_fds ? static_cast<int>((limit - spare_fds) / fds_per_client) : 0;
    std::printf("the fd limit is %llu: running %d clients instead of %d\n",
                static_cast<unsigned long long>(limit), fit, wanted);
    return fit;
}

long peak_rss_kib()
{
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

} // namespace

int main(int argc, char** argv)
{
    int clients = 10000;
    int rounds = 20;
    examples::parse_counts(argc, argv, {{"--clients", &clients}, {"--rounds", &rounds}});
    clients = clients_that_fit(clients);
    if (clients <= 0)
        return 1;

    green::context_t ctx(1, clients + 16); // ZMQ_MAX_SOCKETS defaults to 1023
    green::socket_t server(ctx, zmq::socket_type::router);
    server.set(zmq::sockopt::linger, 0);
    server.set(zmq::sockopt::backlog, 4096); // thousands connect at once
    server.set(zmq::sockopt::sndhwm, 0);
    server.set(zmq::sockopt::rcvhwm, 0);
    server.bind("tcp://127.0.0.1:*");
    const std::string endpoint = server.get(zmq::sockopt::last_endpoint);
    std::printf("%d REQ client fibers x %d round trips to a ROUTER echo at %s, one thread\n",
                clients, rounds, endpoint.c_str());

    const long total = static_cast<long>(clients) * rounds;
    long done = 0;
    bool finished = false;

    boost::fibers::fiber echo([&] {
        std::vector<zmq::message_t> msg;
        try {
            for (;;) {
                msg.clear();
                (void)green::recv_multipart(server, std::back_inserter(msg));
                green::send_multipart(server, msg); // [identity, empty, body] goes back
            }
        } catch (const zmq::error_t& e) {
            if (e.num() != ENOTSOCK)
                std::fprintf(stderr, "echo: %s\n", e.what());
        }
    });

    const auto start = std::chrono::steady_clock::now();
    std::vector<boost::fibers::fiber> fibers;
    fibers.reserve(static_cast<size_t>(clients));
    // Small pooled stacks: a parked client costs only the stack pages it touched.
    green::stack_pool stacks(64 * 1024);
    for (int c = 0; c < clients; ++c) {
        fibers.emplace_back(std::allocator_arg, stacks, [&, c] {
            green::socket_t req(ctx, zmq::socket_type::req);
            req.set(zmq::sockopt::linger, 0);
            req.connect(endpoint);
            const std::string body = "client " + std::to_string(c);
            zmq::message_t reply;
            for (int r = 0; r < rounds; ++r) {
                req.send(zmq::buffer(body));
                (void)req.recv(reply);
                if (reply.to_string() != body) {
                    std::fprintf(stderr, "client %d: wrong reply '%s'\n", c,
                                 reply.to_string().c_str());
                    std::exit(1);
                }
                ++done;
            }
        });
    }

    boost::fibers::fiber progress([&] {
        while (!finished) {
            boost::this_fiber::sleep_for(1s);
            if (!finished)
                std::printf("  %ld / %ld round trips\n", done, total);
            std::fflush(stdout);
        }
    });

    for (auto& f : fibers)
        f.join();
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    finished = true;
    progress.join();
    server.close();
    echo.join();

    const auto stats = green::hub::current().stats();
    std::printf("%ld round trips in %.2f s: %.0f round trips/s\n", done, elapsed.count(),
                static_cast<double>(done) / elapsed.count());
    std::printf("peak memory %.1f MiB (%.1f KiB per client)\n",
                static_cast<double>(peak_rss_kib()) / 1024.0,
                static_cast<double>(peak_rss_kib()) / clients);
    std::printf("hub: %llu fd wake-ups, %llu timer wake-ups, %llu remote wake-ups, %llu rescues\n",
                static_cast<unsigned long long>(stats.fd_wakeups),
                static_cast<unsigned long long>(stats.timer_wakeups),
                static_cast<unsigned long long>(stats.remote_wakeups),
                static_cast<unsigned long long>(stats.rescues));
    return done == total ? 0 : 1;
}
