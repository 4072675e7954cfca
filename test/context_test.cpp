#include "support.hpp"

#include <unistd.h>

#include <atomic>
#include <thread>

using namespace std::chrono_literals;
namespace green = zmq::green;

TEST(context, max_sockets_can_be_raised)
{
    green::context_t ctx(1, 20000);
    EXPECT_EQ(ctx.get(zmq::ctxopt::max_sockets), 20000);
    ctx.set(zmq::ctxopt::max_sockets, 5000);
    EXPECT_EQ(ctx.get(zmq::ctxopt::max_sockets), 5000);
}

TEST(context, shutdown_from_another_thread_releases_a_thousand_parked_fibers)
{
    green::context_t ctx;
    green::socket_t pull(ctx, zmq::socket_type::pull);
    green::socket_t push(ctx, zmq::socket_type::push); // no peer: sends park
    std::vector<boost::fibers::fiber> fibers;
    int eterm = 0;
    for (int i = 0; i < 1000; ++i) {
        fibers.emplace_back([&, i] {
            try {
                if (i % 2) {
                    zmq::message_t m;
                    (void)pull.recv(m);
                } else {
                    push.send(zmq::str_buffer("x"));
                }
            } catch (const zmq::error_t& e) {
                EXPECT_EQ(e.num(), ETERM);
                ++eterm;
            }
        });
    }
    boost::this_fiber::yield(); // all of them park
    std::thread([&] { ctx.shutdown(); }).join();
    for (auto& f : fibers)
        f.join();
    EXPECT_EQ(eterm, 1000);
    push.close();
    pull.close();
}

// A fiber queued for a direction behind another fiber's unfinished message
// is parked on the socket too, though the owner is busy elsewhere. The owner
// meets ETERM at its next frame.
TEST(context, shutdown_wakes_a_fiber_queued_behind_an_unfinished_message)
{
    green::context_t ctx;
    test::bound_pair p(ctx, zmq::socket_type::push, zmq::socket_type::pull, test::unique_inproc());
    p.a.set(zmq::sockopt::sndtimeo, 10000); // a queued fiber nothing wakes fails, not hangs
    green::event body_ready;
    int owner_errno = 0;
    int queued_errno = 0;
    boost::fibers::fiber owner([&] {
        p.a.send(zmq::str_buffer("head"), zmq::send_flags::sndmore);
        body_ready.wait();
        owner_errno = test::errno_of([&] { p.a.send(zmq::str_buffer("body")); });
    });
    boost::fibers::fiber queued([&] {
        queued_errno = test::errno_of([&] { EXPECT_FALSE(p.a.send(zmq::str_buffer("other"))); });
    });
    boost::this_fiber::yield(); // the owner waits for its body, the other for the owner
    ctx.shutdown();
    queued.join();
    EXPECT_EQ(queued_errno, ETERM);
    body_ready.set();
    owner.join();
    EXPECT_EQ(owner_errno, ETERM);
}

TEST(context, close_parks_only_the_caller_until_the_sockets_are_closed)
{
    auto ctx = std::make_unique<green::context_t>();
    bool closed = false;
    int ticks_while_closing = 0;
    test::run_fibers({[&] {
                          green::socket_t s(*ctx, zmq::socket_type::pull);
                          zmq::message_t m;
                          try {
                              (void)s.recv(m);
                          } catch (const zmq::error_t& e) {
                              EXPECT_EQ(e.num(), ETERM);
                          }
                          // Still busy for a while after ETERM; the closer waits.
                          for (int i = 0; i < 10; ++i)
                              boost::this_fiber::yield();
                      },
                      [&] {
                          ctx->close();
                          closed = true;
                      },
                      [&] {
                          while (!closed) {
                              ++ticks_while_closing;
                              boost::this_fiber::yield();
                          }
                      }});
    EXPECT_TRUE(closed);
    EXPECT_GT(ticks_while_closing, 0);
    EXPECT_EQ(ctx->handle(), nullptr);
}

