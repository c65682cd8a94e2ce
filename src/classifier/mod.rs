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
