/// Depthwise convolution along an axis the output is contiguous on: `len` output points, each
/// the bias plus every `taps[t] * input[offsets[t] + i * in_stride]`.
///
/// Same contract as the aarch64 and wasm kernels. The arithmetic is the scalar walk's, in the
/// same order: the bias, then one multiply and one add per tap. It uses no FMA, so every output
/// is bit-identical to the scalar path and a plan gives the same results with or without this
/// kernel. `in_stride == 1` is vectorised at any tap count; any other stride stays scalar.
///
/// # Safety
/// `input.offset(offsets[t] + i * in_stride)` must be readable for every tap and every `i` below
/// `len`, and `len` output points writable from `output`. The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
pub unsafe fn depthwise_w_f32(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    len: usize,
    in_stride: isize,
) {
    unsafe {
        match in_stride {
            1 => contiguous(input, output, taps, offsets, bias, len),
            _ => scalar(input, output, taps, offsets, bias, 0, len, in_stride),
        }
    }
}

/// The `in_stride == 1` case, with the tap count taken at runtime.
///
/// Taps are the outer loop and 32 output points the inner one: four 8-lane accumulators give
/// the adder independent chains, and each tap's broadcast is paid once per 32 points. Real 3x3,
/// 7x7 or 9x9 kernels reach here with 9, 49 or 81 taps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn contiguous(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    len: usize,
) {
    use std::arch::x86_64::*;
    unsafe {
        let biasv = _mm256_set1_ps(bias);
        let mut i = 0usize;
        while i + 32 <= len {
            let mut a0 = biasv;
            let mut a1 = biasv;
            let mut a2 = biasv;
            let mut a3 = biasv;
            for (tap, offset) in taps.iter().zip(offsets) {
                let k = _mm256_set1_ps(*tap);
                let p = input.offset(*offset).add(i);
                a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(p), k));
                a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(p.add(8)), k));
                a2 = _mm256_add_ps(a2, _mm256_mul_ps(_mm256_loadu_ps(p.add(16)), k));
                a3 = _mm256_add_ps(a3, _mm256_mul_ps(_mm256_loadu_ps(p.add(24)), k));
            }
            _mm256_storeu_ps(output.add(i), a0);
            _mm256_storeu_ps(output.add(i + 8), a1);
            _mm256_storeu_ps(output.add(i + 16), a2);
            _mm256_storeu_ps(output.add(i + 24), a3);
            i += 32;
        }
        while i + 8 <= len {
            let mut acc = biasv;
            for (tap, offset) in taps.iter().zip(offsets) {
                let x = _mm256_loadu_ps(input.offset(*offset).add(i));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(x, _mm256_set1_ps(*tap)));
            }
            _mm256_storeu_ps(output.add(i), acc);
            i += 8;
        }
        scalar(input, output, taps, offsets, bias, i, len, 1);
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn scalar(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    from: usize,
    len: usize,
    in_stride: isize,
) {
    unsafe {
        for i in from..len {
            let mut sum = bias;
            for (tap, offset) in taps.iter().zip(offsets) {
                sum += tap * *input.offset(*offset + i as isize * in_stride);
            }
            *output.add(i) = sum;
        }
    }
}

bail_stub!(x86_64; pub unsafe fn depthwise_w_f32(
    *const f32, *mut f32, &[f32], &[isize], f32, usize, isize
));

submit_routine!(x86_64; DepthwiseWF32, DepthwiseW, "x86_64_avx_depthwise_w_f32", depthwise_w_f32,
    isa(X86_64Avx));

/// Channel-last depthwise convolution: `len` output positions, each a run of `channels`
/// contiguous values, the bias plus every `kernel[tap_indices[t] * k_stride + c] *
/// input[i * in_stride + offsets[t] + c]` (the aarch64 and wasm kernels' contract,
/// [`crate::routines::DepthwiseCF32`]).
///
/// Vectorised along the channels, so every stride (the stride-2 layers included) runs in
/// vectors. Like [`depthwise_w_f32`] it multiplies then adds, tap by tap in order, with no
/// FMA: every output is bit-identical to tract-core's generic channel-last loop and to the
/// channel-first path.
///
/// # Safety
/// As [`crate::routines::DepthwiseCF32`]. The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn depthwise_c_f32(
    input: *const f32,
    output: *mut f32,
    kernel: *const f32,
    tap_indices: &[usize],
    offsets: &[isize],
    bias: *const f32,
    channels: usize,
    k_stride: usize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
    low: f32,
    high: f32,
) {
    unsafe {
        channels_inner(
            input,
            output,
            kernel,
            tap_indices,
            offsets,
            bias,
            channels,
            k_stride,
            len,
            in_stride,
            out_stride,
            low,
            high,
        )
    }
}

