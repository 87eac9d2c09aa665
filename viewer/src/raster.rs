//! The spike raster: time along x, neurons (grouped by population, id 0 at the top) along y.
//!
//! Spikes are counted into pixels as they arrive: a ring of pixel columns, each covering a few
//! steps, so that adding a spike is one increment and drawing costs the same whether ten or
//! millions of neurons fire. When many neurons share a pixel row, the brightness says what
//! share of them fired. Each column also counts spikes per shard, for the shard map's rates.

use std::path::Path;

use fum_protocol::{Info, PopulationInfo};

/// Colours of populations, in model order (repeating).
pub const PALETTE: [[u8; 3]; 6] = [[90, 170, 255], [255, 110, 90], [120, 220, 120], [240, 200, 80], [200, 130, 255], [80, 220, 220]];
const BACKGROUND: [u8; 3] = [18, 18, 24];
/// Pixels of the raster (the panel scales the image).
pub const WIDTH: usize = 720;
pub const HEIGHT: usize = 300;
/// Biological time the raster shows, ms (rounded down to whole steps per column).
pub const WINDOW_MS: f64 = 250.0;

/// An RGBA image.
#[derive(Clone, Debug, PartialEq)]
pub struct RasterImage {
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u8>,
}

/// Spike counts of the last `width` pixel columns of `steps_per_column` steps each.
#[derive(Clone, Debug)]
pub struct SpikeWindow {
    pub width: usize,
    pub height: usize,
    pub steps_per_column: u64,
    neurons: u32,
    /// First global id of each shard.
    shard_starts: Vec<u32>,
    /// Per ring slot: the absolute column (step / steps_per_column) it holds, its pixel counts
    /// (one per row) and its spikes per shard.
    column_of_slot: Vec<u64>,
    counts: Vec<u32>,
    shard_counts: Vec<u64>,
    /// The newest column written.
    newest: u64,
}

impl SpikeWindow {
    /// A window of `width` x `height` pixels over about `window_steps` steps of `info`'s network.
    pub fn new(info: &Info, window_steps: u64, width: usize, height: usize) -> Self {
        let shards = info.shards.len().max(1);
        SpikeWindow {
            width,
            height,
            steps_per_column: (window_steps / width as u64).max(1),
            neurons: info.populations.iter().map(|p| p.first + p.size).max().unwrap_or(0).max(1),
            shard_starts: info.shards.iter().map(|s| s.first).collect(),
            column_of_slot: vec![u64::MAX; width],
            counts: vec![0; width * height],
            shard_counts: vec![0; width * shards],
            newest: 0,
        }
    }

    /// Steps the window covers.
    pub fn steps(&self) -> u64 {
        self.steps_per_column * self.width as u64
    }

    /// Counts the spikes (global ids) of `step`.
    pub fn add_step(&mut self, step: u64, spikes: &[u32]) {
        let column = step / self.steps_per_column;
        let slot = (column % self.width as u64) as usize;
        if self.column_of_slot[slot] != column {
            self.column_of_slot[slot] = column;
            self.counts[slot * self.height..(slot + 1) * self.height].fill(0);
            let shards = self.shard_counts.len() / self.width;
            self.shard_counts[slot * shards..(slot + 1) * shards].fill(0);
        }
        self.newest = self.newest.max(column);
        let shards = self.shard_counts.len() / self.width;
        for &id in spikes {
            self.counts[slot * self.height + row_of(id.min(self.neurons - 1), self.neurons, self.height)] += 1;
            let shard = self.shard_starts.partition_point(|&first| first <= id).saturating_sub(1);
            self.shard_counts[slot * shards + shard.min(shards - 1)] += 1;
        }
    }

    /// Whether ring slot `slot` holds a column inside the window.
    fn live(&self, slot: usize) -> bool {
        let column = self.column_of_slot[slot];
        column != u64::MAX && column + self.width as u64 > self.newest
    }

    /// Spikes per shard over the window.
    pub fn shard_spikes(&self) -> Vec<u64> {
        let shards = self.shard_counts.len() / self.width;
        let mut sums = vec![0; shards];
        for slot in (0..self.width).filter(|&s| self.live(s)) {
            for (sum, n) in sums.iter_mut().zip(&self.shard_counts[slot * shards..(slot + 1) * shards]) {
                *sum += n;
            }
        }
        sums
    }

    /// Spikes in the window.
    pub fn total(&self) -> u64 {
        self.shard_spikes().iter().sum()
    }

