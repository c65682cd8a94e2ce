//! Convolution on the CPU, by one of these kernels chosen when the layer is made:
//!
//! - `Winograd` (the default): Winograd F(2x2, 3x3) (`winograd`) for 3x3 stride-1 layers
//!   with a multiple of 16 input channels (all of VGG's but the first), direct convolution for
//!   the others; 2.25x fewer multiply-adds.
//! - `Winograd4`: the same with F(4x4, 3x3): 4x fewer multiply-adds, and a larger rounding
//!   error (docs/benchmarks.md has both measured).
//! - `WinogradMixed`: `Winograd4` on layers of at least 128 input channels whose output maps
//!   are at least 28 x 28, `Winograd` on the others (opt-in, as `Winograd4`).
//! - `Direct`: direct convolution on register tiles (`direct_conv`, `microkernel`), the NHWC
//!   input read in place; twice the `gemm` crate's rate on an AVX-512 CPU (docs/bench_cpu.md).
//! - `Gemm`: bands of output pixels are unfolded (im2col) from the NHWC input into rows of
//!   `kh * kw * in_c` values, ordered `(ky, kx, c)` so that each kernel tap copies one
//!   contiguous run of channels, and multiplied by the layer's weights as a `[(ky, kx, c)][out_c]`
//!   matrix with the `gemm` crate (runtime SIMD dispatch, rayon threads); bias and ReLU follow
//!   on the band while it is in cache. The output rows are NHWC pixels, so the product lands
//!   in place. It runs on any CPU.
//!
//! With bf16 products ([`Products::Bf16`], `--precision bf16`) the layers AMX suits run on
//! `amx` instead, the others on the kernel chosen as above.
//!
//! `Winograd` and `Direct` run on x86-64 with AVX-512F or with AVX2 and FMA ([`Simd`]).
//! `CROSSPOOL_CPU_CONV` picks the kernel for a run (`auto`: the fastest this CPU has), so all
//! can be timed and tested on one machine.

#[cfg(target_arch = "x86_64")]
use super::amx::{self, AmxConv};
use super::direct_conv::DirectConv;
#[cfg(target_arch = "x86_64")]
use super::matmul::{matmul, Strided};
use super::tensor::check_lengths;
#[cfg(target_arch = "x86_64")]
use super::winograd::{TileChoice, WinogradConv, WinogradTile};
use crate::error::{Error, Result};
use crate::shape::{Conv2dSpec, Shape4};
use crate::weights::Conv2dWeights;
use rayon::prelude::*;

/// Largest im2col band, in f32 values: 4 MiB, which keeps a band within a core's share of
/// the last-level cache while leaving thousands of rows for the GEMM to split.
const BAND_VALUES: usize = 1 << 20;

/// The environment variable that picks the convolution kernel.
pub const CONV_KERNEL_ENV: &str = "CROSSPOOL_CPU_CONV";

/// The vector instruction set the `Winograd` and `Direct` kernels run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    /// AVX-512F: 32 registers of 16 floats.
    Avx512,
    /// AVX2 with FMA: 16 registers of 8 floats.
    Avx2,
}

impl Simd {
    /// The widest set this CPU has, if any.
    pub fn detected() -> Option<Simd> {
        [Simd::Avx512, Simd::Avx2]
            .into_iter()
            .find(|s| s.is_available())
    }

    /// Whether this CPU runs it.
    pub fn is_available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return match self {
            Simd::Avx512 => is_x86_feature_detected!("avx512f"),
            Simd::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        };
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Its name in kernel names (`direct-avx512`).
    pub fn name(self) -> &'static str {
        match self {
            Simd::Avx512 => "avx512",
            Simd::Avx2 => "avx2",
        }
    }
}

/// What the CPU backend's convolutions multiply (`--precision`): sums are f32 either way.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Products {
    /// f32 values.
    #[default]
    F32,
    /// Weights and inputs rounded to bf16 (8 significant bits), on AMX tiles, in the layers
    /// that suit them (stride 1, input channels a multiple of 32); f32 in the others.
    Bf16,
}

impl Products {
    /// Whether this is f32 (for serde's `skip_serializing_if`).
    pub fn is_f32(&self) -> bool {
        *self == Products::F32
    }

