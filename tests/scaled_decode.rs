//! `--decode fast`: JPEGs decoded at 1/2, 1/4 and 1/8 scale in the DCT domain, held to the
//! full-size decode of the same file.
//!
//! Tolerance. Both paths estimate the same low-pass image: the full-size path resizes the
//! decoded pixels with a bilinear filter whose support spans the scale factor; the scaled path
//! first averages each 8x8 block's frequencies down to 8/d samples (the scaled IDCT), then
//! resizes the rest of the way. The two filters differ in shape, not in what they keep, so on
//! a photograph without detail finer than the output grid they differ by little more than
//! their roundings: each path rounds to 8 bits after the decode and after each resize pass,
//! up to 2 levels between them, doubled for the filter difference and the JPEG's own
//! requantisation: 99.5% of values within 4 levels of 255 and a mean absolute difference
//! under 1 level (measured: at most 0.45 and 2). A control shows the bound has teeth: the
//! same image mirrored is 30+ levels off on average.

mod common;

use common::temp_dir;
use crosspool::input::{
    decode_resized, jpeg_scale_denominator, DecodeLimits, DecodeMode, DecodeOptions,
};
use std::path::{Path, PathBuf};

const MEAN_LEVELS: f64 = 1.0;
const P995_LEVELS: u8 = 4;

fn opts(mode: DecodeMode) -> DecodeOptions {
    DecodeOptions {
        mode,
        limits: DecodeLimits::default(),
    }
}

/// A `w` x `h` RGB photograph: a test photo enlarged (bilinear), so the detail is real but
/// coarser than any output grid used here.
fn big_photo(w: u32, h: u32) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos/chelsea.jpg");
    let img = image::open(path).unwrap().into_rgb8();
    image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle).into_raw()
}

/// Writes `rgb` as a JPEG with libjpeg-turbo: quality 92, the given subsampling and
/// progressive or baseline coding.
fn write_jpeg(
    path: &Path,
    w: u32,
    h: u32,
    rgb: &[u8],
    sub: turbojpeg::Subsamp,
    progressive: bool,
) -> PathBuf {
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_quality(92).unwrap();
    c.set_subsamp(sub).unwrap();
    c.set_progressive(progressive).unwrap();
    let image = turbojpeg::Image {
        pixels: rgb,
        width: w as usize,
        pitch: w as usize * 3,
        height: h as usize,
        format: turbojpeg::PixelFormat::RGB,
    };
    let data = c.compress_to_vec(image).unwrap();
    std::fs::write(path, data).unwrap();
    path.to_path_buf()
}

/// Mean absolute difference and the 99.5th percentile of absolute differences.
fn diff(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let mut d: Vec<u8> = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).collect();
    let mean = d.iter().map(|&v| v as f64).sum::<f64>() / d.len() as f64;
    d.sort_unstable();
    (mean, d[d.len() * 995 / 1000])
}

fn within_tolerance(fast: &[u8], exact: &[u8]) -> bool {
    let (mean, p995) = diff(fast, exact);
    mean <= MEAN_LEVELS && p995 <= P995_LEVELS
}

