//! Accumulating the moments of a layer's local features on the GPU, for fitting a PCA.

use super::network::{GpuNetwork, Workspace};
use crate::error::Result;
use crate::gpu::crosslayer::{CrossLayerKernel, Guidance};
use crate::gpu::GpuContext;
use crate::gpu::{GpuFeatures, GpuTensor};
use crate::model::ModelWeights;
use crate::pca::MomentAccumulator;
use crate::pooling::LocalWindow;
use crate::shape::Shape4;

/// Runs the network to `layer` and sums its local features and their outer products.
pub struct MomentsGpu {
    net: GpuNetwork,
    cross: CrossLayerKernel,
    layer: String,
    window: LocalWindow,
}

/// Buffers for one input shape.
pub struct MomentsWorkspace {
    net: Workspace,
    sum: GpuFeatures,
    second: GpuFeatures,
}

impl MomentsGpu {
    /// Prepares to accumulate moments of `layer`'s local features over `window`.
    pub fn new(
        ctx: &GpuContext,
        weights: &ModelWeights,
        layer: &str,
        window: LocalWindow,
    ) -> Result<Self> {
        weights.arch.layer_index(layer)?;
        Ok(MomentsGpu {
            net: GpuNetwork::new(ctx, weights)?,
            cross: CrossLayerKernel::new(ctx)?,
            layer: layer.into(),
            window,
        })
    }

    /// Channels of the layer at `input` shape and the local-feature length.
    pub fn workspace(&self, ctx: &GpuContext, input: Shape4) -> Result<MomentsWorkspace> {
        let net = self.net.workspace(ctx, input, &[&self.layer])?;
        let f = self.window.feature_len(net.outputs()[0].shape.c);
        Ok(MomentsWorkspace {
            net,
            sum: GpuFeatures::new(ctx, 1, 1, f, "feature sum")?,
            second: GpuFeatures::new(ctx, 1, f, f, "feature second moment")?,
        })
    }

    /// Channels of the layer (valid for any workspace).
    pub fn channels(&self, ws: &MomentsWorkspace) -> usize {
        ws.net.outputs()[0].shape.c
    }

    /// Runs one batch and adds its sums to `acc` (downloaded in f32, accumulated in f64).
    pub fn add_batch(
        &self,
        ctx: &GpuContext,
        input: &GpuTensor,
        ws: &MomentsWorkspace,
        acc: &mut MomentAccumulator,
    ) -> Result<()> {
        let n = input.shape.n;
        ctx.submit("pca moments", |enc| {
            self.net.record(ctx, enc, input, &ws.net)?;
            let x = &ws.net.outputs()[0];
            self.cross
                .record(ctx, enc, Guidance::Ones, x, self.window, n, &ws.sum, false)?;
            self.cross.record(
                ctx,
                enc,
                Guidance::Layer(x, self.window),
                x,
                self.window,
                n,
                &ws.second,
                false,
            )
        })?;
        let s = ws.net.outputs()[0].shape;
        acc.add(
            &ws.sum.download(ctx)?,
            &ws.second.download(ctx)?,
            (s.n * s.h * s.w) as u64,
        );
        Ok(())
    }
}
