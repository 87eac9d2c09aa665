//! The fum live viewer: watch and steer a running simulation.
//!
//! The viewer sees a run only through a [`ViewerLink`] (see `fum_protocol`): frames of
//! per-step summaries, and replies to its requests. The same link comes from a simulation
//! thread in this process (`fum view MODEL`) or from a socket (`fum view --attach ADDR`), so
//! the viewer does not know which. Like bevy's render world, it draws from what it extracted
//! (its [`History`]) and never touches the simulation's world during a frame.
//!
//! Panels: spike raster, population rates, membrane traces of picked neurons, the weight
//! histogram of a plastic projection, the shard map, structural plasticity (models with
//! `[[structural]]`), performance. Controls: run, pause, step,
//! speed, Poisson rate, DC current, STDP, checkpoint, save the raster as PNG.

pub mod history;
pub mod raster;

use std::path::PathBuf;

use eframe::egui;
use egui_plot::{Bar, BarChart, Legend, Line, Plot};
use fum_protocol::{CommitInfo, Info, Reply, Request, Speed, StructureInfo, ViewerLink, WeightHistogram};

pub use history::History;

/// Errors of the viewer.
#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    #[error("cannot open the viewer window: {0}")]
    Window(String),
    #[error("cannot write the image: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode the PNG: {0}")]
    Png(#[from] png::EncodingError),
}

/// How often (egui time, s) the viewer asks for the network description and the weights.
const INFO_INTERVAL_S: f64 = 1.0;
const HISTOGRAM_INTERVAL_S: f64 = 0.25;
const HISTOGRAM_BINS: u32 = 40;
/// Points a curve is drawn with at most: tessellating more costs frames, not detail.
const MAX_LINE_POINTS: usize = 600;

/// `points` thinned to at most about `MAX_LINE_POINTS`: the lowest and highest point of each
/// run of neighbours, in order, so that peaks (spikes in a trace) stay visible.
fn thin(points: &std::collections::VecDeque<[f64; 2]>) -> Vec<[f64; 2]> {
    let all: Vec<[f64; 2]> = points.iter().copied().collect();
    let run = all.len().div_ceil(MAX_LINE_POINTS / 2).max(1);
    if run == 1 {
        return all;
    }
    let mut out = Vec::with_capacity(MAX_LINE_POINTS + 2);
    for chunk in all.chunks(run) {
        let low = chunk.iter().min_by(|a, b| a[1].total_cmp(&b[1])).expect("chunks are not empty");
        let high = chunk.iter().max_by(|a, b| a[1].total_cmp(&b[1])).expect("chunks are not empty");
        if low[0] <= high[0] {
            out.extend([*low, *high]);
        } else {
            out.extend([*high, *low]);
        }
    }
    out
}

/// The viewer application: one per window.
pub struct ViewerApp {
    link: ViewerLink,
    /// Whether this viewer may steer (always in process; over a socket, with the token).
    steering: bool,
    info: Option<Info>,
    pub history: History,
    histogram: Option<WeightHistogram>,
    first_histogram: Option<WeightHistogram>,
    /// Mean weight over time: (time ms, mean).
    weight_means: Vec<[f64; 2]>,
    /// The last reply to a command, shown in the status line.
    pub status: String,
    last_info_request: Option<f64>,
    last_histogram_request: Option<f64>,
    /// Control values being edited.
    pub input_choice: usize,
    pub rate_hz: f64,
    pub population_choice: usize,
    pub current_pa: f32,
    pub projection_choice: usize,
    pub max_speed: bool,
    pub real_time_factor: f64,
    pub neuron_text: String,
    watched: Vec<u32>,
    raster_texture: Option<egui::TextureHandle>,
    raster: Option<raster::RasterImage>,
    /// Where "save raster" writes its PNGs.
    pub save_dir: PathBuf,
    /// UI frames drawn, and frames per second over the last second (egui time).
    pub frames_drawn: u64,
    fps: f64,
    fps_window: (f64, u64),
}

