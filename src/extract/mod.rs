//! The streaming extraction pipeline: images are decoded and resized on a thread pool while
//! the GPU computes the previous batch and a writer thread stores the one before, so the GPU
//! does not wait on decoding or disk.

mod runner;

pub use runner::BackendRunner;

use crate::error::{Error, Result};
use crate::input::{failure_reason, prepare_source, DecodeOptions, ImageSource};
use crate::model::Preprocess;
use crate::store::writer::{OutputFormat, Row, RowData, RowSink};
use rayon::prelude::*;
use std::sync::mpsc::sync_channel;

/// Settings of one extraction run.
#[derive(Clone, Debug)]
pub struct ExtractConfig {
    /// Images are resized to `size` x `size`.
    pub size: u32,
    /// Images per GPU batch.
    pub batch: usize,
    /// How values are stored.
    pub format: OutputFormat,
    /// Decoding mode and limits.
    pub decode: DecodeOptions,
}

/// One decoded batch: per image, where it is from and its preprocessed pixels or why it
/// failed.
struct Decoded {
    items: Vec<(ImageSource, std::result::Result<Vec<f32>, String>)>,
}

/// What a batch gives: per image, its feature row (packed if the run stores codes) or why it
/// has none (an activation overflowed f16), and for cross-layer features every image's layer
/// t+1 channel means.
pub type BatchRows = (Vec<std::result::Result<RowData, String>>, Vec<Vec<f32>>);

/// Computes the features of one batch of preprocessed images on some device.
pub trait BatchRunner {
    /// The rows of `images` (preprocessed pixels, one slice each), in order.
    fn run(&mut self, images: &[&[f32]]) -> Result<BatchRows>;
}

/// Why an image whose activations overflowed f16 has no features.
pub const F16_OVERFLOW: &str = "an activation exceeded f16's range (65504) under --precision f16, so its features would be infinite; extract it with --precision f32";

/// Runs `runner` (the GPU's or the CPU backend's: a [`BackendRunner`] over an extractor, say)
/// over `images`, handing every result to `writer` in input order (a
/// [`crate::store::writer::ShardWriter`], or a `Vec<Row>` to keep them), finishes it and
/// returns what it gives back; calls `progress(done, failed)` after each batch.
pub fn run_on<W: RowSink>(
    runner: &mut (dyn BatchRunner + Send),
    preprocess: Preprocess,
    images: impl IntoIterator<Item = impl Into<ImageSource>>,
    writer: W,
    cfg: &ExtractConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<W::Done> {
    let images = images.into_iter().map(Into::into).collect();
    run_on_devices(vec![runner], preprocess, images, writer, cfg, progress)
}

/// [`run_on`] on several devices at once: each takes the next decoded batch when it is free (a
/// slower device takes fewer), and the rows reach `writer` in input order, so the output is
/// the same whatever the number of devices. Decoding and writing are shared.
pub fn run_on_devices<'a, W: RowSink>(
    runners: Vec<&mut (dyn BatchRunner + Send + 'a)>,
    preprocess: Preprocess,
    images: Vec<ImageSource>,
    writer: W,
    cfg: &ExtractConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<W::Done> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    if runners.is_empty() {
        return Err(Error::Config("no device to extract on".into()));
    }
    let batch = cfg.batch.max(1);
    let (size, decode) = (cfg.size, cfg.decode);
    let devices = runners.len();
    // Two decoded batches in flight per device: each finds the next one ready.
    let (to_devices, from_decode) = sync_channel::<(usize, Decoded)>(2 * devices);
    // Dropped (set to None) to stop the decoder when the run fails.
    let from_decode = Mutex::new(Some(from_decode));
    let (to_order, from_devices) = sync_channel::<(usize, Result<Vec<Row>>)>(2 * devices);
    let (to_writer, from_order) = sync_channel::<Vec<Row>>(2);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<W::Done> {
        // Decoder: a batch at a time, its images in parallel; bounded channel = prefetch.
        scope.spawn(move || {
            for (seq, chunk) in images.chunks(batch).enumerate() {
                let items = chunk
                    .par_iter()
                    .map(|p| {
                        let r = prepare_source(p, size, &preprocess, decode)
                            .map_err(|e| failure_reason(&e));
                        (p.clone(), r)
                    })
                    .collect();
                if to_devices.send((seq, Decoded { items })).is_err() {
                    break; // the devices stopped (error): stop decoding
                }
            }
        });
        // Writer.
        let writer_thread = scope.spawn(move || -> Result<W::Done> {
            let mut writer = writer;
            for rows in from_order {
                for r in rows {
                    writer.push(r)?;
                }
            }
            writer.finish()
        });
        // The devices, each on its own thread.
        for runner in runners {
            let (to_order, from_decode, stop) = (to_order.clone(), &from_decode, &stop);
            scope.spawn(move || {
                let close = || *from_decode.lock().unwrap_or_else(|e| e.into_inner()) = None;
                loop {
                    let next = match &*from_decode.lock().unwrap_or_else(|e| e.into_inner()) {
                        Some(rx) if !stop.load(Ordering::Relaxed) => rx.recv().ok(),
                        _ => None,
                    };
                    let Some((seq, d)) = next else { break };
                    let ok: Vec<&[f32]> = d
                        .items
                        .iter()
                        .filter_map(|(_, r)| r.as_deref().ok())
                        .collect();
                    let rows = if ok.is_empty() {
                        Ok(join_rows(d, Vec::new(), Vec::new()))
                    } else {
                        runner
                            .run(&ok)
                            .map(|(features, guide)| join_rows(d, features, guide))
                    };
                    let failed = rows.is_err();
                    if to_order.send((seq, rows)).is_err() || failed {
                        break;
                    }
                }
                close();
            });
        }
        drop(to_order);
        // Rows back into input order, then to the writer.
        let mut pending = std::collections::BTreeMap::new();
        let (mut next, mut done, mut failed) = (0, 0, 0);
        let (mut error, mut halted) = (None, false);
        for (seq, rows) in from_devices {
            if halted {
                continue; // drain, so that every device thread can finish
            }
            match rows {
                Err(e) => {
                    error = Some(e);
                    halted = true;
                    stop.store(true, Ordering::Relaxed);
                }
                Ok(rows) => {
                    pending.insert(seq, rows);
                    while let Some(rows) = pending.remove(&next) {
                        next += 1;
                        done += rows.len();
                        failed += rows
                            .iter()
                            .filter(|r| matches!(r, Row::Failed { .. }))
                            .count();
                        if to_writer.send(rows).is_err() {
                            // The writer failed; its error is reported below.
                            halted = true;
                            stop.store(true, Ordering::Relaxed);
                            break;
                        }
                        progress(done, failed);
                    }
                }
            }
        }
        drop(to_writer);
        let written = writer_thread
            .join()
            .map_err(|_| Error::Config("the writer thread panicked".into()))?;
        if let Some(e) = error {
            return Err(e);
        }
        written
    })
}

