/*
 * A UDP load generator for one dht-rpc node (benchmarks/suite.py builds it).
 *
 *   loadgen HOST PORT POOLFILE INFLIGHT WARMUP_S SECONDS
 *
 * POOLFILE holds pre-encoded protobuf `Request` payloads (no header), each
 * prefixed by its length as 2 bytes big-endian; they are sent in turn, so C
 * needs no protobuf. Every datagram is the udp-request framing: a 2-byte
 * big-endian header with the request bit (0x8000) and a 15-bit tid, then the
 * payload. INFLIGHT requests are kept outstanding on one socket: each answer
 * (a datagram without the request bit whose tid is outstanding) sends the
 * next request; a request unanswered after 1 s counts as lost and is
 * replaced. Answers are counted for SECONDS after WARMUP_S seconds of
 * warm-up. Prints one JSON line: answers, answers per second, lost, bytes
 * received, and this program's own CPU share over the window (getrusage), so
 * the reader can see the generator was not the bottleneck.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_INFLIGHT 4096
#define TIDS 32768
#define LOST_AFTER 1.0

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static unsigned char *pool_data;
static size_t *pool_off, *pool_len, pool_n, pool_next;

static void load_pool(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    pool_data = malloc(size > 0 ? (size_t)size : 1);
    if (size <= 0 || fread(pool_data, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "loadgen: cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
    size_t cap = 1024, pos = 0;
    pool_off = malloc(cap * sizeof(size_t));
    pool_len = malloc(cap * sizeof(size_t));
    while (pos + 2 <= (size_t)size) {
        size_t len = ((size_t)pool_data[pos] << 8) | pool_data[pos + 1];
        pos += 2;
        if (pos + len > (size_t)size || len + 2 > 65507) {
            fprintf(stderr, "loadgen: truncated pool file\n");
            exit(2);
        }
        if (pool_n == cap) {
            cap *= 2;
            pool_off = realloc(pool_off, cap * sizeof(size_t));
            pool_len = realloc(pool_len, cap * sizeof(size_t));
        }
        pool_off[pool_n] = pos;
        pool_len[pool_n] = len;
        pool_n++;
        pos += len;
    }
    if (pool_n == 0) {
        fprintf(stderr, "loadgen: empty pool file\n");
        exit(2);
    }
}

static int sock;
static struct sockaddr_in to;
static int slot_of_tid[TIDS];       /* slot + 1, 0 when no request has this tid */
static int tid_of_slot[MAX_INFLIGHT]; /* -1 when the slot is free */
static double sent_at[MAX_INFLIGHT];
static unsigned next_tid;
static unsigned char buf[65536];

/* Send the next pooled request in `slot`; on a full socket buffer the slot
 * stays free and is refilled at the next sweep. */
static void send_slot(int slot, double t) {
    unsigned tid = next_tid;
    for (int tries = 0; slot_of_tid[tid] && tries < TIDS; tries++) tid = (tid + 1) % TIDS;
    next_tid = (tid + 1) % TIDS;
    size_t i = pool_next;
    pool_next = (pool_next + 1) % pool_n;
    buf[0] = 0x80 | (tid >> 8);
    buf[1] = tid & 0xff;
    memcpy(buf + 2, pool_data + pool_off[i], pool_len[i]);
    if (sendto(sock, buf, pool_len[i] + 2, 0, (struct sockaddr *)&to, sizeof to) < 0) {
        tid_of_slot[slot] = -1;
        return;
    }
    tid_of_slot[slot] = (int)tid;
    slot_of_tid[tid] = slot + 1;
    sent_at[slot] = t;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: loadgen HOST PORT POOLFILE INFLIGHT WARMUP_S SECONDS\n");
        return 2;
    }
    int inflight = atoi(argv[4]);
    double warmup = atof(argv[5]), seconds = atof(argv[6]);
    if (inflight < 1 || inflight > MAX_INFLIGHT || seconds <= 0 || warmup < 0) {
        fprintf(stderr, "loadgen: bad INFLIGHT or SECONDS\n");
        return 2;
    }
    load_pool(argv[3]);
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
        fprintf(stderr, "loadgen: bad IPv4 address %s\n", argv[1]);
        return 2;
    }
    sock = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int rcvbuf = 4 << 20;
    setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in local = {.sin_family = AF_INET};
    local.sin_addr = to.sin_addr; /* loopback in, loopback out */
    if (bind(sock, (struct sockaddr *)&local, sizeof local) < 0) {
        perror("bind");
        return 2;
    }
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    next_tid = (unsigned)rand() % TIDS;

    double t = now_s();
    double start = t + warmup, end = start + seconds, next_sweep = t + 0.05;
    double cpu_start = 0;
    int measuring = warmup == 0;
    if (measuring) cpu_start = cpu_s();
    long long answers = 0, lost = 0, bytes = 0, stray = 0;
    for (int s = 0; s < inflight; s++) send_slot(s, t);

    struct pollfd pfd = {.fd = sock, .events = POLLIN};
    while (t < end) {
        poll(&pfd, 1, 10);
        for (;;) {
            ssize_t n = recv(sock, buf, sizeof buf, 0);
            if (n < 0) break;
            if (n < 2 || (buf[0] & 0x80)) {
                stray++; /* a request from the node (e.g. a ping): ignore */
                continue;
            }
            unsigned tid = ((unsigned)buf[0] << 8 | buf[1]) & 0x7fff;
            int slot = slot_of_tid[tid] - 1;
            if (slot < 0) {
                stray++; /* late answer to a request already counted lost */
                continue;
            }
            slot_of_tid[tid] = 0;
            t = now_s();
            if (measuring) {
                answers++;
                bytes += n;
            }
            send_slot(slot, t);
        }
        t = now_s();
        if (!measuring && t >= start) {
            measuring = 1;
            answers = lost = bytes = 0;
            cpu_start = cpu_s();
            start = t;
            end = start + seconds;
        }
        if (t >= next_sweep) {
            next_sweep = t + 0.05;
            for (int s = 0; s < inflight; s++) {
                if (tid_of_slot[s] < 0) {
                    send_slot(s, t);
                } else if (t - sent_at[s] > LOST_AFTER) {
                    slot_of_tid[tid_of_slot[s]] = 0;
                    if (measuring) lost++;
                    send_slot(s, t);
                }
            }
        }
    }
    double elapsed = now_s() - start;
    double cpu = cpu_s() - cpu_start;
    printf("{\"answers\": %lld, \"rate\": %.1f, \"lost\": %lld, \"bytes\": %lld, "
           "\"stray\": %lld, \"seconds\": %.4f, \"cpu_seconds\": %.4f, \"cpu_share\": %.4f, "
           "\"inflight\": %d, \"pool\": %zu}\n",
           answers, answers / elapsed, lost, bytes, stray, elapsed, cpu, cpu / elapsed, inflight,
           pool_n);
    return 0;
}