impl ViewerApp {
    /// A viewer of the run behind `link`.
    pub fn new(link: ViewerLink, steering: bool) -> Self {
        link.send(Request::Info);
        ViewerApp {
            link,
            steering,
            info: None,
            history: History::default(),
            histogram: None,
            first_histogram: None,
            weight_means: Vec::new(),
            status: String::new(),
            last_info_request: None,
            last_histogram_request: None,
            input_choice: 0,
            rate_hz: 0.0,
            population_choice: 0,
            current_pa: 0.0,
            projection_choice: 0,
            max_speed: true,
            real_time_factor: 1.0,
            neuron_text: String::new(),
            watched: Vec::new(),
            raster_texture: None,
            raster: None,
            save_dir: PathBuf::from("."),
            frames_drawn: 0,
            fps: 0.0,
            fps_window: (0.0, 0),
        }
    }

    /// The latest network description, once it has arrived.
    pub fn info(&self) -> Option<&Info> {
        self.info.as_ref()
    }

    /// The latest weight histogram, once one has arrived.
    pub fn histogram(&self) -> Option<&WeightHistogram> {
        self.histogram.as_ref()
    }

    /// Takes what has arrived from the simulation and asks for what is due.
    fn poll(&mut self, now: f64) {
        while let Some(reply) = self.link.try_reply() {
            match reply {
                Reply::Info(info) => {
                    if self.info.is_none() {
                        self.rate_hz = info.inputs.first().map_or(0.0, |i| i.rate_hz);
                        self.current_pa = info.populations.first().map_or(0.0, |p| p.current_pa);
                        if let Some(Speed::RealTimeFactor(f)) = info.speed {
                            (self.max_speed, self.real_time_factor) = (false, f);
                        }
                    }
                    self.history.add_structure(&info.structure);
                    self.info = Some(info);
                }
                Reply::WeightHistogram(h) => {
                    let t = h.step as f64 * self.info.as_ref().map_or(0.0, |i| i.dt_ms);
                    if self.weight_means.last().is_none_or(|p| p[0] < t) {
                        self.weight_means.push([t, h.mean]);
                    }
                    if self.first_histogram.as_ref().is_none_or(|f| f.projection != h.projection) {
                        self.first_histogram = Some(h.clone());
                        self.weight_means = vec![[t, h.mean]];
                    }
                    self.histogram = Some(h);
                }
                // This viewer traces neurons through `Watch`; it never asks for one-off reads.
                Reply::Membrane { .. } => {}
                Reply::Done(text) => self.status = text,
                Reply::Error(text) => self.status = format!("error: {text}"),
            }
        }
        if let Some(info) = &self.info {
            while let Some(frame) = self.link.try_frame() {
                self.history.add(&frame, info);
            }
        }
        let due = |last: Option<f64>, every: f64| last.is_none_or(|t| now - t >= every);
        if due(self.last_info_request, INFO_INTERVAL_S) {
            self.link.send(Request::Info);
            self.last_info_request = Some(now);
        }
        if let Some(p) = self.info.as_ref().and_then(|i| i.plastic_projections.get(self.projection_choice))
            && due(self.last_histogram_request, HISTOGRAM_INTERVAL_S)
        {
            self.link.send(Request::WeightHistogram { projection: p.index, bins: HISTOGRAM_BINS });
            self.last_histogram_request = Some(now);
        }
    }

    fn send(&mut self, request: Request) {
        if request.is_steering() && !self.steering {
            self.status = "watching only: steering needs the token that `fum run --serve` printed (--token)".into();
        } else if !self.link.send(request) {
            self.status = "the simulation has ended".into();
        }
    }

    /// Starts tracing neuron `id`'s membrane potential (up to eight neurons; the oldest goes).
    pub fn watch(&mut self, id: u32) {
        if !self.watched.contains(&id) {
            self.watched.push(id);
            if self.watched.len() > 8 {
                self.watched.remove(0);
            }
            self.link.send(Request::Watch(self.watched.clone()));
        }
    }

    /// Writes the raster as shown now into `save_dir`; returns the file's path.
    pub fn save_raster(&mut self) -> Result<PathBuf, ViewerError> {
        let path = self.save_dir.join(format!("raster-step{}.png", self.history.step));
        match &self.raster {
            Some(image) => image.save_png(&path)?,
            None => return Err(ViewerError::Io(std::io::Error::other("no spikes have arrived yet"))),
        }
        Ok(path)
    }

