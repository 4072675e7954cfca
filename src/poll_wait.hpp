// The device loop's wait: green poll, plus sockets whose level cannot be
// trusted for a send.
#pragma once

#include <zmq.h>

#include <cstddef>
#include <functional>
#include <vector>

namespace zmq::green::detail {

// As poll(items, nitems, -1), but also returns 0 once retry() succeeds,
// trying it first and after every change of the sockets in `changes` (green
// or plain). For a destination that reports ZMQ_POLLOUT while refusing the
// message at hand (a ROUTER_MANDATORY whose peer is full, while another has
// room; a STREAM): waiting for POLLOUT would spin, and only a command from
// the peer, which brings an edge, can make room. The wait also re-reads
// every 10 ms (blind_recheck), as a blocking send does in that case: a level
// read by anyone after the retry may take that edge.
int poll_or_retry(zmq_pollitem_t* items, size_t nitems, const std::vector<void*>& changes,
                  const std::function<bool()>& retry);

} // namespace zmq::green::detail
