// The echo server of pyzmq's eventloop docs, on a zmq_stream.
//
//   echo_stream ENDPOINT   bind a REP there and echo until SIGINT/SIGTERM
//   echo_stream            check itself with a blocking client fiber
#include <zmq/green.hpp>

#include <boost/fiber/all.hpp>

#include <sys/signalfd.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>

namespace green = zmq::green;

namespace {

// The whole server: every request goes back as it came.
void serve(green::zmq_stream& stream)
{
    stream.on_recv_stream([](green::zmq_stream& s, green::zmq_stream::message& msg) {
        s.send_multipart(std::move(msg));
    });
}

int serve_until_signalled(const std::string& endpoint)
{
    // Signals arrive as a readable fd, handled on the loop like any other.
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0)
        return std::perror("sigprocmask"), 1;
    const int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        return std::perror("signalfd"), 1;

    green::context_t ctx;
    auto& loop = green::io_loop::current();
    {
        green::zmq_stream stream(green::socket_t(ctx, zmq::socket_type::rep));
        stream.set(zmq::sockopt::linger, 0);
        stream.bind(endpoint);
        serve(stream);
        loop.add_handler(
            sfd,
            [&](short) {
                signalfd_siginfo info;
                while (::read(sfd, &info, sizeof info) > 0) {
                }
                loop.stop();
            },
            ZMQ_POLLIN);
        std::cout << "echoing on " << stream.get(zmq::sockopt::last_endpoint) << std::endl;
        loop.start();
        loop.remove_handler(sfd);
    }
    ::close(sfd);
    return 0;
}

int self_check()
{
    green::context_t ctx;
    auto& loop = green::io_loop::current();
    green::zmq_stream stream(green::socket_t(ctx, zmq::socket_type::rep));
    stream.set(zmq::sockopt::linger, 0);
    stream.bind("inproc://echo");
    serve(stream);

    int failures = 0;
    // A plain blocking client, in a fiber of the loop's own thread.
    boost::fibers::fiber client([&] {
        green::socket_t req(ctx, zmq::socket_type::req);
        req.set(zmq::sockopt::linger, 0);
        req.connect("inproc://echo");
        for (int i = 0; i < 10; ++i) {
            const std::string text = "hello " + std::to_string(i);
            req.send(zmq::buffer(text));
            zmq::message_t reply;
            if (!req.recv(reply) || reply.to_string() != text)
                ++failures;
        }
        loop.stop();
    });
    loop.start();
    client.join();
    std::cout << (failures == 0 ? "echo_stream: 10 echoes ok" : "echo_stream: FAILED") << '\n';
    return failures == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char** argv)
{
    try {
        return argc > 1 ? serve_until_signalled(argv[1]) : self_check();
    } catch (const std::exception& e) {
        std::cerr << "echo_stream: " << e.what() << '\n';
        return 1;
    }
}
