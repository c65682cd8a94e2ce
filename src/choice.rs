//! Values chosen by name (`--pooling cross-layer`, `pooling="cross-layer"`, settings files):
//! how a value is spelled.

/// The name a value goes by on the command line and in settings files.
pub fn value_name<V: clap::ValueEnum>(v: &V) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}
