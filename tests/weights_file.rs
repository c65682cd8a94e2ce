//! Loading weight files: every malformed or mismatched file gives an error that says what is
//! wrong and where, never a panic; f16 and bf16 load as their f32 values.

mod common;

use common::{safetensors_bytes, seeded_tensors, seeded_weights_file, RawTensor};
use crosspool::model::{Arch, ModelWeights, Preprocess};
use crosspool::Error;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::Path;

fn load(bytes: &[u8], arch: Option<Arch>) -> Result<ModelWeights, Error> {
    ModelWeights::from_bytes(bytes, Path::new("test.safetensors"), arch, None)
}

fn message(r: Result<ModelWeights, Error>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn with_arch(arch: Arch) -> Option<HashMap<String, String>> {
    Some(HashMap::from([(
        "crosspool.arch".to_string(),
        arch.name().to_string(),
    )]))
}

#[test]
fn seeded_file_loads_every_conv_layer() {
    let w = load(
        &seeded_weights_file(Arch::Alexnet, with_arch(Arch::Alexnet)),
        None,
    )
    .unwrap();
    assert_eq!(w.arch, Arch::Alexnet);
    let names: Vec<&str> = w.layers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["conv1", "conv2", "conv3", "conv4", "conv5"]);
    assert!(
        w.preprocess_assumed,
        "no preprocessing metadata: torchvision's is assumed and flagged"
    );
    assert_eq!(w.preprocess, Preprocess::TORCHVISION);
}

#[test]
fn preprocessing_comes_from_metadata() {
    let mut meta = Preprocess::CAFFE_VGG.to_metadata();
    meta.insert("crosspool.arch".into(), "alexnet".into());
    let w = load(&seeded_weights_file(Arch::Alexnet, Some(meta)), None).unwrap();
    assert_eq!(w.preprocess, Preprocess::CAFFE_VGG);
    assert!(!w.preprocess_assumed);
}

#[test]
fn loading_stops_at_the_requested_layer() {
    let bytes = seeded_weights_file(Arch::Vgg16, None);
    let w = ModelWeights::from_bytes(&bytes, Path::new("t"), Some(Arch::Vgg16), Some("conv2_1"))
        .unwrap();
    assert_eq!(w.layers.len(), 3);
}

#[test]
fn architecture_must_be_known_and_agree() {
    let bytes = seeded_weights_file(Arch::Alexnet, with_arch(Arch::Alexnet));
    assert!(message(load(&bytes, Some(Arch::Vgg16)))
        .contains("holds alexnet weights but vgg16 was requested"));
    let bare = seeded_weights_file(Arch::Alexnet, None);
    assert!(message(load(&bare, None)).contains("does not say which network"));
    // Another network's tensors under the requested name fail on the first shape.
    let m = message(load(&bare, Some(Arch::Vgg16)));
    assert!(
        m.contains("features.0.weight")
            && m.contains("[64, 3, 11, 11]")
            && m.contains("[64, 3, 3, 3]"),
        "{m}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let tensors: Vec<RawTensor> = seeded_tensors(Arch::Alexnet)
        .into_iter()
        .filter(|t| t.0 != "features.8.bias")
        .collect();
    let m = message(load(
        &safetensors_bytes(&tensors, None),
        Some(Arch::Alexnet),
    ));
    assert!(
        m.contains("'features.8.bias'") && m.contains("conv4") && m.contains("missing"),
        "{m}"
    );
}

#[test]
fn wrong_shape_names_tensor_and_both_shapes() {
    let mut tensors = seeded_tensors(Arch::Alexnet);
    let t = tensors
        .iter_mut()
        .find(|t| t.0 == "features.3.weight")
        .unwrap();
    t.2 = vec![192, 64, 25]; // same element count, wrong shape
    let m = message(load(
        &safetensors_bytes(&tensors, None),
        Some(Arch::Alexnet),
    ));
    assert!(
        m.contains("'features.3.weight'")
            && m.contains("[192, 64, 25]")
            && m.contains("[192, 64, 5, 5]"),
        "{m}"
    );
}

#[test]
fn unsupported_dtype_is_named() {
    let mut tensors = seeded_tensors(Arch::Alexnet);
    tensors[1].1 = Dtype::I32;
    let m = message(load(
        &safetensors_bytes(&tensors, None),
        Some(Arch::Alexnet),
    ));
    assert!(m.contains("features.0.bias") && m.contains("I32"), "{m}");
}

#[test]
fn non_finite_weights_are_rejected() {
    let mut tensors = seeded_tensors(Arch::Alexnet);
    tensors[2].3[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    let m = message(load(
        &safetensors_bytes(&tensors, None),
        Some(Arch::Alexnet),
    ));
    assert!(
        m.contains("features.3.weight") && m.contains("non-finite value at index 1"),
        "{m}"
    );
}

#[test]
fn half_precision_files_load_as_their_f32_values() {
    let f32_tensors = seeded_tensors(Arch::Alexnet);
    for dtype in [Dtype::F16, Dtype::BF16] {
        let converted: Vec<RawTensor> = f32_tensors
            .iter()
            .map(|(n, _, s, b)| {
                let v: Vec<f32> = bytemuck::pod_collect_to_vec(b);
                let bytes: Vec<u8> = match dtype {
                    Dtype::F16 => v
                        .iter()
                        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                        .collect(),
                    _ => v
                        .iter()
                        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                        .collect(),
                };
                (n.clone(), dtype, s.clone(), bytes)
            })
            .collect();
        let w = load(&safetensors_bytes(&converted, None), Some(Arch::Alexnet)).unwrap();
        let full = load(&safetensors_bytes(&f32_tensors, None), Some(Arch::Alexnet)).unwrap();
        for ((name, a), (_, b)) in w.layers.iter().zip(&full.layers) {
            for (x, y) in a.weight.iter().zip(&b.weight) {
                let rounded = match dtype {
                    Dtype::F16 => half::f16::from_f32(*y).to_f32(),
                    _ => half::bf16::from_f32(*y).to_f32(),
                };
                assert_eq!(*x, rounded, "{dtype:?} {name}");
            }
        }
    }
}

#[test]
fn truncated_and_foreign_files_are_errors_not_panics() {
    let bytes = seeded_weights_file(Arch::Alexnet, with_arch(Arch::Alexnet));
    for cut in [0, 5, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        let m = message(load(&bytes[..cut], None));
        assert!(
            m.contains("not a readable safetensors file"),
            "cut at {cut}: {m}"
        );
    }
    let jpeg_like = [
        0xFFu8, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1,
    ];
    assert!(message(load(&jpeg_like, None)).contains("not a readable safetensors file"));
    assert!(message(load(b"{\"not\": \"safetensors\"}", None))
        .contains("not a readable safetensors file"));
}

#[test]
fn missing_file_names_the_path() {
    let e =
        ModelWeights::load(Path::new("/nonexistent/vgg16.safetensors"), None, None).unwrap_err();
    assert!(
        e.to_string().contains("/nonexistent/vgg16.safetensors"),
        "{e}"
    );
}