    /// Draws the whole viewer on a background of `panel_fill` (which it does not paint).
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let now = ui.input(|i| i.time);
        self.frames_drawn += 1;
        if now - self.fps_window.0 >= 1.0 {
            self.fps = (self.frames_drawn - self.fps_window.1) as f64 / (now - self.fps_window.0);
            self.fps_window = (now, self.frames_drawn);
        }
        self.poll(now);
        // Panels leave their background to the window's clear colour (`panel_fill`, see
        // `Window`): on a software renderer one full-window fill costs about as much as all the
        // rest of a frame.
        let bare = egui::Frame::side_top_panel(ui.style()).fill(egui::Color32::TRANSPARENT);
        egui::Panel::top("controls").frame(bare).show(ui, |ui| self.controls(ui));
        egui::Panel::bottom("status").frame(bare).show(ui, |ui| self.status_line(ui));
        egui::Panel::left("side").frame(bare).default_size(300.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                self.performance(ui);
                ui.separator();
                self.shard_map(ui);
                if !self.history.structure.is_empty() {
                    ui.separator();
                    self.structure_panel(ui);
                }
            });
        });
        egui::CentralPanel::default().frame(egui::Frame::central_panel(ui.style()).fill(egui::Color32::TRANSPARENT)).show(ui, |ui| {
            let raster_height = (ui.available_height() * 0.45).max(120.0);
            self.raster_panel(ui, raster_height);
            ui.separator();
            ui.columns(3, |columns| {
                self.rates_panel(&mut columns[0]);
                self.membrane_panel(&mut columns[1]);
                self.weights_panel(&mut columns[2]);
            });
        });
    }

    fn controls(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            if ui.button("Run").clicked() {
                self.send(Request::Resume);
            }
            if ui.button("Pause").clicked() {
                self.send(Request::Pause);
            }
            if ui.button("Step").clicked() {
                self.send(Request::Step(1));
            }
            ui.separator();
            let max = ui.checkbox(&mut self.max_speed, "max speed").changed();
            let label = ui.label("real-time factor");
            let factor = ui.add_enabled(!self.max_speed, egui::DragValue::new(&mut self.real_time_factor).range(0.01..=1000.0).speed(0.05)).labelled_by(label.id).changed();
            if max || factor {
                self.send(Request::Speed(if self.max_speed { Speed::Max } else { Speed::RealTimeFactor(self.real_time_factor) }));
            }
            ui.separator();
            let (inputs, populations) = self.info.as_ref().map_or((Vec::new(), Vec::new()), |i| (i.inputs.clone(), i.populations.clone()));
            if inputs.is_empty() {
                ui.label("no Poisson inputs");
            } else {
                self.input_choice = self.input_choice.min(inputs.len() - 1);
                let before = self.input_choice;
                let label = ui.label("input");
                egui::ComboBox::from_id_salt("input").selected_text(inputs[self.input_choice].name.as_str()).show_ui(ui, |ui| {
                    for (k, input) in inputs.iter().enumerate() {
                        ui.selectable_value(&mut self.input_choice, k, format!("{} -> {}", input.name, input.target));
                    }
                })
                .response
                .labelled_by(label.id);
                if before != self.input_choice {
                    self.rate_hz = inputs[self.input_choice].rate_hz;
                }
                ui.add(egui::DragValue::new(&mut self.rate_hz).range(0.0..=1e7).suffix(" Hz")).labelled_by(label.id);
                if ui.button("Set rate").clicked() {
                    self.send(Request::SetPoissonRate { input: inputs[self.input_choice].index, rate_hz: self.rate_hz });
                }
            }
            ui.separator();
            if !populations.is_empty() {
                self.population_choice = self.population_choice.min(populations.len() - 1);
                let before = self.population_choice;
                let label = ui.label("DC");
                egui::ComboBox::from_id_salt("population").selected_text(populations[self.population_choice].name.as_str()).show_ui(ui, |ui| {
                    for (k, p) in populations.iter().enumerate() {
                        ui.selectable_value(&mut self.population_choice, k, p.name.as_str());
                    }
                })
                .response
                .labelled_by(label.id);
                if before != self.population_choice {
                    self.current_pa = populations[self.population_choice].current_pa;
                }
                ui.add(egui::DragValue::new(&mut self.current_pa).speed(1.0).suffix(" pA")).labelled_by(label.id);
                if ui.button("Set current").clicked() {
                    self.send(Request::SetCurrent { population: self.population_choice as u32, current_pa: self.current_pa });
                }
            }
            ui.separator();
            let mut stdp = self.info.as_ref().is_some_and(|i| i.stdp_enabled);
            if ui.checkbox(&mut stdp, "STDP").changed() {
                self.send(Request::Stdp(stdp));
                if let Some(info) = self.info.as_mut() {
                    info.stdp_enabled = stdp;
                }
            }
            if ui.button("Checkpoint now").clicked() {
                self.send(Request::Checkpoint);
            }
            if ui.button("Save raster PNG").clicked() {
                self.status = match self.save_raster() {
                    Ok(path) => format!("raster saved to {}", path.display()),
                    Err(e) => format!("error: {e}"),
                };
            }
            ui.separator();
            let label = ui.label("neuron");
            let edit = ui.add(egui::TextEdit::singleline(&mut self.neuron_text).desired_width(70.0)).labelled_by(label.id);
            let entered = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui.button("Watch").clicked() || entered {
                match self.neuron_text.trim().parse::<u32>() {
                    Ok(id) => self.watch(id),
                    Err(_) => self.status = format!("error: \"{}\" is not a neuron id", self.neuron_text),
                }
            }
        });
    }

    fn status_line(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let state = if self.link.is_closed() {
                "finished"
            } else if self.history.paused {
                "paused"
            } else {
                "running"
            };
            let t = self.history.step as f64 * self.history.dt_ms;
            ui.label(format!("{state} · step {} · t = {t:.1} ms", self.history.step));
            if !self.steering {
                ui.label("· watching only");
            }
            ui.separator();
            ui.label(&self.status);
        });
    }

    fn performance(&mut self, ui: &mut egui::Ui) {
        ui.heading("Performance");
        let memory = self.info.as_ref().map_or(0, |i| i.memory_bytes);
        egui::Grid::new("performance").num_columns(2).show(ui, |ui| {
            ui.label("steps/s");
            ui.label(format!("{:.0}", self.history.steps_per_s()));
            ui.end_row();
            ui.label("real-time factor");
            let rtf = self.history.real_time_factor();
            ui.label(if rtf.is_finite() { format!("{rtf:.3}") } else { "-".into() });
            ui.end_row();
            ui.label("memory");
            ui.label(format!("{:.1} MB", memory as f64 / 1e6));
            ui.end_row();
            ui.label("viewer frames/s");
            ui.label(format!("{:.0}", self.fps));
            ui.end_row();
            ui.label("spikes not shown");
            ui.label(format!("{}", self.history.spikes_dropped));
            ui.end_row();
        });
    }

    fn shard_map(&mut self, ui: &mut egui::Ui) {
        ui.heading("Shards");
        let Some(info) = &self.info else { return };
        let rates = self.history.shard_rates(info);
        let top = rates.iter().copied().fold(1e-9, f64::max);
        ui.horizontal_wrapped(|ui| {
            for (s, rate) in info.shards.iter().zip(&rates) {
                let heat = (rate / top).clamp(0.0, 1.0) as f32;
                let fill = egui::Color32::from_rgb((40.0 + 200.0 * heat) as u8, 60, (140.0 - 100.0 * heat) as u8);
                egui::Frame::new().fill(fill).inner_margin(4.0).corner_radius(3.0).show(ui, |ui| {
                    ui.label(egui::RichText::new(format!("{}", s.index)).color(egui::Color32::WHITE).strong());
                });
            }
        });
        egui::Grid::new("shards").num_columns(5).striped(true).show(ui, |ui| {
            for h in ["shard", "neurons", "rate", "backend", "synapses in"] {
                ui.label(egui::RichText::new(h).strong());
            }
            ui.end_row();
            for (s, rate) in info.shards.iter().zip(&rates) {
                ui.label(s.index.to_string());
                ui.label(s.neurons.to_string());
                ui.label(format!("{rate:.1} Hz"));
                ui.label(match &s.device {
                    Some(d) => format!("{} ({d})", s.backend),
                    None => s.backend.clone(),
                });
                ui.label(&s.synapse_storage);
                ui.end_row();
            }
        });
    }

    /// Per projection under `[[structural]]`: synapses and memory now, totals, the time plans
    /// and commits took, and the synapses pruned and grown at each commit over time.
    fn structure_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Structural plasticity");
        let dt_ms = self.info.as_ref().map_or(self.history.dt_ms, |i| i.dt_ms);
        for s in &self.history.structure {
            ui.label(egui::RichText::new(&s.projection).strong());
            egui::Grid::new(("structure", &s.projection)).num_columns(2).show(ui, |ui| {
                for (name, value) in structure_rows(s) {
                    ui.label(name);
                    ui.label(value);
                    ui.end_row();
                }
            });
            let points = |count: fn(&CommitInfo) -> u64| s.recent.iter().map(|c| [c.step as f64 * dt_ms, count(c) as f64]).collect::<Vec<_>>();
            Plot::new(("structure_plot", &s.projection)).show_background(false).height(120.0).legend(Legend::default()).x_axis_label("t (ms)").allow_scroll(false).show(ui, |plot| {
                plot.line(Line::new("pruned", points(|c| c.pruned)).color(egui::Color32::from_rgb(255, 120, 90)));
                plot.line(Line::new("grown", points(|c| c.grown)).color(egui::Color32::from_rgb(90, 200, 120)));
            });
        }
    }

    fn raster_panel(&mut self, ui: &mut egui::Ui, height: f32) {
        ui.heading("Spike raster");
        let populations = self.info.as_ref().map(|i| i.populations.clone()).unwrap_or_default();
        let Some(window) = &self.history.raster else {
            ui.label("waiting for the simulation");
            return;
        };
        let first = self.history.step.saturating_sub(window.steps());
        let image = window.image(&populations);
        let colour = egui::ColorImage::from_rgba_unmultiplied([image.width, image.height], &image.rgba);
        match &mut self.raster_texture {
            Some(t) => t.set(colour, egui::TextureOptions::NEAREST),
            None => self.raster_texture = Some(ui.ctx().load_texture("raster", colour, egui::TextureOptions::NEAREST)),
        }
        self.raster = Some(image);
        let texture = self.raster_texture.as_ref().expect("just set");

        let labels = 70.0;
        let (rect, response) = ui.allocate_exact_size(egui::vec2(ui.available_width(), height - 24.0), egui::Sense::click());
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "spike raster"));
        let plot = egui::Rect::from_min_max(rect.min + egui::vec2(labels, 0.0), rect.max - egui::vec2(0.0, 16.0));
        let painter = ui.painter_at(rect);
        painter.image(texture.id(), plot, egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)), egui::Color32::WHITE);
        let neurons = populations.iter().map(|p| p.first + p.size).max().unwrap_or(0);
        let text = ui.visuals().text_color();
        let font = egui::FontId::proportional(12.0);
        let y_of = |id: u32| plot.top() + plot.height() * id as f32 / neurons.max(1) as f32;
        for (i, p) in populations.iter().enumerate() {
            let [r, g, b] = raster::PALETTE[i % raster::PALETTE.len()];
            let mid = (y_of(p.first) + y_of(p.first + p.size)) / 2.0;
            painter.text(egui::pos2(rect.left() + 2.0, mid), egui::Align2::LEFT_CENTER, format!("{} ({})", p.name, p.size), font.clone(), egui::Color32::from_rgb(r, g, b));
            painter.line_segment([egui::pos2(plot.left(), y_of(p.first)), egui::pos2(plot.right(), y_of(p.first))], egui::Stroke::new(1.0, egui::Color32::from_gray(70)));
        }
        for &id in &self.watched {
            let y = y_of(id) + 0.5;
            painter.line_segment([egui::pos2(plot.left() - 6.0, y), egui::pos2(plot.left(), y)], egui::Stroke::new(2.0, egui::Color32::YELLOW));
        }
        let dt = self.history.dt_ms;
        painter.text(egui::pos2(plot.left(), rect.bottom()), egui::Align2::LEFT_BOTTOM, format!("{:.1} ms", first as f64 * dt), font.clone(), text);
        painter.text(egui::pos2(plot.right(), rect.bottom()), egui::Align2::RIGHT_BOTTOM, format!("{:.1} ms", self.history.step as f64 * dt), font.clone(), text);
        painter.text(egui::pos2(plot.center().x, rect.bottom()), egui::Align2::CENTER_BOTTOM, "click a row to trace a neuron", font, text);
        if let Some(pos) = response.interact_pointer_pos().filter(|_| response.clicked())
            && plot.contains(pos)
            && neurons > 0
        {
            let row = (((pos.y - plot.top()) / plot.height()) * raster::HEIGHT as f32) as usize;
            let id = raster::neuron_of_row(row.min(raster::HEIGHT - 1), neurons, raster::HEIGHT).min(neurons - 1);
            self.watch(id);
            self.status = format!("tracing neuron {id}");
        }
    }

    fn rates_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Population rates");
        let names: Vec<String> = self.info.as_ref().map(|i| i.populations.iter().map(|p| p.name.clone()).collect()).unwrap_or_default();
        Plot::new("rates").show_background(false).legend(Legend::default()).x_axis_label("t (ms)").y_axis_label("Hz").allow_scroll(false).show(ui, |plot| {
            for (i, (points, name)) in self.history.rates.iter().zip(&names).enumerate() {
                let [r, g, b] = raster::PALETTE[i % raster::PALETTE.len()];
                plot.line(Line::new(name.clone(), thin(points)).color(egui::Color32::from_rgb(r, g, b)));
            }
        });
    }

    fn membrane_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Membrane potential");
        if self.watched.is_empty() {
            ui.label("click the raster or type a neuron id to trace it");
        }
        Plot::new("membrane").show_background(false).legend(Legend::default()).x_axis_label("t (ms)").y_axis_label("mV").allow_scroll(false).show(ui, |plot| {
            for (id, trace) in &self.history.traces {
                plot.line(Line::new(format!("neuron {id}"), thin(trace)));
            }
        });
    }

    fn weights_panel(&mut self, ui: &mut egui::Ui) {
        let heading = ui.heading("Weights");
        let projections = self.info.as_ref().map(|i| i.plastic_projections.clone()).unwrap_or_default();
        if projections.is_empty() {
            ui.label("no plastic projection");
            return;
        }
        self.projection_choice = self.projection_choice.min(projections.len() - 1);
        egui::ComboBox::from_id_salt("projection").selected_text(projections[self.projection_choice].name.as_str()).show_ui(ui, |ui| {
            for (k, p) in projections.iter().enumerate() {
                ui.selectable_value(&mut self.projection_choice, k, p.name.as_str());
            }
        })
        .response
        .labelled_by(heading.id);
        let Some(h) = &self.histogram else { return };
        let width = f64::from(h.w_max - h.w_min) / h.counts.len().max(1) as f64;
        let bar = |k: usize, n: u64| Bar::new(f64::from(h.w_min) + (k as f64 + 0.5) * width, n as f64).width(width);
        let now = BarChart::new(format!("step {}", h.step), h.counts.iter().enumerate().map(|(k, &n)| bar(k, n)).collect()).color(egui::Color32::from_rgb(90, 170, 255));
        let initial = self.first_histogram.as_ref().map(|f| {
            let points: Vec<[f64; 2]> = f.counts.iter().enumerate().map(|(k, &n)| [f64::from(f.w_min) + (k as f64 + 0.5) * width, n as f64]).collect();
            Line::new(format!("step {}", f.step), points).color(egui::Color32::from_rgb(255, 200, 80))
        });
        ui.label(format!("mean {:.3} (from {:.3})", h.mean, self.first_histogram.as_ref().map_or(h.mean, |f| f.mean)));
        let height = ui.available_height() * 0.65;
        Plot::new("weights").show_background(false).legend(Legend::default()).height(height).x_axis_label("weight").allow_scroll(false).show(ui, |plot| {
            plot.bar_chart(now);
            if let Some(line) = initial {
                plot.line(line);
            }
        });
        Plot::new("weight_mean").show_background(false).x_axis_label("t (ms)").y_axis_label("mean").allow_scroll(false).show(ui, |plot| {
            plot.line(Line::new("mean weight", self.weight_means.clone()));
        });
    }
}