/// [`depthwise_c_f32`]'s body: 32 channels at a time in four 8-lane accumulators (independent
/// add chains), then 8 at a time, then the scalar tail.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[allow(clippy::too_many_arguments)]
unsafe fn channels_inner(
    input: *const f32,
    output: *mut f32,
    kernel: *const f32,
    tap_indices: &[usize],
    offsets: &[isize],
    bias: *const f32,
    channels: usize,
    k_stride: usize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
    low: f32,
    high: f32,
) {
    use std::arch::x86_64::*;
    unsafe {
        let (lo, hi) = (_mm256_set1_ps(low), _mm256_set1_ps(high));
        // MAXPS and MINPS return their second operand when either is NaN: the accumulator
        // goes second, so a NaN output stays NaN.
        let clamp = |x| _mm256_min_ps(hi, _mm256_max_ps(lo, x));
        for i in 0..len {
            let iptr = input.offset(i as isize * in_stride);
            let optr = output.offset(i as isize * out_stride);
            let mut c = 0usize;
            while c + 32 <= channels {
                let mut a0 = _mm256_loadu_ps(bias.add(c));
                let mut a1 = _mm256_loadu_ps(bias.add(c + 8));
                let mut a2 = _mm256_loadu_ps(bias.add(c + 16));
                let mut a3 = _mm256_loadu_ps(bias.add(c + 24));
                for (&kix, &off) in tap_indices.iter().zip(offsets) {
                    let k = kernel.add(kix * k_stride + c);
                    let x = iptr.offset(off).add(c);
                    a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(k), _mm256_loadu_ps(x)));
                    a1 = _mm256_add_ps(
                        a1,
                        _mm256_mul_ps(_mm256_loadu_ps(k.add(8)), _mm256_loadu_ps(x.add(8))),
                    );
                    a2 = _mm256_add_ps(
                        a2,
                        _mm256_mul_ps(_mm256_loadu_ps(k.add(16)), _mm256_loadu_ps(x.add(16))),
                    );
                    a3 = _mm256_add_ps(
                        a3,
                        _mm256_mul_ps(_mm256_loadu_ps(k.add(24)), _mm256_loadu_ps(x.add(24))),
                    );
                }
                _mm256_storeu_ps(optr.add(c), clamp(a0));
                _mm256_storeu_ps(optr.add(c + 8), clamp(a1));
                _mm256_storeu_ps(optr.add(c + 16), clamp(a2));
                _mm256_storeu_ps(optr.add(c + 24), clamp(a3));
                c += 32;
            }
            while c + 8 <= channels {
                let mut acc = _mm256_loadu_ps(bias.add(c));
                for (&kix, &off) in tap_indices.iter().zip(offsets) {
                    let k = _mm256_loadu_ps(kernel.add(kix * k_stride + c));
                    let x = _mm256_loadu_ps(iptr.offset(off).add(c));
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(k, x));
                }
                _mm256_storeu_ps(optr.add(c), clamp(acc));
                c += 8;
            }
            while c < channels {
                let mut sum = *bias.add(c);
                for (&kix, &off) in tap_indices.iter().zip(offsets) {
                    sum += *kernel.add(kix * k_stride + c) * *iptr.offset(off).add(c);
                }
                *optr.add(c) = crate::routines::clamp_depthwise_output(sum, low, high);
                c += 1;
            }
        }
    }
}

bail_stub!(x86_64; pub unsafe fn depthwise_c_f32(
    *const f32, *mut f32, *const f32, &[usize], &[isize], *const f32, usize, usize, usize, isize,
    isize, f32, f32
));

