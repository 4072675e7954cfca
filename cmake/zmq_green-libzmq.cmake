# zmq_green_find_libzmq(<REQUIRED|QUIET>): libzmq >= 4.3 through pkg-config,
# as the imported target PkgConfig::libzmq; sets libzmq_FOUND. Used by this
# project's build and by the installed package config.
#
# CMake 3.25's FindPkgConfig hands a "-isystem <dir>" in a .pc's Cflags
# (Debian's libzmq.pc has one, for Kerberos) to the target as an include
# directory when it runs pkg-config, but as a compile option when a later
# configure reads its cache. Every compile line would change on the second
# configure and the whole build run again; the target always gets the first
# form here.
macro(zmq_green_find_libzmq mode)
  pkg_check_modules(libzmq ${mode} IMPORTED_TARGET libzmq>=4.3)
  if(TARGET PkgConfig::libzmq)
    _zmq_green_isystem_to_include_dirs(PkgConfig::libzmq)
  endif()
endmacro()

function(_zmq_green_isystem_to_include_dirs target)
  get_target_property(options ${target} INTERFACE_COMPILE_OPTIONS)
  if(NOT options)
    return()
  endif()
  get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
  if(NOT dirs)
    set(dirs "")
  endif()
  set(kept "")
  set(dir_follows FALSE)
  foreach(option IN LISTS options)
    if(dir_follows)
      set(dir_follows FALSE)
      list(APPEND dirs "${option}")
    elseif(option STREQUAL "-isystem")
      set(dir_follows TRUE)
    elseif(option MATCHES "^-isystem(.+)$")
      list(APPEND dirs "${CMAKE_MATCH_1}")
    else()
      list(APPEND kept "${option}")
    endif()
  endforeach()
  list(REMOVE_DUPLICATES dirs)
  set_target_properties(${target} PROPERTIES
    INTERFACE_COMPILE_OPTIONS "${kept}"
    INTERFACE_INCLUDE_DIRECTORIES "${dirs}")
endfunction()
