//! Network architectures as torchvision defines them: tensor names, shapes and the layer names
//! users ask for.
//!
//! Fully connected layers are run as convolutions (the paper's "AConv" reading): `fc6` is a
//! kernel covering the whole pool5 map, `fc7`/`fc8` are 1x1. At the networks' native input
//! (224x224) this equals torchvision's classifier; on larger inputs it yields a dense grid of
//! fc activations instead of torchvision's adaptive average pooling to a fixed grid.

use crate::error::{Error, Result};
use crate::shape::{Conv2dSpec, MaxPool2dSpec, Shape4, Window2d};

crate::choice! {
    /// A supported network.
    #[derive(Hash)]
    pub enum Arch {
        /// VGG 16 (Simonyan & Zisserman, configuration D).
        Vgg16 = "vgg16",
        /// VGG 19 (configuration E).
        Vgg19 = "vgg19",
        /// AlexNet, torchvision's single-column variant (64-192-384-256-256 channels).
        Alexnet = "alexnet",
        /// ResNet-50 (He et al. 2016, torchvision's v1.5: stride in the 3x3 convolution).
        Resnet50 = "resnet50",
        /// ResNet-101.
        Resnet101 = "resnet101",
    }
}

impl Arch {
    /// Lower-case name as stored in weight files' metadata.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Vgg16 => "vgg16",
            Arch::Vgg19 => "vgg19",
            Arch::Alexnet => "alexnet",
            Arch::Resnet50 => "resnet50",
            Arch::Resnet101 => "resnet101",
        }
    }

    /// Parses a name from weight-file metadata or the command line.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "vgg16" => Ok(Arch::Vgg16),
            "vgg19" => Ok(Arch::Vgg19),
            "alexnet" => Ok(Arch::Alexnet),
            "resnet50" => Ok(Arch::Resnet50),
            "resnet101" => Ok(Arch::Resnet101),
            other => Err(Error::Config(format!(
                "unknown architecture '{other}' (expected vgg16, vgg19, alexnet, resnet50 or resnet101)"
            ))),
        }
    }

    /// The pair of consecutive conv layers (t, t+1) the paper pools across by default.
    pub fn default_pair(self) -> (&'static str, &'static str) {
        match self {
            Arch::Vgg16 => ("conv5_2", "conv5_3"),
            Arch::Vgg19 => ("conv5_3", "conv5_4"),
            Arch::Alexnet => ("conv4", "conv5"),
            // The last two bottleneck blocks: 2048 channels each on one grid (7x7 at 224).
            Arch::Resnet50 | Arch::Resnet101 => ("layer4.1", "layer4.2"),
        }
    }

    /// The pair the paper's FC-Conv pooling uses: the last conv layer and fc6.
    pub fn fc_conv_pair(self) -> (&'static str, &'static str) {
        match self {
            Arch::Vgg16 => ("conv5_3", "fc6"),
            Arch::Vgg19 => ("conv5_4", "fc6"),
            Arch::Alexnet => ("conv5", "fc6"),
            // ResNet's one fully connected layer follows global average pooling, so it has no
            // grid to pool over: the feature request refuses fc-conv for ResNets.
            Arch::Resnet50 | Arch::Resnet101 => ("layer4.2", "fc"),
        }
    }

    /// Input size the network was trained at.
    pub fn native_input(self) -> usize {
        224
    }

    /// The layers in execution order.
    pub fn layers(self) -> Vec<Layer> {
        match self {
            Arch::Vgg16 => vgg(&[2, 2, 3, 3, 3]),
            Arch::Vgg19 => vgg(&[2, 2, 4, 4, 4]),
            Arch::Alexnet => alexnet(),
            Arch::Resnet50 => resnet(&[3, 4, 6, 3]),
            Arch::Resnet101 => resnet(&[3, 4, 23, 3]),
        }
    }

    /// The most layer outputs a forward pass holds at once (a layer's output while its
    /// operands are still to be read by it or later layers): 2 for a plain chain, 3 for a
    /// ResNet (a block's last convolution reads the branch and adds the shortcut).
    pub fn live_activations(self) -> usize {
        let layers = self.layers();
        let mut last_use: Vec<usize> = (0..layers.len()).collect();
        for (i, l) in layers.iter().enumerate() {
            for j in [l.input_index(i), l.shortcut].into_iter().flatten() {
                last_use[j] = last_use[j].max(i);
            }
        }
        (0..layers.len())
            .map(|i| 1 + (0..i).filter(|&j| last_use[j] >= i).count())
            .max()
            .unwrap_or(1)
    }

    /// Output shapes of the layers up to and including layer `last` for `input`, following
    /// each layer's input and shortcut; an error if a layer does not accept its input (too
    /// small, or a shortcut of another shape).
    pub fn output_shapes(self, input: Shape4, last: usize) -> Result<Vec<Shape4>> {
        let layers = self.layers();
        let mut shapes: Vec<Shape4> = Vec::with_capacity(last + 1);
        for (i, l) in layers.iter().take(last + 1).enumerate() {
            let from = l.input_index(i).map_or(input, |j| shapes[j]);
            let s = match &l.kind {
                LayerKind::Conv { spec, .. } => spec.output_shape(from)?,
                LayerKind::MaxPool(p) => p.output_shape(from)?,
            };
            if let Some(j) = l.shortcut {
                if shapes[j] != s {
                    return Err(Error::shape(
                        "residual addition",
                        format!(
                            "{} gives {s} but its shortcut {} is {}",
                            l.name, layers[j].name, shapes[j]
                        ),
                    ));
                }
            }
            shapes.push(s);
        }
        Ok(shapes)
    }

    /// The smallest square input (pixels a side) that the layers up to `last` accept.
    pub fn min_input_size(self, last: &str) -> Result<usize> {
        let last = self.layer_index(last)?;
        let fits = |size: usize| {
            self.output_shapes(Shape4::new(1, size, size, 3), last)
                .is_ok_and(|shapes| shapes.iter().all(|s| !s.is_empty()))
        };
        (1..=4096).find(|&n| fits(n)).ok_or_else(|| {
            Error::Config(format!(
                "{} up to {} accepts no input up to 4096 pixels",
                self.name(),
                self.layers()[last].name
            ))
        })
    }

    /// Checks that `size` x `size` images can run through the layers up to `last`, with a
    /// message in the user's terms (the smallest size) rather than an inner layer's shape.
    pub fn check_input_size(self, size: usize, last: &str) -> Result<()> {
        let min = self.min_input_size(last)?;
        if size < min {
            return Err(Error::Config(format!(
                "--size {size} is too small for {} up to {last}: the smallest input is {min}x{min}",
                self.name()
            )));
        }
        Ok(())
    }

    /// Index in [`Arch::layers`] of the layer called `name`, or an error listing the names.
    pub fn layer_index(self, name: &str) -> Result<usize> {
        let layers = self.layers();
        layers.iter().position(|l| l.name == name).ok_or_else(|| {
            let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
            Error::Config(format!(
                "{} has no layer '{name}'; its layers are: {}",
                self.name(),
                names.join(", ")
            ))
        })
    }
}

