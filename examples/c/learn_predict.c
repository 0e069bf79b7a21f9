/* fastretrain from C: learn labelled images from a folder, refit the head, predict, save.
 *
 *   learn_predict MODEL FOLDER PER_LABEL STATE_OUT IMAGE...
 *
 * MODEL is an ONNX file with its spec beside it (`fastretrain spec`), FOLDER holds one
 * subfolder of PNG or JPEG images per label; the first PER_LABEL images of each label (in
 * name order) are decoded with the library's decoder and learned, one batch per label. Each
 * IMAGE is then predicted (top 3, printed as "IMAGE<TAB>label<TAB>score"), the first one also
 * from its pixels in memory, and the state is saved to STATE_OUT.
 *
 *   learn_predict --errors MODEL FOLDER
 *
 * tries the calls an application gets wrong (a missing model, a damaged state, wrong buffer
 * sizes, a label the state does not know, ...) and checks that each returns a status and a
 * message. Exit status 0 when everything went as described, 1 otherwise.
 *
 * Build: cc -I capi/include learn_predict.c -L target/release -lfastretrain
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastretrain.h"

#define TOP 3

static int failed(FastretrainStatus status, const char *what) {
    if (status == FASTRETRAIN_STATUS_OK) return 0;
    const char *message = fastretrain_last_error();
    fprintf(stderr, "%s failed (status %d): %s\n", what, (int)status, message ? message : "?");
    return 1;
}

/* `dir`/`name` into `out` (`size` bytes); 1 (with a message) if it does not fit. */
static int join(char *out, size_t size, const char *dir, const char *name) {
    int n = snprintf(out, size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= size) {
        fprintf(stderr, "path too long: %s/%s\n", dir, name);
        return 1;
    }
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in `dir` (not starting with '.'), sorted; NULL-terminated, caller frees. */
static char **sorted_names(const char *dir, size_t *count) {
    DIR *d = opendir(dir);
    if (!d) return NULL;
    size_t n = 0, capacity = 16;
    char **names = malloc(capacity * sizeof *names);
    struct dirent *entry;
    while (names && (entry = readdir(d))) {
        if (entry->d_name[0] == '.') continue;
        if (n + 1 >= capacity) {
            char **grown = realloc(names, (capacity *= 2) * sizeof *names);
            if (!grown) break;
            names = grown;
        }
        names[n++] = strdup(entry->d_name);
    }
    closedir(d);
    if (!names) return NULL;
    qsort(names, n, sizeof *names, by_name);
    names[n] = NULL;
    *count = n;
    return names;
}

static void free_names(char **names) {
    for (char **p = names; p && *p; p++) free(*p);
    free(names);
}

/* Decodes up to `per_label` images of `label_dir` and learns them in one call when they have
 * the same size (else one call each). */
static int learn_label(FastretrainRetrainer *r, const char *label_dir, const char *label,
                       size_t per_label) {
    size_t n = 0;
    char **files = sorted_names(label_dir, &n);
    if (!files) {
        fprintf(stderr, "cannot read %s\n", label_dir);
        return 1;
    }
    if (n > per_label) n = per_label;
    FastretrainImage *images = calloc(n ? n : 1, sizeof *images);
    int bad = images == NULL;
    char path[4096];
    for (size_t i = 0; i < n && !bad; i++) {
        bad = join(path, sizeof path, label_dir, files[i]) ||
              failed(fastretrain_decode_image(path, &images[i]), path);
    }
    int same = 1;
    for (size_t i = 1; i < n; i++)
        same &= images[i].width == images[0].width && images[i].height == images[0].height &&
                images[i].channels == images[0].channels;
    if (!bad && same && n > 0) {
        size_t bytes = images[0].stride * images[0].height;
        unsigned char *batch = malloc(n * bytes);
        const char **labels = malloc(n * sizeof *labels);
        bad = !batch || !labels;
        for (size_t i = 0; i < n && !bad; i++) {
            memcpy(batch + i * bytes, images[i].pixels, bytes);
            labels[i] = label;
        }
        if (!bad)
            bad = failed(fastretrain_learn_pixels(r, batch, n, images[0].width, images[0].height,
                                                  images[0].channels, images[0].stride, labels),
                         label_dir);
        free(batch);
        free(labels);
    } else {
        for (size_t i = 0; i < n && !bad; i++)
            bad = failed(fastretrain_learn_pixels(r, images[i].pixels, 1, images[i].width,
                                                  images[i].height, images[i].channels,
                                                  images[i].stride, &label),
                         files[i]);
    }
    for (size_t i = 0; images && i < n; i++) fastretrain_image_free(&images[i]);
    free(images);
    free_names(files);
    return bad;
}

static int print_top(FastretrainRetrainer *r, const char *image, const size_t *labels,
                     const double *scores, size_t found) {
    char name[256];
    size_t needed = 0;
    for (size_t i = 0; i < found; i++) {
        if (failed(fastretrain_label_name(r, labels[i], name, sizeof name, &needed), "label"))
            return 1;
        printf("%s\t%s\t%.17g\n", image, name, scores[i]);
    }
    return 0;
}

static int learn_predict(int argc, char **argv) {
    const char *model = argv[1], *folder = argv[2], *state_out = argv[4];
    size_t per_label = (size_t)strtoul(argv[3], NULL, 10);
    FastretrainRetrainer *r = NULL;
    if (failed(fastretrain_open(model, NULL, 0, &r), "open")) return 1;
    size_t n = 0;
    char **labels = sorted_names(folder, &n);
    int bad = labels == NULL;
    char dir[4096];
    for (size_t i = 0; i < n && !bad; i++) {
        bad = join(dir, sizeof dir, folder, labels[i]) ||
              learn_label(r, dir, labels[i], per_label);
    }
    free_names(labels);
    if (!bad) bad = failed(fastretrain_refit(r, -1.0), "refit");
    FastretrainInfo info;
    if (!bad) bad = failed(fastretrain_info(r, &info), "info");
    if (!bad)
        fprintf(stderr, "learned %.0f samples of %zu labels (d = %zu), lambda %g\n",
                info.samples, info.labels, info.dim, info.lambda);
    size_t top[TOP], found = 0;
    double scores[TOP];
    for (int i = 5; i < argc && !bad; i++) {
        bad = failed(fastretrain_predict_file(r, argv[i], TOP, top, scores, &found), argv[i]) ||
              print_top(r, argv[i], top, scores, found);
    }
    if (!bad && argc > 5) {
        /* The first image again, from pixels in memory: the same scores as from its file. */
        FastretrainImage image;
        size_t top_pixels[TOP], found_pixels = 0;
        double scores_pixels[TOP];
        bad = failed(fastretrain_decode_image(argv[5], &image), argv[5]) ||
              failed(fastretrain_predict_pixels(r, image.pixels, image.width, image.height,
                                                image.channels, image.stride, TOP, top_pixels,
                                                scores_pixels, &found_pixels),
                     "predict pixels");
        fastretrain_image_free(&image);
        if (!bad) {
            bad = print_top(r, "pixels", top_pixels, scores_pixels, found_pixels);
        }
    }
    if (!bad) bad = failed(fastretrain_save(r, state_out), "save");
    fastretrain_free(r);
    return bad;
}

/* One refused call: it must return `expected` (any failure when expected is -1) and a message. */
static int refused(const char *what, FastretrainStatus status, int expected) {
    const char *message = fastretrain_last_error();
    int ok = status != FASTRETRAIN_STATUS_OK && (expected < 0 || (int)status == expected) &&
             message && *message;
    printf("%s: status %d: %s%s\n", what, (int)status, message ? message : "(no message)",
           ok ? "" : "  <-- NOT AS EXPECTED");
    return !ok;
}

static int error_paths(const char *model, const char *folder) {
    int bad = 0;
    FastretrainRetrainer *r = (FastretrainRetrainer *)1;
    bad |= refused("missing model", fastretrain_open("no-such-model.onnx", NULL, 0, &r), -1);
    bad |= r != NULL;
    bad |= refused("no model, no state", fastretrain_open(NULL, NULL, 0, &r), -1);

    const char *damaged = "damaged-state.frs";
    FILE *f = fopen(damaged, "wb");
    if (!f) return 1;
    fwrite("FRSTATE\0\1\0\0\0", 1, 12, f); /* the magic, then the file ends */
    fclose(f);
    bad |= refused("damaged state", fastretrain_open(model, damaged, 0, &r),
                   FASTRETRAIN_STATUS_STATE);
    remove(damaged);

    if (failed(fastretrain_open(model, NULL, 1, &r), "open")) return 1;
    unsigned char pixels[8 * 8 * 3] = {0};
    const char *labels[2] = {"a", "b"};
    size_t top[TOP], found = 0, needed = 0;
    double scores[TOP];
    char small[2];
    bad |= refused("null handle", fastretrain_refit(NULL, 1.0), FASTRETRAIN_STATUS_INVALID_ARGUMENT);
    bad |= refused("stride below a row", fastretrain_learn_pixels(r, pixels, 1, 8, 8, 3, 10, labels),
                   FASTRETRAIN_STATUS_INVALID_ARGUMENT);
    bad |= refused("two channels", fastretrain_learn_pixels(r, pixels, 1, 8, 8, 2, 0, labels),
                   FASTRETRAIN_STATUS_INVALID_ARGUMENT);
    bad |= refused("null labels", fastretrain_learn_pixels(r, pixels, 1, 8, 8, 3, 0, NULL),
                   FASTRETRAIN_STATUS_INVALID_ARGUMENT);
    bad |= refused("predict before any head",
                   fastretrain_predict_pixels(r, pixels, 8, 8, 3, 0, TOP, top, scores, &found), -1);
    bad |= refused("refit with no samples", fastretrain_refit(r, 1.0), -1);
    bad |= refused("a file that is not an image",
                   fastretrain_predict_file(r, model, TOP, top, scores, &found), -1);
    /* Two images, two labels, refit: now the head exists. */
    unsigned char two[2 * 8 * 8 * 3];
    for (size_t i = 0; i < sizeof two; i++) two[i] = (unsigned char)(i < sizeof two / 2 ? 20 : 230);
    if (failed(fastretrain_learn_pixels(r, two, 2, 8, 8, 3, 0, labels), "learn") ||
        failed(fastretrain_refit(r, 1.0), "refit"))
        bad = 1;
    /* One more image learned and forgotten again from its pixels (exact unlearning), then
     * one under a label the state does not know. */
    unsigned char more[8 * 8 * 3];
    memset(more, 120, sizeof more);
    if (failed(fastretrain_learn_pixels(r, more, 1, 8, 8, 3, 0, labels), "learn one more") ||
        failed(fastretrain_forget_pixels(r, more, 1, 8, 8, 3, 0, labels, 1.0), "forget it"))
        bad = 1;
    const char *zebra[1] = {"zebra"};
    bad |= refused("forget an image under a label the state does not know",
                   fastretrain_forget_pixels(r, more, 1, 8, 8, 3, 0, zebra, 1.0),
                   FASTRETRAIN_STATUS_UNKNOWN_LABEL);
    bad |= refused("label name into a buffer one byte short",
                   fastretrain_label_name(r, 0, small, 1, &needed),
                   FASTRETRAIN_STATUS_INVALID_ARGUMENT);
    bad |= needed != 2;
    bad |= refused("label index out of range", fastretrain_label_name(r, 7, small, sizeof small, &needed),
                   FASTRETRAIN_STATUS_INVALID_ARGUMENT);
    bad |= refused("forget a folder this state never learned",
                   fastretrain_forget_source(r, folder, -1.0), -1);
    bad |= refused("merge a missing state", fastretrain_merge(r, "no-such-state.frs"), -1);
    bad |= refused("save into a missing folder", fastretrain_save(r, "no/such/dir/s.frs"),
                   FASTRETRAIN_STATUS_IO);
    bad |= refused("save with no path", fastretrain_save(r, NULL), FASTRETRAIN_STATUS_INVALID_ARGUMENT);
    FastretrainImage image;
    bad |= refused("decode a missing file", fastretrain_decode_image("no-such.png", &image), -1);
    bad |= image.pixels != NULL;
    fastretrain_image_free(&image);
    fastretrain_free(r);
    fastretrain_free(NULL);
    printf("version %s: %s\n", fastretrain_version(), bad ? "SOME CALLS NOT AS EXPECTED" : "all refused as expected");
    return bad;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--errors") == 0) return error_paths(argv[2], argv[3]);
    if (argc < 5) {
        fprintf(stderr,
                "usage: %s MODEL FOLDER PER_LABEL STATE_OUT IMAGE...\n"
                "       %s --errors MODEL FOLDER\n",
                argv[0], argv[0]);
        return 2;
    }
    return learn_predict(argc, argv);
}
