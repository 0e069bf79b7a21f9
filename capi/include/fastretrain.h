/* fastretrain's C API: on-device retraining of a frozen ONNX backbone's dense head.
 *
 * Generated from capi/src/lib.rs by cbindgen (capi/cbindgen.toml); do not edit.
 *
 * - Every call that can fail returns a FastretrainStatus; FASTRETRAIN_STATUS_OK is 0. On
 *   failure fastretrain_last_error() gives the message, on the calling thread.
 * - No panic crosses this boundary: an internal error returns FASTRETRAIN_STATUS_INTERNAL
 *   and the handle it happened on refuses further calls.
 * - Strings and buffers passed in are borrowed for the call. Free handles with
 *   fastretrain_free() and decoded images with fastretrain_image_free(). Strings the library
 *   returns are owned by it; label names are copied into the caller's buffer.
 * - A handle may move between threads but must not be used by two threads at once.
 */

#ifndef FASTRETRAIN_H
#define FASTRETRAIN_H

#include <stddef.h>
#include <stdint.h>

// What a call did. 0 is success; every other value comes with a message from
// [`fastretrain_last_error`].
typedef enum FastretrainStatus {
  FASTRETRAIN_STATUS_OK = 0,
  // A null pointer, a buffer size or a value the library cannot take.
  FASTRETRAIN_STATUS_INVALID_ARGUMENT = 1,
  // A file could not be read or written.
  FASTRETRAIN_STATUS_IO = 2,
  // The model or its spec is not usable (or a state belongs to another model).
  FASTRETRAIN_STATUS_MODEL = 3,
  // A state file is damaged, truncated or from a newer version.
  FASTRETRAIN_STATUS_STATE = 4,
  // Unusable data: an image that does not decode, a bad folder, non-finite features.
  FASTRETRAIN_STATUS_DATA = 5,
  // A label the state does not know.
  FASTRETRAIN_STATUS_UNKNOWN_LABEL = 6,
  // Anything else the library refused (the head cannot be solved, no head yet, …).
  FASTRETRAIN_STATUS_FAILED = 7,
  // A bug inside the library (a caught panic). The handle must not be used again.
  FASTRETRAIN_STATUS_INTERNAL = 8,
} FastretrainStatus;

// A retrainer: the frozen backbone, the statistics and the head. Opaque.
typedef struct FastretrainRetrainer FastretrainRetrainer;

// What a state holds.
typedef struct FastretrainInfo {
  // Samples in the statistics (a real number: a forgetting factor scales it).
  double samples;
  // Labels known to the statistics.
  size_t labels;
  // The feature dimension d.
  size_t dim;
  // 1 if the state has a head (`fastretrain_refit` has run), else 0.
  int32_t has_head;
  // The head's ridge λ; NaN without a head.
  double lambda;
} FastretrainInfo;

// An image decoded by the library: `height` rows of `width` pixels with `channels` (1 or 3)
// 8-bit values each, rows `stride` bytes apart. Owned by the library: free it with
// [`fastretrain_image_free`].
typedef struct FastretrainImage {
  uint8_t *pixels;
  size_t width;
  size_t height;
  size_t channels;
  size_t stride;
} FastretrainImage;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

// The library's version ("0.1.0"), a static string.
const char *fastretrain_version(void);

// The message of the last failed call on this thread, or NULL if the last call succeeded.
// Owned by the library; valid until the next call into the library on this thread.
const char *fastretrain_last_error(void);

// Opens a retrainer into `*out`: the state file `state` if it exists (its model found as the
// CLI finds it, unless `model` names it), else a new, empty state for `model` (an ONNX file
// with its spec beside it, or a pack). `model` and `state` may be NULL (not both); `state` is
// where [`fastretrain_save`] writes by default. `threads`: images run side by side, 0 for
// one per core. On failure `*out` is set to NULL.
//
// # Safety
// `model` and `state` are NULL or NUL-terminated strings; `out` points to writable memory.
enum FastretrainStatus fastretrain_open(const char *model,
                                        const char *state,
                                        uint32_t threads,
                                        struct FastretrainRetrainer **out);

// Frees a retrainer (unsaved changes are lost). NULL is ignored.
//
// # Safety
// `retrainer` is NULL or a handle from [`fastretrain_open`] not yet freed.
void fastretrain_free(struct FastretrainRetrainer *retrainer);