impl Arch {
    /// The receptive field, in `local`'s grid, of every unit of the later layer `guide`:
    /// `(y0, y1, x0, x1)` half-open and clipped to the `local_hw` map, one per unit of the
    /// `guide_hw` map, row-major. Each layer in between maps output rows `[o0, o1)` to input
    /// rows `[o0 s - p, (o1 - 1) s - p + k)`. For VGG16's conv5_3 and fc6 (pool5 2x2/2, then
    /// 7x7) that is the 14x14 block at (2y, 2x).
    pub fn receptive_fields(
        self,
        local: &str,
        guide: &str,
        local_hw: (usize, usize),
        guide_hw: (usize, usize),
    ) -> Result<Vec<[u32; 4]>> {
        let (t, t1) = (self.layer_index(local)?, self.layer_index(guide)?);
        if t1 <= t {
            return Err(Error::Config(format!(
                "{guide} does not come after {local} in {}",
                self.name()
            )));
        }
        let layers = self.layers();
        // The layers from local to guide along their inputs (shortcuts add units that these
        // fields already cover: an identity, or a 1x1 window on the same stride).
        let mut windows: Vec<Window2d> = Vec::new();
        let mut at = t1;
        while at != t {
            let l = &layers[at];
            windows.push(match &l.kind {
                LayerKind::Conv { spec, .. } => spec.window,
                LayerKind::MaxPool(p) => p.window,
            });
            at = match l.input_index(at) {
                Some(j) if j >= t => j,
                _ => {
                    return Err(Error::Config(format!(
                        "{guide} does not read {local} in {} (its inputs do not pass through it)",
                        self.name()
                    )))
                }
            };
        }
        windows.reverse();
        // Back through the layers from guide to local, one axis at a time.
        let span = |o: usize, vertical: bool| -> (isize, isize) {
            let (mut lo, mut hi) = (o as isize, o as isize + 1);
            for w in windows.iter().rev() {
                let (k, s, p) = if vertical {
                    (w.kh, w.stride_h, w.pad_h)
                } else {
                    (w.kw, w.stride_w, w.pad_w)
                };
                let (k, s, p) = (k as isize, s as isize, p as isize);
                (lo, hi) = (lo * s - p, (hi - 1) * s - p + k);
            }
            (lo, hi)
        };
        let clip = |(lo, hi): (isize, isize), n: usize| {
            (
                lo.clamp(0, n as isize) as u32,
                hi.clamp(0, n as isize) as u32,
            )
        };
        let mut fields = Vec::with_capacity(guide_hw.0 * guide_hw.1);
        for y in 0..guide_hw.0 {
            let (y0, y1) = clip(span(y, true), local_hw.0);
            for x in 0..guide_hw.1 {
                let (x0, x1) = clip(span(x, false), local_hw.1);
                if y0 >= y1 || x0 >= x1 {
                    return Err(Error::Config(format!(
                        "unit ({y}, {x}) of {guide} sees no unit of the {}x{} map of {local}",
                        local_hw.0, local_hw.1
                    )));
                }
                fields.push([y0, y1, x0, x1]);
            }
        }
        Ok(fields)
    }
}

