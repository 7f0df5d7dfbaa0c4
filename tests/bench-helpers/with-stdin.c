/* with-stdin: runs a command with a file as its standard input, without a
 * shell in between (hyperfine -N cannot redirect stdin). Leading NAME=VALUE
 * arguments are added to the environment, as with env(1). The command
 * replaces this process (execvp): the timed work is one extra exec,
 * measured by running the no-op (noop.c) the same way. Built static with
 * musl by scripts/bench.sh, so its own start costs as little as it can.
 *
 *   with-stdin FILE [NAME=VALUE...] COMMAND [ARGS...]
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: with-stdin FILE [NAME=VALUE...] COMMAND [ARGS...]\n");
        return 2;
    }
    int i = 2;
    for (; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (eq == NULL || eq == argv[i]) break;
        if (putenv(argv[i]) != 0) {
            perror("with-stdin: putenv");
            return 2;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "with-stdin: no command given\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0 || dup2(fd, 0) < 0) {
        fprintf(stderr, "with-stdin: %s: ", argv[1]);
        perror(NULL);
        return 2;
    }
    execvp(argv[i], &argv[i]);
    fprintf(stderr, "with-stdin: %s: ", argv[i]);
    perror(NULL);
    return 127;
}
