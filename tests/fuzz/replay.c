/* tests/fuzz/replay.c: main() for a harness built without libFuzzer
 * (gcc builds, `make check`): run each input file named on the command
 * line, or each file in a directory named there, through
 * LLVMFuzzerTestOneInput once.  So the seed corpora and every finding kept
 * in them are regression tests of the plain and the ASan+UBSan builds.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz-util.h"

/* Exactly the file's size, so ASan sees any read past the input. */
static void
replay_file(const char *path, unsigned *count)
{
    FILE *fp = fopen(path, "rb");
    struct stat st;
    uint8_t *data;

    if (fp == NULL || fstat(fileno(fp), &st) == -1)
        fuzz_die("%s: %s", path, strerror(errno));
    data = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    if (data == NULL ||
        fread(data, 1, (size_t)st.st_size, fp) != (size_t)st.st_size)
        fuzz_die("%s: cannot read", path);
    fclose(fp);
    LLVMFuzzerTestOneInput(data, (size_t)st.st_size);
    free(data);
    (*count)++;
}

static void
replay_path(const char *path, unsigned *count)
{
    struct stat st;
    struct dirent **names;
    char file[4096];
    int n;

    if (stat(path, &st) == -1)
        fuzz_die("%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        replay_file(path, count);
        return;
    }
    n = scandir(path, &names, NULL, alphasort);
    if (n < 0)
        fuzz_die("%s: %s", path, strerror(errno));
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.') {
            snprintf(file, sizeof file, "%s/%s", path, names[i]->d_name);
            replay_file(file, count);
        }
        free(names[i]);
    }
    free(names);
}

int
main(int argc, char **argv)
{
    unsigned count = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return EXIT_FAILURE;
    }
    for (int i = 1; i < argc; i++)
        replay_path(argv[i], &count);
    printf("%s: %u inputs replayed\n", argv[0], count);
    return EXIT_SUCCESS;
}