// close() is noexcept: a kill that comes while it waits for libzmq's linger
// must neither end that wait (leaving the thread blocked, every fiber with
// it, until the linger ends) nor get lost: it waits for the next green wait.
TEST(context, a_kill_during_close_blocks_no_fiber_and_is_not_lost)
{
    green::context_t ctx;
    {
        green::socket_t s(ctx, zmq::socket_type::push);
        s.set(zmq::sockopt::linger, 300);
        s.connect("tcp://127.0.0.1:1"); // nobody listens: the message lingers
        ASSERT_TRUE(s.send(zmq::str_buffer("x"), zmq::send_flags::dontwait));
    }
    int never[2];
    ASSERT_EQ(::pipe(never), 0);
    bool closing = false, closed = false, kill_delivered = false;
    green::task closer = green::spawn([&] {
        closing = true;
        ctx.close();
        closed = true;
        try {
            (void)green::wait_readable(never[0], 5s);
        } catch (const green::fiber_cancelled&) {
            kill_delivered = true;
            throw;
        }
    });
    while (!closing)
        boost::this_fiber::yield();
    closer.kill(false);
    boost::this_fiber::yield();
    EXPECT_FALSE(closed) << "the close ran to its end on the thread while another fiber waited";
    EXPECT_TRUE(closer.join(10s));
    EXPECT_TRUE(closed);
    EXPECT_TRUE(kill_delivered);
    EXPECT_TRUE(closer.killed());
    ::close(never[0]);
    ::close(never[1]);
}

// As cppzmq's: a const context still converts to the libzmq handle, for the
// raw zmq_* calls a port keeps.
TEST(context, converts_to_its_libzmq_handle_when_const)
{
    green::context_t ctx;
    const green::context_t& view = ctx;
    const auto* raw = static_cast<const void*>(view);
    EXPECT_NE(raw, nullptr);
    EXPECT_EQ(raw, ctx.handle());
    EXPECT_EQ(zmq_ctx_get(const_cast<void*>(raw), ZMQ_IO_THREADS), 1);
    ctx.close();
    EXPECT_EQ(static_cast<const void*>(view), nullptr);
}

TEST(context, socket_on_a_closed_context_is_an_error)
{
    green::context_t ctx;
    ctx.close();
    EXPECT_THROW(green::socket_t(ctx, zmq::socket_type::pair), zmq::error_t);
    EXPECT_THROW(ctx.set(zmq::ctxopt::io_threads, 1), zmq::error_t);
}

TEST(context, sockets_in_several_threads)
{
    green::context_t ctx;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            green::socket_t a(ctx, zmq::socket_type::pair);
            green::socket_t b(ctx, zmq::socket_type::pair);
            const auto ep = "inproc://thread-" + std::to_string(t);
            a.bind(ep);
            b.connect(ep);
            test::run_fibers({[&] {
                                  for (int i = 0; i < 100; ++i)
                                      a.send(zmq::str_buffer("x"));
                              },
                              [&] {
                                  zmq::message_t m;
                                  for (int i = 0; i < 100; ++i)
                                      ASSERT_TRUE(b.recv(m));
                              }});
        });
    for (auto& t : threads)
        t.join();
}

// --- bad input -----------------------------------------------------------------

TEST(context, BadInput_bad_options_are_einval_and_the_context_still_works)
{
    EXPECT_EQ(test::errno_of([] { green::context_t(-1); }), EINVAL);
    EXPECT_EQ(test::errno_of([] { green::context_t(1, 0); }), EINVAL);
    green::context_t ctx;
    EXPECT_EQ(test::errno_of([&] { ctx.set(zmq::ctxopt::io_threads, -1); }), EINVAL);
    EXPECT_EQ(test::errno_of([&] { ctx.set(static_cast<zmq::ctxopt>(9999), 1); }), EINVAL);
    EXPECT_EQ(test::errno_of([&] { (void)ctx.get(static_cast<zmq::ctxopt>(9999)); }), EINVAL);
    green::context_t moved(std::move(ctx));
    EXPECT_EQ(test::errno_of([&] { (void)ctx.get(zmq::ctxopt::io_threads); }), EFAULT);
    EXPECT_EQ(test::errno_of([&] { green::socket_t(ctx, zmq::socket_type::pair); }), EFAULT);
    ctx.shutdown(); // a no-op on an empty context
    ctx.close();
    green::socket_t a(moved, zmq::socket_type::pair), b(moved, zmq::socket_type::pair);
    a.bind("inproc://context-bad-input");
    b.connect("inproc://context-bad-input");
    a.send(zmq::str_buffer("x"));
    zmq::message_t m;
    EXPECT_TRUE(b.recv(m));
}

