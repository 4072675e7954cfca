// Fuzzes monitored_queue with random multipart messages on both sides. The
// first input byte picks the sockets (PAIR-PAIR, ROUTER-DEALER, ROUTER-ROUTER
// with named peers, with ZMQ_ROUTER_MANDATORY, with an unnamed peer); the
// rest are messages (see fuzz_support.hpp), side 0 from the in peer, side 1
// from the out peer. The oracle follows pyzmq: ROUTER sources prepend the
// sender's id, ROUTER-ROUTER swaps the first two frames, ROUTER destinations
// deliver only to a named, connected peer, and mon gets [prefix] + exactly
// the frames sent, for every message, delivered or not.
#include "fuzz_support.hpp"

#include <boost/fiber/fiber.hpp>

#include <optional>

namespace {

namespace green = zmq::green;
using fuzz::strings;

struct config {
    int in_type;
    int out_type;
    const char* in_peer_id;  // nullptr: the in peer sets no ZMQ_ROUTING_ID
    bool mandatory;
};

const config configs[] = {
    {ZMQ_PAIR, ZMQ_PAIR, "a", false},
    {ZMQ_ROUTER, ZMQ_DEALER, "a", false},
    {ZMQ_ROUTER, ZMQ_ROUTER, "a", false},
    {ZMQ_ROUTER, ZMQ_ROUTER, "a", true},
    {ZMQ_ROUTER, ZMQ_ROUTER, nullptr, false},
};

class rig {
public:
    rig(green::context_t& ctx, const config& c)
        : c_(c), in_(fuzz::make_socket(ctx, c.in_type)), out_(fuzz::make_socket(ctx, c.out_type)),
          mon_(fuzz::make_socket(ctx, ZMQ_PAIR)), mon_peer_(fuzz::make_socket(ctx, ZMQ_PAIR))
    {
        peer_[0] = fuzz::make_socket(ctx, c.in_type == ZMQ_PAIR ? ZMQ_PAIR : ZMQ_DEALER);
        peer_[1] = fuzz::make_socket(ctx, c.out_type == ZMQ_PAIR ? ZMQ_PAIR : ZMQ_DEALER);
        if (c.in_peer_id)
            peer_[0].set(zmq::sockopt::routing_id, c.in_peer_id);
        peer_[1].set(zmq::sockopt::routing_id, "b");
        id_[0] = c.in_peer_id ? c.in_peer_id : "";
        id_[1] = "b";
        for (auto* s : {&in_, &out_})
            if (c.mandatory)
                s->set(zmq::sockopt::router_mandatory, true);
        const auto in_ep = fuzz::inproc("in"), out_ep = fuzz::inproc("out"),
                   mon_ep = fuzz::inproc("mon");
        in_.bind(in_ep);
        out_.bind(out_ep);
        mon_.bind(mon_ep);
        peer_[0].connect(in_ep);
        peer_[1].connect(out_ep);
        mon_peer_.connect(mon_ep);
        queue_ = boost::fibers::fiber([this] { green::monitored_queue(in_, out_, mon_); });
        if (!c.in_peer_id)
            learn_in_peer_id();
        run({});
    }

    void run(const std::vector<fuzz::message>& input)
    {
        std::vector<strings> delivered[2]; // to peer 0, to peer 1
        std::vector<strings> monitored[2]; // by direction: from peer 0, from peer 1
        auto send = [&](int side, const strings& frames) {
            fuzz::send(peer_[side], frames);
            const auto [to_peer, mon] = expect(side, frames);
            if (to_peer)
                delivered[1 - side].push_back(*to_peer);
            monitored[side].push_back(mon);
        };
        for (const auto& m : input)
            send(m.side, m.frames);
        // A probe each way that the oracle says arrives.
        for (int side : {0, 1})
            send(side, probe(side));
        for (int side : {0, 1})
            for (const auto& want : delivered[side])
                if (fuzz::recv(peer_[side], "a delivery") != want)
                    fuzz::fail("peer %d got a message changed, out of order or not for it", side);
        strings extra;
        for (int side : {0, 1})
            fuzz::check(!fuzz::try_recv(peer_[side], extra), "nothing undelivered arrived");
        // The copies went out before the originals: all are waiting.
        std::size_t next[2] = {0, 0};
        for (std::size_t n = monitored[0].size() + monitored[1].size(); n > 0; --n) {
            strings copy;
            if (!fuzz::try_recv(mon_peer_, copy))
                fuzz::fail("mon is missing a message");
            const int side = !copy.empty() && copy[0] == "out" ? 1 : 0;
            fuzz::check(next[side] < monitored[side].size(), "mon has no extra message");
            if (copy != monitored[side][next[side]++])
                fuzz::fail("mon message %zu of side %d is not [prefix] + the frames sent",
                           next[side] - 1, side);
        }
        fuzz::check(!fuzz::try_recv(mon_peer_, extra), "mon has nothing more");
    }

private:
    // What the peer on the other side receives (if anything) and what mon
    // receives, for frames sent by the peer on `side`.
    std::pair<std::optional<strings>, strings> expect(int side, const strings& frames) const
    {
        const int src_type = side == 0 ? c_.in_type : c_.out_type;
        const int dst_type = side == 0 ? c_.out_type : c_.in_type;
        strings msg;
        if (src_type == ZMQ_ROUTER)
            msg.push_back(id_[side]);
        msg.insert(msg.end(), frames.begin(), frames.end());
        if (src_type == ZMQ_ROUTER && dst_type == ZMQ_ROUTER)
            std::swap(msg[0], msg[1]); // a ROUTER message has at least two frames
        strings mon{side == 0 ? "in" : "out"};
        mon.insert(mon.end(), msg.begin(), msg.end());
        if (dst_type != ZMQ_ROUTER)
            return {msg, mon};
        // A ROUTER takes the first frame as the peer's id and drops a
        // message with nothing after it.
        if (msg.size() >= 2 && msg[0] == id_[1 - side])
            return {strings(msg.begin() + 1, msg.end()), mon};
        return {std::nullopt, mon};
    }

    // A message the oracle says arrives: addressed where a ROUTER routes it
    // (a ROUTER source's id is swapped in behind the address).
    strings probe(int side) const
    {
        const int dst_type = side == 0 ? c_.out_type : c_.in_type;
        const std::string body = side == 0 ? "probe-in" : "probe-out";
        if (dst_type == ZMQ_ROUTER)
            return {id_[1 - side], body};
        return {body};
    }

    // The in ROUTER names an unnamed peer itself; mon shows the name.
    void learn_in_peer_id()
    {
        fuzz::send(peer_[0], {"nobody"});
        const auto copy = fuzz::recv(mon_peer_, "mon, learning the in peer's id");
        fuzz::check(copy.size() == 3 && copy[0] == "in" && copy[1] == "nobody",
                    "mon shows [in, nobody, id]");
        id_[0] = copy[2];
    }

    config c_;
    green::socket_t in_, out_, mon_, mon_peer_;
    green::socket_t peer_[2];
    std::string id_[2];
    boost::fibers::fiber queue_;
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size == 0)
        return 0;
    fuzz::on_worker([&] {
        fuzz::pick_rig<rig>(configs, data[0]).run(fuzz::split_messages(data + 1, size - 1));
    });
    return 0;
}
