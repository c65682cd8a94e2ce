//! The convolution family's host-side checks: uniform blocks and tile constants against the
//! WGSL, every storage variant valid, the size rule, the cooperative check's bound.

use super::*;
use crate::gpu::shaders::tests::{
    assert_valid_spirv, wgsl_const, wgsl_struct_layout, wgsl_u32_const,
};

#[test]
fn reduce_workgroup_matches_wgsl() {
    assert_eq!(
        wgsl_u32_const(&CONV2D_SPLITK_REDUCE, "WORKGROUP"),
        REDUCE_WORKGROUP
    );
}

#[test]
fn k_is_split_where_the_small_tile_leaves_the_gpu_half_idle() {
    let gpu = LARGE_TILE_MIN_WORKGROUPS;
    // VGG16's conv5 at 224, batch 1: M = 196, N = 512 gives 4 x 8 = 32 small tiles; K =
    // 4608 is split 16 ways for 512 workgroups (8 would give 256, short of 264).
    assert_eq!(
        ConvTile::split_for_gemm(196, 512, 4608, gpu),
        ConvTile::SplitK(16)
    );
    // At batch 8 (25 x 8 = 200 tiles, over half of 264) the small tile alone.
    assert_eq!(
        ConvTile::split_for_gemm(8 * 196, 512, 4608, gpu),
        ConvTile::Small
    );
    // A short K is not split into chunks of fewer than four slices: 2 ways at most here.
    assert_eq!(
        ConvTile::split_for_gemm(64, 64, 128, gpu),
        ConvTile::SplitK(2)
    );
    assert_eq!(ConvTile::split_for_gemm(64, 64, 127, gpu), ConvTile::Small);
    // Names round-trip, as CROSSPOOL_CONV_TILE and the autotuning cache spell them.
    for t in [
        ConvTile::Small,
        ConvTile::Large,
        ConvTile::Large2,
        ConvTile::Whole,
        ConvTile::Coop,
        ConvTile::SplitK(2),
        ConvTile::SplitK(16),
    ] {
        assert_eq!(ConvTile::from_name(&t.name()), Some(t));
    }
    for bad in ["split1", "split65", "split", "splitx", "medium"] {
        assert_eq!(ConvTile::from_name(bad), None, "{bad}");
    }
}

#[test]
fn large_tile_constants_match_wgsl() {
    let large = &CONV2D_LARGE;
    for (name, v) in [
        ("BM", LARGE_BM),
        ("BN", LARGE_BN),
        ("BK", LARGE_BK),
        ("TM", LARGE_TM),
        ("TN", LARGE_TN),
        ("THREADS", THREADS),
        ("WG_X", WG_X),
        ("WG_Y", WG_Y),
    ] {
        assert_eq!(wgsl_u32_const(large, name), v, "{name}");
    }
    // 16 x 16 threads, an 8 x 8 block each, 4 A and 4 B loads per slice each.
    assert_eq!(LARGE_BM, 16 * LARGE_TM);
    assert_eq!(LARGE_BN, 16 * LARGE_TN);
    assert_eq!(LARGE_BM * LARGE_BK, 4 * THREADS);
    assert_eq!(LARGE_BN * LARGE_BK, 4 * THREADS);
    assert_eq!(wgsl_u32_const(large, "A_ROW"), LARGE_BM / 4 + 1);
    assert_eq!(wgsl_u32_const(large, "B_ROW"), LARGE_BN / 4);
    let (members, size) = wgsl_struct_layout(large, "ConvParams");
    assert_eq!((members, size), wgsl_struct_layout(&CONV2D, "ConvParams"));
}