/// What a layer computes.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    /// Convolution (followed by ReLU when `spec.relu`).
    Conv {
        /// Geometry.
        spec: Conv2dSpec,
        /// Prefix of the weight and bias tensors, e.g. `features.28`.
        tensor: String,
        /// True for fully connected layers stored as `[out, in]` matrices and run as
        /// convolutions; their weight is reshaped to `[out, in_c, kh, kw]` on load.
        from_linear: bool,
        /// Prefix of the batch norm that follows (`layer1.0.bn1`), folded into the weights
        /// and a bias on load; the convolution then has no bias tensor of its own.
        batch_norm: Option<String>,
    },
    /// Max pooling.
    MaxPool(MaxPool2dSpec),
}

/// One layer with its user-facing name.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Name users pass (`conv5_3`, `pool5`, `fc6`, `conv4`).
    pub name: String,
    /// What it computes.
    pub kind: LayerKind,
    /// The earlier layer it reads (an index into [`Arch::layers`]), where that is not the
    /// layer just before it (a bottleneck's first convolution and its downsampling shortcut
    /// both read the block's input).
    pub input: Option<usize>,
    /// A residual block's last convolution: the earlier layer whose output is added to the
    /// sums before ReLU (the block's input, or its downsampling convolution).
    pub shortcut: Option<usize>,
}

impl Layer {
    /// The index of the layer that layer `i` (this one) reads, or `None` for the image.
    pub fn input_index(&self, i: usize) -> Option<usize> {
        self.input.or(i.checked_sub(1))
    }
}

impl Layer {
    /// A layer that reads the one before it and adds no shortcut.
    fn chained(name: impl Into<String>, kind: LayerKind) -> Self {
        Layer {
            name: name.into(),
            kind,
            input: None,
            shortcut: None,
        }
    }

    /// A convolution of `spec` whose weights are the tensors `tensor.*` (see [`LayerKind`]).
    fn conv(
        name: impl Into<String>,
        spec: Conv2dSpec,
        tensor: impl Into<String>,
        from_linear: bool,
        batch_norm: Option<String>,
    ) -> Self {
        let tensor = tensor.into();
        Layer::chained(
            name,
            LayerKind::Conv {
                spec,
                tensor,
                from_linear,
                batch_norm,
            },
        )
    }
}

fn spec(in_c: usize, out_c: usize, window: Window2d, relu: bool) -> Conv2dSpec {
    Conv2dSpec {
        in_c,
        out_c,
        window,
        relu,
    }
}

fn conv(name: String, index: usize, in_c: usize, out_c: usize, window: Window2d) -> Layer {
    let spec = spec(in_c, out_c, window, true);
    Layer::conv(name, spec, format!("features.{index}"), false, None)
}

