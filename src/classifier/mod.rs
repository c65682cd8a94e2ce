//! Linear classifiers on extracted features, as the paper evaluates its representations:
//! labelled features read from an extraction's shards ([`data`]), linear SVMs and logistic
//! regression ([`linear`]), the regularisation constant chosen by cross-validation ([`cv`]),
//! trained models on disk ([`model`]) and accuracy with a confusion matrix ([`metrics`]); and
//! the paper's added convolutional layer for AConv pooling, trained on labelled maps
//! ([`aconv`]).

pub mod aconv;
pub mod aconv_file;
pub mod cv;
pub mod data;
pub mod linear;
pub mod metrics;
pub mod model;
mod rng;

pub use linear::{train, train_with, Examples, Gram, Kind, LinearModel, Tolerance};

use crate::error::{Error, Result};

/// Checks training data: every class index below `classes`, at least two classes present,
/// every value finite. `what` names the items in messages ("vectors", "maps").
pub(crate) fn check_training_data(
    x: &[f32],
    y: &[usize],
    classes: usize,
    what: &str,
) -> Result<()> {
    if let Some(&c) = y.iter().find(|&&c| c >= classes) {
        return Err(Error::Config(format!("class {c} of {classes} classes")));
    }
    let present = (0..classes).filter(|&c| y.contains(&c)).count();
    if present < 2 {
        return Err(Error::Config(format!(
            "training needs examples of at least two classes; these {} {what} have {present}",
            y.len()
        )));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::Config(format!(
            "one of the {what} holds NaN or infinity"
        )));
    }
    Ok(())
}