    /// Whether this CPU runs it (bf16: AMX-BF16 and AVX512-BF16, granted by the OS).
    pub fn is_available(self) -> bool {
        match self {
            Products::F32 => true,
            #[cfg(target_arch = "x86_64")]
            Products::Bf16 => amx::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Products::Bf16 => false,
        }
    }

    /// Ok if this CPU runs it, else the reason, as `--precision bf16` reports it.
    pub fn require(self) -> Result<()> {
        if self.is_available() {
            return Ok(());
        }
        Err(Error::Config(
            "--precision bf16 on the CPU needs AMX-BF16 and AVX512-BF16 (Intel Xeon Sapphire \
             Rapids or later, on Linux); this CPU or OS has not (use --precision f32)"
                .into(),
        ))
    }
}

/// Which kernel a [`CpuConv2d`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernel {
    /// Winograd where a layer suits it, else `Direct`: F(4x4, 3x3) on layers of at least
    /// 128 input channels with output maps of at least 28 x 28, F(2x2, 3x3) on the others.
    /// Opt-in: faster than `Winograd` at batch 8, but 2.2e-6 from float64 on the real VGG16
    /// (conv4_3), above the 1e-6 the default keeps (docs/benchmarks.md).
    WinogradMixed(Simd),
    /// Winograd F(2x2, 3x3) where a layer suits it, else `Direct`.
    Winograd(Simd),
    /// Winograd F(4x4, 3x3) where a layer suits it, else `Direct`.
    Winograd4(Simd),
    /// Direct convolution on register tiles.
    Direct(Simd),
    /// im2col and the `gemm` crate.
    Gemm,
    /// bf16 products on AMX tiles ([`Products::Bf16`]; not one `CROSSPOOL_CPU_CONV` picks,
    /// since it changes the features).
    AmxBf16,
}

impl ConvKernel {
    /// The fastest kernel this CPU runs.
    pub fn detected() -> Self {
        Simd::detected().map_or(ConvKernel::Gemm, ConvKernel::Winograd)
    }

    /// Every kernel this CPU runs, the default first.
    pub fn available() -> Vec<ConvKernel> {
        Self::available_or_not()
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    /// Whether this CPU runs the kernel.
    pub fn is_available(self) -> bool {
        match self {
            ConvKernel::WinogradMixed(simd)
            | ConvKernel::Winograd(simd)
            | ConvKernel::Winograd4(simd)
            | ConvKernel::Direct(simd) => simd.is_available(),
            ConvKernel::Gemm => true,
            ConvKernel::AmxBf16 => Products::Bf16.is_available(),
        }
    }

    /// The kernel `CROSSPOOL_CPU_CONV` asks for: `auto` (the default: [`Self::detected`]),
    /// `winograd-mixed`, `winograd`, `winograd4` or `direct` (on the widest instruction set
    /// this CPU has), one of those with `-avx512` or `-avx2` (`winograd4-avx2`), or `gemm`.
    pub fn from_env() -> Result<Self> {
        match std::env::var(CONV_KERNEL_ENV) {
            Ok(value) => Self::parse(value.trim()),
            Err(_) => Ok(Self::detected()),
        }
    }

    /// A kernel by its name (see [`Self::from_env`]).
    pub fn parse(name: &str) -> Result<Self> {
        let widest = || {
            Simd::detected().ok_or_else(|| {
                Error::Config(format!(
                    "{CONV_KERNEL_ENV}={name} needs an x86-64 CPU with AVX2 and FMA or \
                     AVX-512F; this one has neither (use gemm or auto)"
                ))
            })
        };
        Ok(match name {
            "" | "auto" => Self::detected(),
            "winograd-mixed" => ConvKernel::WinogradMixed(widest()?),
            "winograd" => ConvKernel::Winograd(widest()?),
            "winograd4" => ConvKernel::Winograd4(widest()?),
            "direct" => ConvKernel::Direct(widest()?),
            "gemm" => ConvKernel::Gemm,
            "amx-bf16" => {
                return Err(Error::Config(format!(
                    "{CONV_KERNEL_ENV}=amx-bf16: bf16 products change the features, so they \
                     are asked for with --precision bf16 (and recorded with the features)"
                )))
            }
            other => {
                return Self::available_or_not()
                    .into_iter()
                    .find(|k| k.name() == other)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "{CONV_KERNEL_ENV}={other} is not one of auto, winograd, direct, \
                             winograd4, winograd-mixed, {}",
                            Self::available_or_not()
                                .iter()
                                .map(|k| k.name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })
            }
        })
    }