/// 4.5 kB, 12.3 MB, 1.50 GB.
fn bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

/// The figures of one projection's structural plasticity, as (name, value) rows.
fn structure_rows(s: &StructureInfo) -> [(&'static str, String); 7] {
    let freed = s.bytes_freed();
    let freed = if freed >= 0 { format!("{} freed", bytes(freed as f64)) } else { format!("{} taken", bytes(-freed as f64)) };
    [
        ("synapses", s.synapses.to_string()),
        ("memory", format!("{} ({freed})", bytes(s.bytes_now as f64))),
        ("pruned / grown", format!("{} / {}", s.pruned, s.grown)),
        ("commits", s.commits.to_string()),
        ("planning", format!("{:.3} s", s.planning_s)),
        ("snapshots", format!("{:.3} s", s.snapshot_s)),
        ("committing", format!("{:.3} s (waited {:.3} s)", s.commit_s, s.wait_s)),
    ]
}

/// How the viewer window runs.
pub struct WindowOptions {
    pub title: String,
    /// Close after this many seconds (for benchmarks and screenshots).
    pub exit_after_s: Option<f64>,
    /// Where "save raster" writes.
    pub save_dir: PathBuf,
    /// Frames per second the window aims at.
    pub fps: f64,
    /// Neurons traced from the start.
    pub watch: Vec<u32>,
    /// Close when this is set (by a signal: the run it shows is stopping).
    pub close_when: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// What a window session drew.
#[derive(Clone, Copy, Debug, Default)]
pub struct WindowStats {
    pub frames: u64,
    pub seconds: f64,
    pub frames_received: u64,
}

struct Window {
    app: ViewerApp,
    options: WindowOptions,
    stats: std::sync::Arc<std::sync::Mutex<WindowStats>>,
    started: std::time::Instant,
}

impl eframe::App for Window {
    /// The viewer's background (its panels are not filled).
    fn clear_color(&self, visuals: &egui::Visuals) -> [f32; 4] {
        visuals.panel_fill.to_normalized_gamma_f32()
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.app.ui(ui);
        let elapsed = self.started.elapsed().as_secs_f64();
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = WindowStats { frames: self.app.frames_drawn, seconds: elapsed, frames_received: self.app.history.frames_received };
        let signalled = self.options.close_when.as_ref().is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed));
        if signalled || self.options.exit_after_s.is_some_and(|s| elapsed >= s) {
            ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
        }
        ui.ctx().request_repaint_after(std::time::Duration::from_secs_f64(1.0 / self.options.fps.max(1.0)));
    }
}

