//! The spike trains of `spike_source` populations: listed in the model file
//! (`spike_times_ms`), in a spikes file (`spikes`: SONATA's HDF5 spike layout or a CSV table),
//! or, for a SONATA circuit's `virtual` nodes, in the files its simulation config's `inputs`
//! name (`crate::sonata`). They are read and checked when the model is loaded and kept as
//! listed, in ms; the builder turns each population's trains into its schedule on the step
//! grid (`fum_kernels::source`), so a run with another `dt_ms` rounds the same times again.

use std::path::{Path, PathBuf};

use crate::Model;
use crate::model::{ModelError, NeuronModel};
use crate::sonata::error;

/// The spikes of one `spike_source` population as listed: population-local neuron and time
/// (ms, finite, not negative) of each, in any order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpikeTrains {
    pub neurons: Vec<u32>,
    pub times_ms: Vec<f64>,
}

impl SpikeTrains {
    pub fn len(&self) -> usize {
        self.neurons.len()
    }
    pub fn is_empty(&self) -> bool {
        self.neurons.is_empty()
    }
    pub fn push(&mut self, neuron: u32, time_ms: f64) {
        self.neurons.push(neuron);
        self.times_ms.push(time_ms);
    }

    /// What the listed spikes become on a grid of `dt_ms` in a run of `steps` steps, for `fum
    /// check`: the spikes that fire in the run, the listed spikes merged into another of their
    /// neuron's in the same step, and the spikes past the run's end.
    pub fn on_grid(&self, dt_ms: f64, steps: u64) -> OnGrid {
        let schedule = fum_kernels::source::schedule(&self.neurons, &self.times_ms, dt_ms);
        let fired = schedule.partition_point(|&k| k >> 32 < steps);
        let after_end = self.times_ms.iter().filter(|&&t| fum_kernels::source::spike_step(t, dt_ms) >= steps as f64).count();
        OnGrid { fired, merged: self.len() - after_end - fired, after_end }
    }
}

/// See [`SpikeTrains::on_grid`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnGrid {
    pub fired: usize,
    pub merged: usize,
    pub after_end: usize,
}

/// Spikes as a file lists them: node ids and times (ms), each checked finite and not
/// negative, with where each one is written, for messages.
pub struct Listing {
    pub file: PathBuf,
    pub ids: Vec<u64>,
    pub times_ms: Vec<f64>,
    at: Place,
}

enum Place {
    /// HDF5: the group holding the ids (`node_ids`, or `gids` in BMTK's older flat layout) and
    /// `timestamps`; a spike is its index there.
    Group { at: String, ids: &'static str },
    /// CSV: the line of each spike (1-based).
    Lines(Vec<usize>),
}

impl Listing {
    /// Where spike `k` is written: `/spikes/LGN/node_ids[17]` or `line 18`.
    pub fn place(&self, k: usize, dataset: &str) -> String {
        match &self.at {
            Place::Group { at, ids } => format!("{at}/{}[{k}]", if dataset == "node_ids" { ids } else { dataset }),
            Place::Lines(lines) => format!("line {}", lines[k]),
        }
    }

    /// The error of spike `k`, in its file.
    pub fn error(&self, k: usize, dataset: &str, message: impl Into<String>) -> ModelError {
        error(&self.file, self.place(k, dataset), message)
    }
}

/// Reads a spikes file: HDF5 (recognised by its signature) in SONATA's layout,
/// `/spikes/<population>/node_ids` and `timestamps` (ms, or seconds where the dataset's `units`
/// attribute says `s`), or BMTK's older flat layout (`/spikes/gids` and `/spikes/timestamps`,
/// one population, which any `population` names), or else a CSV table (columns separated by spaces, as BMTK writes
/// it, or commas) with a header naming `timestamps` and `node_ids` (or `gid`), and optionally
/// `population`. `population` picks the population of the file; `None` takes its only one.
pub fn read(path: &Path, population: Option<&str>) -> Result<Listing, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| error(path, "", format!("cannot read the spikes file: {e}")))?;
    let listing = if bytes.starts_with(b"\x89HDF\r\n\x1a\n") { read_h5(path, population)? } else { read_csv(path, &bytes, population)? };
    for (k, &t) in listing.times_ms.iter().enumerate() {
        if !t.is_finite() {
            return Err(listing.error(k, "timestamps", format!("a spike time must be finite (got {t})")));
        }
        if t < 0.0 {
            return Err(listing.error(k, "timestamps", format!("a spike time must not be negative (got {t} ms): the run starts at 0")));
        }
    }
    Ok(listing)
}

