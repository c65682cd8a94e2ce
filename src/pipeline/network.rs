//! A whole network on a [`Backend`]: every layer recorded into one submission, intermediate
//! activations in two ping-pong buffers reused across layers and across calls, and only the
//! requested layers kept in buffers of their own.

use super::backend::{Backend, Op};
use crate::error::{Error, Result};
use crate::gpu::{Dtype, GpuContext};
use crate::model::{Arch, LayerKind, ModelWeights};
use crate::shape::{MaxPool2dSpec, Shape4};

enum NetLayer<B: Backend> {
    Conv(B::Conv),
    Pool(MaxPool2dSpec),
}

/// A network's layers made ready on a backend, up to the last layer whose weights were
/// loaded.
/// One stage of a profiled pass: submitted and waited for alone.
#[derive(Clone, Debug)]
pub struct Stage {
    /// The layer or step (`conv3_1`, `pooling`).
    pub name: String,
    /// Wall time of its submission.
    pub seconds: f64,
    /// Its floating-point operations.
    pub flops: f64,
    /// The kernel variant it ran (a convolution's tile on the GPU), where there is a choice.
    pub variant: Option<String>,
}

pub struct Network<B: Backend = GpuContext> {
    /// Architecture.
    pub arch: Arch,
    names: Vec<String>,
    layers: Vec<NetLayer<B>>,
    kernels: B::Kernels,
    /// How weights and the activations between layers are stored; the input and the
    /// requested layers' outputs are f32 either way.
    storage: Dtype,
}

/// The network on the GPU.
pub type GpuNetwork = Network<GpuContext>;

/// Buffers for one input shape, kept between calls so that a stream of equal-sized batches
/// allocates nothing after the first.
pub struct Workspace<B: Backend = GpuContext> {
    input: Shape4,
    wanted: Vec<usize>,
    scratch: [B::Scratch; 2],
    outputs: Vec<B::Tensor>,
    shapes: Vec<Shape4>,
    /// f16 storage only: per image, non-zero once an activation overflowed f16.
    overflow: Option<B::Features>,
}

impl<B: Backend> Network<B> {
    /// Uploads the loaded layers of `weights`, including the pooling layers between them, in
    /// f32.
    pub fn new(ctx: &B, weights: &ModelWeights) -> Result<Self> {
        Self::with_storage(ctx, weights, Dtype::F32)
    }

    /// [`Network::new`] with weights and intermediate activations stored as `storage` (sums
    /// are f32 either way; the requested layers come out in f32).
    pub fn with_storage(ctx: &B, weights: &ModelWeights, storage: Dtype) -> Result<Self> {
        let mut names = Vec::new();
        let mut layers = Vec::new();
        // Every layer up to the first whose weights were not loaded (pooling needs none).
        for layer in weights.arch.layers() {
            let ready = match &layer.kind {
                LayerKind::Conv { .. } => match weights.layer(&layer.name) {
                    Some(w) => NetLayer::Conv(ctx.conv_layer_as(w, storage)?),
                    None => break,
                },
                LayerKind::MaxPool(spec) => NetLayer::Pool(*spec),
            };
            names.push(layer.name.clone());
            layers.push(ready);
        }
        Ok(Network {
            arch: weights.arch,
            names,
            layers,
            kernels: ctx.kernels()?,
            storage,
        })
    }

    /// How weights and intermediate activations are stored.
    pub fn storage(&self) -> Dtype {
        self.storage
    }

    /// Names of the layers available, in order.
    pub fn layer_names(&self) -> &[String] {
        &self.names
    }

    /// Output shape of every layer for `input`.
    pub fn shapes(&self, input: Shape4) -> Result<Vec<Shape4>> {
        self.shapes_through(input, self.layers.len().saturating_sub(1))
    }

    /// Output shapes of the layers up to and including layer `last` (layers after it may not
    /// accept an input that small, and are not run).
    fn shapes_through(&self, input: Shape4, last: usize) -> Result<Vec<Shape4>> {
        let mut s = input;
        self.layers
            .iter()
            .take(last + 1)
            .map(|l| {
                s = match l {
                    NetLayer::Conv(c) => B::conv_spec(c).output_shape(s)?,
                    NetLayer::Pool(p) => p.output_shape(s)?,
                };
                Ok(s)
            })
            .collect()
    }