fn pool(name: impl Into<String>, window: Window2d) -> Layer {
    Layer::chained(name, LayerKind::MaxPool(MaxPool2dSpec { window }))
}

fn linear(name: &str, tensor: &str, in_c: usize, k: usize, out_c: usize, relu: bool) -> Layer {
    let spec = spec(in_c, out_c, Window2d::square(k, 1, 0), relu);
    Layer::conv(name, spec, tensor, true, None)
}

/// torchvision's `features` for a VGG with `convs[b]` 3x3 convolutions in block b, then the
/// classifier (`classifier.0/3/6`) as fc6-fc8.
fn vgg(convs: &[usize]) -> Vec<Layer> {
    let widths = [64, 128, 256, 512, 512];
    let mut layers = Vec::new();
    let (mut index, mut in_c) = (0, 3);
    for (b, (&n, &w)) in convs.iter().zip(&widths).enumerate() {
        for i in 0..n {
            layers.push(conv(
                format!("conv{}_{}", b + 1, i + 1),
                index,
                in_c,
                w,
                Window2d::square(3, 1, 1),
            ));
            in_c = w;
            index += 2; // conv, ReLU
        }
        layers.push(pool(format!("pool{}", b + 1), Window2d::square(2, 2, 0)));
        index += 1;
    }
    layers.push(linear("fc6", "classifier.0", 512, 7, 4096, true));
    layers.push(linear("fc7", "classifier.3", 4096, 1, 4096, true));
    layers.push(linear("fc8", "classifier.6", 4096, 1, 1000, false));
    layers
}

/// torchvision's AlexNet: `features.0/3/6/8/10`, pools at 2, 5, 12; classifier 1/4/6.
fn alexnet() -> Vec<Layer> {
    vec![
        conv("conv1".into(), 0, 3, 64, Window2d::square(11, 4, 2)),
        pool("pool1", Window2d::square(3, 2, 0)),
        conv("conv2".into(), 3, 64, 192, Window2d::square(5, 1, 2)),
        pool("pool2", Window2d::square(3, 2, 0)),
        conv("conv3".into(), 6, 192, 384, Window2d::square(3, 1, 1)),
        conv("conv4".into(), 8, 384, 256, Window2d::square(3, 1, 1)),
        conv("conv5".into(), 10, 256, 256, Window2d::square(3, 1, 1)),
        pool("pool5", Window2d::square(3, 2, 0)),
        linear("fc6", "classifier.1", 256, 6, 4096, true),
        linear("fc7", "classifier.4", 4096, 1, 4096, true),
        linear("fc8", "classifier.6", 4096, 1, 1000, false),
    ]
}

/// A convolution followed by batch norm (torchvision's ResNet layout: no conv bias).
fn conv_bn(
    name: &str,
    tensor: &str,
    bn: &str,
    (in_c, out_c): (usize, usize),
    window: Window2d,
    relu: bool,
) -> Layer {
    let spec = spec(in_c, out_c, window, relu);
    Layer::conv(name, spec, tensor, false, Some(bn.to_string()))
}