// pyzmq's destroy(): the sockets nobody waits on, which would keep close()
// parked for ever, are closed; a fiber parked on one wakes with ENOTSOCK.
TEST(context, destroy_closes_this_threads_sockets_and_terminates)
{
    green::context_t ctx;
    green::context_t other;
    green::socket_t idle(ctx, zmq::socket_type::pair);
    green::socket_t waited(ctx, zmq::socket_type::pull);
    green::socket_t elsewhere(other, zmq::socket_type::pair);
    int woke_with = 0;
    test::run_fibers({[&] {
                          try {
                              zmq::message_t m;
                              (void)waited.recv(m);
                          } catch (const zmq::error_t& e) {
                              woke_with = e.num();
                          }
                      },
                      [&] { ctx.destroy(); }});
    EXPECT_EQ(woke_with, ENOTSOCK);
    EXPECT_FALSE(ctx);
    EXPECT_FALSE(idle);
    EXPECT_FALSE(waited);
    try {
        idle.send(zmq::str_buffer("x"));
        ADD_FAILURE() << "sent on a destroyed context's socket";
    } catch (const zmq::error_t& e) {
        EXPECT_EQ(e.num(), ENOTSOCK);
    }
    // Another context's socket is left alone.
    EXPECT_TRUE(elsewhere);
    elsewhere.bind(test::unique_inproc());
    ctx.destroy(); // again: nothing left to do
}

// A message queued for a peer that never comes would hold the termination
// for ever with the default linger (-1).
TEST(context, destroy_with_a_linger_does_not_wait_for_an_absent_peer)
{
    green::context_t ctx;
    sockaddr_in addr{};
    const int refusing = test::bound_loopback_socket(addr); // bound, never listening
    green::socket_t push(ctx, zmq::socket_type::push);
    push.connect("tcp://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)));
    EXPECT_TRUE(push.send(zmq::str_buffer("never delivered"), zmq::send_flags::dontwait));
    ctx.destroy(0ms);
    EXPECT_FALSE(ctx);
    EXPECT_FALSE(push);
    ::close(refusing);
}

// Another thread's sockets are not this thread's to close: that thread's
// fibers wake with ETERM, and destroy() waits for them to close.
TEST(context, destroy_waits_for_another_threads_sockets)
{
    green::context_t ctx;
    green::socket_t mine(ctx, zmq::socket_type::pair);
    std::atomic<bool> parked{false};
    int theirs_woke_with = 0;
    std::thread other([&] {
        green::socket_t theirs(ctx, zmq::socket_type::pull);
        theirs.set(zmq::sockopt::linger, 0);
        parked = true;
        try {
            zmq::message_t m;
            (void)theirs.recv(m);
        } catch (const zmq::error_t& e) {
            theirs_woke_with = e.num();
        }
    });
    while (!parked)
        boost::this_fiber::yield();
    ctx.destroy(); // returns once `theirs` closed on its thread
    other.join();
    EXPECT_EQ(theirs_woke_with, ETERM);
    EXPECT_FALSE(mine);
}

TEST(context, BadInput_destroy_with_a_linger_below_minus_one)
{
    green::context_t ctx;
    green::socket_t s(ctx, zmq::socket_type::pair);
    try {
        ctx.destroy(-2ms);
        ADD_FAILURE() << "linger -2 accepted";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("-2"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(ctx); // nothing was closed
    EXPECT_TRUE(s);
    EXPECT_THROW(ctx.destroy(std::chrono::hours(1000)), std::invalid_argument);
    ctx.destroy(-1ms);
    EXPECT_FALSE(s);
}

// destroy() is the way out of a close() parked for a socket nobody closes:
// called from another fiber meanwhile, it closes that socket.
TEST(context, destroy_releases_a_close_parked_for_a_socket_nobody_closes)
{
    green::context_t ctx;
    green::socket_t idle(ctx, zmq::socket_type::pair);
    bool closing = false;
    bool closed = false;
    test::run_fibers({[&] {
                          closing = true;
                          ctx.close(); // parks: `idle` is open
                          closed = true;
                      },
                      [&] {
                          while (!closing)
                              boost::this_fiber::yield();
                          EXPECT_FALSE(closed);
                          ctx.destroy();
                      }});
    EXPECT_TRUE(closed);
    EXPECT_FALSE(idle);
}
