/*
 * What connect() of a socket that is NOT redirected costs, for comparing the same loop inside
 * and outside an agent cgroup (whose cgroup/connect4 and sock_ops programs see every connect).
 *
 *   connect_cost BATCHES CALLS_PER_BATCH
 *
 * Two loops, each BATCHES batches of CALLS_PER_BATCH iterations on 127.0.0.1:
 *   refused:     socket(); connect() to a port nobody listens on (ECONNREFUSED); close()
 *   established: socket(); connect() to our own listener; accept(); close() both
 * Prints one line "BENCHJSON {...}" with the nanoseconds per iteration of every batch.
 * Written for bench.py (tests/bench), which compiles it with `cc -O2`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static struct sockaddr_in loopback(unsigned short port) {
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

/* A port that refuses: bind one, note it, close it (nobody listens there afterwards). */
static unsigned short closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = loopback(0);
    socklen_t len = sizeof addr;
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        perror("closed_port");
        exit(2);
    }
    close(fd);
    return ntohs(addr.sin_port);
}

static int refused_once(const struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int rc = connect(fd, (const struct sockaddr *)addr, sizeof *addr);
    int ok = rc != 0 && errno == ECONNREFUSED;
    close(fd);
    return ok ? 0 : -1;
}

static int established_once(int listener, const struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0) {
        close(fd);
        return -1;
    }
    int peer = accept(listener, NULL, NULL);
    if (peer < 0) {
        close(fd);
        return -1;
    }
    /* An abortive close (RST) leaves no TIME_WAIT behind, so ports never run out. */
    struct linger abort_close = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
    close(fd);
    close(peer);
    return 0;
}

static void run(const char *name, int batches, int calls, int listener,
                const struct sockaddr_in *addr, int first) {
    printf("%s\"%s\":[", first ? "" : ",", name);
    for (int b = 0; b < batches; b++) {
        long long start = now_ns();
        for (int i = 0; i < calls; i++) {
            int rc = listener < 0 ? refused_once(addr) : established_once(listener, addr);
            if (rc != 0) {
                fprintf(stderr, "%s: iteration failed: errno %d\n", name, errno);
                exit(1);
            }
        }
        printf("%s%.1f", b ? "," : "", (double)(now_ns() - start) / calls);
    }
    printf("]");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: connect_cost BATCHES CALLS_PER_BATCH\n");
        return 2;
    }
    int batches = atoi(argv[1]), calls = atoi(argv[2]);
    struct sockaddr_in refused = loopback(closed_port());

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in bound = loopback(0);
    socklen_t len = sizeof bound;
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&bound, sizeof bound) != 0 || listen(listener, 64) != 0 ||
        getsockname(listener, (struct sockaddr *)&bound, &len) != 0) {
        perror("listener");
        return 2;
    }
    printf("BENCHJSON {");
    run("refused", batches, calls, -1, &refused, 1);
    run("established", batches, calls, listener, &bound, 0);
    printf("}\n");
    return 0;
}