/// torchvision's ResNet with bottleneck blocks, `blocks[s]` in stage s: the 7x7 stride-2
/// stem (`conv1`, after its ReLU) and its 3x3 stride-2 max-pool (`maxpool`), then per block
/// `layerS.B.conv1` (1x1) and `.conv2` (3x3, stride 2 in a stage's first block but the
/// first stage's), after their ReLUs; the first block's `layerS.0.downsample` (1x1 on the
/// block's input, no ReLU); and the block output `layerS.B`: `conv3` (1x1), plus the
/// shortcut, then ReLU. The classifier (`fc`, after global average pooling) is not run.
fn resnet(blocks: &[usize]) -> Vec<Layer> {
    let mut layers = vec![
        conv_bn(
            "conv1",
            "conv1",
            "bn1",
            (3, 64),
            Window2d::square(7, 2, 3),
            true,
        ),
        pool("maxpool", Window2d::square(3, 2, 1)),
    ];
    let mut in_c = 64;
    for (s, &n) in blocks.iter().enumerate() {
        let width = 64 << s;
        let out_c = 4 * width;
        for b in 0..n {
            let p = format!("layer{}.{b}", s + 1);
            let stride = if b == 0 && s > 0 { 2 } else { 1 };
            let block_input = layers.len() - 1;
            let one = Window2d::square(1, 1, 0);
            layers.push(conv_bn(
                &format!("{p}.conv1"),
                &format!("{p}.conv1"),
                &format!("{p}.bn1"),
                (in_c, width),
                one,
                true,
            ));
            layers.push(conv_bn(
                &format!("{p}.conv2"),
                &format!("{p}.conv2"),
                &format!("{p}.bn2"),
                (width, width),
                Window2d::square(3, stride, 1),
                true,
            ));
            let conv2 = layers.len() - 1;
            let shortcut = if b == 0 {
                let mut down = conv_bn(
                    &format!("{p}.downsample"),
                    &format!("{p}.downsample.0"),
                    &format!("{p}.downsample.1"),
                    (in_c, out_c),
                    Window2d::square(1, stride, 0),
                    false,
                );
                down.input = Some(block_input);
                layers.push(down);
                layers.len() - 1
            } else {
                block_input
            };
            let mut out = conv_bn(
                &p,
                &format!("{p}.conv3"),
                &format!("{p}.bn3"),
                (width, out_c),
                one,
                true,
            );
            out.input = Some(conv2);
            out.shortcut = Some(shortcut);
            layers.push(out);
            in_c = out_c;
        }
    }
    layers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::Shape4;

    #[test]
    fn receptive_fields_of_fc6_on_conv5() {
        // VGG16 at 256: conv5_3 16x16, pool5 8x8, fc6 2x2. fc6 (y, x) reads pool5 rows
        // y..y+7, which read conv5_3 rows 2y..2y+14.
        let f = Arch::Vgg16
            .receptive_fields("conv5_3", "fc6", (16, 16), (2, 2))
            .unwrap();
        assert_eq!(
            f,
            vec![
                [0, 14, 0, 14],
                [0, 14, 2, 16],
                [2, 16, 0, 14],
                [2, 16, 2, 16]
            ]
        );
        // An odd conv5_3 map (17x17 at 272): pool5 floors to 8, the last row is seen by none.
        let f = Arch::Vgg16
            .receptive_fields("conv5_3", "fc6", (17, 17), (2, 2))
            .unwrap();
        assert_eq!(f[3], [2, 16, 2, 16]);
        // AlexNet conv5 (13x13 at 224) -> pool5 3x3/2 (6x6) -> fc6 6x6 (1x1): pool5 rows
        // 0..6 read conv5 rows 0..2*5+3 = 13, the whole map.
        let f = Arch::Alexnet
            .receptive_fields("conv5", "fc6", (13, 13), (1, 1))
            .unwrap();
        assert_eq!(f, vec![[0, 13, 0, 13]]);
        // Through a padded conv: conv5_2's field of a conv5_3 unit is 3x3, clipped at edges.
        let f = Arch::Vgg16
            .receptive_fields("conv5_2", "conv5_3", (4, 4), (4, 4))
            .unwrap();
        assert_eq!((f[0], f[5]), ([0, 2, 0, 2], [0, 3, 0, 3]));
        assert!(Arch::Vgg16
            .receptive_fields("fc6", "conv5_3", (2, 2), (16, 16))
            .is_err());
    }

    fn conv_tensors(arch: Arch) -> Vec<String> {
        arch.layers()
            .into_iter()
            .filter_map(|l| match l.kind {
                LayerKind::Conv {
                    tensor,
                    from_linear: false,
                    ..
                } => Some(tensor),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn smallest_inputs_are_found() {
        // VGG16 to conv5_3 halves four times (pool1-4): 16 pixels give 1x1 at conv5_3, and
        // fewer give nothing; to pool5 it needs 32.
        assert_eq!(Arch::Vgg16.min_input_size("conv5_3").unwrap(), 16);
        assert_eq!(Arch::Vgg16.min_input_size("pool5").unwrap(), 32);
        assert!(Arch::Vgg16.check_input_size(15, "conv5_3").is_err());
        assert!(Arch::Vgg16.check_input_size(0, "conv5_3").is_err());
        Arch::Vgg16.check_input_size(16, "conv5_3").unwrap();
    }

    #[test]
    fn tensor_names_match_torchvision() {
        assert_eq!(
            conv_tensors(Arch::Vgg16),
            [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28].map(|i| format!("features.{i}"))
        );
        assert_eq!(
            conv_tensors(Arch::Vgg19),
            [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
                .map(|i| format!("features.{i}"))
        );
        assert_eq!(
            conv_tensors(Arch::Alexnet),
            [0, 3, 6, 8, 10].map(|i| format!("features.{i}"))
        );
    }

    /// Shapes flow through every layer at the native input, and fc6 sees exactly its kernel.
    #[test]
    fn shapes_chain_and_native_input_gives_one_fc_position() {
        for arch in [Arch::Vgg16, Arch::Vgg19, Arch::Alexnet] {
            let mut s = Shape4::new(1, 224, 224, 3);
            for l in arch.layers() {
                s = match &l.kind {
                    LayerKind::Conv { spec, .. } => spec.output_shape(s).unwrap(),
                    LayerKind::MaxPool(p) => p.output_shape(s).unwrap(),
                };
            }
            assert_eq!(s, Shape4::new(1, 1, 1, 1000), "{arch}");
        }
    }

    #[test]
    fn resnets_have_torchvisions_blocks_and_shapes() {
        for (arch, blocks, convs) in [
            (Arch::Resnet50, [3, 4, 6, 3], 53),
            (Arch::Resnet101, [3, 4, 23, 3], 104),
        ] {
            let layers = arch.layers();
            let n_convs = layers
                .iter()
                .filter(|l| matches!(l.kind, LayerKind::Conv { .. }))
                .count();
            assert_eq!(n_convs, convs, "{arch}");
            // Every block's output adds a shortcut: its downsampling convolution in a stage's
            // first block (which reads the block's input), else the block's input.
            for (s, &n) in blocks.iter().enumerate() {
                for b in 0..n {
                    let i = arch.layer_index(&format!("layer{}.{b}", s + 1)).unwrap();
                    let shortcut = &layers[layers[i].shortcut.unwrap()];
                    let conv1 = arch
                        .layer_index(&format!("layer{}.{b}.conv1", s + 1))
                        .unwrap();
                    if b == 0 {
                        assert_eq!(shortcut.name, format!("layer{}.0.downsample", s + 1));
                        assert_eq!(shortcut.input, Some(conv1 - 1));
                    } else {
                        assert_eq!(shortcut.name, format!("layer{}.{}", s + 1, b - 1));
                    }
                }
            }
            let shapes = arch
                .output_shapes(Shape4::new(2, 224, 224, 3), layers.len() - 1)
                .unwrap();
            let at = |n: &str| shapes[arch.layer_index(n).unwrap()];
            assert_eq!(at("conv1"), Shape4::new(2, 112, 112, 64));
            assert_eq!(at("maxpool"), Shape4::new(2, 56, 56, 64));
            assert_eq!(at("layer1.2"), Shape4::new(2, 56, 56, 256));
            assert_eq!(at("layer2.0.conv2"), Shape4::new(2, 28, 28, 128));
            assert_eq!(at("layer3.0"), Shape4::new(2, 14, 14, 1024));
            assert_eq!(at("layer4.2"), Shape4::new(2, 7, 7, 2048));
            assert_eq!(arch.live_activations(), 3);
            // layer4.2's units see a 3x3 window of layer4.1 through conv2 (1x1, 3x3, 1x1).
            let f = arch
                .receptive_fields("layer4.1", "layer4.2", (7, 7), (7, 7))
                .unwrap();
            assert_eq!((f[0], f[8]), ([0, 2, 0, 2], [0, 3, 0, 3]));
            // The downsampling shortcut is not on layer4.2's path from layer4.1.
            assert!(arch
                .receptive_fields("layer4.0.downsample", "layer4.2", (7, 7), (7, 7))
                .is_err());
            assert_eq!(arch.min_input_size("layer4.2").unwrap(), 1);
        }
        assert_eq!(Arch::Vgg16.live_activations(), 2);
    }

    #[test]
    fn default_pairs_are_consecutive_layers_with_the_same_grid() {
        for arch in [Arch::Vgg16, Arch::Vgg19, Arch::Alexnet] {
            let (t, t1) = arch.default_pair();
            assert_eq!(
                arch.layer_index(t).unwrap() + 1,
                arch.layer_index(t1).unwrap()
            );
        }
        assert!(Arch::Vgg16.layer_index("conv6_1").is_err());
    }
}