    fn index_of(&self, name: &str) -> Result<usize> {
        self.names.iter().position(|n| n == name).ok_or_else(|| {
            Error::Config(format!(
                "layer '{name}' is not available (loaded: {}); {} layers are: {}",
                self.names.join(", "),
                self.arch,
                self.arch
                    .layers()
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// Allocates buffers for running `input`-shaped batches and keeping the `wanted` layers.
    pub fn workspace(&self, ctx: &B, input: Shape4, wanted: &[&str]) -> Result<Workspace<B>> {
        if input.c != 3 {
            return Err(Error::shape(
                "network input",
                format!("expected 3 channels, got {input}"),
            ));
        }
        let wanted: Vec<usize> = wanted
            .iter()
            .map(|n| self.index_of(n))
            .collect::<Result<_>>()?;
        let last = *wanted
            .iter()
            .max()
            .ok_or_else(|| Error::Config("no output layer requested".into()))?;
        let shapes = self.shapes_through(input, last)?;
        let scratch_values = shapes[..=last]
            .iter()
            .enumerate()
            .filter(|(i, _)| !wanted.contains(i))
            .map(|(_, s)| s.len())
            .max()
            .unwrap_or(1);
        // Scratch is counted in f32 values; f16 activations take half as many bytes.
        let scratch_values = match self.storage {
            Dtype::F32 => scratch_values,
            Dtype::F16 => scratch_values.div_ceil(2),
        };
        let scratch = [
            ctx.scratch(scratch_values, "activations A")?,
            ctx.scratch(scratch_values, "activations B")?,
        ];
        let outputs = wanted
            .iter()
            .map(|&i| ctx.tensor(shapes[i], &self.names[i]))
            .collect::<Result<_>>()?;
        let overflow = match self.storage {
            Dtype::F32 => None,
            Dtype::F16 => Some(ctx.features((input.n, 1, 1), "f16 overflow flags")?),
        };
        Ok(Workspace {
            input,
            wanted,
            scratch,
            outputs,
            shapes,
            overflow,
        })
    }

    /// Runs the network on `input` up to the deepest wanted layer and submits; the wanted
    /// activations are left in `ws`'s output tensors, in the order they were requested.
    pub fn forward<'w>(
        &self,
        ctx: &B,
        input: &B::Tensor,
        ws: &'w Workspace<B>,
    ) -> Result<&'w [B::Tensor]> {
        ctx.submit("network forward", &mut |r| self.record(ctx, r, input, ws))?;
        Ok(&ws.outputs)
    }

    /// Records the forward pass into `r` (so that later stages can join the same submission).
    pub fn record(
        &self,
        ctx: &B,
        r: &mut B::Recorder,
        input: &B::Tensor,
        ws: &Workspace<B>,
    ) -> Result<()> {
        if let Some(f) = &ws.overflow {
            ctx.run(&self.kernels, r, Op::ResetOverflow(f))?;
        }
        for (i, (prev, out)) in self.layer_io(input, ws)?.iter().enumerate() {
            self.record_layer(ctx, r, i, prev, out, ws)?;
        }
        Ok(())
    }

    /// Runs the layers one submission each, waiting for each, and returns every layer's name,
    /// wall time, floating-point operations and kernel variant: a per-layer profile. (Waiting
    /// between layers costs a little; the pipelined [`Network::record`] does not.)
    pub fn profile(&self, ctx: &B, input: &B::Tensor, ws: &Workspace<B>) -> Result<Vec<Stage>> {
        let mut out = Vec::new();
        ctx.wait("profile")?;
        for (i, (prev, next)) in self.layer_io(input, ws)?.iter().enumerate() {
            let t = std::time::Instant::now();
            ctx.submit("profile layer", &mut |r| {
                self.record_layer(ctx, r, i, prev, next, ws)
            })?;
            ctx.wait("profile layer")?;
            let seconds = t.elapsed().as_secs_f64();
            let (flops, variant) = match &self.layers[i] {
                NetLayer::Conv(c) => (
                    B::conv_spec(c).flops(B::shape_of(prev))?,
                    ctx.conv_variant(&self.kernels, c, B::shape_of(prev)),
                ),
                NetLayer::Pool(_) => (0.0, None),
            };
            out.push(Stage {
                name: self.names[i].clone(),
                seconds,
                flops,
                variant,
            });
        }
        Ok(out)
    }

    /// Floating-point operations of the forward pass for `input` up to the workspace's last
    /// wanted layer.
    pub fn flops(&self, input: &B::Tensor, ws: &Workspace<B>) -> Result<f64> {
        let mut total = 0.0;
        for (i, (prev, _)) in self.layer_io(input, ws)?.iter().enumerate() {
            if let NetLayer::Conv(c) = &self.layers[i] {
                total += B::conv_spec(c).flops(B::shape_of(prev))?;
            }
        }
        Ok(total)
    }

    /// (input, output) tensor views of each layer up to the deepest wanted one.
    fn layer_io(
        &self,
        input: &B::Tensor,
        ws: &Workspace<B>,
    ) -> Result<Vec<(B::Tensor, B::Tensor)>> {
        if B::shape_of(input) != ws.input {
            return Err(Error::shape(
                "network input",
                format!(
                    "workspace was made for {} but the input is {}",
                    ws.input,
                    B::shape_of(input)
                ),
            ));
        }
        let last = *ws.wanted.iter().max().unwrap_or(&0);
        let mut prev = input.clone();
        let mut io = Vec::with_capacity(last + 1);
        for i in 0..=last {
            let out = match ws.wanted.iter().position(|&w| w == i) {
                Some(k) => ws.outputs[k].clone(),
                None => B::view_as(&ws.scratch[i % 2], ws.shapes[i], self.storage),
            };
            io.push((prev, out.clone()));
            prev = out;
        }
        Ok(io)
    }

    fn record_layer(
        &self,
        ctx: &B,
        r: &mut B::Recorder,
        i: usize,
        prev: &B::Tensor,
        out: &B::Tensor,
        ws: &Workspace<B>,
    ) -> Result<()> {
        let op = match &self.layers[i] {
            NetLayer::Conv(layer) => Op::Conv {
                layer,
                input: prev,
                output: out,
                overflow: ws.overflow.as_ref(),
            },
            NetLayer::Pool(p) => Op::MaxPool(*p, prev, out),
        };
        ctx.run(&self.kernels, r, op)
    }
}

impl<B: Backend> Workspace<B> {
    /// The wanted activations, in the order requested (valid after a forward pass).
    pub fn outputs(&self) -> &[B::Tensor] {
        &self.outputs
    }

    /// Per image of the last batch, whether an activation overflowed the storage type (f16's
    /// 65504), which makes its features meaningless; all false in f32 (waits for the work).
    pub fn overflowed(&self, ctx: &B) -> Result<Vec<bool>> {
        match &self.overflow {
            None => Ok(vec![false; self.input.n]),
            Some(f) => Ok(ctx.download(f)?.iter().map(|v| v.to_bits() != 0).collect()),
        }
    }
}
