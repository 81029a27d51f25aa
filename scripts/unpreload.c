/* scripts/unpreload.c: run $REALDIR/<name this program was called by>
 * without LD_PRELOAD. Built by scripts/sanitize-common.sh and linked under
 * the name of each PostgreSQL program: the sanitizer runtime preloaded into
 * Python must not reach the server programs (initdb hangs under ASan, the
 * shell crashes under TSan). A shell script cannot do it: the shell would
 * start under the preload itself. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef REALDIR
#error "build with -DREALDIR=\"/path/to/the/real/programs\""
#endif

int
main(int argc, char **argv)
{
    char path[PATH_MAX];
    const char *name = strrchr(argv[0], '/');

    (void)argc;
    name = name ? name + 1 : argv[0];
    if (snprintf(path, sizeof(path), "%s/%s", REALDIR, name) >= (int)sizeof(path)) {
        fprintf(stderr, "unpreload: path too long\n");
        return 127;
    }
    unsetenv("LD_PRELOAD");
    argv[0] = path;
    execv(path, argv);
    fprintf(stderr, "unpreload: cannot run %s: %s\n", path, strerror(errno));
    return 127;
}
