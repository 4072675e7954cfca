// zmq-green-device: runs one zmq::green device from the command line.
#include "device_cli.hpp"

#include <zmq/green.hpp>

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

namespace cli = zmq::green::cli;

namespace {

void print_stats(const zmq::green::proxy_statistics& s)
{
    std::cout << "{\"frontend\":{\"msgs_in\":" << s.frontend_msgs_in
              << ",\"bytes_in\":" << s.frontend_bytes_in << ",\"msgs_out\":" << s.frontend_msgs_out
              << ",\"bytes_out\":" << s.frontend_bytes_out
              << "},\"backend\":{\"msgs_in\":" << s.backend_msgs_in
              << ",\"bytes_in\":" << s.backend_bytes_in << ",\"msgs_out\":" << s.backend_msgs_out
              << ",\"bytes_out\":" << s.backend_bytes_out << "}}" << std::endl;
}

int run(int argc, char** argv)
{
    std::unique_ptr<zmq::green::devices::background_device> dev;
    double stats_seconds = 0;
    try {
        const auto config = cli::parse_command_line(argc, argv, std::cout);
        if (!config)
            return 0; // --help
        dev = cli::make_device(*config);
        stats_seconds = config->stats_seconds;
    } catch (const cli::usage_error& e) {
        std::cerr << "zmq-green-device: " << e.what() << " (see --help)" << std::endl;
        return 2;
    }

    // Blocked before any thread exists, so that only the signalfd sees them.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    const int sfd = signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        std::perror("zmq-green-device: signalfd");
        return 1;
    }

    try {
        dev->start();
        for (const auto& b : dev->endpoints())
            std::cout << "bound " << b.socket << " " << b.endpoint << "\n";
        std::cout.flush();

        using clock = std::chrono::steady_clock;
        const auto interval = std::chrono::duration_cast<clock::duration>(
            std::chrono::duration<double>(stats_seconds));
        auto next_stats = clock::now() + interval;
        for (;;) {
            // Short slices: the device may also end by itself (TERMINATE),
            // and the next counters may be due sooner.
            using std::chrono::milliseconds;
            auto slice = milliseconds{100};
            if (stats_seconds > 0)
                slice = std::clamp(std::chrono::ceil<milliseconds>(next_stats - clock::now()),
                                   milliseconds{0}, slice);
            if (zmq::green::wait_readable(sfd, slice)) {
                signalfd_siginfo info;
                (void)!::read(sfd, &info, sizeof info);
                dev->stop();
                break;
            }
            // Not done() and join(): after TERMINATE the device may still be
            // delivering what it forwarded (--linger), and a signal must
            // still stop it.
            if (dev->join(std::chrono::milliseconds{0}))
                break;
            const auto now = clock::now();
            if (stats_seconds > 0 && now >= next_stats) {
                print_stats(dev->statistics());
                // Ticks missed while the output blocked are skipped, not
                // printed in a burst (as pyzmq's PeriodicCallback does).
                while (next_stats <= now)
                    next_stats += interval;
            }
        }
        if (stats_seconds > 0)
            print_stats(dev->statistics());
    } catch (const zmq::green::devices::device_error& e) {
        std::cerr << "zmq-green-device: " << e.what() << std::endl;
        return 1;
    }
    ::close(sfd);
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::cerr << "zmq-green-device: " << e.what() << std::endl;
        return 1;
    }
}
