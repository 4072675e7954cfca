// Green send_multipart / recv_multipart with the shapes of cppzmq's zmq_addon.hpp.
#pragma once

#include <zmq/green/socket.hpp>

#include <zmq_addon.hpp>

#include <iterator>
#include <stdexcept>
#include <type_traits>

namespace zmq::green {

// Receives all frames of one message into out. Returns the number of frames,
// or an empty result if none was waiting (dontwait, ZMQ_RCVTIMEO). No other
// fiber receives from the socket between the first and the last frame.
template<class OutputIt>
ZMQ_NODISCARD recv_result_t recv_multipart(socket_ref s, OutputIt out,
                                           recv_flags flags = recv_flags::none)
{
    detail::message_frames frames(s);
    size_t count = 0;
    for (bool more = true; more; ++count) {
        message_t msg;
        // Frames after the first are already here: libzmq delivers messages whole.
        if (!frames.recv(msg, count == 0 ? flags : recv_flags::none))
            return {};
        more = msg.more();
        *out++ = std::move(msg);
    }
    return count;
}

// As recv_multipart, but throws std::runtime_error (after writing n frames)
// when the message has more than n frames. The rest of that message is
// dropped (cppzmq leaves it for the next receive): see message_frames.
template<class OutputIt>
ZMQ_NODISCARD recv_result_t recv_multipart_n(socket_ref s, OutputIt out, size_t n,
                                             recv_flags flags = recv_flags::none)
{
    detail::message_frames frames(s);
    size_t count = 0;
    for (bool more = true; more; ++count) {
        if (count >= n)
            throw std::runtime_error("Too many message parts in recv_multipart_n");
        message_t msg;
        if (!frames.recv(msg, count == 0 ? flags : recv_flags::none))
            return {};
        more = msg.more();
        *out++ = std::move(msg);
    }
    return count;
}

// Sends a range of message_t or buffers as one message. Returns the number of
// frames, or an empty result if the first frame could not be queued
// (dontwait, ZMQ_SNDTIMEO); then nothing was sent. If the message's peer goes
// away after its first frame, a PUSH, DEALER or REQ drops what it queued: the
// result is empty if that happens at the last frame, or at a later one under
// dontwait or ZMQ_SNDTIMEO; otherwise the send waits until the socket can
// send again, libzmq drops the rest as its blocking send does, and the
// message is reported sent. With send_flags::sndmore, as in cppzmq, the
// message goes on with the caller's next sends; no other fiber's frames come
// between.
template<class Range,
         typename = std::enable_if_t<
             zmq::detail::is_range<Range>::value
             && (std::is_same_v<zmq::detail::range_value_t<Range>, message_t>
                 || zmq::detail::is_buffer<zmq::detail::range_value_t<Range>>::value)>>
send_result_t send_multipart(socket_ref s, Range&& msgs, send_flags flags = send_flags::none)
{
    using std::begin;
    using std::end;
    auto it = begin(msgs);
    const auto last = end(msgs);
    detail::message_frames frames(s);
    size_t count = 0;
    while (it != last) {
        const auto next = std::next(it);
        const auto frame_flags = flags | (next == last ? send_flags::none : send_flags::sndmore);
        if (!frames.send(*it, frame_flags))
            return {};
        ++count;
        it = next;
    }
    if ((flags & send_flags::sndmore) != send_flags::none)
        frames.leave_open();
    return count;
}

} // namespace zmq::green

// cppzmq code calls zmq::send_multipart(socket, ...); with these, the same
// call on a green socket takes the green path. Plain sockets still resolve to
// cppzmq's overloads, which take zmq::socket_ref.
namespace zmq {
using green::recv_multipart;
using green::recv_multipart_n;
using green::send_multipart;
} // namespace zmq