// Folds `count` labelled images into the statistics (the head is updated by
// [`fastretrain_refit`]). The images lie one after another in `pixels`: each `height` rows of
// `width` pixels of `channels` (1 or 3, RGB order) bytes, rows `stride` bytes apart (0: packed,
// `width × channels`). `labels` holds `count` NUL-terminated label names. Each call is recorded
// as one source in the state (named by a digest of its pixels and labels: the same call made
// again adds nothing), so learn in batches rather than one image per call.
//
// # Safety
// `pixels` holds `count × height × stride` bytes (`stride` as resolved above); `labels`
// holds `count` valid strings.
enum FastretrainStatus fastretrain_learn_pixels(struct FastretrainRetrainer *retrainer,
                                                const uint8_t *pixels,
                                                size_t count,
                                                size_t width,
                                                size_t height,
                                                size_t channels,
                                                size_t stride,
                                                const char *const *labels);

// Folds `count` labelled float tensor samples into the statistics, for a model fed with
// tensors (its spec's input is a tensor: audio frames, sensor windows). One sample's shape is
// `shape[0..ndim]` (the batch axis left out; it must be the model's); the samples lie one
// after another in `values`, C order. NaN or infinite values are refused, naming the sample.
// Each call is one source in the state, as for [`fastretrain_learn_pixels`].
//
// # Safety
// `shape` holds `ndim` sizes; `values` holds `count × shape[0] × … × shape[ndim-1]` floats;
// `labels` holds `count` valid strings.
enum FastretrainStatus fastretrain_learn_tensor(struct FastretrainRetrainer *retrainer,
                                                const float *values,
                                                size_t count,
                                                const size_t *shape,
                                                size_t ndim,
                                                const char *const *labels);

// Takes `count` labelled images (laid out as for [`fastretrain_learn_pixels`]) out of the
// statistics (exact unlearning: the images must have been learned with these labels), then
// refits the head at `lambda` (negative or NaN: chosen by GCV). All or nothing.
//
// # Safety
// As [`fastretrain_learn_pixels`].
enum FastretrainStatus fastretrain_forget_pixels(struct FastretrainRetrainer *retrainer,
                                                 const uint8_t *pixels,
                                                 size_t count,
                                                 size_t width,
                                                 size_t height,
                                                 size_t channels,
                                                 size_t stride,
                                                 const char *const *labels,
                                                 double lambda);

// Takes `count` labelled tensor samples (laid out as for [`fastretrain_learn_tensor`]) out of
// the statistics, then refits the head at `lambda` (negative or NaN: GCV). All or nothing.
//
// # Safety
// As [`fastretrain_learn_tensor`].
enum FastretrainStatus fastretrain_forget_tensor(struct FastretrainRetrainer *retrainer,
                                                 const float *values,
                                                 size_t count,
                                                 const size_t *shape,
                                                 size_t ndim,
                                                 const char *const *labels,
                                                 double lambda);

// Folds the labelled samples of `source` into the statistics: a sample folder
// (`root/<label>/*.png|jpg`, or `*.npy` tensors), an IDX images file or a `.npy` array of
// samples (labels beside it), as `fastretrain learn
// --data` reads it; a source learned before resumes after what it absorbed. The head is
// updated by [`fastretrain_refit`].
//
// # Safety
// `source` is a NUL-terminated string.
enum FastretrainStatus fastretrain_learn_source(struct FastretrainRetrainer *retrainer,
                                                const char *source);

// Takes the samples of `source` (a folder, IDX or `.npy` array file learned before) out of the statistics
// (exact unlearning), then refits the head at `lambda` (negative or NaN: chosen by GCV).
// All or nothing: on failure the state is unchanged.
//
// # Safety
// `source` is a NUL-terminated string.
enum FastretrainStatus fastretrain_forget_source(struct FastretrainRetrainer *retrainer,
                                                 const char *source,
                                                 double lambda);

// Solves the head from the statistics at ridge `lambda`, or at the GCV choice when `lambda`
// is negative or NaN.
//
// # Safety
// `retrainer` is a handle from [`fastretrain_open`].
enum FastretrainStatus fastretrain_refit(struct FastretrainRetrainer *retrainer, double lambda);

