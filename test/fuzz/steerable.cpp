// Fuzzes proxy_steerable's control protocol. The input's messages (see
// fuzz_support.hpp) go to the control socket (side 0) or through the proxy
// as data (side 1). Then RESUME and a probe follow. Whatever the commands,
// the proxy must relay every data message and the probe, in order, with a
// copy of each frame on capture, answer the control socket as documented,
// and end only on TERMINATE, after which it is started again.
#include "fuzz_support.hpp"

#include <boost/fiber/fiber.hpp>

#include <cstring>
#include <memory>

namespace {

namespace green = zmq::green;
using fuzz::strings;

// One proxy and its peers, kept across inputs (a new proxy fiber after each
// TERMINATE). ctrl_type is PAIR or REP; the controller is PAIR or REQ.
class rig {
public:
    explicit rig(green::context_t& ctx, int ctrl_type)
        : rep_(ctrl_type == ZMQ_REP), front_(fuzz::make_socket(ctx, ZMQ_PAIR)),
          back_(fuzz::make_socket(ctx, ZMQ_PAIR)), capture_(fuzz::make_socket(ctx, ZMQ_PAIR)),
          ctrl_(fuzz::make_socket(ctx, ctrl_type)), a_(fuzz::make_socket(ctx, ZMQ_PAIR)),
          b_(fuzz::make_socket(ctx, ZMQ_PAIR)), capture_peer_(fuzz::make_socket(ctx, ZMQ_PAIR)),
          controller_(fuzz::make_socket(ctx, rep_ ? ZMQ_REQ : ZMQ_PAIR))
    {
        link(front_, a_, "front");
        link(back_, b_, "back");
        link(capture_, capture_peer_, "capture");
        link(ctrl_, controller_, "ctrl");
        start();
    }

    void run(const std::vector<fuzz::message>& input)
    {
        std::vector<strings> sent; // data messages, in order
        for (const auto& m : input) {
            if (m.side == 1) {
                fuzz::send(a_, m.frames);
                sent.push_back(m.frames);
            } else {
                command(m.frames);
            }
        }
        command({"RESUME"});
        fuzz::send(a_, {"probe"});
        sent.push_back({"probe"});
        // Everything arrives, in order, once the proxy works through the
        // commands (and is restarted after a TERMINATE).
        for (const auto& want : sent)
            if (await_data() != want)
                fuzz::fail("a data message arrived changed or out of order");
        // Copies go out before the originals: all are there.
        for (const auto& want : sent) {
            strings copy;
            if (!fuzz::try_recv(capture_peer_, copy))
                fuzz::fail("capture is missing a message");
            fuzz::check(copy == want, "capture has the message as sent");
        }
        drain_statistics();
    }

private:
    static void link(green::socket_t& bound, green::socket_t& peer, const char* name)
    {
        const auto ep = fuzz::inproc(name);
        bound.bind(ep);
        peer.connect(ep);
    }

    void start()
    {
        ended_ = std::make_shared<bool>(false);
        proxy_ = boost::fibers::fiber([this, ended = ended_] {
            green::proxy_steerable(front_, back_, capture_, ctrl_);
            *ended = true;
        });
    }

    void restart_if_ended()
    {
        if (*ended_) {
            proxy_.join();
            start();
        }
    }

    void command(const strings& frames)
    {
        restart_if_ended();
        fuzz::send(controller_, frames);
        if (!rep_)
            return;
        // A REP control socket answers every command at once.
        const auto reply = fuzz::recv(controller_, "the REP control socket's reply");
        if (frames.size() == 1 && frames[0] == "STATISTICS")
            check_statistics(reply);
        else
            fuzz::check(reply == strings{""}, "an empty reply to every other command");
        restart_if_ended();
    }

    strings await_data()
    {
        const auto deadline = std::chrono::steady_clock::now() + fuzz::patience;
        while (std::chrono::steady_clock::now() < deadline) {
            restart_if_ended();
            if (b_.poll(ZMQ_POLLIN, std::chrono::milliseconds{10}) != 0) {
                strings got;
                fuzz::check(fuzz::try_recv(b_, got), "a message after POLLIN");
                return got;
            }
        }
        fuzz::fail("the proxy relays nothing");
    }

    // Commands are handled between whole messages, and data only flows
    // front to back: what came in the front went out the back.
    static void check_statistics(const strings& reply)
    {
        fuzz::check(reply.size() == 8, "STATISTICS has 8 frames");
        std::uint64_t v[8];
        for (std::size_t i = 0; i < 8; ++i) {
            fuzz::check(reply[i].size() == sizeof(std::uint64_t), "each a uint64");
            std::memcpy(&v[i], reply[i].data(), sizeof v[i]);
        }
        fuzz::check(v[0] == v[6] && v[1] == v[7], "frontend in = backend out");
        fuzz::check(v[2] == 0 && v[3] == 0 && v[4] == 0 && v[5] == 0, "nothing flowed back");
    }

    void drain_statistics()
    {
        strings reply;
        while (!rep_ && fuzz::try_recv(controller_, reply))
            check_statistics(reply);
    }

    bool rep_;
    green::socket_t front_, back_, capture_, ctrl_, a_, b_, capture_peer_, controller_;
    boost::fibers::fiber proxy_;
    std::shared_ptr<bool> ended_;
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size == 0)
        return 0;
    fuzz::on_worker([&] {
        // Never destroyed: the proxies and their context live until the process exits.
        static auto* ctx = new green::context_t;
        static auto* pair_rig = new rig(*ctx, ZMQ_PAIR);
        static auto* rep_rig = new rig(*ctx, ZMQ_REP);
        auto& r = (data[0] & 1) ? *rep_rig : *pair_rig;
        r.run(fuzz::split_messages(data + 1, size - 1));
    });
    return 0;
}
