// Fuzzes a device's tcp endpoint with raw bytes: a plain socket(2) peer
// connects to the frontend a device bound, writes the input (after the first
// byte, which picks the device), and goes. The device must go on relaying:
// a well-behaved peer's message still reaches the other side. With a STREAM
// frontend the bytes themselves are the message, and must arrive intact.
#include "fuzz_support.hpp"

#include <boost/fiber/fiber.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace {

namespace green = zmq::green;
using fuzz::strings;

// A non-blocking TCP connection to 127.0.0.1:port; waits only in green calls.
class raw_peer {
public:
    explicit raw_peer(int port)
    {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        fuzz::check(fd_ >= 0, "socket(2)");
        // Reset on close: no TIME_WAIT piling up over thousands of inputs.
        const linger reset{1, 0};
        ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<std::uint16_t>(port));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
            fuzz::check(errno == EINPROGRESS, "connect(2) in progress");
            fuzz::check(green::wait_writable(fd_, fuzz::patience), "connected in time");
            int err = 0;
            socklen_t len = sizeof err;
            ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
            fuzz::check(err == 0, "connected");
        }
    }
    ~raw_peer() { ::close(fd_); }
    raw_peer(const raw_peer&) = delete;
    raw_peer& operator=(const raw_peer&) = delete;

    // Writes what the peer takes; libzmq may hang up on garbage midway.
    void write(const std::uint8_t* data, std::size_t size)
    {
        while (size > 0) {
            const ssize_t n = ::send(fd_, data, size, MSG_NOSIGNAL);
            if (n > 0) {
                data += n;
                size -= static_cast<std::size_t>(n);
            } else if (n < 0 && errno == EAGAIN) {
                if (!green::wait_writable(fd_, fuzz::patience))
                    return; // the peer stopped reading: enough
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else {
                return; // EPIPE, ECONNRESET: libzmq hung up
            }
        }
    }

private:
    int fd_ = -1;
};

int port_of(const std::string& endpoint)
{
    return std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
}

constexpr std::int64_t max_message_size = 1 << 20;

struct config {
    int device;
    int front_type;    // bound on tcp, where the raw peer connects
    int back_type;     // bound on inproc; the sink connects
    int good_type;     // a well-behaved peer of the frontend, -1: none (STREAM)
    int sink_type;
};

const config configs[] = {
    {ZMQ_STREAMER, ZMQ_PULL, ZMQ_PUSH, ZMQ_PUSH, ZMQ_PULL},
    {ZMQ_QUEUE, ZMQ_ROUTER, ZMQ_DEALER, ZMQ_DEALER, ZMQ_DEALER},
    {ZMQ_QUEUE, ZMQ_PAIR, ZMQ_PAIR, ZMQ_PAIR, ZMQ_PAIR},
    {ZMQ_QUEUE, ZMQ_XSUB, ZMQ_XPUB, ZMQ_PUB, ZMQ_SUB},
    {ZMQ_QUEUE, ZMQ_STREAM, ZMQ_PAIR, -1, ZMQ_PAIR},
};

class rig {
public:
    rig(green::context_t& ctx, const config& c)
        : c_(c), front_(fuzz::make_socket(ctx, c.front_type)),
          back_(fuzz::make_socket(ctx, c.back_type)), sink_(fuzz::make_socket(ctx, c.sink_type))
    {
        // Without a limit libzmq allocates whatever size a frame header
        // claims (the first crash this target found: 2^62 bytes, which
        // ASan refuses). A socket facing untrusted peers needs one.
        front_.set(zmq::sockopt::maxmsgsize, max_message_size);
        front_.bind("tcp://127.0.0.1:*");
        const std::string front_ep = front_.get(zmq::sockopt::last_endpoint);
        port_ = port_of(front_ep);
        const auto back_ep = fuzz::inproc("back");
        back_.bind(back_ep);
        if (c.sink_type == ZMQ_SUB)
            sink_.set(zmq::sockopt::subscribe, "");
        sink_.connect(back_ep);
        device_ = boost::fibers::fiber([this] { green::device(c_.device, front_, back_); });
        if (c.good_type >= 0) {
            good_ = fuzz::make_socket(ctx, c.good_type);
            if (c.good_type == ZMQ_DEALER)
                good_.set(zmq::sockopt::routing_id, "good");
            good_.connect(front_ep);
            expect_relay(); // connected, and subscribed where it matters
        }
    }

    void run(const std::uint8_t* data, std::size_t size)
    {
        if (c_.front_type != ZMQ_STREAM) {
            raw_peer raw(port_);
            raw.write(data, size);
            expect_relay();
            return;
        }
        std::string id;
        {
            raw_peer raw(port_);
            raw.write(data, size);
            id = expect_stream(std::string(reinterpret_cast<const char*>(data), size));
        }
        // The reset connection ends with a disconnect notice.
        const auto bye = fuzz::recv(sink_, "STREAM's disconnect notice");
        fuzz::check(bye == strings({id, ""}), "a disconnect notice for this peer");
    }

private:
    // The good peer's message reaches the sink, maybe after messages of a
    // raw peer that happened to speak ZMTP.
    void expect_relay()
    {
        using clock = std::chrono::steady_clock;
        const std::string body = "good " + std::to_string(++probes_);
        // A PUB drops what it sends before the subscription came back: repeat.
        const bool repeat = c_.good_type == ZMQ_PUB;
        const auto deadline = clock::now() + fuzz::patience;
        fuzz::send(good_, {body});
        while (clock::now() < deadline) {
            if (sink_.poll(ZMQ_POLLIN, std::chrono::milliseconds{repeat ? 10 : 100}) == 0) {
                if (repeat)
                    fuzz::send(good_, {body});
                continue;
            }
            strings got;
            fuzz::check(fuzz::try_recv(sink_, got), "a message after POLLIN");
            if (!got.empty() && got.back() == body)
                return;
        }
        fuzz::fail("the good peer's message never arrived");
    }

    // A STREAM frontend relays [id, bytes] messages: a connect notice (empty
    // bytes), then the data in chunks. Returns the peer's id.
    std::string expect_stream(const std::string& sent)
    {
        const auto hello = fuzz::recv(sink_, "STREAM's connect notice");
        fuzz::check(hello.size() == 2 && hello[1].empty(), "a connect notice");
        std::string got;
        while (got.size() < sent.size()) {
            const auto chunk = fuzz::recv(sink_, "STREAM's data");
            fuzz::check(chunk.size() == 2 && chunk[0] == hello[0], "data of this peer");
            fuzz::check(!chunk[1].empty(), "no disconnect before the data");
            got += chunk[1];
        }
        fuzz::check(got == sent, "the bytes arrive intact");
        return hello[0];
    }

    config c_;
    int port_ = 0;
    unsigned probes_ = 0;
    green::socket_t front_, back_, sink_, good_;
    boost::fibers::fiber device_;
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size == 0 || size > 16384)
        return -1;
    fuzz::on_worker([&] {
        fuzz::pick_rig<rig>(configs, data[0]).run(data + 1, size - 1);
    });
    return 0;
}