    /// Every kernel, whether this CPU runs it or not.
    fn available_or_not() -> Vec<ConvKernel> {
        let mut all = Vec::new();
        for simd in [Simd::Avx512, Simd::Avx2] {
            all.extend([
                ConvKernel::WinogradMixed(simd),
                ConvKernel::Winograd(simd),
                ConvKernel::Winograd4(simd),
                ConvKernel::Direct(simd),
            ]);
        }
        all.push(ConvKernel::Gemm);
        all
    }

    /// Its full name, as `CROSSPOOL_CPU_CONV` takes it.
    pub fn name(self) -> String {
        match self {
            ConvKernel::WinogradMixed(simd) => format!("winograd-mixed-{}", simd.name()),
            ConvKernel::Winograd(simd) => format!("winograd-{}", simd.name()),
            ConvKernel::Winograd4(simd) => format!("winograd4-{}", simd.name()),
            ConvKernel::Direct(simd) => format!("direct-{}", simd.name()),
            ConvKernel::Gemm => "gemm".to_string(),
            ConvKernel::AmxBf16 => "amx-bf16".to_string(),
        }
    }
}

thread_local! {
    /// The pixels a strided 1x1 layer reads, kept between calls.
    static GATHERED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Copies the pixels `(n, y * sh, x * sw)` of the NHWC `input` to `(n, y, x)` of `map`
/// (whose channels are the input's), into `buf`.
fn gather_strided(
    input: &[f32],
    shape: Shape4,
    (sh, sw): (usize, usize),
    map: Shape4,
    buf: &mut Vec<f32>,
) {
    if buf.len() < map.len() {
        buf.resize(map.len(), 0.0);
    }
    let c = shape.c;
    buf[..map.len()]
        .par_chunks_mut((map.w * c).max(1))
        .enumerate()
        .for_each(|(row, dst)| {
            let (n, y) = (row / map.h, row % map.h);
            for (x, px) in dst.chunks_exact_mut(c).enumerate() {
                let at = shape.index(n, y * sh, x * sw, 0);
                px.copy_from_slice(&input[at..at + c]);
            }
        });
}

/// A convolution layer's weights laid out for its kernel.
pub struct CpuConv2d {
    spec: Conv2dSpec,
    kernel: Kernel,
}

enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Amx(AmxConv),
    /// A strided 1x1 layer (ResNet's downsampling shortcuts) on AMX: the pixels it reads are
    /// gathered into a map of the output's size, which the stride-1 layer then runs on.
    #[cfg(target_arch = "x86_64")]
    AmxStrided(AmxConv),
    #[cfg(target_arch = "x86_64")]
    Winograd(WinogradConv),
    #[cfg(target_arch = "x86_64")]
    Direct(DirectConv),
    Gemm {
        /// `[(ky * kw + kx) * in_c + c][out_c]`, row-major.
        weight_kn: Vec<f32>,
        bias: Vec<f32>,
    },
}

impl CpuConv2d {
    /// Lays out `w` for the kernel `CROSSPOOL_CPU_CONV` picks (by default the fastest).
    pub fn new(w: &Conv2dWeights) -> Result<Self> {
        Self::with_kernel(w, ConvKernel::from_env()?)
    }

    /// Lays out `w` for `kernel`; an error if this CPU does not run it.
    pub fn with_kernel(w: &Conv2dWeights, kernel: ConvKernel) -> Result<Self> {
        Self::with_products(w, kernel, Products::F32)
    }