    /// The window as an image, oldest column on the left, coloured by `populations`.
    pub fn image(&self, populations: &[PopulationInfo]) -> RasterImage {
        let (width, height) = (self.width, self.height);
        let mut colour_of_row = vec![0usize; height];
        for (i, p) in populations.iter().enumerate() {
            let (top, bottom) = (row_of(p.first, self.neurons, height), row_of(p.first + p.size.max(1) - 1, self.neurons, height));
            colour_of_row[top..=bottom.min(height - 1)].fill(i);
        }
        // Brightness grows with the share of the pixel's neurons that fired; one spike always
        // shows.
        let per_pixel = (f64::from(self.neurons) / height as f64).max(1.0) * self.steps_per_column as f64;
        let mut rgba = vec![0u8; width * height * 4];
        for x in 0..width {
            let column = (self.newest + 1 + x as u64).checked_sub(width as u64);
            let slot = column.map(|c| (c % width as u64) as usize).filter(|&s| column == Some(self.column_of_slot[s]));
            for (y, &colour) in colour_of_row.iter().enumerate() {
                let n = slot.map_or(0, |s| self.counts[s * height + y]);
                let a = if n == 0 { 0.0 } else { (0.45 + 0.55 * (f64::from(n) / per_pixel).sqrt()).min(1.0) };
                let colour = PALETTE[colour % PALETTE.len()];
                let pixel = &mut rgba[(y * width + x) * 4..(y * width + x + 1) * 4];
                for c in 0..3 {
                    pixel[c] = (f64::from(BACKGROUND[c]) * (1.0 - a) + f64::from(colour[c]) * a) as u8;
                }
                pixel[3] = 255;
            }
        }
        RasterImage { width, height, rgba }
    }
}

/// The pixel row of neuron `id`.
pub fn row_of(id: u32, neurons: u32, height: usize) -> usize {
    ((u64::from(id) * height as u64) / u64::from(neurons.max(1))) as usize
}

/// The first neuron of pixel row `row`.
pub fn neuron_of_row(row: usize, neurons: u32, height: usize) -> u32 {
    (row as u64 * u64::from(neurons)).div_ceil(height as u64) as u32
}

impl RasterImage {
    /// Writes the image as a PNG file.
    pub fn save_png(&self, path: &Path) -> Result<(), crate::ViewerError> {
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut encoder = png::Encoder::new(file, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.rgba)?;
        writer.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fum_protocol::ShardInfo;

    fn info() -> Info {
        Info {
            populations: vec![PopulationInfo { name: "E".into(), first: 0, size: 800, current_pa: 0.0 }, PopulationInfo { name: "I".into(), first: 800, size: 200, current_pa: 0.0 }],
            shards: vec![ShardInfo { index: 0, first: 0, neurons: 500, ..ShardInfo::default() }, ShardInfo { index: 1, first: 500, neurons: 500, ..ShardInfo::default() }],
            ..Info::default()
        }
    }

    #[test]
    fn spikes_land_in_their_pixel_in_their_population_colour() {
        let mut w = SpikeWindow::new(&info(), 10, 10, 100);
        w.add_step(10, &[0]);
        w.add_step(19, &[999]);
        let img = w.image(&info().populations);
        let px = |x: usize, y: usize| &img.rgba[(y * 10 + x) * 4..(y * 10 + x) * 4 + 3];
        assert_ne!(px(0, 0), BACKGROUND, "neuron 0 at the top left");
        assert_ne!(px(9, 99), BACKGROUND, "the last neuron at the bottom right");
        assert_eq!(px(5, 50), BACKGROUND);
        assert!(px(0, 0)[2] > px(0, 0)[0], "E is blue");
        assert!(px(9, 99)[0] > px(9, 99)[2], "I is red");
        assert_eq!(w.shard_spikes(), [1, 1]);
    }

    #[test]
    fn old_columns_leave_the_window() {
        let mut w = SpikeWindow::new(&info(), 20, 10, 10);
        assert_eq!((w.steps_per_column, w.steps()), (2, 20));
        w.add_step(0, &[1, 2, 3]);
        w.add_step(19, &[600]);
        assert_eq!(w.shard_spikes(), [3, 1]);
        w.add_step(20, &[]);
        assert_eq!(w.shard_spikes(), [0, 1], "step 0 is out of the window of steps 1..=20");
        w.add_step(40, &[700]);
        assert_eq!(w.total(), 1);
    }

    #[test]
    fn rows_and_neurons_invert() {
        for row in 0..100 {
            assert_eq!(row_of(neuron_of_row(row, 1000, 100), 1000, 100), row);
        }
    }

    #[test]
    fn the_png_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpikeWindow::new(&info(), 4, 4, 8);
        w.add_step(0, &[5]);
        w.image(&info().populations).save_png(&dir.path().join("r.png")).unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(dir.path().join("r.png")).unwrap()));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (4, 8));
    }
}
