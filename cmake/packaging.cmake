# CPack: `cpack -G DEB` in the build directory makes one Debian package with
# everything install() puts in place: the static library, the headers, the
# CMake package files, zmq_green.pc and the zmq-green-device tool.

# A static library plus headers: its users compile against the headers of
# libzmq, cppzmq and Boost.Fiber/Context and link their libraries, so the
# package needs their -dev packages (which bring the runtime libraries the
# tool needs too), and pkg-config, which both zmq_green-config.cmake and
# zmq_green.pc rely on to find libzmq. Boost is pinned to the series the
# library was built with: Boost.Fiber promises no ABI across releases.
set(ZMQ_GREEN_BOOST_SERIES "${Boost_VERSION_MAJOR}.${Boost_VERSION_MINOR}")
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "libzmq3-dev (>= ${libzmq_VERSION}), cppzmq-dev (>= ${cppzmq_VERSION}), \
libboost-fiber${ZMQ_GREEN_BOOST_SERIES}-dev, libboost-context${ZMQ_GREEN_BOOST_SERIES}-dev, \
pkgconf | pkg-config")

set(ZMQ_GREEN_PACKAGE_MAINTAINER "zmq-green maintainers <maintainers@zmq-green.invalid>"
    CACHE STRING "The Maintainer field of the Debian package")

set(CPACK_PACKAGE_NAME libzmq-green-dev)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY ${PROJECT_DESCRIPTION})
set(CPACK_PACKAGE_CONTACT ${ZMQ_GREEN_PACKAGE_MAINTAINER})
set(CPACK_DEBIAN_PACKAGE_MAINTAINER ${ZMQ_GREEN_PACKAGE_MAINTAINER})
set(CPACK_DEBIAN_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT) # name_version_arch.deb
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_GENERATOR DEB)
include(CPack)