    /// Lays out `w` for bf16 products on AMX if `products` asks for them and the layer suits
    /// them, else for `kernel` (`AmxBf16` asks for bf16, the others on the default kernel);
    /// an error if this CPU does not run what is asked for.
    pub fn with_products(
        w: &Conv2dWeights,
        kernel: ConvKernel,
        products: Products,
    ) -> Result<Self> {
        let (kernel, products) = match kernel {
            ConvKernel::AmxBf16 => (ConvKernel::detected(), Products::Bf16),
            other => (other, products),
        };
        products.require()?;
        #[cfg(target_arch = "x86_64")]
        if products == Products::Bf16 {
            let weight = |o, i, ky, kx| w.at(o, i, ky, kx);
            let win = w.spec.window;
            let stride_1 = Conv2dSpec {
                window: crate::shape::Window2d::square(1, 1, 0),
                ..w.spec
            };
            let kernel = if AmxConv::suits(&w.spec) {
                Some(Kernel::Amx(AmxConv::new(w.spec, weight, &w.bias)))
            } else if (win.kh, win.kw, win.pad_h, win.pad_w) == (1, 1, 0, 0)
                && AmxConv::suits(&stride_1)
            {
                Some(Kernel::AmxStrided(AmxConv::new(stride_1, weight, &w.bias)))
            } else {
                None
            };
            if let Some(kernel) = kernel {
                return Ok(CpuConv2d {
                    spec: w.spec,
                    kernel,
                });
            }
        }
        if !kernel.is_available() {
            return Err(Error::Config(format!(
                "the {} convolution kernel needs an x86-64 CPU with that instruction set; this \
                 one has not (use gemm or auto)",
                kernel.name()
            )));
        }
        let kernel = match kernel {
            #[cfg(target_arch = "x86_64")]
            ConvKernel::WinogradMixed(simd)
            | ConvKernel::Winograd(simd)
            | ConvKernel::Winograd4(simd)
                if WinogradConv::suits(&w.spec) =>
            {
                let choice = match kernel {
                    ConvKernel::Winograd4(_) => TileChoice::Fixed(WinogradTile::F4),
                    ConvKernel::Winograd(_) => TileChoice::Fixed(WinogradTile::F2),
                    _ => TileChoice::BySize,
                };
                let weight = |o, i, ky, kx| w.at(o, i, ky, kx);
                Kernel::Winograd(WinogradConv::new(w.spec, (simd, choice), weight, &w.bias))
            }
            #[cfg(target_arch = "x86_64")]
            ConvKernel::WinogradMixed(simd)
            | ConvKernel::Winograd(simd)
            | ConvKernel::Winograd4(simd)
            | ConvKernel::Direct(simd) => Kernel::Direct(DirectConv::new(
                w.spec,
                simd,
                &w.to_gemm_kn(0, w.spec.out_c),
                &w.bias,
            )),
            #[cfg(not(target_arch = "x86_64"))]
            ConvKernel::WinogradMixed(_)
            | ConvKernel::Winograd(_)
            | ConvKernel::Winograd4(_)
            | ConvKernel::Direct(_) => unreachable!("checked above"),
            ConvKernel::Gemm => Kernel::Gemm {
                weight_kn: w.to_gemm_kn(0, w.spec.out_c),
                bias: w.bias.clone(),
            },
            ConvKernel::AmxBf16 => unreachable!("refused above"),
        };
        Ok(CpuConv2d {
            spec: w.spec,
            kernel,
        })
    }

    /// The kernel this layer runs on (`Direct` for a layer `Winograd` does not suit).
    pub fn kernel(&self) -> ConvKernel {
        match &self.kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(_) | Kernel::AmxStrided(_) => ConvKernel::AmxBf16,
            #[cfg(target_arch = "x86_64")]
            Kernel::Winograd(k) => match k.choice() {
                TileChoice::Fixed(WinogradTile::F2) => ConvKernel::Winograd(k.simd()),
                TileChoice::Fixed(WinogradTile::F4) => ConvKernel::Winograd4(k.simd()),
                TileChoice::BySize => ConvKernel::WinogradMixed(k.simd()),
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Direct(k) => ConvKernel::Direct(k.simd()),
            Kernel::Gemm { .. } => ConvKernel::Gemm,
        }
    }

