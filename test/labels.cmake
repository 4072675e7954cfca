# zmq_green_label_tests(<target> LABELS <label>... [TESTS <test>...])
# Sets the ctest LABELS of the tests gtest_discover_tests found in <target>
# (all of them, or only the named ones). Called after gtest_discover_tests:
# its PROPERTIES cannot carry a list, and it cannot name single tests.
function(zmq_green_label_tests target)
  cmake_parse_arguments(arg "" "" "LABELS;TESTS" ${ARGN})
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
