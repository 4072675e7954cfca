// Fuzzes zmq-green-device's command line: the input, split at NUL bytes, is
// argv. Every outcome must be a configuration the library accepts or a
// usage_error of one line; nothing else may escape.
#include "device_cli.hpp"
#include "fuzz_support.hpp"

#include <ostream>
#include <streambuf>

namespace {

// Discards the --help text.
struct null_buffer : std::streambuf {
    int overflow(int ch) override { return ch; }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size > 4096)
        return -1;
    std::vector<std::string> args{"zmq-green-device"};
    std::string current;
    for (std::size_t i = 0; i < size && args.size() < 64; ++i) {
        if (data[i] == 0) {
            args.push_back(current);
            current.clear();
        } else {
            current.push_back(static_cast<char>(data[i]));
        }
    }
    if (!current.empty())
        args.push_back(current);
    std::vector<const char*> argv;
    for (const auto& a : args)
        argv.push_back(a.c_str());
    argv.push_back(nullptr);

    null_buffer discard;
    std::ostream help(&discard);
    namespace cli = zmq::green::cli;
    try {
        const auto config = cli::parse_command_line(static_cast<int>(args.size()), argv.data(),
                                                    help);
        if (!config)
            return 0;
        fuzz::check(config->in.type >= 0 && config->out.type >= 0, "in and out have a type");
        fuzz::check(!config->in.binds.empty() || !config->in.connects.empty(), "in has endpoints");
        const auto device = cli::make_device(*config);
        fuzz::check(device != nullptr, "a device was made");
        fuzz::check(device->in_type() == config->in.type, "the device has the in type");
    } catch (const cli::usage_error& e) {
        const std::string what = e.what();
        fuzz::check(!what.empty(), "a usage error says something");
        fuzz::check(what.find('\n') == std::string::npos, "a usage error is one line");
    }
    return 0;
}
