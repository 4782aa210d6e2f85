/*
 * Replay driver: feed files (or every file in directories) to a harness's
 * LLVMFuzzerTestOneInput, one TAP result each, for make check
 * (SPDX-License-Identifier: MIT).  A crash or sanitizer report fails the
 * run; an input that returns normally passes.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <glib.h>

#include "tests/fuzz/fuzz.h"

__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

static int n;

static void replay_file(const char *path)
{
    g_autofree char *data = NULL;
    gsize len = 0;
    g_autoptr(GError) err = NULL;

    if (!g_file_get_contents(path, &data, &len, &err)) {
        printf("not ok %d - %s: %s\n", ++n, path, err->message);
        return;
    }
    LLVMFuzzerTestOneInput((const uint8_t *)data, len);
    printf("ok %d - %s\n", ++n, path);
    fflush(stdout);
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            printf("# %s: missing, skipped\n", argv[i]);
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            replay_file(argv[i]);
            continue;
        }
        DIR *d = opendir(argv[i]);
        GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] != '.') {
                g_ptr_array_add(names, g_build_filename(argv[i], e->d_name,
                                                        NULL));
            }
        }
        if (d) {
            closedir(d);
        }
        if (names->len > 1) {
            qsort(names->pdata, names->len, sizeof(char *), cmp);
        }
        for (guint j = 0; j < names->len; j++) {
            replay_file(names->pdata[j]);
        }
        g_ptr_array_free(names, TRUE);
    }
    if (n == 0) {
        printf("1..0 # SKIP no inputs\n");
        return 0;
    }
    printf("1..%d\n", n);
    return 0;
}
