/*
 * echo_epoll.c - reference echo server: one thread, level-triggered epoll,
 * non-blocking sockets. The practical ceiling for the benchmark.
 *
 *   gcc -O2 -o echo_epoll echo_epoll.c && ./echo_epoll PORT
 *
 * Listens on 127.0.0.1:PORT and echoes everything. When a write would
 * block, the unsent tail is kept and the connection stops reading until it
 * has been flushed (EPOLLOUT), so memory per connection stays bounded.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFSZ 65536

struct conn {
    int fd;
    size_t off, len; /* pending output: buf[off .. len) */
    char *buf;       /* allocated only while output is pending */
};

static int ep;
static char rbuf[BUFSZ];
static volatile sig_atomic_t stop;

static void on_signal(int sig) { (void)sig; stop = 1; }

static void drop(struct conn *c) {
    close(c->fd);
    free(c->buf);
    free(c);
}

static int set_events(struct conn *c, unsigned ev) {
    struct epoll_event e = {.events = ev, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* Writes the pending tail; returns 0 when flushed, 1 if still pending, -1 on error. */
static int flush_out(struct conn *c) {
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return 1;
            return -1;
        }
        c->off += (size_t)n;
    }
    free(c->buf);
    c->buf = NULL;
    c->off = c->len = 0;
    return set_events(c, EPOLLIN) < 0 ? -1 : 0;
}

static void on_readable(struct conn *c) {
    for (;;) {
        ssize_t n = read(c->fd, rbuf, sizeof rbuf);
        if (n == 0) { drop(c); return; }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            drop(c);
            return;
        }
        ssize_t w = 0;
        while (w < n) {
            ssize_t k = send(c->fd, rbuf + w, (size_t)(n - w), MSG_NOSIGNAL);
            if (k < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) break;
                drop(c);
                return;
            }
            w += k;
        }
        if (w < n) {
            c->len = (size_t)(n - w);
            c->off = 0;
            c->buf = malloc(c->len);
            if (!c->buf) { drop(c); return; }
            memcpy(c->buf, rbuf + w, c->len);
            if (set_events(c, EPOLLOUT) < 0) drop(c);
            return;
        }
        if (n < (ssize_t)sizeof rbuf) return; /* drained; level-triggered */
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 1;
    }
    int port = atoi(argv[argc - 1]);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("bind/listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le);

    struct epoll_event evs[512];
    while (!stop) {
        int n = epoll_wait(ep, evs, 512, 1000);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == NULL) {
                for (int k = 0; k < 64; k++) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break; /* EAGAIN, or EMFILE: retried on next wake */
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    if (!nc) { close(fd); continue; }
                    nc->fd = fd;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = nc};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) drop(nc);
                }
                continue;
            }
            if (c->buf) {
                if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
                    int r = flush_out(c);
                    if (r < 0) drop(c);
                }
            } else {
                on_readable(c);
            }
        }
    }
    close(lfd);
    return 0;
}
