//! Accumulating the moments of a layer's local features, for fitting a PCA.

use super::backend::{Backend, CrossLayer, Guide, Op};
use super::network::{Network, Workspace};
use crate::error::Result;
use crate::gpu::{Dtype, GpuContext};
use crate::model::ModelWeights;
use crate::pca::MomentAccumulator;
use crate::pooling::LocalWindow;
use crate::shape::Shape4;

/// Runs the network to `layer` and sums its local features and their outer products.
pub struct Moments<B: Backend = GpuContext> {
    net: Network<B>,
    kernels: B::Kernels,
    layer: String,
    window: LocalWindow,
}

/// The moments on the GPU.
pub type MomentsGpu = Moments<GpuContext>;

/// Buffers for one input shape.
pub struct MomentsWorkspace<B: Backend = GpuContext> {
    net: Workspace<B>,
    sum: B::Features,
    second: B::Features,
}

impl<B: Backend> Moments<B> {
    /// Prepares to accumulate moments of `layer`'s local features over `window`.
    pub fn new(ctx: &B, weights: &ModelWeights, layer: &str, window: LocalWindow) -> Result<Self> {
        Self::with_storage(ctx, weights, layer, window, Dtype::F32)
    }

    /// [`Moments::new`] with the network stored as `storage` (see [`Network::with_storage`]).
    pub fn with_storage(
        ctx: &B,
        weights: &ModelWeights,
        layer: &str,
        window: LocalWindow,
        storage: Dtype,
    ) -> Result<Self> {
        weights.arch.layer_index(layer)?;
        Ok(Moments {
            net: Network::with_storage(ctx, weights, storage)?,
            kernels: ctx.kernels()?,
            layer: layer.into(),
            window,
        })
    }

    /// Buffers for batches of `input` shape.
    pub fn workspace(&self, ctx: &B, input: Shape4) -> Result<MomentsWorkspace<B>> {
        let net = self.net.workspace(ctx, input, &[&self.layer])?;
        let f = self.window.feature_len(B::shape_of(&net.outputs()[0]).c);
        Ok(MomentsWorkspace {
            net,
            sum: ctx.features((1, 1, f), "feature sum")?,
            second: ctx.features((1, f, f), "feature second moment")?,
        })
    }

    /// Channels of the layer (valid for any workspace).
    pub fn channels(&self, ws: &MomentsWorkspace<B>) -> usize {
        B::shape_of(&ws.net.outputs()[0]).c
    }

    /// Runs one batch and adds its sums to `acc` (read back in f32, accumulated in f64).
    /// Returns the images of the batch whose activations overflowed f16 (f16 storage only):
    /// if there are any, nothing was added, and the caller may run the batch without them.
    pub fn add_batch(
        &self,
        ctx: &B,
        input: &B::Tensor,
        ws: &MomentsWorkspace<B>,
        acc: &mut MomentAccumulator,
    ) -> Result<Vec<usize>> {
        let n = B::shape_of(input).n;
        let win = self.window;
        ctx.submit("pca moments", &mut |r| {
            self.net.record(ctx, r, input, &ws.net)?;
            let x = &ws.net.outputs()[0];
            let k = &self.kernels;
            let sum = CrossLayer::new(Guide::Ones, x, win).grouped(n);
            ctx.run(k, r, Op::CrossLayer(sum, &ws.sum))?;
            let second = CrossLayer::new(Guide::Layer(x, win), x, win).grouped(n);
            ctx.run(k, r, Op::CrossLayer(second, &ws.second))
        })?;
        let overflowed: Vec<usize> = (ws.net.overflowed(ctx)?.iter().enumerate())
            .filter(|(_, &o)| o)
            .map(|(i, _)| i)
            .collect();
        if !overflowed.is_empty() {
            return Ok(overflowed);
        }
        let s = B::shape_of(&ws.net.outputs()[0]);
        acc.add(
            &ctx.download(&ws.sum)?,
            &ctx.download(&ws.second)?,
            (s.n * s.h * s.w) as u64,
        );
        Ok(Vec::new())
    }
}
