//! Reading images into network input.
//!
//! Resize policy: the whole image is resized to `size` x `size` (aspect ratio not kept, no
//! crop), as the paper does, so nothing at the borders is lost. Images are decoded with the
//! `image` crate, turned upright from their EXIF orientation, converted to 8-bit RGB (grey,
//! alpha, 16-bit and CMYK inputs included) and resized with a bilinear filter
//! (`fast_image_resize`, SIMD).
//!
//! [`DecodeMode::Fast`] (the default) decodes a JPEG that is at least twice the target size
//! on both sides at 1/2, 1/4 or 1/8 scale in the DCT domain (libjpeg-turbo), which skips
//! most of the inverse DCT and colour work, then resizes that, and turns the small result
//! upright. Everything else, and [`DecodeMode::Exact`], decodes at full size.

mod listing;
mod source;
pub mod webdataset;

pub use listing::{collect_images, expand_inputs, IMAGE_EXTENSIONS};
pub use source::{expand_sources, image_identity, EncodedImage, ImageId, ImageSource, RgbPixels};

use crate::error::{Error, Result};
use crate::model::Preprocess;
use std::cell::RefCell;
use std::path::Path;

crate::choice! {
    /// How JPEG files are decoded.
    pub enum DecodeMode: default Fast {
        /// A JPEG at least twice the target size on both sides is decoded at the smallest of 1/2,
        /// 1/4 and 1/8 scale that keeps both sides at or above it (libjpeg-turbo's scaled IDCT),
        /// then resized.
        Fast = "fast",
        /// Every image is decoded at full size, then resized.
        Exact = "exact",
    }
}

/// How images are decoded: the mode and the limits.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeOptions {
    /// Scaled or full-size JPEG decoding.
    pub mode: DecodeMode,
    /// Refusals of oversized files and images.
    pub limits: DecodeLimits,
}

/// Largest file read, largest width or height decoded, and the most memory one decode may
/// allocate: a huge file, a device file or a decompression bomb is refused instead of
/// exhausting memory.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Maximum width and height in pixels.
    pub max_side: u32,
    /// Maximum bytes the decoded image may take, in any format.
    pub max_alloc: u64,
    /// Maximum bytes read from one file.
    pub max_file_bytes: u64,
}

/// Default of [`DecodeLimits::max_file_bytes`]: far above any photograph, far below memory.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 << 20;

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_side: 20_000,
            max_alloc: 1 << 30,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// Reads `path` whole if it is a regular file of at most `cap` bytes. A FIFO, device or
/// socket is refused before it is opened (reading one could block forever or never end).
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(Error::io(path))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(image_err(
            path,
            format!("{kind}; only image files are read"),
        ));
    }
    if meta.len() > cap {
        return Err(too_large(path, cap));
    }
    let f = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The length can change after the check (a growing file): never read past the cap.
    f.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::io(path))?;
    if bytes.len() as u64 > cap {
        return Err(too_large(path, cap));
    }
    Ok(bytes)
}

fn too_large(path: &Path, cap: u64) -> Error {
    image_err(
        path,
        format!("file larger than the {cap}-byte limit (--max-file-bytes)"),
    )
}

/// Whether JPEG data holds its end-of-image marker after its last scan: a file cut short
/// (a partial download) does not, though decoders fill the missing part with grey. Entropy-
/// coded data cannot contain a marker (0xFF is stuffed), so the last SOS found is the real
/// last scan.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    // SIMD substring search: a byte-pair scan of a 4 MP file costs a twentieth of its
    // full decode.
    let Some(last_scan) = memchr::memmem::rfind(bytes, &[0xFF, 0xDA]) else {
        return false;
    };
    memchr::memmem::rfind(&bytes[last_scan..], &[0xFF, 0xD9]).is_some()
}

/// A decoder's message in words a user can act on.
fn decoder_reason(e: impl std::fmt::Display) -> String {
    let m = e.to_string();
    if m.contains("failed to fill whole buffer") || m.contains("UnexpectedEof") {
        "truncated file: it ends before the image data does".to_string()
    } else {
        m
    }
}