    /// The Winograd output tile side (2 or 4) it runs on an `input` of this shape; `None` if
    /// it does not run Winograd.
    pub fn winograd_tile(&self, input: Shape4) -> Option<usize> {
        match &self.kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Winograd(k) => Some(k.tile_for(self.spec.output_shape(input).ok()?).m()),
            _ => None,
        }
    }

    /// The layer's geometry.
    pub fn spec(&self) -> Conv2dSpec {
        self.spec
    }

    /// `output = conv(input)` with bias (and ReLU if the layer has it), NHWC; returns the
    /// output shape. `output` must hold exactly that many values.
    pub fn run(&self, input: &[f32], shape: Shape4, output: &mut [f32]) -> Result<Shape4> {
        self.run_add(input, shape, None, output)
    }

    /// [`CpuConv2d::run`] with a residual `shortcut` (as many values as the output, NHWC)
    /// added to the sums before ReLU, in the same pass.
    pub fn run_add(
        &self,
        input: &[f32],
        shape: Shape4,
        shortcut: Option<&[f32]>,
        output: &mut [f32],
    ) -> Result<Shape4> {
        let out = self.spec.output_shape(shape)?;
        check_lengths("cpu conv2d", input, shape, output, out)?;
        if let Some(s) = shortcut {
            out.check_values("residual addition", s.len())?;
        }
        if out.is_empty() {
            return Ok(out);
        }
        match &self.kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(amx) => amx.run(input, shape, shortcut, out, output),
            #[cfg(target_arch = "x86_64")]
            Kernel::AmxStrided(amx) => GATHERED.with(|cell| {
                let mut gathered = cell.borrow_mut();
                let strides = (self.spec.window.stride_h, self.spec.window.stride_w);
                let map = Shape4::new(out.n, out.h, out.w, shape.c);
                gather_strided(input, shape, strides, map, &mut gathered);
                amx.run(&gathered[..map.len()], map, shortcut, out, output)
            }),
            #[cfg(target_arch = "x86_64")]
            Kernel::Winograd(winograd) => winograd.run(input, shape, shortcut, out, output),
            #[cfg(target_arch = "x86_64")]
            Kernel::Direct(direct) => direct.run(input, shape, shortcut, out, output),
            Kernel::Gemm { weight_kn, bias } => {
                self.run_gemm((weight_kn, bias), input, shape, shortcut, out, output)
            }
        }
        Ok(out)
    }

    /// The im2col + `gemm` kernel.
    fn run_gemm(
        &self,
        (weight_kn, bias): (&[f32], &[f32]),
        input: &[f32],
        shape: Shape4,
        shortcut: Option<&[f32]>,
        out: Shape4,
        output: &mut [f32],
    ) {
        let (k, n) = (self.spec.k_total(), self.spec.out_c);
        let pixels = out.n * out.h * out.w;
        let band = (BAND_VALUES / k).clamp(1, pixels);
        let mut cols = vec![0.0f32; band * k];
        for (b, dst) in output.chunks_mut(band * n).enumerate() {
            let first = b * band;
            let rows = dst.len() / n;
            let cols = &mut cols[..rows * k];
            cols.par_chunks_mut(k)
                .enumerate()
                .for_each(|(r, row)| unfold_row(&self.spec, input, shape, out, first + r, row));
            matmul(
                dst,
                (rows, n, k),
                Strided {
                    data: cols,
                    row: k,
                    col: 1,
                },
                Strided {
                    data: weight_kn,
                    row: n,
                    col: 1,
                },
            );
            let relu = self.spec.relu;
            let shortcut = shortcut.map(|s| &s[first * n..][..dst.len()]);
            dst.par_chunks_mut(n).enumerate().for_each(|(px, y)| {
                let s = shortcut.map(|s| &s[px * n..][..n]);
                for (c, (v, b)) in y.iter_mut().zip(bias).enumerate() {
                    let y = *v + b + s.map_or(0.0, |s| s[c]);
                    *v = if relu { y.max(0.0) } else { y };
                }
            });
        }
    }
}

/// Row `p` of the unfolded input: the values under the kernel at output pixel `p`, in
/// `(ky, kx, c)` order, zero where the kernel hangs over the padding.
pub(crate) fn unfold_row(
    spec: &Conv2dSpec,
    input: &[f32],
    shape: Shape4,
    out: Shape4,
    p: usize,
    row: &mut [f32],
) {
    let win = spec.window;
    let c = shape.c;
    let (img, rest) = (p / (out.h * out.w), p % (out.h * out.w));
    let (oy, ox) = (rest / out.w, rest % out.w);
    for ky in 0..win.kh {
        let iy = (oy * win.stride_h + ky) as isize - win.pad_h as isize;
        for kx in 0..win.kw {
            let ix = (ox * win.stride_w + kx) as isize - win.pad_w as isize;
            let tap = &mut row[(ky * win.kw + kx) * c..][..c];
            if iy < 0 || ix < 0 || iy >= shape.h as isize || ix >= shape.w as isize {
                tap.fill(0.0);
            } else {
                let at = shape.index(img, iy as usize, ix as usize, 0);
                tap.copy_from_slice(&input[at..at + c]);
            }
        }
    }
}
