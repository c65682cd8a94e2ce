//! A whole network on a [`Backend`]: every layer recorded into one submission, intermediate
//! activations in scratch buffers reused across layers and across calls (two, ping-pong,
//! for a plain chain; a residual network keeps a block's input alive until its shortcut is
//! added), and only the requested layers kept in buffers of their own.

use super::backend::{Backend, Op};
use crate::error::{Error, Result};
use crate::gpu::{Dtype, GpuContext};
use crate::model::{Arch, LayerKind, ModelWeights};
use crate::shape::{MaxPool2dSpec, Shape4};

enum NetLayer<B: Backend> {
    Conv(B::Conv),
    Pool(MaxPool2dSpec),
}

/// Where a layer's operands come from: indices of earlier layers (`None`: the image).
#[derive(Clone, Copy, Debug)]
struct Links {
    input: Option<usize>,
    shortcut: Option<usize>,
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
    links: Vec<Links>,
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
    scratch: Vec<B::Scratch>,
    /// Per layer up to the deepest wanted one: its scratch buffer and storage type, or
    /// `None` for a wanted layer (its own f32 tensor).
    placement: Vec<Option<(usize, Dtype)>>,
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
        let mut links = Vec::new();
        // Every layer up to the first whose weights were not loaded (pooling needs none).
        for (i, layer) in weights.arch.layers().into_iter().enumerate() {
            let ready = match &layer.kind {
                LayerKind::Conv { .. } => match weights.layer(&layer.name) {
                    Some(w) => NetLayer::Conv(ctx.conv_layer_as(w, storage)?),
                    None => break,
                },
                LayerKind::MaxPool(spec) => NetLayer::Pool(*spec),
            };
            links.push(Links {
                input: layer.input_index(i),
                shortcut: layer.shortcut,
            });
            names.push(layer.name);
            layers.push(ready);
        }
        Ok(Network {
            arch: weights.arch,
            names,
            layers,
            links,
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
        let mut shapes: Vec<Shape4> = Vec::with_capacity(last + 1);
        for (i, l) in self.layers.iter().take(last + 1).enumerate() {
            let from = self.links[i].input.map_or(input, |j| shapes[j]);
            let s = match l {
                NetLayer::Conv(c) => B::conv_spec(c).output_shape(from)?,
                NetLayer::Pool(p) => p.output_shape(from)?,
            };
            if let Some(j) = self.links[i].shortcut {
                Shape4::check_output("residual addition", s, shapes[j])?;
            }
            shapes.push(s);
        }
        Ok(shapes)
    }

    /// Assigns every layer up to `last` that is not wanted a scratch buffer, reusing a
    /// buffer once no later layer reads what it holds (a plain chain takes two, as
    /// ping-pong); a layer's output never shares a buffer with its operands. Activations a
    /// shortcut adds are kept in f32 (the sums they join are f32); the others in the
    /// network's storage type. Returns each layer's placement and each buffer's size in f32
    /// values.
    #[allow(clippy::type_complexity)]
    fn place(
        &self,
        shapes: &[Shape4],
        wanted: &[usize],
        last: usize,
    ) -> (Vec<Option<(usize, Dtype)>>, Vec<usize>) {
        let mut last_use: Vec<usize> = (0..=last).collect();
        for (j, l) in self.links.iter().enumerate().take(last + 1) {
            for i in [l.input, l.shortcut].into_iter().flatten() {
                last_use[i] = last_use[i].max(j);
            }
        }
        let shortcut_source: Vec<bool> = (0..=last)
            .map(|i| self.links[..=last].iter().any(|l| l.shortcut == Some(i)))
            .collect();
        let mut holder: Vec<Option<usize>> = Vec::new(); // per buffer, the layer in it
        let mut sizes: Vec<usize> = Vec::new();
        let mut placement = Vec::with_capacity(last + 1);
        for i in 0..=last {
            if wanted.contains(&i) {
                placement.push(None);
                continue;
            }
            let dtype = if shortcut_source[i] {
                Dtype::F32
            } else {
                self.storage
            };
            let values = match dtype {
                Dtype::F32 => shapes[i].len(),
                // Scratch is counted in f32 values; f16 activations take half as many bytes.
                Dtype::F16 => shapes[i].len().div_ceil(2),
            }
            .max(1);
            let free = holder
                .iter()
                .position(|h| h.is_none_or(|j| last_use[j] < i));
            let b = free.unwrap_or_else(|| {
                holder.push(None);
                sizes.push(0);
                holder.len() - 1
            });
            holder[b] = Some(i);
            sizes[b] = sizes[b].max(values);
            placement.push(Some((b, dtype)));
        }
        (placement, sizes)
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
        let (placement, sizes) = self.place(&shapes, &wanted, last);
        let scratch = sizes
            .iter()
            .enumerate()
            .map(|(b, &values)| ctx.scratch(values, &format!("activations {b}")))
            .collect::<Result<_>>()?;
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
            placement,
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
        for (i, io) in self.layer_io(input, ws)?.iter().enumerate() {
            self.record_layer(ctx, r, i, io, ws)?;
        }
        Ok(())
    }

    /// Runs the layers one submission each, waiting for each, and returns every layer's name,
    /// wall time, floating-point operations and kernel variant: a per-layer profile. (Waiting
    /// between layers costs a little; the pipelined [`Network::record`] does not.)
    pub fn profile(&self, ctx: &B, input: &B::Tensor, ws: &Workspace<B>) -> Result<Vec<Stage>> {
        let mut out = Vec::new();
        ctx.wait("profile")?;
        for (i, io) in self.layer_io(input, ws)?.iter().enumerate() {
            let prev = &io.input;
            let t = std::time::Instant::now();
            ctx.submit("profile layer", &mut |r| {
                self.record_layer(ctx, r, i, io, ws)
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
        for (i, io) in self.layer_io(input, ws)?.iter().enumerate() {
            if let NetLayer::Conv(c) = &self.layers[i] {
                total += B::conv_spec(c).flops(B::shape_of(&io.input))?;
            }
        }
        Ok(total)
    }

    /// The tensors each layer up to the deepest wanted one reads and writes.
    fn layer_io(&self, input: &B::Tensor, ws: &Workspace<B>) -> Result<Vec<LayerIo<B>>> {
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
        let mut outs: Vec<B::Tensor> = Vec::with_capacity(ws.placement.len());
        let mut io = Vec::with_capacity(ws.placement.len());
        for (i, place) in ws.placement.iter().enumerate() {
            let out = match place {
                Some((b, dtype)) => B::view_as(&ws.scratch[*b], ws.shapes[i], *dtype),
                None => {
                    let k = ws.wanted.iter().position(|&w| w == i).ok_or_else(|| {
                        Error::Config(format!("layer {} has no output buffer", self.names[i]))
                    })?;
                    ws.outputs[k].clone()
                }
            };
            let links = self.links[i];
            io.push(LayerIo {
                input: links
                    .input
                    .map_or_else(|| input.clone(), |j| outs[j].clone()),
                shortcut: links.shortcut.map(|j| outs[j].clone()),
                output: out.clone(),
            });
            outs.push(out);
        }
        Ok(io)
    }

    fn record_layer(
        &self,
        ctx: &B,
        r: &mut B::Recorder,
        i: usize,
        io: &LayerIo<B>,
        ws: &Workspace<B>,
    ) -> Result<()> {
        let op = match &self.layers[i] {
            NetLayer::Conv(layer) => Op::Conv {
                layer,
                input: &io.input,
                output: &io.output,
                shortcut: io.shortcut.as_ref(),
                overflow: ws.overflow.as_ref(),
            },
            NetLayer::Pool(p) => Op::MaxPool(*p, &io.input, &io.output),
        };
        ctx.run(&self.kernels, r, op)
    }
}

/// The tensors one layer reads and writes.
struct LayerIo<B: Backend> {
    input: B::Tensor,
    shortcut: Option<B::Tensor>,
    output: B::Tensor,
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