fn truncated_jpeg(path: &Path) -> Error {
    image_err(
        path,
        "truncated JPEG: it ends before its end-of-image marker",
    )
}

fn image_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Image {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads `path` whole, at most `cap` bytes; an empty file is an error.
fn read_image_file(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let bytes = read_capped(path, cap)?;
    if bytes.is_empty() {
        return Err(image_err(path, "empty file"));
    }
    Ok(bytes)
}

/// Decodes `path` to upright 8-bit RGB at full size: `(width, height, pixels)`.
pub fn decode_rgb(path: &Path, limits: DecodeLimits) -> Result<(u32, u32, Vec<u8>)> {
    let bytes = read_image_file(path, limits.max_file_bytes)?;
    decode_bytes(path, &bytes, limits)
}

/// The image decoder for the file `bytes` (read from `path`, which errors name) and the
/// image's EXIF orientation, after every check that can refuse the file before decoding.
fn open_decoder<'a>(
    path: &Path,
    bytes: &'a [u8],
    limits: DecodeLimits,
) -> Result<(impl image::ImageDecoder + 'a, image::metadata::Orientation)> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| image_err(path, e))?;
    if reader.format().is_none() {
        // A .tar.gz given by name is read as an image: say what it is and what to do.
        if bytes.starts_with(&[0x1f, 0x8b]) {
            return Err(image_err(
                path,
                "gzip-compressed (a .tar.gz?): crosspool reads images and uncompressed tars; decompress it (gunzip) first",
            ));
        }
        return Err(image_err(
            path,
            "not an image format crosspool reads (jpeg, png, gif, bmp, tiff, webp)",
        ));
    }
    let mut lim = image::Limits::default();
    lim.max_image_width = Some(limits.max_side);
    lim.max_image_height = Some(limits.max_side);
    lim.max_alloc = Some(limits.max_alloc);
    reader.limits(lim);
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(truncated_jpeg(path));
    }
    use image::ImageDecoder;
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| image_err(path, decoder_reason(e)))?;
    // Not every decoder honours the allocation limit; its header says what it would take.
    let (w, h) = decoder.dimensions();
    let needed = decoder.total_bytes().max(w as u64 * h as u64 * 3);
    if needed > limits.max_alloc {
        return Err(image_err(
            path,
            format!(
                "{w}x{h} would take {needed} bytes decoded, over the {}-byte limit",
                limits.max_alloc
            ),
        ));
    }
    if w == 0 || h == 0 {
        return Err(image_err(path, "image has no pixels"));
    }
    let orientation = decoder
        .orientation()
        .map_err(|e| image_err(path, decoder_reason(e)))?;
    Ok((decoder, orientation))
}

/// Decodes the file `bytes` (read from `path`, which errors name) at full size.
fn decode_bytes(path: &Path, bytes: &[u8], limits: DecodeLimits) -> Result<(u32, u32, Vec<u8>)> {
    let (decoder, orientation) = open_decoder(path, bytes, limits)?;
    decode_upright_rgb(path, decoder, orientation)
}

/// The whole image of `decoder`, turned by `orientation`, as 8-bit RGB.
fn decode_upright_rgb(
    path: &Path,
    decoder: impl image::ImageDecoder,
    orientation: image::metadata::Orientation,
) -> Result<(u32, u32, Vec<u8>)> {
    let mut img = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| image_err(path, decoder_reason(e)))?;
    img.apply_orientation(orientation);
    // Takes the pixels over when the decoder already gave 8-bit RGB, and repeats 8-bit grey
    // itself (the image crate's general conversion goes through floats: 10x slower).
    let rgb = match img {
        image::DynamicImage::ImageLuma8(grey) => {
            let (w, h) = grey.dimensions();
            let px: Vec<u8> = grey.into_raw().into_iter().flat_map(|v| [v; 3]).collect();
            image::RgbImage::from_raw(w, h, px).ok_or_else(|| image_err(path, "bad grey image"))?
        }
        other => other.into_rgb8(),
    };
    let (w, h) = rgb.dimensions();
    Ok((w, h, rgb.into_raw()))
}

