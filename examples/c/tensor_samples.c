/* fastretrain from C with samples that are not images: an application that computes its own
 * float tensors (here 6-axis IMU windows of 50 steps, made up in the program as a sensor
 * driver would hand them over) learns them, refits, predicts, forgets a batch, and saves.
 *
 *   tensor_samples MODEL STATE_OUT WINDOW_OUT
 *
 * MODEL is a model fed with tensors of shape (50, 6) (its spec from `fastretrain spec --preset
 * tensor`, e.g. tests/data/signal/imu_mlp.onnx). Three gestures, 16 windows each, are learned in
 * one call per gesture; a fourth batch is learned and forgotten again (exact unlearning). One
 * more window is predicted (printed as "window<TAB>label<TAB>score") and written to WINDOW_OUT as
 * a .npy file, so that `fastretrain predict --state STATE_OUT WINDOW_OUT` can be compared. Then
 * the calls an application gets wrong with tensors (a wrong shape, NaN, a null shape, an image
 * for a tensor model) must each return a status and a message.
 *
 * Build: cc -I capi/include tensor_samples.c -L target/release -lfastretrain -lm
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastretrain.h"

#define STEPS 50
#define AXES 6
#define PER 16
#define TOP 3

static int failed(FastretrainStatus status, const char *what) {
    if (status == FASTRETRAIN_STATUS_OK) return 0;
    const char *message = fastretrain_last_error();
    fprintf(stderr, "%s failed (status %d): %s\n", what, (int)status, message ? message : "?");
    return 1;
}

/* A deterministic generator, so every run (and every platform) makes the same windows. */
static unsigned long long state = 36;
static double uniform(void) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(state >> 11) / 9007199254740992.0;
}

/* One window of `gesture` (0 circle, 1 shake, 2 tap, 3 wave) into `out` (STEPS × AXES). */
static void window(int gesture, float *out) {
    double amp = 0.8 + 0.4 * uniform(), lag = 0.04 * uniform();
    for (int t = 0; t < STEPS; t++) {
        double s = t / 50.0 - lag;
        for (int a = 0; a < AXES; a++) {
            double v = 0.3 * (uniform() - 0.5) + (a == 2 ? 1.0 : 0.0);
            if (gesture == 0 && a == 0) v += amp * sin(2 * M_PI * s);
            if (gesture == 0 && a == 1) v += amp * cos(2 * M_PI * s);
            if (gesture == 1 && a == 0) v += amp * sin(12 * M_PI * s);
            if (gesture == 2 && a == 2) v += 2 * amp * exp(-pow((s - 0.3) / 0.03, 2));
            if (gesture == 3 && a == 4) v += amp * sin(4 * M_PI * s);
            out[t * AXES + a] = (float)v;
        }
    }
}

/* `values` (STEPS × AXES float32) as a .npy file. */
static int write_npy(const char *path, const float *values) {
    char header[118];
    int n = snprintf(header, sizeof header,
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", STEPS, AXES);
    memset(header + n, ' ', sizeof header - n);
    header[sizeof header - 1] = '\n'; /* 10 + 118 = 128 bytes before the data */
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    unsigned char prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, sizeof header, 0};
    int bad = fwrite(prefix, 1, sizeof prefix, f) != sizeof prefix ||
              fwrite(header, 1, sizeof header, f) != sizeof header ||
              fwrite(values, sizeof *values, STEPS * AXES, f) != STEPS * AXES;
    return fclose(f) != 0 || bad;
}

static int refused(const char *what, FastretrainStatus status, int expected) {
    const char *message = fastretrain_last_error();
    int ok = status != FASTRETRAIN_STATUS_OK && (expected < 0 || (int)status == expected) &&
             message && *message;
    fprintf(stderr, "%s: status %d: %s%s\n", what, (int)status, message ? message : "(no message)",
            ok ? "" : "  <-- NOT AS EXPECTED");
    return !ok;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL STATE_OUT WINDOW_OUT\n", argv[0]);
        return 2;
    }
    static const char *names[] = {"circle", "shake", "tap", "wave"};
    const size_t shape[2] = {STEPS, AXES};
    FastretrainRetrainer *r = NULL;
    if (failed(fastretrain_open(argv[1], NULL, 0, &r), "open")) return 1;
    float *batch = malloc(sizeof(float) * PER * STEPS * AXES);
    const char *labels[PER];
    int bad = batch == NULL;
    /* Three gestures learned; the fourth learned and then forgotten. */
    for (int g = 0; g < 4 && !bad; g++) {
        for (int i = 0; i < PER; i++) {
            window(g, batch + i * STEPS * AXES);
            labels[i] = names[g];
        }
        bad = failed(fastretrain_learn_tensor(r, batch, PER, shape, 2, labels), names[g]);
    }
    if (!bad) bad = failed(fastretrain_forget_tensor(r, batch, PER, shape, 2, labels, 1.0), "forget");
    if (!bad) bad = failed(fastretrain_refit(r, 1.0), "refit");
    FastretrainInfo info;
    if (!bad) bad = failed(fastretrain_info(r, &info), "info");
    if (!bad)
        fprintf(stderr, "learned %.0f windows (d = %zu), lambda %g\n", info.samples, info.dim,
                info.lambda);
    float one[STEPS * AXES];
    window(1, one);
    size_t top[TOP], found = 0;
    double scores[TOP];
    char name[64];
    size_t needed = 0;
    if (!bad) bad = failed(fastretrain_predict_tensor(r, one, shape, 2, TOP, top, scores, &found),
                           "predict");
    for (size_t i = 0; i < found && !bad; i++) {
        bad = failed(fastretrain_label_name(r, top[i], name, sizeof name, &needed), "label");
        if (!bad) printf("window\t%s\t%.17g\n", name, scores[i]);
    }
    if (!bad) bad = write_npy(argv[3], one);
    if (!bad) bad = failed(fastretrain_save(r, argv[2]), "save");

    /* What an application gets wrong with tensors: each refused, with a message. */
    const size_t wrong_shape[2] = {STEPS, AXES - 1};
    const char *one_label[1] = {"circle"};
    bad |= refused("wrong shape", fastretrain_learn_tensor(r, one, 1, wrong_shape, 2, one_label),
                   FASTRETRAIN_STATUS_DATA);
    bad |= refused("null shape", fastretrain_learn_tensor(r, one, 1, NULL, 2, one_label),
                   FASTRETRAIN_STATUS_INVALID_ARGUMENT);
    bad |= refused("no axes", fastretrain_predict_tensor(r, one, shape, 0, TOP, top, scores, &found),
                   FASTRETRAIN_STATUS_INVALID_ARGUMENT);
    one[17] = NAN;
    bad |= refused("NaN value", fastretrain_learn_tensor(r, one, 1, shape, 2, one_label),
                   FASTRETRAIN_STATUS_DATA);
    unsigned char pixels[8 * 8 * 3] = {0};
    bad |= refused("an image for a tensor model",
                   fastretrain_learn_pixels(r, pixels, 1, 8, 8, 3, 0, one_label),
                   FASTRETRAIN_STATUS_DATA);
    const char *unknown[1] = {"jump"};
    window(0, one);
    bad |= refused("forget a label the state does not know",
                   fastretrain_forget_tensor(r, one, 1, shape, 2, unknown, 1.0),
                   FASTRETRAIN_STATUS_UNKNOWN_LABEL);
    /* After the refusals the state is as saved: the same count of samples. */
    FastretrainInfo after;
    bad |= failed(fastretrain_info(r, &after), "info") || after.samples != info.samples;
    free(batch);
    fastretrain_free(r);
    return bad;
}