/// One row per image of the batch, in input order: the next feature for each decoded image,
/// the reason for each failed one (counted in `failed`).
fn join_rows(
    d: Decoded,
    features: Vec<std::result::Result<RowData, String>>,
    guide: Vec<Vec<f32>>,
) -> Vec<Row> {
    let mut feats = features.into_iter();
    let mut guide = guide.into_iter();
    d.items
        .into_iter()
        .map(|(source, r)| match r {
            Ok(_) => {
                let (values, guide_mean) = (feats.next(), guide.next());
                match values.expect("one feature per decoded image") {
                    Ok(values) => Row::Ok {
                        source,
                        values,
                        guide_mean,
                    },
                    Err(reason) => Row::Failed { source, reason },
                }
            }
            Err(reason) => Row::Failed { source, reason },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::DecodeMode;

    /// Gives each image's first preprocessed value as its feature, after `delay`; counts the
    /// images it ran, or fails on its `fail_at`-th batch.
    struct Probe {
        delay: std::time::Duration,
        ran: usize,
        batches: usize,
        fail_at: Option<usize>,
    }

    impl BatchRunner for Probe {
        fn run(&mut self, images: &[&[f32]]) -> Result<BatchRows> {
            std::thread::sleep(self.delay);
            self.batches += 1;
            if self.fail_at == Some(self.batches) {
                return Err(Error::Config("probe failure".into()));
            }
            self.ran += images.len();
            Ok((
                images
                    .iter()
                    .map(|x| Ok(RowData::F32(vec![x[0]])))
                    .collect(),
                Vec::new(),
            ))
        }
    }

    fn probe(ms: u64, fail_at: Option<usize>) -> Probe {
        Probe {
            delay: std::time::Duration::from_millis(ms),
            ran: 0,
            batches: 0,
            fail_at,
        }
    }

    fn inputs() -> (Vec<ImageSource>, ExtractConfig) {
        let photos = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos");
        let names = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"];
        let images = (0..24)
            .map(|i| ImageSource::File(photos.join(names[i % 4])))
            .collect();
        let cfg = ExtractConfig {
            size: 32,
            batch: 1,
            format: OutputFormat::F32,
            decode: DecodeOptions {
                mode: DecodeMode::Fast,
                ..DecodeOptions::default()
            },
        };
        (images, cfg)
    }

    #[test]
    fn several_devices_share_the_batches_and_keep_the_input_order() {
        let (images, cfg) = inputs();
        let pre = Preprocess::TORCHVISION;
        let (mut fast, mut slow) = (probe(1, None), probe(40, None));
        let rows = run_on_devices(
            vec![&mut fast, &mut slow],
            pre,
            images.clone(),
            Vec::new(),
            &cfg,
            &|_, _| {},
        )
        .unwrap();
        let mut one = probe(0, None);
        let alone = run_on(&mut one, pre, images.clone(), Vec::new(), &cfg, &|_, _| {}).unwrap();
        let key = |r: &Row| match r {
            Row::Ok {
                source,
                values: RowData::F32(v),
                ..
            } => (source.clone(), v[0].to_bits()),
            Row::Failed { source, reason } => panic!("{}: {reason}", source.name().display()),
            Row::Ok { .. } => panic!("codes where floats were asked for"),
        };
        let got: Vec<_> = rows.iter().map(key).collect();
        assert_eq!(got, alone.iter().map(key).collect::<Vec<_>>());
        assert_eq!(
            got.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
            images
        );
        // Both worked, the slower less.
        assert_eq!(fast.ran + slow.ran, 24);
        assert!(
            slow.ran >= 1 && fast.ran > slow.ran,
            "{} {}",
            fast.ran,
            slow.ran
        );
    }

    #[test]
    fn a_failing_device_stops_the_run_with_its_error() {
        let (images, cfg) = inputs();
        let (mut good, mut bad) = (probe(5, None), probe(5, Some(2)));
        let e = run_on_devices(
            vec![&mut good, &mut bad],
            Preprocess::TORCHVISION,
            images,
            Vec::new(),
            &cfg,
            &|_, _| {},
        )
        .err()
        .expect("the run fails");
        assert!(e.to_string().contains("probe failure"), "{e}");
    }
}
