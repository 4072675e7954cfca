# zmq_green_label_tests(<target> LABELS <label>... [TESTS <test>...])
# Sets the ctest LABELS of the tests gtest_discover_tests found in <target>
# (all of them, or only the named ones). Called after gtest_discover_tests:
# its PROPERTIES cannot carry a list, and it cannot name single tests.
#
# A target given the label `threads` also becomes a dependency of
# zmq_green_threads_tests, which .ci/tsan builds: a labelled test whose
# executable that build left out would silently not run.
add_custom_target(zmq_green_threads_tests)

function(zmq_green_label_tests target)
  cmake_parse_arguments(arg "" "" "LABELS;TESTS" ${ARGN})
  if("threads" IN_LIST arg_LABELS)
    add_dependencies(zmq_green_threads_tests ${target})
  endif()
  set(script "${CMAKE_CURRENT_BINARY_DIR}/${target}_labels.cmake")
  file(WRITE "${script}" "set(wanted \"${arg_TESTS}\")
foreach(t IN LISTS ${target}_TESTS)
  list(FIND wanted \"\${t}\" found)
  if(NOT wanted OR found GREATER -1)
    set_tests_properties(\"\${t}\" PROPERTIES LABELS \"${arg_LABELS}\")
  endif()
endforeach()
")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${script}")
endfunction()