/// Decodes the file `bytes` at full size and resizes it to `size` x `size`. The common case,
/// upright 8-bit RGB, is decoded into the thread's reused buffer; the rest is converted and
/// turned first. Both give what [`decode_bytes`] and [`resize_rgb`] give.
fn decode_full_resized(
    path: &Path,
    bytes: &[u8],
    size: u32,
    limits: DecodeLimits,
) -> Result<Vec<u8>> {
    use image::ImageDecoder;
    let (decoder, orientation) = open_decoder(path, bytes, limits)?;
    let upright_rgb = decoder.color_type() == image::ColorType::Rgb8
        && orientation == image::metadata::Orientation::NoTransforms;
    if !upright_rgb {
        let (w, h, rgb) = decode_upright_rgb(path, decoder, orientation)?;
        return resize_rgb(w, h, rgb, size);
    }
    let (w, h) = decoder.dimensions();
    SCRATCH.with_borrow_mut(|s| {
        let WorkerScratch {
            pixels, resizer, ..
        } = s;
        pixels.resize(decoder.total_bytes() as usize, 0);
        decoder
            .read_image(pixels)
            .map_err(|e| image_err(path, decoder_reason(e)))?;
        resize_into(resizer, w, h, pixels, size)
    })
}

/// Lets decode threads reuse their big allocations instead of returning them to the system
/// after every image. With glibc's default, adaptive thresholds, each multi-megabyte buffer
/// a decoder allocates (libjpeg-turbo's whole-image coefficients for a progressive JPEG, a
/// full-size decode) is often mapped fresh and paid for again in page faults; that made
/// progressive 4 MP photos decode a third slower on two threads. Process-wide: call it once
/// at start-up in a program that decodes many images (the `crosspool` binary does). Does
/// nothing off glibc.
pub fn keep_decode_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; any value is valid input.
    unsafe {
        // Allocations under 32 MiB (glibc's largest threshold) come from the heap, and up to
        // 256 MiB of freed memory at its top is kept for the next image.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// What one decoding thread keeps between images, so that a stream of images of one size
/// allocates nothing per image but its result: the JPEG decompressor, its output buffer and
/// the resizer's scratch.
#[derive(Default)]
struct WorkerScratch {
    jpeg: Option<turbojpeg::Decompressor>,
    pixels: Vec<u8>,
    resizer: fast_image_resize::Resizer,
}

thread_local! {
    static SCRATCH: RefCell<WorkerScratch> = RefCell::default();
}

/// Resizes `w` x `h` 8-bit RGB pixels to `size` x `size` (bilinear).
fn resize_into(
    resizer: &mut fast_image_resize::Resizer,
    w: u32,
    h: u32,
    rgb: &[u8],
    size: u32,
) -> Result<Vec<u8>> {
    use fast_image_resize as fr;
    if (w, h) == (size, size) {
        return Ok(rgb.to_vec());
    }
    let resize_err = |e: &dyn std::fmt::Display| Error::Config(format!("resize: {e}"));
    let src =
        fr::images::ImageRef::new(w, h, rgb, fr::PixelType::U8x3).map_err(|e| resize_err(&e))?;
    let mut dst = fr::images::Image::new(size, size, fr::PixelType::U8x3);
    let opts =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    resizer
        .resize(&src, &mut dst, &opts)
        .map_err(|e| resize_err(&e))?;
    Ok(dst.into_vec())
}

/// Resizes 8-bit RGB pixels to `size` x `size` (bilinear).
pub fn resize_rgb(w: u32, h: u32, rgb: Vec<u8>, size: u32) -> Result<Vec<u8>> {
    if (w, h) == (size, size) {
        return Ok(rgb);
    }
    SCRATCH.with_borrow_mut(|s| resize_into(&mut s.resizer, w, h, &rgb, size))
}

/// Decodes `path` and resizes it to `size` x `size` RGB, at full size ([`DecodeMode::Exact`]).
pub fn load_rgb_resized(path: &Path, size: u32) -> Result<Vec<u8>> {
    decode_resized(
        path,
        size,
        DecodeOptions {
            mode: DecodeMode::Exact,
            ..DecodeOptions::default()
        },
    )
}

/// The DCT scale denominator (8, 4, 2, or 1 for none) at which a `w` x `h` JPEG is decoded
/// for resizing to `size` x `size`: the largest that keeps both sides at or above `size`.
pub fn jpeg_scale_denominator(w: u32, h: u32, size: u32) -> u32 {
    [8, 4, 2]
        .into_iter()
        .find(|&d| w as u64 >= d as u64 * size as u64 && h as u64 >= d as u64 * size as u64)
        .unwrap_or(1)
}

/// Decodes `path` and resizes it to upright `size` x `size` 8-bit RGB.
pub fn decode_resized(path: &Path, size: u32, opts: DecodeOptions) -> Result<Vec<u8>> {
    let bytes = read_image_file(path, opts.limits.max_file_bytes)?;
    decode_resized_bytes(path, &bytes, size, opts)
}

/// Decodes the image file `bytes` (named `name` in errors) and resizes it to upright
/// `size` x `size` 8-bit RGB.
fn decode_resized_bytes(
    name: &Path,
    bytes: &[u8],
    size: u32,
    opts: DecodeOptions,
) -> Result<Vec<u8>> {
    // A file cut short makes libjpeg-turbo warn, and the full-size path then reports it.
    if opts.mode == DecodeMode::Fast && bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        if let Some(rgb) =
            SCRATCH.with_borrow_mut(|s| decode_jpeg_scaled(bytes, size, opts.limits, s))
        {
            return rgb;
        }
    }
    decode_full_resized(name, bytes, size, opts.limits)
}

