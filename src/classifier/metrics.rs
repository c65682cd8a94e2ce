//! Accuracy, mean per-class accuracy and the confusion matrix, with a PNG of it.

use crate::error::{Error, Result};
use std::path::Path;

/// Predictions against the truth, over `classes` classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Confusion {
    /// `counts[true][predicted]`.
    pub counts: Vec<Vec<usize>>,
}

impl Confusion {
    /// Counts `(truth, prediction)` pairs.
    pub fn new(classes: usize, pairs: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let mut counts = vec![vec![0; classes]; classes];
        for (t, p) in pairs {
            counts[t][p] += 1;
        }
        Confusion { counts }
    }

    /// Examples counted.
    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum()
    }

    /// Share predicted right.
    pub fn accuracy(&self) -> f64 {
        let right: usize = (0..self.counts.len()).map(|c| self.counts[c][c]).sum();
        right as f64 / self.total().max(1) as f64
    }

    /// Each class's share of its examples predicted right (`None` for a class without
    /// examples).
    pub fn per_class(&self) -> Vec<Option<f64>> {
        self.counts
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let n: usize = row.iter().sum();
                (n > 0).then(|| row[c] as f64 / n as f64)
            })
            .collect()
    }

    /// The mean of the per-class accuracies over the classes that have examples (the measure
    /// MIT-67 and Birds-200 results are reported in).
    pub fn mean_per_class(&self) -> f64 {
        let v: Vec<f64> = self.per_class().into_iter().flatten().collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    /// Writes the matrix as a PNG: one square per (true row, predicted column), darker for a
    /// larger share of the true class, classes in the classifier's order.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        const CELL: u32 = 24;
        let k = self.counts.len() as u32;
        let side = (k * CELL + 1).max(1);
        let mut img = image::RgbImage::from_pixel(side, side, image::Rgb([128, 128, 128]));
        for (t, row) in self.counts.iter().enumerate() {
            let n: usize = row.iter().sum();
            for (p, &v) in row.iter().enumerate() {
                let share = if n > 0 { v as f64 / n as f64 } else { 0.0 };
                let shade = (255.0 * (1.0 - share)).round() as u8;
                // Right answers in blue, confusions in red.
                let colour = if t == p {
                    image::Rgb([shade, shade, 255])
                } else {
                    image::Rgb([255, shade, shade])
                };
                for y in 1..CELL {
                    for x in 1..CELL {
                        img.put_pixel(p as u32 * CELL + x, t as u32 * CELL + y, colour);
                    }
                }
            }
        }
        img.save(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_mean_per_class() {
        // Class 0: 3 of 4 right; class 1: 1 of 1; class 2: no examples.
        let c = Confusion::new(3, [(0, 0), (0, 0), (0, 0), (0, 1), (1, 1)]);
        assert_eq!(c.accuracy(), 0.8);
        assert_eq!(c.per_class(), vec![Some(0.75), Some(1.0), None]);
        assert_eq!(c.mean_per_class(), 0.875);
    }
}
