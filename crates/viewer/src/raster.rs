//! The spike raster as an image: time along x, neurons (grouped by population, id 0 at the
//! top) along y. Every pixel counts the spikes that fall in it, so the cost is one increment
//! per spike and the picture stays readable when millions of neurons fire: a pixel row then
//! stands for many neurons and its brightness for how many of them fired.

use std::path::Path;

use fum_engine::observe::PopulationInfo;

/// Colours of populations, in model order (repeating).
pub const PALETTE: [[u8; 3]; 6] = [[90, 170, 255], [255, 110, 90], [120, 220, 120], [240, 200, 80], [200, 130, 255], [80, 220, 220]];
const BACKGROUND: [u8; 3] = [18, 18, 24];

/// An RGBA raster image.
#[derive(Clone, Debug, PartialEq)]
pub struct RasterImage {
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u8>,
}

/// Draws `spikes` (step, global id) of steps `first_step..first_step + steps` into an image of
/// `width` x `height` pixels.
pub fn draw(spikes: impl Iterator<Item = (u64, u32)>, first_step: u64, steps: u64, populations: &[PopulationInfo], width: usize, height: usize) -> RasterImage {
    let neurons = populations.iter().map(|p| p.first + p.size).max().unwrap_or(0).max(1);
    let mut counts = vec![0u32; width * height];
    let mut colour_of_row = vec![0u8; height];
    for (i, p) in populations.iter().enumerate() {
        let (top, bottom) = (row_of(p.first, neurons, height), row_of(p.first + p.size.max(1) - 1, neurons, height));
        colour_of_row[top..=bottom].fill(i as u8);
    }
    let steps = steps.max(1);
    for (step, id) in spikes {
        let Some(dx) = step.checked_sub(first_step).filter(|&d| d < steps) else { continue };
        let x = (dx as usize * width) / steps as usize;
        counts[row_of(id.min(neurons - 1), neurons, height) * width + x] += 1;
    }
    // Brightness grows with the share of the pixel's neurons that fired, and one spike is
    // always visible.
    let per_pixel = (f64::from(neurons) / height as f64).max(1.0);
    let mut rgba = Vec::with_capacity(width * height * 4);
    for (i, &n) in counts.iter().enumerate() {
        let colour = PALETTE[colour_of_row[i / width] as usize % PALETTE.len()];
        let a = if n == 0 { 0.0 } else { (0.45 + 0.55 * (f64::from(n) / per_pixel).sqrt()).min(1.0) };
        for c in 0..3 {
            rgba.push((f64::from(BACKGROUND[c]) * (1.0 - a) + f64::from(colour[c]) * a) as u8);
        }
        rgba.push(255);
    }
    RasterImage { width, height, rgba }
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

    fn pops() -> Vec<PopulationInfo> {
        vec![PopulationInfo { name: "E".into(), first: 0, size: 800, current_pa: 0.0 }, PopulationInfo { name: "I".into(), first: 800, size: 200, current_pa: 0.0 }]
    }

    #[test]
    fn spikes_land_in_their_pixel_in_their_population_colour() {
        let img = draw([(10, 0), (19, 999)].into_iter(), 10, 10, &pops(), 10, 100);
        let px = |x: usize, y: usize| &img.rgba[(y * 10 + x) * 4..(y * 10 + x) * 4 + 3];
        assert_ne!(px(0, 0), BACKGROUND, "neuron 0 at the top left");
        assert_ne!(px(9, 99), BACKGROUND, "the last neuron at the bottom right");
        assert_eq!(px(5, 50), BACKGROUND);
        assert!(px(0, 0)[2] > px(0, 0)[0], "E is blue");
        assert!(px(9, 99)[0] > px(9, 99)[2], "I is red");
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
        let img = draw([(0, 5)].into_iter(), 0, 4, &pops(), 4, 8);
        img.save_png(&dir.path().join("r.png")).unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(dir.path().join("r.png")).unwrap()));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (4, 8));
    }
}
