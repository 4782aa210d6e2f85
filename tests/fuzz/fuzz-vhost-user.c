/*
 * Fuzz harness: a vhost-user front end's messages, with fds, against the
 * vhost-user-blk export of a writable mem node (SPDX-License-Identifier:
 * MIT).
 *
 * Input: records, each
 *   u8   fd spec: low 3 bits a count (0-7) of fds to attach; bit 3 makes
 *        them 64 KiB memfds (filled with the input's remaining bytes:
 *        guest memory with rings the next kicks make the back end walk)
 *        instead of eventfds
 *   u32  request, u32 flags, u32 size (little endian, as on the wire)
 *   size bytes of payload (clipped to what is left)
 * Each message goes out on a socketpair with its fds; then every eventfd
 * sent so far is written (a kick), and the back end's loop runs until it
 * has nothing left to do (timers due soon are waited for, within
 * FUZZ_TIMER_BUDGET_NS per input).  Replies are read and dropped.  The harness ends by closing the socket, which
 * must leave the export without a client.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "block/export/export.h"
#include "block/export/vhost-user-blk.h"
#include "block/virtio/vhost-user.h"
#include "tests/fuzz/fuzz-daemon.h"
#include "tools/daemon/daemon.h"

#define FUZZ_MAX_EVENTFDS 64

static char *sock_dir, *sock_path;

static void remove_sock_dir(void)
{
    unlink(sock_path);
    rmdir(sock_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char tmpl[] = "/tmp/strata-fuzz-vhost-XXXXXX";
    char *dir = mkdtemp(tmpl);

    if (!dir) {
        abort();
    }
    sock_dir = g_strdup(dir);
    sock_path = g_build_filename(dir, "vhost.sock", NULL);
    atexit(remove_sock_dir);
    return 0;
}

/* Read and drop the back end's replies (closing fds they carry); true
 * when there was one. */
static bool drain_replies(int fd)
{
    bool got = false;

    char sink[4096];
    char cbuf[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];

    for (;;) {
        struct iovec iov = { sink, sizeof(sink) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                             .msg_control = cbuf,
                             .msg_controllen = sizeof(cbuf) };
        if (recvmsg(fd, &mh, MSG_DONTWAIT) <= 0) {
            return got;
        }
        got = true;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c;
             c = CMSG_NXTHDR(&mh, c)) {
            int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < n; i++) {
                int f;
                memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(f));
                close(f);
            }
        }
    }
}

static int make_memfd(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-guest", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, 64 << 10) < 0) {
        __builtin_trap();
    }
    if (size && pwrite(fd, data, MIN(size, 64u << 10), 0) < 0) {
        __builtin_trap();
    }
    return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    StrataError *err = NULL;
    int sp[2];
    int eventfds[FUZZ_MAX_EVENTFDS];
    int nevent = 0;
    int64_t budget = FUZZ_TIMER_BUDGET_NS;

    if (size > (1u << 20) || !fuzz_daemon_setup()) {
        return 0;
    }
    vhost_user_blk_register();
    g_autofree char *json = g_strdup_printf(
        "{\"type\": \"vhost-user-blk\", \"id\": \"v0\", \"node-name\": "
        "\"m0\", \"writable\": true, \"num-queues\": 2, \"addr\": "
        "{\"type\": \"unix\", \"path\": \"%s\"}}", sock_path);
    g_autoptr(OptNode) eo = opts_parse_json(json, &err);
    unlink(sock_path);
    BlockExport *exp = export_add(daemon_state.ctx, eo, &err);
    if (!exp) {
        __builtin_trap();
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   sp) < 0) {
        __builtin_trap();
    }
    vhost_user_blk_add_client(exp, sp[0]);
    size_t off = 0;
    while (off + 13 <= size) {
        uint8_t spec = data[off];
        VhostUserHeader h;
        memcpy(&h, data + off + 1, sizeof(h));
        off += 13;
        size_t plen = MIN((size_t)h.size, size - off);
        const uint8_t *payload = data + off;
        off += plen;
        int fds[7], nfds = spec & 7;
        for (int i = 0; i < nfds; i++) {
            if (spec & 8) {
                fds[i] = make_memfd(data + off, size - off);
            } else {
                fds[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
                if (nevent < FUZZ_MAX_EVENTFDS) {
                    eventfds[nevent++] = dup(fds[i]);
                }
            }
        }
        /* The header as given (a size that lies included), then the
         * payload bytes there are. */
        struct iovec iov[2] = { { &h, sizeof(h) },
                                { (void *)payload, plen } };
        char cbuf[CMSG_SPACE(sizeof(int) * 7)];
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
        if (nfds) {
            mh.msg_control = cbuf;
            mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
            memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
        }
        ssize_t sent = sendmsg(sp[1], &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        for (int i = 0; i < nfds; i++) {
            close(fds[i]);
        }
        if (sent < 0) {
            break;
        }
        for (int i = 0; i < nevent; i++) {
            uint64_t one = 1;
            if (write(eventfds[i], &one, sizeof(one)) < 0) {
                /* A full counter: no kick this time. */
            }
        }
        /* Until the back end has nothing left to do (the message, the
         * kicks, the requests they start), then the next message. */
        for (;;) {
            bool progress = strata_context_run_once(daemon_state.ctx, false);
            progress |= drain_replies(sp[1]);
            if (!progress && !fuzz_wait_timers(&budget)) {
                break;
            }
        }
    }
    close(sp[1]);
    for (int i = 0; i < nevent; i++) {
        close(eventfds[i]);
    }
    VhostUserBlkStats st;
    for (int i = 0; i < 10000; i++) {
        vhost_user_blk_get_stats(exp, &st);
        if (!st.connected) {
            break;
        }
        strata_context_run_once(daemon_state.ctx, false);
    }
    if (st.connected) {
        __builtin_trap();       /* the connection must end with its socket */
    }
    fuzz_daemon_teardown();
    unlink(sock_path);
    return 0;
}
