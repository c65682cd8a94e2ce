//! The kernel families, one module each (convolution a folder of its own): the host side of
//! the WGSL in `shaders/`, built on [`super::runtime`].

pub mod conv;
pub mod crosslayer;
pub mod normalize;
pub mod pool;
pub mod quantize;
pub mod region_pool;
pub mod relu;
pub mod score;

/// Every shader the crate ships, from every family; a test checks this matches the files in
/// `shaders/`.
#[cfg(test)]
pub(crate) fn all_shaders() -> Vec<crate::gpu::shaders::Shader> {
    let mut all = conv::SHADERS.to_vec();
    all.extend([
        crosslayer::CROSSLAYER,
        pool::MAXPOOL2D,
        normalize::NORMALIZE,
        quantize::QUANTIZE,
        region_pool::REGION_POOL,
        relu::RELU,
        score::SCORE,
    ]);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::shaders::tests::wgsl_u32_const;

    /// The host's copies of the constants the shaders declare (workgroup sizes, tiles, mode
    /// values) are the shaders' (the convolution family checks its own in conv/tests.rs).
    #[test]
    fn host_constants_match_wgsl() {
        let region = &region_pool::REGION_POOL;
        for (shader, name, v) in [
            (&relu::RELU, "WORKGROUP", relu::WORKGROUP),
            (&pool::MAXPOOL2D, "WORKGROUP", pool::WORKGROUP),
            (&quantize::QUANTIZE, "WORKGROUP", quantize::WORKGROUP),
            (&score::SCORE, "WORKGROUP", score::WORKGROUP),
            (region, "WORKGROUP", region_pool::WORKGROUP),
            (region, "MODE_SUM", region_pool::MODE_SUM),
            (region, "MODE_MAX", region_pool::MODE_MAX),
            (region, "MODE_SUM_SQRT", region_pool::MODE_SUM_SQRT),
            (&crosslayer::CROSSLAYER, "BM", crosslayer::BM),
            (&crosslayer::CROSSLAYER, "BN", crosslayer::BN),
            (&crosslayer::CROSSLAYER, "BK", crosslayer::BK),
        ] {
            assert_eq!(wgsl_u32_const(shader, name), v, "{name} in {}", shader.name);
        }
    }
}
