// The ZeroMQ guide's Lazy Pirate client: reliable request-reply, done by the
// client alone. It waits for each reply with a timeout; when none comes it
// closes its REQ socket, opens a new one and sends the request again, and
// after a number of tries it gives up. Its server is a fiber of the same
// thread that drops every third request it receives, and goes away after
// the last request, so the client ends by giving up on one more.
//
//   lazy_pirate [--requests N] [--timeout MS] [--retries R]
//   (defaults: 10 requests, 250 ms timeout, 3 tries per request)
#include "options.hpp"

#include <zmq/green.hpp>

#include <boost/fiber/all.hpp>

#include <chrono>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

namespace green = zmq::green;

namespace {

struct settings {
    int requests = 10;
    int timeout_ms = 250;
    int retries = 3;
};

// A ROUTER, not a REP: a REP must answer one request before it can take the
// next, while a ROUTER may leave one unanswered. Answers request `last`,
// then goes away. Returns how many requests it dropped.
int serve(green::socket_t& server, const std::string& last)
{
    int dropped = 0;
    try {
        for (int received = 1;; ++received) {
            std::vector<zmq::message_t> msg; // [client identity][empty][request]
            (void)green::recv_multipart(server, std::back_inserter(msg));
            const std::string request = msg.back().to_string();
            if (received % 3 == 0) {
                std::cout << "server: dropping request " << request << '\n';
                ++dropped;
                continue;
            }
            green::send_multipart(server, msg); // the reply is the request itself
            if (request == last)
                break;
        }
    } catch (const zmq::error_t& e) {
        if (e.num() != ENOTSOCK) // closed by main: the client failed before `last`
            throw;
    }
    return dropped;
}

green::socket_t open_client(green::context_t& ctx, const std::string& endpoint)
{
    green::socket_t client(ctx, zmq::socket_type::req);
    // Closing must not wait to deliver a request nobody answers.
    client.set(zmq::sockopt::linger, 0);
    client.connect(endpoint);
    return client;
}

// Sends request and returns the reply, or nothing after `retries` tries.
std::optional<std::string> lazy_request(green::context_t& ctx, green::socket_t& client,
                                        const std::string& endpoint, const std::string& request,
                                        const settings& s, int& resent)
{
    for (int attempt = 1;; ++attempt) {
        client.send(zmq::buffer(request));
        zmq_pollitem_t items[] = {{static_cast<void*>(client), 0, ZMQ_POLLIN, 0}};
        // Parks this fiber (the server fiber runs) until a reply or the timeout.
        if (green::poll(items, 1, std::chrono::milliseconds{s.timeout_ms}) > 0) {
            zmq::message_t reply;
            (void)client.recv(reply);
            return reply.to_string();
        }
        // A REQ that sent a request cannot send another before the reply:
        // the only way to send again, this request or the next, is a new socket.
        client = open_client(ctx, endpoint);
        if (attempt == s.retries) {
            std::cout << "client: no reply to " << request << ", giving up\n";
            return std::nullopt;
        }
        std::cout << "client: no reply to " << request << ", resending\n";
        ++resent;
    }
}

} // namespace

int main(int argc, char** argv)
{
    settings s;
    examples::parse_counts(argc, argv, {{"--requests", &s.requests},
                                        {"--timeout", &s.timeout_ms},
                                        {"--retries", &s.retries}});

    green::context_t ctx;
    green::socket_t server_socket(ctx, zmq::socket_type::router);
    server_socket.bind("tcp://127.0.0.1:*");
    const std::string endpoint = server_socket.get(zmq::sockopt::last_endpoint);

    int dropped = 0;
    boost::fibers::fiber server([&] {
        dropped = serve(server_socket, std::to_string(s.requests));
        server_socket.close(); // the server is gone for good
    });

    int answered = 0;
    int resent = 0;
    auto client = open_client(ctx, endpoint);
    for (int i = 1; i <= s.requests && answered == i - 1; ++i) {
        const auto reply = lazy_request(ctx, client, endpoint, std::to_string(i), s, resent);
        if (reply == std::to_string(i))
            ++answered;
        else
            std::cout << "client: request " << i << (reply ? " got a wrong reply" : " failed")
                      << '\n';
    }
    if (answered < s.requests)
        server_socket.close(); // the server still waits for the last request: end it
    server.join();
    // Nobody answers now: the client must give up, after `retries` tries.
    int resent_in_vain = 0;
    const bool gave_up = !lazy_request(ctx, client, endpoint, "one more", s, resent_in_vain);

    const bool ok = answered == s.requests && gave_up;
    std::cout << "lazy_pirate: " << answered << " of " << s.requests << " answered, " << dropped
              << " dropped by the server, " << resent << " resent, "
              << (gave_up ? "gave up" : "did not give up") << " once the server was gone: "
              << (ok ? "ok" : "FAILED") << '\n';
    return ok ? 0 : 1;
}