submit_routine!(x86_64; DepthwiseCF32, DepthwiseC, "x86_64_avx_depthwise_c_f32", depthwise_c_f32,
    isa(X86_64Avx));

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn reference(
        input: &[f32],
        taps: &[f32],
        offsets: &[isize],
        bias: f32,
        len: usize,
        in_stride: isize,
        center: usize,
    ) -> Vec<f32> {
        (0..len)
            .map(|i| {
                taps.iter().zip(offsets).fold(bias, |sum, (tap, offset)| {
                    sum + tap * input[(center as isize + offset + i as isize * in_stride) as usize]
                })
            })
            .collect()
    }

    fn compare(taps: usize, len: usize, in_stride: isize) {
        if !std::is_x86_feature_detected!("avx") {
            return;
        }
        let k: Vec<f32> = (0..taps).map(|t| (t as f32 * 0.7).sin()).collect();
        let offsets: Vec<isize> = (0..taps as isize).map(|t| t - taps as isize / 2).collect();
        let center = taps;
        let input: Vec<f32> = (0..center * 2 + len * in_stride as usize + 1)
            .map(|i| (i as f32 * 0.37).cos())
            .collect();
        let expected = reference(&input, &k, &offsets, 0.25, len, in_stride, center);
        let mut output = vec![0f32; len];
        unsafe {
            depthwise_w_f32(
                input.as_ptr().add(center),
                output.as_mut_ptr(),
                &k,
                &offsets,
                0.25,
                len,
                in_stride,
            )
        };
        // Same operations in the same order: the results must match bit for bit.
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&output), bits(&expected), "taps {taps} len {len} stride {in_stride}");
    }

    #[test]
    fn matches_scalar_bit_for_bit() {
        for taps in [1, 2, 3, 4, 5, 9, 25, 49, 81] {
            for len in [0, 1, 7, 8, 9, 31, 32, 33, 64, 100, 224] {
                compare(taps, len, 1);
                compare(taps, len, 2);
            }
        }
    }

    /// Channel-last: the generic loop of tract-core's `DepthWise` (bias, then k·x tap by tap),
    /// then the clamp to `[low, high]`.
    fn compare_c(taps: usize, channels: usize, len: usize, in_stride: isize, low: f32, high: f32) {
        if !std::is_x86_feature_detected!("avx") {
            return;
        }
        let k_stride = channels + 3;
        let kernel: Vec<f32> = (0..taps * k_stride).map(|t| (t as f32 * 0.7).sin()).collect();
        let bias: Vec<f32> = (0..channels).map(|c| c as f32 * 0.01 - 0.2).collect();
        let tap_indices: Vec<usize> = (0..taps).rev().collect();
        let offsets: Vec<isize> =
            (0..taps as isize).map(|t| (t - taps as isize / 2) * channels as isize).collect();
        let center = taps * channels;
        let input: Vec<f32> = (0..2 * center + (len + 1) * in_stride as usize + channels)
            .map(|i| (i as f32 * 0.37).cos())
            .collect();
        let out_stride = channels as isize + 1;
        let mut expected = vec![0f32; len * out_stride as usize];
        for i in 0..len {
            for c in 0..channels {
                let mut sum = bias[c];
                for (&kix, &off) in tap_indices.iter().zip(&offsets) {
                    let x = input[(center as isize + i as isize * in_stride + off) as usize + c];
                    sum += kernel[kix * k_stride + c] * x;
                }
                expected[i * out_stride as usize + c] = if sum.is_nan() {
                    sum
                } else {
                    sum.max(low).min(high)
                };
            }
        }
        let mut output = vec![0f32; len * out_stride as usize];
        unsafe {
            depthwise_c_f32(
                input.as_ptr().add(center),
                output.as_mut_ptr(),
                kernel.as_ptr(),
                &tap_indices,
                &offsets,
                bias.as_ptr(),
                channels,
                k_stride,
                len,
                in_stride,
                out_stride,
                low,
                high,
            )
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&output),
            bits(&expected),
            "taps {taps} channels {channels} len {len} stride {in_stride} clamp {low}..{high}"
        );
    }

    #[test]
    fn channel_last_matches_scalar_bit_for_bit() {
        for taps in [1, 4, 9, 25] {
            for channels in [1, 7, 8, 9, 16, 31, 32, 33, 64, 96, 144, 960] {
                for len in [0, 1, 3, 14] {
                    let c = channels as isize;
                    for (low, high) in [(f32::NEG_INFINITY, f32::INFINITY), (0.0, 0.6), (-0.3, 0.2)]
                    {
                        compare_c(taps, channels, len, c, low, high);
                        compare_c(taps, channels, len, 2 * c, low, high);
                    }
                }
            }
        }
    }

    /// A NaN in the input stays NaN through the clamp, in the vector paths and the scalar tail.
    #[test]
    fn channel_last_clamp_keeps_nan() {
        if !std::is_x86_feature_detected!("avx") {
            return;
        }
        for channels in [1, 8, 33] {
            let input = vec![f32::NAN; channels];
            let kernel = vec![1f32; channels];
            let bias = vec![0f32; channels];
            let mut output = vec![0f32; channels];
            unsafe {
                depthwise_c_f32(
                    input.as_ptr(),
                    output.as_mut_ptr(),
                    kernel.as_ptr(),
                    &[0],
                    &[0],
                    bias.as_ptr(),
                    channels,
                    channels,
                    1,
                    channels as isize,
                    channels as isize,
                    0.0,
                    6.0,
                )
            };
            assert!(output.iter().all(|x| x.is_nan()), "{channels} channels: {output:?}");
        }
    }

    #[test]
    fn channel_last_kernel_is_the_x86_routine() {
        if std::is_x86_feature_detected!("avx") {
            assert!(crate::routines::depthwise_c_f32().is_some());
        }
    }
}
