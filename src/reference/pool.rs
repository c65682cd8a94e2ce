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
                for ky in 0..win.kh {
                    let iy = (oy * win.stride_h + ky) as isize - win.pad_h as isize;
                    if iy < 0 || iy >= shape.h as isize {
                        continue;
                    }
                    for kx in 0..win.kw {
                        let ix = (ox * win.stride_w + kx) as isize - win.pad_w as isize;
                        if ix < 0 || ix >= shape.w as isize {
                            continue;
                        }
                        for c in 0..out.c {
                            let v = input[shape.index(n, iy as usize, ix as usize, c)];
                            let o = &mut values[out.index(n, oy, ox, c)];
                            *o = o.max(v);
                        }
                    }
                }
            }
        }
    }
    Ok((out, values))
}