#[test]
fn every_storage_variant_validates_and_keeps_the_params() {
    let both = [Dtype::F32, Dtype::F16];
    for (tile, shader) in [
        (ConvTile::Small, &CONV2D),
        (ConvTile::Large, &CONV2D_LARGE),
        (ConvTile::Large2, &CONV2D_LARGE),
        (ConvTile::Whole, &CONV2D_WHOLE_K),
    ] {
        for input in both {
            for output in both {
                for weights in both {
                    let t = ConvTypes {
                        input,
                        output,
                        weights,
                    };
                    let v = t.shader(tile).unwrap();
                    assert_valid_spirv(&v);
                    assert_eq!(
                        v.needs_f16(),
                        t != ConvTypes {
                            input: Dtype::F32,
                            output: Dtype::F32,
                            weights: Dtype::F32
                        }
                    );
                    assert_eq!(
                        wgsl_struct_layout(&v, "ConvParams"),
                        wgsl_struct_layout(shader, "ConvParams")
                    );
                    let limit = if weights == Dtype::F16 {
                        F16_MAX
                    } else {
                        f32::MAX
                    };
                    assert_eq!(
                        wgsl_const(&v, "ACT_LIMIT"),
                        naga::Literal::F32(limit),
                        "{t:?}"
                    );
                    let stages = if tile == ConvTile::Large2 { 2 } else { 1 };
                    if shader.name == CONV2D_LARGE.name {
                        assert_eq!(wgsl_const(&v, "STAGES"), naga::Literal::U32(stages));
                    }
                }
            }
        }
    }
    // A rewrite of a line the shader lacks is an error, not a silent no-op.
    assert!(CONV2D
        .specialise(&[("alias nothing = f32;", "alias nothing = f16;")])
        .is_err());
}

/// The cooperative-matrix kernel cannot run on software Vulkan, so CI holds it to what can
/// be checked without a GPU: every storage variant validates with naga and translates to
/// SPIR-V that spirv-val accepts (naga 30's writer has panicked on some cooperative
/// stores, and emitted device-scope atomics the memory model it declares forbids), and
/// its parameters and constants are the host's.
#[test]
fn cooperative_kernel_validates_and_translates_to_spirv() {
    let coop = &CONV2D_COOP;
    assert!(coop.needs_cooperative_matrix() && coop.needs_f16());
    for input in [Dtype::F32, Dtype::F16] {
        for output in [Dtype::F32, Dtype::F16] {
            let t = ConvTypes {
                input,
                output,
                weights: Dtype::F16,
            };
            let v = t.shader(ConvTile::Coop).unwrap();
            assert_eq!(v.source.matches("enable f16;").count(), 1, "{t:?}");
            assert_valid_spirv(&v);
            assert_eq!(
                wgsl_struct_layout(&v, "ConvParams"),
                wgsl_struct_layout(&CONV2D, "ConvParams")
            );
        }
    }
    for (name, v) in [
        ("BM", COOP_BM),
        ("BN", COOP_BN),
        ("BK", COOP_BK),
        ("WG", COOP_WG),
    ] {
        assert_eq!(wgsl_u32_const(coop, name), v, "{name}");
    }
    // 4 x 4 accumulators of 16 x 16 cover the tile; the gather gives every invocation
    // BM / 2 pixels of one k, the weight load BK * BN / WG values.
    assert_eq!((COOP_BM / 16, COOP_BN / 16, COOP_BK), (4, 4, 16));
    assert_eq!(COOP_WG, 2 * COOP_BK);
    // f32 weights are refused rather than read as f16.
    let f32s = ConvTypes {
        input: Dtype::F16,
        output: Dtype::F16,
        weights: Dtype::F32,
    };
    assert!(f32s.shader(ConvTile::Coop).is_err());
}