fn mirrored(rgb: &[u8], size: usize) -> Vec<u8> {
    let mut out = rgb.to_vec();
    for y in 0..size {
        for x in 0..size {
            let (s, d) = ((y * size + x) * 3, (y * size + size - 1 - x) * 3);
            out[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
        }
    }
    out
}

#[test]
fn the_scale_keeps_both_sides_at_or_above_the_target() {
    assert_eq!(jpeg_scale_denominator(2560, 1600, 224), 4);
    assert_eq!(jpeg_scale_denominator(1600, 2560, 224), 4);
    assert_eq!(jpeg_scale_denominator(448, 448, 224), 2);
    assert_eq!(
        jpeg_scale_denominator(447, 448, 224),
        1,
        "less than twice: full size"
    );
    assert_eq!(jpeg_scale_denominator(1792, 1792, 224), 8);
    assert_eq!(jpeg_scale_denominator(1791, 1792, 224), 4);
    assert_eq!(
        jpeg_scale_denominator(20_000, 20_000, 224),
        8,
        "never below 1/8"
    );
    assert_eq!(jpeg_scale_denominator(224, 224, 224), 1);
    assert_eq!(
        jpeg_scale_denominator(100, 100, 224),
        1,
        "smaller than the target"
    );
}

#[test]
fn scaled_decoding_matches_the_full_decode() {
    let d = temp_dir("scaled-decode");
    let (w, h) = (1800, 1200);
    let rgb = big_photo(w, h);
    let files = [
        ("420", turbojpeg::Subsamp::Sub2x2, false),
        ("444", turbojpeg::Subsamp::None, false),
        ("422-progressive", turbojpeg::Subsamp::Sub2x1, true),
        ("420-progressive", turbojpeg::Subsamp::Sub2x2, true),
        ("grey", turbojpeg::Subsamp::Gray, false),
    ];
    for (name, sub, progressive) in files {
        let path = write_jpeg(
            &d.0.join(format!("{name}.jpg")),
            w,
            h,
            &rgb,
            sub,
            progressive,
        );
        // 1/8, 1/4 and 1/2 of 1800x1200, and a size that needs the full decode.
        for (size, denom) in [(112, 8), (224, 4), (448, 2), (640, 1)] {
            assert_eq!(jpeg_scale_denominator(w, h, size), denom);
            let fast = decode_resized(&path, size, opts(DecodeMode::Fast)).unwrap();
            let exact = decode_resized(&path, size, opts(DecodeMode::Exact)).unwrap();
            assert_eq!(fast.len(), (size * size * 3) as usize);
            if denom == 1 {
                assert_eq!(fast, exact, "{name} at {size}: no scaling, the same decode");
                continue;
            }
            let (mean, p995) = diff(&fast, &exact);
            assert!(
                within_tolerance(&fast, &exact),
                "{name} at {size} (1/{denom}): mean |diff| {mean:.2}, 99.5% {p995}"
            );
            // The control: a wrong image is far outside the tolerance.
            assert!(
                !within_tolerance(&mirrored(&fast, size as usize), &exact),
                "{name} at {size}: the tolerance cannot tell a mirrored image"
            );
        }
    }
}

/// `data` with an EXIF APP1 segment holding only `orientation`, right after SOI.
fn with_orientation(data: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08\0\x01".to_vec(); // big-endian, IFD at 8, one entry
    tiff.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1]); // Orientation, SHORT, 1
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // value padding, no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = data[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&data[2..]);
    out
}

#[test]
fn scaled_decoding_turns_images_upright() {
    let d = temp_dir("scaled-orientation");
    let (w, h) = (1400, 900);
    let rgb = big_photo(w, h);
    let plain = write_jpeg(
        &d.0.join("plain.jpg"),
        w,
        h,
        &rgb,
        turbojpeg::Subsamp::Sub2x2,
        false,
    );
    let data = std::fs::read(&plain).unwrap();
    let size = 160; // 1/4 of 1400x900
    let upright = decode_resized(&plain, size, opts(DecodeMode::Exact)).unwrap();
    for orientation in 1..=8u16 {
        let path = d.0.join(format!("o{orientation}.jpg"));
        std::fs::write(&path, with_orientation(&data, orientation)).unwrap();
        let fast = decode_resized(&path, size, opts(DecodeMode::Fast)).unwrap();
        let exact = decode_resized(&path, size, opts(DecodeMode::Exact)).unwrap();
        let (mean, p995) = diff(&fast, &exact);
        assert!(
            within_tolerance(&fast, &exact),
            "orientation {orientation}: mean |diff| {mean:.2}, 99.5% {p995}"
        );
        // The tag was read: every orientation but the identity changes the picture.
        assert_eq!(
            within_tolerance(&fast, &upright),
            orientation == 1,
            "orientation {orientation}"
        );
    }
}