/// Opens a window on the run behind `link` and returns when it is closed.
pub fn run_window(link: ViewerLink, steering: bool, options: WindowOptions) -> Result<WindowStats, ViewerError> {
    let stats = std::sync::Arc::new(std::sync::Mutex::new(WindowStats::default()));
    let mut app = ViewerApp::new(link, steering);
    app.save_dir = options.save_dir.clone();
    for &id in &options.watch {
        app.watch(id);
    }
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default().with_title(&options.title).with_inner_size([1400.0, 860.0]),
        // Dithering is per-pixel shader work; on a software renderer (llvmpipe) it costs frames.
        dithering: false,
        ..Default::default()
    };
    let window = Window { app, options, stats: stats.clone(), started: std::time::Instant::now() };
    eframe::run_native("fum viewer", native, Box::new(|_| Ok(Box::new(window)))).map_err(|e| ViewerError::Window(e.to_string()))?;
    let stats = *stats.lock().unwrap_or_else(|e| e.into_inner());
    Ok(stats)
}

#[cfg(test)]
mod tests {
    #[test]
    fn thinning_keeps_the_peaks_in_order() {
        let mut trace: std::collections::VecDeque<[f64; 2]> = (0..10_000).map(|i| [f64::from(i), -60.0]).collect();
        trace[4321][1] = -50.0;
        let thin = super::thin(&trace);
        assert!(thin.len() <= super::MAX_LINE_POINTS + 2);
        assert!(thin.iter().any(|p| p == &[4321.0, -50.0]), "the peak survives");
        assert!(thin.windows(2).all(|w| w[0][0] <= w[1][0]), "in time order");
    }
}