fn read_h5(path: &Path, population: Option<&str>) -> Result<Listing, ModelError> {
    let file = hdf5::File::open(path).map_err(|e| error(path, "", format!("cannot open as HDF5: {e}")))?;
    let root = file.group("spikes").map_err(|_| error(path, "", "no /spikes group (a SONATA spikes file has /spikes/<population>/node_ids and timestamps)"))?;
    if root.link_exists("gids") {
        return read_group(path, &root, "/spikes".into(), "gids");
    }
    let names = root.member_names().map_err(|e| error(path, "/spikes", e.to_string()))?;
    let name = match population {
        Some(p) if names.iter().any(|n| n == p) => p.to_string(),
        Some(p) => return Err(error(path, "/spikes", format!("no population \"{p}\" (the file has: {})", names.join(", ")))),
        None if names.len() == 1 => names[0].clone(),
        None => return Err(error(path, "/spikes", format!("{} populations ({}): name the one to read", names.len(), names.join(", ")))),
    };
    let at = format!("/spikes/{name}");
    let g = root.group(&name).map_err(|e| error(path, &at, e.to_string()))?;
    read_group(path, &g, at, "node_ids")
}

/// The spikes of group `g` (at `at` in the file), its ids in dataset `ids_key`.
fn read_group(path: &Path, g: &hdf5::Group, at: String, ids_key: &'static str) -> Result<Listing, ModelError> {
    let dataset = |key: &str| g.dataset(key).map_err(|_| error(path, format!("{at}/{key}"), "missing"));
    let (ids, times) = (dataset(ids_key)?, dataset("timestamps")?);
    for (key, ds) in [(ids_key, &ids), ("timestamps", &times)] {
        if ds.ndim() != 1 {
            return Err(error(path, format!("{at}/{key}"), format!("must be one-dimensional (has shape {:?})", ds.shape())));
        }
    }
    let ids: Vec<u64> = ids.read_raw().map_err(|e| error(path, format!("{at}/{ids_key}"), format!("cannot read as unsigned integers: {e}")))?;
    let mut times_ms: Vec<f64> = times.read_raw().map_err(|e| error(path, format!("{at}/timestamps"), format!("cannot read as numbers: {e}")))?;
    if ids.len() != times_ms.len() {
        return Err(error(path, &at, format!("{} {ids_key} but {} timestamps", ids.len(), times_ms.len())));
    }
    let units = times.attr("units").ok().and_then(|a| a.read_scalar::<hdf5::types::VarLenUnicode>().map(|s| s.as_str().to_string()).or_else(|_| a.read_scalar::<hdf5::types::VarLenAscii>().map(|s| s.as_str().to_string())).ok());
    match units.as_deref() {
        None | Some("ms") => {}
        Some("s") => times_ms.iter_mut().for_each(|t| *t *= 1e3),
        Some(u) => return Err(error(path, format!("{at}/timestamps"), format!("units \"{u}\": spike times are in ms or s"))),
    }
    Ok(Listing { file: path.to_path_buf(), ids, times_ms, at: Place::Group { at, ids: ids_key } })
}

fn read_csv(path: &Path, bytes: &[u8], population: Option<&str>) -> Result<Listing, ModelError> {
    let text = std::str::from_utf8(bytes).map_err(|_| error(path, "", "neither HDF5 nor UTF-8 text (a CSV table)"))?;
    let fields = |line: &str| -> Vec<String> { line.split(|c: char| c == ',' || c.is_whitespace()).filter(|f| !f.is_empty()).map(|f| f.trim_matches('"').to_string()).collect() };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((head_line, head)) = lines.next() else { return Err(error(path, "", "empty: a spikes table needs a header naming timestamps and node_ids")) };
    let header = fields(head);
    let column = |names: &[&str]| header.iter().position(|h| names.contains(&h.as_str()));
    let place = format!("line {}", head_line + 1);
    let time_col = column(&["timestamps"]).ok_or_else(|| error(path, &place, format!("no timestamps column (the header names: {})", header.join(", "))))?;
    let id_col = column(&["node_ids", "node_id", "gid", "gids"]).ok_or_else(|| error(path, &place, format!("no node_ids column (the header names: {})", header.join(", "))))?;
    let pop_col = column(&["population"]);
    let (mut ids, mut times_ms, mut at) = (Vec::new(), Vec::new(), Vec::new());
    for (i, line) in lines {
        let row = fields(line);
        let place = format!("line {}", i + 1);
        if row.len() != header.len() {
            return Err(error(path, &place, format!("{} values under {} column names", row.len(), header.len())));
        }
        if let (Some(c), Some(p)) = (pop_col, population)
            && row[c] != p
        {
            continue;
        }
        ids.push(row[id_col].parse::<u64>().map_err(|_| error(path, &place, format!("{}: not a node id: {:?}", header[id_col], row[id_col])))?);
        times_ms.push(row[time_col].parse::<f64>().map_err(|_| error(path, &place, format!("timestamps: not a number: {:?}", row[time_col])))?);
        at.push(i + 1);
    }
    Ok(Listing { file: path.to_path_buf(), ids, times_ms, at: Place::Lines(at) })
}

