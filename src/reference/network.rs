use crate::error::{Error, Result};
use crate::model::{LayerKind, ModelWeights};
use crate::shape::Shape4;

/// Runs the loaded layers of `weights` on NHWC `input` with the reference ops, returning
/// `(shape, values)` for each layer named in `wanted`, in that order.
pub fn network_forward(
    weights: &ModelWeights,
    input: &[f32],
    shape: Shape4,
    wanted: &[&str],
) -> Result<Vec<(Shape4, Vec<f32>)>> {
    let mut got: Vec<Option<(Shape4, Vec<f32>)>> = vec![None; wanted.len()];
    // Every layer's output, kept: a later layer may read any earlier one (a shortcut).
    let mut outs: Vec<(Shape4, Vec<f32>)> = Vec::new();
    for (i, layer) in weights.arch.layers().iter().enumerate() {
        if got.iter().all(Option::is_some) {
            break;
        }
        let (s, x) = match layer.input_index(i) {
            Some(j) => (outs[j].0, outs[j].1.as_slice()),
            None => (shape, input),
        };
        let next = match &layer.kind {
            LayerKind::Conv { .. } => {
                let w = weights
                    .layer(&layer.name)
                    .ok_or_else(|| Error::Config(format!("layer {} not loaded", layer.name)))?;
                let shortcut = layer.shortcut.map(|j| (outs[j].0, outs[j].1.as_slice()));
                let (s, r) = super::conv2d_add(x, s, w, shortcut)?;
                (s, r.values)
            }
            LayerKind::MaxPool(p) => super::max_pool2d(x, s, *p)?,
        };
        for (slot, name) in got.iter_mut().zip(wanted) {
            if *name == layer.name {
                *slot = Some(next.clone());
            }
        }
        outs.push(next);
    }
    got.into_iter()
        .zip(wanted)
        .map(|(g, n)| g.ok_or_else(|| Error::Config(format!("layer {n} not reached"))))
        .collect()
}
