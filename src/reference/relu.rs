/// Elementwise ReLU: `x` where `x > 0`, else `+0.0` (so -0.0 and NaN give +0.0).
pub fn relu(input: &[f32]) -> Vec<f32> {
    input
        .iter()
        .map(|&x| if x > 0.0 { x } else { 0.0 })
        .collect()
}