/// Reads and checks the spike trains of every `spike_source` population of `model` whose
/// trains are not read yet (a SONATA import reads its own): `spikes` (relative to the model
/// file) or `spike_times_ms`, exactly one of them; node ids within the population; times finite
/// and not negative. The fields are refused on other models.
pub(crate) fn load(model: &mut Model) -> Result<(), ModelError> {
    let base = model.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    for i in 0..model.spec.populations.len() {
        let p = &model.spec.populations[i];
        if p.model != NeuronModel::SpikeSource {
            for (key, given) in [("spikes", p.spikes.is_some()), ("spikes_population", p.spikes_population.is_some()), ("spike_times_ms", p.spike_times_ms.is_some())] {
                if given {
                    return Err(model.invalid(path!("populations", i, key), format!("belongs to model = \"spike_source\"; a {} neuron fires by its membrane", p.model.name())));
                }
            }
            continue;
        }
        if p.trains.is_some() {
            continue;
        }
        let trains = match (&p.spikes, &p.spike_times_ms) {
            (Some(_), Some(_)) => return Err(model.invalid(path!("populations", i, "spike_times_ms"), "give spikes (a file) or spike_times_ms, not both".into())),
            (None, None) => return Err(model.invalid(path!("populations", i), "a spike_source needs spikes = \"file\" (SONATA HDF5 or CSV) or spike_times_ms = [[times of neuron 0], ...]".into())),
            (Some(file), None) => {
                let path = base.join(file);
                let listing = read(&path, p.spikes_population.as_deref())?;
                let mut trains = SpikeTrains::default();
                for (k, (&id, &t)) in listing.ids.iter().zip(&listing.times_ms).enumerate() {
                    if id >= u64::from(p.size) {
                        return Err(listing.error(k, "node_ids", format!("node id {id} is outside population \"{}\" of {} neurons", p.name, p.size)));
                    }
                    trains.push(id as u32, t);
                }
                trains
            }
            (None, Some(lists)) => {
                if p.spikes_population.is_some() {
                    return Err(model.invalid(path!("populations", i, "spikes_population"), "names a population of a spikes file; this one lists spike_times_ms".into()));
                }
                if lists.len() != p.size as usize {
                    return Err(model.invalid(path!("populations", i, "spike_times_ms"), format!("{} lists of times for {} neurons (one list per neuron)", lists.len(), p.size)));
                }
                let mut trains = SpikeTrains::default();
                for (n, times) in lists.iter().enumerate() {
                    for (k, &t) in times.iter().enumerate() {
                        if !(t.is_finite() && t >= 0.0) {
                            return Err(model.invalid(path!("populations", i, "spike_times_ms", n, k), format!("a spike time must be finite and not negative (got {t})")));
                        }
                        trains.push(n as u32, t);
                    }
                }
                trains
            }
        };
        model.spec.populations[i].trains = Some(std::sync::Arc::new(trains));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spikes_on_the_grid_are_counted_as_they_fire() {
        let mut trains = SpikeTrains::default();
        for (n, t) in [(0, 0.31), (0, 0.35), (1, 0.35), (2, 9.95), (2, 10.0), (2, 12.0)] {
            trains.push(n, t);
        }
        // At 0.1 ms: 0.31 and 0.35 ms both fire at step 4 (neuron 0's twice, one spike), 9.95 ms
        // at step 100, the last step of a 10 ms run is 99.
        assert_eq!(trains.on_grid(0.1, 100), OnGrid { fired: 2, merged: 1, after_end: 3 });
        assert_eq!(trains.on_grid(0.01, 1300), OnGrid { fired: 6, merged: 0, after_end: 0 });
    }

    #[test]
    fn bmtks_older_flat_layout_is_one_population() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.h5");
        let spikes = hdf5::File::create(&path).unwrap().create_group("spikes").unwrap();
        spikes.new_dataset_builder().with_data(&[4u32, 1, 4]).create("gids").unwrap();
        spikes.new_dataset_builder().with_data(&[0.5f64, 1.0, 2.5]).create("timestamps").unwrap();
        drop(spikes);
        for population in [None, Some("LGN")] {
            let listing = read(&path, population).unwrap();
            assert_eq!((listing.ids.as_slice(), listing.times_ms.as_slice()), ([4, 1, 4].as_slice(), [0.5, 1.0, 2.5].as_slice()));
            assert_eq!(listing.place(2, "node_ids"), "/spikes/gids[2]");
            assert_eq!(listing.place(2, "timestamps"), "/spikes/timestamps[2]");
        }
    }

    #[test]
    fn a_csv_table_by_its_header_with_lines_for_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.csv");
        std::fs::write(&path, "timestamps population node_ids\n# a comment\n1.5 LGN 3\n\n0.25 V1 0\n2.0 LGN 0\n").unwrap();
        let listing = read(&path, Some("LGN")).unwrap();
        assert_eq!((listing.ids.as_slice(), listing.times_ms.as_slice()), ([3, 0].as_slice(), [1.5, 2.0].as_slice()));
        assert_eq!(listing.place(1, "node_ids"), "line 6");
        std::fs::write(&path, "node_ids,timestamps\n1,-0.5\n").unwrap();
        let e = read(&path, None).err().unwrap().to_string();
        assert!(e.ends_with("s.csv: line 2: a spike time must not be negative (got -0.5 ms): the run starts at 0"), "{e}");
        std::fs::write(&path, "time node\n").unwrap();
        assert!(read(&path, None).err().unwrap().to_string().contains("line 1: no timestamps column (the header names: time, node)"));
    }
}
