//! Decoding the images users actually have: every odd file gives pixels or an error with a
//! reason, never a panic (files from tools/make_odd_images.py).

use crosspool::input::{
    decode_resized, decode_rgb, resize_rgb, DecodeLimits, DecodeMode, DecodeOptions,
};
use std::path::{Path, PathBuf};

fn odd(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/odd")
        .join(name)
}

fn mean_rgb(px: &[u8]) -> [f64; 3] {
    let n = (px.len() / 3) as f64;
    let mut m = [0.0; 3];
    for p in px.chunks(3) {
        for c in 0..3 {
            m[c] += p[c] as f64 / n;
        }
    }
    m
}

#[test]
fn colour_models_and_depths_decode_to_rgb() {
    let (_, _, reference) = decode_rgb(&odd("alpha.png"), DecodeLimits::default()).unwrap();
    let want = mean_rgb(&reference);
    for name in [
        "grayscale.png",
        "alpha.png",
        "cmyk.jpg",
        "gray16.png",
        "palette.gif",
    ] {
        let (w, h, px) = decode_rgb(&odd(name), DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((w, h, px.len()), (48, 32, 48 * 32 * 3), "{name}");
        let m = mean_rgb(&px);
        let grey = (want[0] + want[1] + want[2]) / 3.0;
        // Colour images keep the photo's colours; grey ones its brightness (an inverted CMYK
        // decode would be far off).
        let close = if name.starts_with("gray") {
            m.iter().all(|v| (v - grey).abs() < 25.0)
        } else {
            m.iter().zip(&want).all(|(a, b)| (a - b).abs() < 12.0)
        };
        assert!(close, "{name}: mean colour {m:?} vs {want:?}");
    }
}

#[test]
fn exif_orientation_is_applied() {
    let (w, h, px) = decode_rgb(&odd("exif_rotated.jpg"), DecodeLimits::default()).unwrap();
    assert_eq!(
        (w, h),
        (32, 48),
        "stored 48x32 with orientation 6: upright it is 32x48"
    );
    let at = |x: usize, y: usize| &px[(y * w as usize + x) * 3..][..3];
    assert!(
        at(16, 4)[0] > 200 && at(16, 4)[2] < 60,
        "top should be red: {:?}",
        at(16, 4)
    );
    assert!(
        at(16, 44)[2] > 200 && at(16, 44)[0] < 60,
        "bottom should be blue: {:?}",
        at(16, 44)
    );
}

#[test]
fn broken_files_are_errors_with_reasons() {
    for (name, says) in [
        ("empty.jpg", "empty file"),
        ("not_an_image.png", "not an image format"),
        ("corrupt.jpg", ""),
        ("truncated.jpg", ""),
        ("bomb.bmp", "limit"),
    ] {
        match decode_rgb(&odd(name), DecodeLimits::default()) {
            Ok((w, h, _)) => panic!("{name}: decoded as {w}x{h}, expected an error"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(name) && msg.contains(says), "{name}: {msg}");
            }
        }
    }
}

#[test]
fn grey_is_repeated_into_rgb_exactly() {
    // crosspool repeats 8-bit grey itself; the image crate's conversion is the reference.
    let p = odd("grayscale.png");
    let (w, h, px) = decode_rgb(&p, DecodeLimits::default()).unwrap();
    let img = image::open(&p).unwrap();
    assert!(matches!(img, image::DynamicImage::ImageLuma8(_)));
    let want = img.to_rgb8();
    assert_eq!((w, h), want.dimensions());
    assert_eq!(px, want.into_raw());
}

#[test]
fn full_size_decoding_into_reused_buffers_changes_nothing() {
    // `decode_resized` decodes upright RGB into a per-thread buffer and everything else
    // through `decode_rgb`; both must give what `decode_rgb` and `resize_rgb` give.
    let exact = DecodeOptions {
        mode: DecodeMode::Exact,
        ..DecodeOptions::default()
    };
    let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos");
    let files = [
        photos.join("astronaut.jpg"),
        photos.join("rocket.jpg"),
        odd("exif_rotated.jpg"),
        odd("progressive.jpg"),
        odd("grayscale.png"),
        odd("cmyk.jpg"),
        odd("alpha.png"),
        photos.join("chelsea.jpg"),
    ];
    for size in [17, 64, 224] {
        for f in &files {
            let (w, h, px) = decode_rgb(f, DecodeLimits::default()).unwrap();
            let want = resize_rgb(w, h, px, size).unwrap();
            let got = decode_resized(f, size, exact).unwrap();
            assert_eq!(got, want, "{} at {size}", f.display());
        }
    }
}

/// An image file's bytes in memory (what the Python package takes from Ray Data) prepare
/// exactly as the file does, in both decode modes; empty bytes and bytes over the file cap
/// fail as such a file would.
#[test]
fn encoded_bytes_prepare_as_their_file() {
    use crosspool::input::{prepare_source, EncodedImage, ImageSource};
    use crosspool::model::Preprocess;
    use std::sync::Arc;
    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos/coffee.jpg");
    let encoded = |bytes: Vec<u8>| {
        ImageSource::Encoded(Arc::new(EncodedImage {
            name: "<bytes 0>".into(),
            bytes,
        }))
    };
    let pre = Preprocess::TORCHVISION;
    for mode in [DecodeMode::Fast, DecodeMode::Exact] {
        let opts = DecodeOptions {
            mode,
            ..DecodeOptions::default()
        };
        let file = prepare_source(&ImageSource::File(photo.clone()), 96, &pre, opts).unwrap();
        let bytes = std::fs::read(&photo).unwrap();
        let mem = prepare_source(&encoded(bytes), 96, &pre, opts).unwrap();
        assert_eq!(file, mem, "{mode:?}");
    }
    let e = prepare_source(&encoded(Vec::new()), 96, &pre, DecodeOptions::default());
    assert!(e.unwrap_err().to_string().contains("empty"));
    let capped = DecodeOptions {
        limits: DecodeLimits {
            max_file_bytes: 100,
            ..DecodeLimits::default()
        },
        ..DecodeOptions::default()
    };
    let bytes = std::fs::read(&photo).unwrap();
    assert!(prepare_source(&encoded(bytes), 96, &pre, capped).is_err());
}
