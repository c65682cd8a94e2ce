use super::window_taps;
use crate::error::Result;
use crate::shape::{MaxPool2dSpec, Shape4};

/// Max pooling of an NHWC `input`; padded positions never win (PyTorch semantics).
pub fn max_pool2d(input: &[f32], shape: Shape4, spec: MaxPool2dSpec) -> Result<(Shape4, Vec<f32>)> {
    shape.check_values("max_pool2d", input.len())?;
    let out = spec.output_shape(shape)?;
    let win = spec.window;
    let mut values = vec![f32::NEG_INFINITY; out.len()];
    for n in 0..out.n {
        for oy in 0..out.h {
            for ox in 0..out.w {
                for (_, _, iy, ix) in window_taps(win, (shape.h, shape.w), (oy, ox)) {
                    for c in 0..out.c {
                        let v = input[shape.index(n, iy, ix, c)];
                        let o = &mut values[out.index(n, oy, ox, c)];
                        *o = o.max(v);
                    }
                }
            }
        }
    }
    Ok((out, values))
}