/// A JPEG decoded by libjpeg-turbo at reduced DCT scale, resized and turned upright; `None`
/// where that does not apply and the full-size decoder takes over: an image less than twice
/// `size` on a side, over the limits, in CMYK, or one libjpeg-turbo reports anything wrong
/// with, even as a warning (the full-size decoder then decodes it or gives the reason it
/// cannot: a truncated file, corrupt data).
fn decode_jpeg_scaled(
    bytes: &[u8],
    size: u32,
    limits: DecodeLimits,
    s: &mut WorkerScratch,
) -> Option<Result<Vec<u8>>> {
    use turbojpeg::{Colorspace, Decompressor, PixelFormat, ScalingFactor};
    if s.jpeg.is_none() {
        s.jpeg = Some(Decompressor::new().ok()?);
    }
    let dec = s.jpeg.as_mut()?;
    // A decompressor that reported an error is dropped, not reused: after a failed header
    // read it decoded the thread's next image wrongly (features off by half their scale).
    let Ok(header) = dec.read_header(bytes) else {
        s.jpeg = None;
        return None;
    };
    let (w, h) = (
        u32::try_from(header.width).ok()?,
        u32::try_from(header.height).ok()?,
    );
    let full_bytes = w as u64 * h as u64 * 3;
    if w > limits.max_side || h > limits.max_side || full_bytes > limits.max_alloc {
        return None;
    }
    if matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK) {
        return None;
    }
    let denom = jpeg_scale_denominator(w, h, size);
    if denom == 1 {
        return None;
    }
    let factor = ScalingFactor::new(1, denom as usize);
    if dec.set_scaling_factor(factor).is_err() {
        s.jpeg = None;
        return None;
    }
    let (sw, sh) = (factor.scale(header.width), factor.scale(header.height));
    s.pixels.resize(sw * sh * 3, 0);
    let image = turbojpeg::Image {
        pixels: &mut s.pixels[..],
        width: sw,
        pitch: sw * 3,
        height: sh,
        format: PixelFormat::RGB,
    };
    if dec.decompress(bytes, image).is_err() {
        s.jpeg = None;
        return None;
    }
    let resized = resize_into(&mut s.resizer, sw as u32, sh as u32, &s.pixels, size);
    Some(resized.map(|rgb| upright_square(rgb, size, jpeg_orientation(bytes))))
}

/// The EXIF orientation of JPEG `bytes` (APP1 "Exif" before the first scan), if any.
fn jpeg_orientation(bytes: &[u8]) -> Option<image::metadata::Orientation> {
    let mut i = 2;
    while i + 4 <= bytes.len() && bytes[i] == 0xFF {
        let marker = bytes[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            return None; // the first scan: no metadata after it
        }
        let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        let body = bytes.get(i + 4..i + 2 + len)?;
        if marker == 0xE1 && body.starts_with(b"Exif\0\0") {
            return image::metadata::Orientation::from_exif_chunk(&body[6..]);
        }
        i += 2 + len;
    }
    None
}