// Predicts one image (layout as in [`fastretrain_learn_pixels`], `count` 1): its `k` best
// labels, best first, as indices into the state's labels ([`fastretrain_label_name`]) in
// `labels_out` and their scores in `scores_out` (both caller arrays of `k` elements);
// `*found` is how many were written (k, or fewer labels if the state has fewer).
//
// # Safety
// `pixels` holds `height × stride` bytes; `labels_out` and `scores_out` hold `k` elements.
enum FastretrainStatus fastretrain_predict_pixels(struct FastretrainRetrainer *retrainer,
                                                  const uint8_t *pixels,
                                                  size_t width,
                                                  size_t height,
                                                  size_t channels,
                                                  size_t stride,
                                                  size_t k,
                                                  size_t *labels_out,
                                                  double *scores_out,
                                                  size_t *found);

// Predicts one tensor sample of shape `shape[0..ndim]` (as in [`fastretrain_learn_tensor`],
// `count` 1); results as in [`fastretrain_predict_pixels`].
//
// # Safety
// `shape` holds `ndim` sizes; `values` holds their product of floats; `labels_out` and
// `scores_out` hold `k` elements.
enum FastretrainStatus fastretrain_predict_tensor(struct FastretrainRetrainer *retrainer,
                                                  const float *values,
                                                  const size_t *shape,
                                                  size_t ndim,
                                                  size_t k,
                                                  size_t *labels_out,
                                                  double *scores_out,
                                                  size_t *found);

// [`fastretrain_predict_pixels`] for a sample file: an image (PNG or JPEG, decoded by the
// library) or a `.npy` tensor of one sample.
//
// # Safety
// `path` is a NUL-terminated string; `labels_out` and `scores_out` hold `k` elements.
enum FastretrainStatus fastretrain_predict_file(struct FastretrainRetrainer *retrainer,
                                                const char *path,
                                                size_t k,
                                                size_t *labels_out,
                                                double *scores_out,
                                                size_t *found);

// Copies the name of label `index` (as [`fastretrain_predict_pixels`] reports it) into
// `buffer` (`capacity` bytes, NUL-terminated); `*needed` gets the bytes the name takes with
// its NUL, so a call with a small buffer says how much to give.
//
// # Safety
// `buffer` holds `capacity` bytes (it may be NULL when `capacity` is 0).
enum FastretrainStatus fastretrain_label_name(struct FastretrainRetrainer *retrainer,
                                              size_t index,
                                              char *buffer,
                                              size_t capacity,
                                              size_t *needed);

// The state's counts, labels and λ.
//
// # Safety
// `info` points to writable memory.
enum FastretrainStatus fastretrain_info(struct FastretrainRetrainer *retrainer,
                                        struct FastretrainInfo *info);

// Saves the state atomically (a crash leaves the old file or the new one, never a mix) to
// `path`, or to the state the retrainer was opened with when `path` is NULL.
//
// # Safety
// `path` is NULL or a NUL-terminated string.
enum FastretrainStatus fastretrain_save(struct FastretrainRetrainer *retrainer, const char *path);

// Adds the statistics of the state file `other` (another device's, same model) to this one's;
// samples both hold are refused (they would count twice). The head is dropped: refit next.
//
// # Safety
// `other` is a NUL-terminated string.
enum FastretrainStatus fastretrain_merge(struct FastretrainRetrainer *retrainer, const char *other);

// Writes the adapted model as one standard ONNX file `out` (the backbone and the new head;
// its spec beside it), to run in any ONNX runtime.
//
// # Safety
// `out` is a NUL-terminated string.
enum FastretrainStatus fastretrain_export(struct FastretrainRetrainer *retrainer, const char *out);

// Decodes a PNG or JPEG file with the library's decoder into `*image` (free it with
// [`fastretrain_image_free`]); on failure `image->pixels` is NULL.
//
// # Safety
// `path` is a NUL-terminated string; `image` points to writable memory.
enum FastretrainStatus fastretrain_decode_image(const char *path, struct FastretrainImage *image);

// Frees the pixels of an image from [`fastretrain_decode_image`] and sets them to NULL; an
// image whose pixels are NULL is left alone.
//
// # Safety
// `image` is NULL or an image filled by [`fastretrain_decode_image`], not yet freed.
void fastretrain_image_free(struct FastretrainImage *image);

#ifdef __cplusplus
} // extern "C"
#endif // __cplusplus

#endif /* FASTRETRAIN_H */
