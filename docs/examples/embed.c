/*
 * Embedding Strata in a VMM: the smallest complete program
 * SPDX-License-Identifier: MIT
 *
 * What a virtual machine monitor does with the library, using nothing but
 * the public header:
 *
 *   1. create a context (one event loop) and open a graph from JSON;
 *   2. run the loop in a thread of its own;
 *   3. create a backend, the handle a guest device holds;
 *   4. from another thread (a vCPU thread in a real VMM), submit writes
 *      and reads in callback form, from and to a buffer that stands for
 *      guest memory, and wait for their completions;
 *   5. check the data, stop the loop thread and clean up.
 *
 * Build: cc embed.c $(pkg-config --cflags --libs strata) -pthread
 * Run:   ./embed [JSON options of the disk]
 *        (default: a 1 MiB RAM disk; try '{"driver": "null", "size": 1048576,
 *        "read-zeroes": true}' to see the same path with a disk that drops
 *        writes: the check then expects zeroes.)
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <strata/strata.h>

#define DISK_JSON "{\"driver\": \"mem\", \"node-name\": \"disk0\", \"size\": 1048576}"
#define SECTOR 512
#define NREQS 64                     /* requests in flight at once */
#define GUEST_RAM (NREQS * 4096)     /* "guest memory": one page per request */

/* Completion tracking shared between the vCPU thread and the loop thread,
 * where callbacks run. */
struct completions {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    int errors;
};

/* One guest request: what a virtio-blk device would keep per descriptor. */
struct guest_req {
    struct completions *c;
    struct iovec iov[2];             /* a scattered guest buffer */
};

struct vcpu {
    StrataBackend *be;
    bool disk_stores_data;
    uint8_t *guest_ram;
    int result;                      /* 0 on success */
};