/// `rgb` (`size` x `size`) turned by `orientation`. Resizing to a square and then turning
/// gives the image that turning first would (up to the rounding between the resizer's two
/// passes), at a fraction of the cost.
fn upright_square(
    rgb: Vec<u8>,
    size: u32,
    orientation: Option<image::metadata::Orientation>,
) -> Vec<u8> {
    match orientation {
        None | Some(image::metadata::Orientation::NoTransforms) => rgb,
        Some(o) => {
            let Some(img) = image::RgbImage::from_raw(size, size, rgb) else {
                unreachable!("the resizer gives size * size RGB pixels");
            };
            let mut img = image::DynamicImage::ImageRgb8(img);
            img.apply_orientation(o);
            img.into_rgb8().into_raw()
        }
    }
}

/// The one input path: decodes `path`, resizes it to `size` x `size` and preprocesses it
/// into network input (`size * size * 3` values, HWC). Every command goes through here.
pub fn prepare(path: &Path, size: u32, pre: &Preprocess, opts: DecodeOptions) -> Result<Vec<f32>> {
    Ok(network_input(&decode_resized(path, size, opts)?, pre))
}

/// `rgb` (resized) preprocessed into network input.
fn network_input(rgb: &[u8], pre: &Preprocess) -> Vec<f32> {
    let mut out = Vec::with_capacity(rgb.len());
    pre.apply(rgb, &mut out);
    out
}

/// [`prepare`] for an image file or tar member.
pub fn prepare_source(
    source: &ImageSource,
    size: u32,
    pre: &Preprocess,
    opts: DecodeOptions,
) -> Result<Vec<f32>> {
    let rgb = match source {
        ImageSource::File(p) => decode_resized(p, size, opts)?,
        ImageSource::Member(m) => {
            let bytes = m.read(opts.limits.max_file_bytes)?;
            decode_resized_bytes(&m.name(), &bytes, size, opts)?
        }
        ImageSource::Pixels(p) => {
            let (w, h) = (p.width, p.height);
            if w == 0 || h == 0 || p.rgb.len() as u64 != w as u64 * h as u64 * 3 {
                return Err(image_err(
                    Path::new(&p.name),
                    format!("{} values for a {h} x {w} x 3 image", p.rgb.len()),
                ));
            }
            // The resize a decoded file goes through, so an array equals its file.
            SCRATCH.with_borrow_mut(|s| resize_into(&mut s.resizer, w, h, &p.rgb, size))?
        }
        ImageSource::Encoded(e) => {
            // As a file is read: the same cap, the same refusal of an empty one.
            let name = Path::new(&e.name);
            if e.bytes.len() as u64 > opts.limits.max_file_bytes {
                return Err(too_large(name, opts.limits.max_file_bytes));
            }
            if e.bytes.is_empty() {
                return Err(image_err(name, "empty file"));
            }
            decode_resized_bytes(name, &e.bytes, size, opts)?
        }
    };
    Ok(network_input(&rgb, pre))
}

/// Why an image could not be prepared, as recorded in a manifest: the decoder's or the file
/// system's reason, without the path (the manifest line names it).
pub fn failure_reason(e: &Error) -> String {
    match e {
        Error::Image { reason, .. } => reason.clone(),
        Error::Io { reason, .. } => reason.to_string(),
        other => other.to_string(),
    }
}

/// Prepares `paths` (see [`prepare`], full-size decoding) into one NHWC batch; the first
/// failure is the error.
pub fn load_batch(paths: &[&Path], size: u32, pre: &Preprocess) -> Result<Vec<f32>> {
    let mut batch = Vec::with_capacity(paths.len() * (size * size * 3) as usize);
    let exact = DecodeOptions {
        mode: DecodeMode::Exact,
        ..DecodeOptions::default()
    };
    for p in paths {
        batch.extend(prepare(p, size, pre, exact)?);
    }
    Ok(batch)
}