#[test]
fn kernels_agree_within_twice_the_sum_bound_and_no_further() {
    let n = 100;
    let gamma = f32_gamma(n);
    let mag = [10.0f32, 1.0, 0.5];
    let exact = [3.0f32, -0.25, 0.125];
    // Just inside 2 gamma * magnitude: agree.
    let near: Vec<f32> = exact
        .iter()
        .zip(&mag)
        .map(|(v, m)| v + 1.9 * gamma * m)
        .collect();
    assert_eq!(agree_within_sum_bound(&near, &exact, &mag, n), Ok(()));
    // Three times it on one output: that output is named.
    let mut far = exact.to_vec();
    far[1] += 3.0 * gamma * mag[1];
    let e = agree_within_sum_bound(&far, &exact, &mag, n).unwrap_err();
    assert!(e.contains("output 1"), "{e}");
    // NaN never agrees; all zeros prove nothing; lengths must match.
    let mut nan = exact.to_vec();
    nan[2] = f32::NAN;
    assert!(agree_within_sum_bound(&nan, &exact, &mag, n).is_err());
    assert!(agree_within_sum_bound(&[0.0; 3], &[0.0; 3], &mag, n).is_err());
    assert!(agree_within_sum_bound(&exact[..2], &exact, &mag, n).is_err());
}

fn f32_gamma(n: usize) -> f32 {
    let nu = n as f64 * (f32::EPSILON as f64 / 2.0);
    (nu / (1.0 - nu)) as f32
}

#[test]
fn the_large_tile_is_chosen_where_it_fills_the_gpu() {
    // VGG16 at 224: conv3_1 at batch 8 (M = 8 * 56 * 56, N = 256) gives 392 large tiles.
    let gpu = LARGE_TILE_MIN_WORKGROUPS;
    assert_eq!(ConvTile::for_gemm(8 * 56 * 56, 256, gpu), ConvTile::Large);
    // conv5 at batch 8 (M = 8 * 14 * 14, N = 512) would give 52: small tiles.
    assert_eq!(ConvTile::for_gemm(8 * 14 * 14, 512, gpu), ConvTile::Small);
    // ... except where the compute units are few (a CPU's threads).
    assert_eq!(ConvTile::for_gemm(8 * 14 * 14, 512, 8), ConvTile::Large);
    // conv1 (N = 64) is narrower than the large tile.
    assert_eq!(ConvTile::for_gemm(32 * 224 * 224, 64, 1), ConvTile::Small);
}

#[test]
fn whole_k_constants_match_wgsl() {
    let whole = &CONV2D_WHOLE_K;
    for (name, v) in [
        ("BM", BM),
        ("BN", BN),
        ("K_MAX", WHOLE_K_MAX),
        ("WG_X", WG_X),
        ("WG_Y", WG_Y),
        ("THREADS", THREADS),
    ] {
        assert_eq!(wgsl_u32_const(whole, name), v, "{name}");
    }
    // 256 threads stage K_MAX x 64 of A and of B, 8 values each; a 4 x 4 block a thread.
    assert_eq!(WHOLE_K_MAX * BM, 8 * THREADS);
    assert_eq!(WHOLE_K_MAX * BN, 8 * THREADS);
    assert_eq!(wgsl_u32_const(whole, "A_ROW"), BM / 4 + 1);
    assert_eq!(
        wgsl_struct_layout(whole, "ConvParams"),
        wgsl_struct_layout(&CONV2D, "ConvParams")
    );
}

#[test]
fn tile_constants_match_wgsl() {
    for (name, v) in [
        ("BM", BM),
        ("BN", BN),
        ("BK", BK),
        ("TM", TM),
        ("TN", TN),
        ("THREADS", THREADS),
    ] {
        assert_eq!(wgsl_u32_const(&CONV2D, name), v, "{name}");
    }
    // The thread layout the shader hard-codes (16x16 threads, 4 A and 4 B loads each,
    // a 4x4 block per thread held in four vec4).
    assert_eq!(THREADS, 256);
    assert_eq!(BM, 16 * TM);
    assert_eq!(BN, 16 * TN);
    assert_eq!(BM * BK, 4 * THREADS);
    assert_eq!(BN * BK, 4 * THREADS);
    assert_eq!(TM, 4);
    assert_eq!(TN, 4);
    assert_eq!(wgsl_u32_const(&CONV2D, "A_ROW"), BM / 4 + 1);
    assert_eq!(wgsl_u32_const(&CONV2D, "B_ROW"), BN / 4);
}
