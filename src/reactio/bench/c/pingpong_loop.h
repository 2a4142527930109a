/*
 * pingpong_loop.h: the strict ping-pong loop of the harness's C floor clients, one loop for
 * every transport: pingpong_client.c (TCP and Unix streams) and udp_pingpong.c (UDP) give it
 * the way to send one message and to receive one echo.
 *
 * WARMUP + COUNT round trips of a SIZE-byte message in reactio's wire format (net_util.h): the
 * CLOCK_MONOTONIC send time is stamped into it, the RTT is taken from just before the send
 * until the whole echo is in; the echo is checked (length, header, stamp) so that a broken
 * server fails loudly.  The first WARMUP round trips are not recorded; the COUNT samples are
 * written to SAMPLES_FILE as native int64 ns.  Stdout, for the harness: "progress <n>" about
 * twice a second, then "done <count> <elapsed_ns>" (elapsed: wall time of the recorded round
 * trips).  Include net_util.h first.
 */
#ifndef REACTIO_BENCH_PINGPONG_LOOP_H
#define REACTIO_BENCH_PINGPONG_LOOP_H

struct pp_transport {
    /* send the whole SIZE-byte message (dies on an error) */
    void (*send_msg)(void *io, const unsigned char *msg, size_t size);
    /* receive one echo into in (SIZE + 1 bytes of room); returns its length (dies on an error) */
    size_t (*recv_echo)(void *io, unsigned char *in, size_t size);
    void *io;
};

static inline void pingpong_loop(const struct pp_transport *t, long count, long warmup,
                                 long size, const char *samples_path) {
    int64_t *samples = malloc((size_t)count * sizeof *samples);
    unsigned char *msg = calloc(1, (size_t)size), *in = malloc((size_t)size + 1);
    if (!samples || !msg || !in) fail("out of memory");
    init_msg(msg, size);
    long total = warmup + count;
    int64_t start = 0, t1 = 0, next_progress = now_ns() + 500000000LL;
    for (long i = 0; i < total; i++) {
        int64_t t0 = now_ns();
        if (i == warmup) start = t0;
        put_i64le(msg + 2, t0);
        t->send_msg(t->io, msg, (size_t)size);
        size_t got = t->recv_echo(t->io, in, (size_t)size);
        t1 = now_ns();
        if (got != (size_t)size || in[0] != msg[0] || in[1] != msg[1] || get_i64le(in + 2) != t0)
            fail("echo does not match the message sent");
        if (i >= warmup) samples[i - warmup] = t1 - t0;
        if (t1 >= next_progress) {
            printf("progress %ld\n", i >= warmup ? i - warmup + 1 : 0);
            fflush(stdout);
            next_progress = t1 + 500000000LL;
        }
    }
    FILE *f = fopen(samples_path, "wb");
    if (!f) die("open samples file");
    if (fwrite(samples, sizeof *samples, (size_t)count, f) != (size_t)count || fclose(f) != 0)
        die("write samples file");
    printf("done %ld %lld\n", count, (long long)(t1 - start));
    fflush(stdout);
    free(samples);
    free(msg);
    free(in);
}

#endif