#[test]
fn scaled_decoding_falls_back_or_fails_like_the_full_decode() {
    let d = temp_dir("scaled-fallback");
    let (w, h) = (1024, 768);
    let rgb = big_photo(w, h);
    // CMYK: libjpeg-turbo gives no RGB; the full-size decoder converts it.
    let cmyk: Vec<u8> = rgb
        .chunks(3)
        .flat_map(|p| {
            let k = 255 - *p.iter().max().unwrap();
            [255 - p[0] - k, 255 - p[1] - k, 255 - p[2] - k, k]
        })
        .collect();
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_subsamp(turbojpeg::Subsamp::None).unwrap();
    let image = turbojpeg::Image {
        pixels: &cmyk[..],
        width: w as usize,
        pitch: w as usize * 4,
        height: h as usize,
        format: turbojpeg::PixelFormat::CMYK,
    };
    let path = d.0.join("cmyk.jpg");
    std::fs::write(&path, c.compress_to_vec(image).unwrap()).unwrap();
    let fast = decode_resized(&path, 224, opts(DecodeMode::Fast)).unwrap();
    let exact = decode_resized(&path, 224, opts(DecodeMode::Exact)).unwrap();
    assert_eq!(fast, exact, "CMYK is decoded at full size in both modes");

    // A file cut short fails in both modes, for the same reason.
    let whole = write_jpeg(
        &d.0.join("whole.jpg"),
        w,
        h,
        &rgb,
        turbojpeg::Subsamp::Sub2x2,
        false,
    );
    let data = std::fs::read(&whole).unwrap();
    let cut = d.0.join("cut.jpg");
    std::fs::write(&cut, &data[..data.len() * 2 / 3]).unwrap();
    for mode in [DecodeMode::Fast, DecodeMode::Exact] {
        let e = decode_resized(&cut, 224, opts(mode)).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{mode:?}: {e}");
    }

    // A stray marker inside the entropy-coded data: libjpeg-turbo warns, so the full-size
    // decoder takes the file over and both modes give the same pixels (or the same error).
    let mut bad = data.clone();
    let mid = bad.len() / 2;
    bad.splice(mid..mid, [0xFF, 0xD3]);
    let bad_path = d.0.join("bad.jpg");
    std::fs::write(&bad_path, &bad).unwrap();
    let fast = decode_resized(&bad_path, 224, opts(DecodeMode::Fast)).map_err(|e| e.to_string());
    let exact = decode_resized(&bad_path, 224, opts(DecodeMode::Exact)).map_err(|e| e.to_string());
    assert_eq!(fast, exact);
}

#[test]
fn small_images_and_other_formats_decode_exactly_in_fast_mode() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for name in [
        "photos/astronaut.jpg",
        "photos/chelsea.jpg",
        "odd/progressive.jpg",
        "odd/cmyk.jpg",
        "odd/exif_rotated.jpg",
        "odd/alpha.png",
    ] {
        let p = data.join(name);
        let fast = decode_resized(&p, 224, opts(DecodeMode::Fast)).unwrap();
        let exact = decode_resized(&p, 224, opts(DecodeMode::Exact)).unwrap();
        assert_eq!(
            fast, exact,
            "{name}: under twice the size, nothing is scaled"
        );
    }
}

#[test]
fn a_failed_jpeg_leaves_the_next_decode_on_its_thread_unchanged() {
    // Each decoding thread keeps its libjpeg-turbo decompressor; one that had failed on a
    // file once decoded the thread's next photo wrongly.
    let tmp = temp_dir("decode-after-failure");
    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos/chelsea.jpg");
    let broken = tmp.0.join("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8\xff not really a jpeg").unwrap();
    let fast = opts(DecodeMode::Fast);
    let before = decode_resized(&photo, 96, fast).unwrap();
    assert!(decode_resized(&broken, 96, fast).is_err());
    let after = decode_resized(&photo, 96, fast).unwrap();
    assert!(before == after, "{:?}", diff(&before, &after));
}
