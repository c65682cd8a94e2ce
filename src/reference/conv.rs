use super::{window_taps, Reduced};
use crate::error::Result;
use crate::shape::Shape4;
use crate::weights::Conv2dWeights;

/// Direct 2-D convolution of an NHWC `input` with zero padding, bias and optional ReLU.
pub fn conv2d(input: &[f32], shape: Shape4, w: &Conv2dWeights) -> Result<(Shape4, Reduced)> {
    conv2d_add(input, shape, w, None)
}

/// [`conv2d`] with a residual `shortcut` (`(shape, values)`, the output's shape) added to
/// the sums before ReLU.
pub fn conv2d_add(
    input: &[f32],
    shape: Shape4,
    w: &Conv2dWeights,
    shortcut: Option<(Shape4, &[f32])>,
) -> Result<(Shape4, Reduced)> {
    shape.check_values("conv2d", input.len())?;
    let spec = w.spec;
    let out = spec.output_shape(shape)?;
    if let Some((s, v)) = shortcut {
        Shape4::check_output("residual addition", s, out)?;
        s.check_values("residual addition", v.len())?;
    }
    let win = spec.window;
    let mut values = vec![0.0f32; out.len()];
    let mut magnitude = vec![0.0f32; out.len()];
    for n in 0..out.n {
        for oy in 0..out.h {
            for ox in 0..out.w {
                for o in 0..out.c {
                    let idx = out.index(n, oy, ox, o);
                    let mut acc = w.bias[o] as f64;
                    let mut mag = acc.abs();
                    if let Some((_, v)) = shortcut {
                        acc += v[idx] as f64;
                        mag += (v[idx] as f64).abs();
                    }
                    for (ky, kx, iy, ix) in window_taps(win, (shape.h, shape.w), (oy, ox)) {
                        let base = shape.index(n, iy, ix, 0);
                        for i in 0..spec.in_c {
                            let t = w.at(o, i, ky, kx) as f64 * input[base + i] as f64;
                            acc += t;
                            mag += t.abs();
                        }
                    }
                    values[idx] = if spec.relu { acc.max(0.0) } else { acc } as f32;
                    magnitude[idx] = mag as f32;
                }
            }
        }
    }
    Ok((out, Reduced { values, magnitude }))
}
