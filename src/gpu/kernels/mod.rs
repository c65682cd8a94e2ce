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