/* Runs in the context's loop thread, once per request. */
static void request_done(void *opaque, int64_t ret)
{
    struct guest_req *req = opaque;
    struct completions *c = req->c;

    pthread_mutex_lock(&c->lock);
    c->done++;
    if (ret < 0) {
        fprintf(stderr, "request failed: %s\n", strerror((int)-ret));
        c->errors++;
    }
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void wait_for(struct completions *c, int n)
{
    pthread_mutex_lock(&c->lock);
    while (c->done < n) {
        pthread_cond_wait(&c->cond, &c->lock);
    }
    pthread_mutex_unlock(&c->lock);
}

/*
 * Submit one request per guest page: page i goes to disk offset
 * 512 + 4096 * i (not 4 KiB aligned), as two pieces of 1536 and 2560 bytes:
 * the layer takes any alignment and any scatter list.
 */
static int submit_all(struct vcpu *v, struct guest_req *reqs,
                      struct completions *c, bool write)
{
    for (int i = 0; i < NREQS; i++) {
        uint8_t *page = v->guest_ram + (size_t)i * 4096;
        int64_t offset = SECTOR + (int64_t)i * 4096;
        int ret;

        reqs[i].c = c;
        reqs[i].iov[0] = (struct iovec) { page, 1536 };
        reqs[i].iov[1] = (struct iovec) { page + 1536, 4096 - 1536 };
        if (write) {
            ret = strata_backend_aio_pwritev(v->be, offset, reqs[i].iov, 2, 0,
                                             request_done, &reqs[i]);
        } else {
            ret = strata_backend_aio_preadv(v->be, offset, reqs[i].iov, 2, 0,
                                            request_done, &reqs[i]);
        }
        if (ret < 0) {
            /* The callback will not run for this one. */
            fprintf(stderr, "submit failed: %s\n", strerror(-ret));
            return ret;
        }
    }
    return 0;
}

/* The "vCPU": writes guest pages out, reads them back, compares. */
static void *vcpu_thread(void *opaque)
{
    struct vcpu *v = opaque;
    struct guest_req reqs[NREQS];
    struct completions c = { .done = 0 };
    uint8_t *expect = malloc(GUEST_RAM);

    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.cond, NULL);
    v->result = -1;

    for (int i = 0; i < GUEST_RAM; i++) {
        v->guest_ram[i] = (uint8_t)(i * 13 + (i >> 12));
    }
    memcpy(expect, v->guest_ram, GUEST_RAM);

    if (submit_all(v, reqs, &c, true) < 0) {
        goto out;
    }
    wait_for(&c, NREQS);
    if (c.errors) {
        goto out;
    }

    /* Read back into clean guest memory. */
    memset(v->guest_ram, 0xff, GUEST_RAM);
    c.done = 0;
    if (submit_all(v, reqs, &c, false) < 0) {
        goto out;
    }
    wait_for(&c, NREQS);
    if (c.errors) {
        goto out;
    }

    /* A disk that stores data gives back what was written; the null
     * driver (with read-zeroes) gives back zeroes. */
    if (!v->disk_stores_data) {
        memset(expect, 0, GUEST_RAM);
    }
    for (int i = 0; i < NREQS; i++) {
        if (memcmp(v->guest_ram + (size_t)i * 4096, expect + (size_t)i * 4096,
                   4096)) {
            fprintf(stderr, "page %d: data differs\n", i);
            goto out;
        }
    }
    v->result = 0;

out:
    pthread_mutex_destroy(&c.lock);
    pthread_cond_destroy(&c.cond);
    free(expect);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *json = argc > 1 ? argv[1] : DISK_JSON;
    StrataError *err = NULL;
    StrataContext *ctx;
    StrataNode *disk;
    StrataBackend *be;
    struct vcpu v = { 0 };
    pthread_t vcpu;
    int status = 1;

    printf("strata %s\n", strata_version_string());

    ctx = strata_context_new(&err);
    if (!ctx) {
        fprintf(stderr, "context: %s\n", strata_error_get_message(err));
        strata_error_free(err);
        return 1;
    }

    /* Open the graph and the backend before the loop thread starts: the
     * control path runs in the thread that owns the loop. */
    disk = strata_node_open_json(ctx, json, &err);
    if (!disk) {
        fprintf(stderr, "open: %s\n", strata_error_get_message(err));
        goto out;
    }
    be = strata_backend_new(disk, "vda",
                            STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE,
                            STRATA_PERM_CONSISTENT_READ, &err);
    /* The backend holds its own reference to the root. */
    strata_node_unref(disk);
    if (!be) {
        fprintf(stderr, "backend: %s\n", strata_error_get_message(err));
        goto out;
    }
    if (strata_backend_get_length(be) < SECTOR + GUEST_RAM) {
        fprintf(stderr, "the disk is too small for this example\n");
        goto out_backend;
    }

    if (!strata_context_start_thread(ctx, &err)) {
        fprintf(stderr, "loop thread: %s\n", strata_error_get_message(err));
        goto out_backend;
    }

    v.be = be;
    v.disk_stores_data = strcmp(strata_node_get_driver(strata_backend_get_root(be)),
                                "null") != 0;
    v.guest_ram = malloc(GUEST_RAM);
    pthread_create(&vcpu, NULL, vcpu_thread, &v);
    pthread_join(vcpu, NULL);

    /* Blocking calls work from any thread but the loop's; flush makes the
     * guest's writes durable before we report success. */
    if (v.result == 0 && strata_backend_flush(be) < 0) {
        v.result = -1;
    }
    strata_context_stop_thread(ctx);
    free(v.guest_ram);

    if (v.result == 0) {
        printf("embed: %d writes and %d reads of 4 KiB through %s verified\n",
               NREQS, NREQS, strata_node_get_driver(strata_backend_get_root(be)));
        status = 0;
    }

out_backend:
    strata_backend_free(be);
out:
    strata_error_free(err);
    strata_context_free(ctx);
    return status;
}
