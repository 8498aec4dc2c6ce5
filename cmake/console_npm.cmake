# Installs the web console's pinned npm packages (console/package-lock.json) into the build dir
# with `npm ci`. Run by the build only when the lock file changes (a stamp file records it).
# Usage: cmake -DNPM=npm -DSRC=console -DDIR=build/console -DSTAMP=file -P console_npm.cmake
file(MAKE_DIRECTORY "${DIR}")
file(COPY "${SRC}/package.json" "${SRC}/package-lock.json" DESTINATION "${DIR}")
# No install scripts: esbuild finds its platform binary without its postinstall step.
execute_process(COMMAND "${NPM}" ci --ignore-scripts --no-audit --no-fund --loglevel=error
                WORKING_DIRECTORY "${DIR}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(NOTICE "nimbus: 'npm ci' for the web console failed (exit ${rc}): the npm registry must be reachable (or npm's cache filled) to build it; configure with -DNIMBUS_CONSOLE=OFF to build without the console")
  message(FATAL_ERROR "npm ci failed")
endif()
file(TOUCH "${STAMP}")
