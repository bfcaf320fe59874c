//! Figures, drawn with plotters and written as SVG and PNG side by side: the training curves, the
//! paper's channel figure (activations over channels sorted by relevance, with the relevance
//! below), and per-class accuracy bars. PNG text uses the DejaVu Sans font compiled into the
//! binary (`cifs/fonts/`), so figures render the same on every machine.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{io, CifsError, Result};

static FONT: &[u8] = include_bytes!("../../fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            panic!("the bundled font does not parse");
        }
    });
}

fn plot_err(e: impl std::fmt::Display) -> CifsError {
    CifsError::Invalid(format!("drawing a figure: {e}"))
}

/// Something drawable on any plotters backend.
pub trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>>;
}

/// Writes `stem.svg` and `stem.png`; returns their paths.
pub fn save(fig: &impl Figure, stem: &Path) -> Result<(PathBuf, PathBuf)> {
    register_font();
    let (w, h) = fig.size();
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        fig.draw(&area).map_err(plot_err)?;
        area.present().map_err(plot_err)?;
    }
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        fig.draw(&area).map_err(plot_err)?;
        area.present().map_err(plot_err)?;
    }
    let (svg_path, png_path) = (stem.with_extension("svg"), stem.with_extension("png"));
    crate::checkpoint::state::write_atomic(&svg_path, svg.as_bytes()).map_err(io(&svg_path))?;
    let img = image::RgbImage::from_raw(w, h, rgb).expect("buffer of w x h x 3");
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).map_err(plot_err)?;
    crate::checkpoint::state::write_atomic(&png_path, &png).map_err(io(&png_path))?;
    Ok((svg_path, png_path))
}

/// One epoch's point of the training curves. Accuracies in [0, 1]; `None` where not measured.
pub struct CurvePoint {
    pub epoch: usize,
    pub loss: f64,
    pub natural: Option<f64>,
    pub robust: Option<f64>,
    pub adversarial: bool,
}

/// Train loss and natural / PGD-20 test accuracy per epoch; a dashed line where AT starts.
pub struct Curves<'a> {
    pub title: String,
    pub points: &'a [CurvePoint],
}

impl Figure for Curves<'_> {
    fn size(&self) -> (u32, u32) {
        (960, 380)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        area.fill(&WHITE)?;
        let area = area.titled(&self.title, ("sans-serif", 18))?;
        let (left, right) = area.split_horizontally(480);
        let last = self.points.iter().map(|p| p.epoch).max().unwrap_or(1).max(1) as f64;
        let max_loss = self.points.iter().map(|p| p.loss).filter(|l| l.is_finite()).fold(1e-9, f64::max) * 1.05;
        let at_start = self.points.iter().find(|p| p.adversarial).filter(|p| p.epoch > 1).map(|p| p.epoch as f64 - 1.0);
        let mut loss = ChartBuilder::on(&left)
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..last, 0f64..max_loss)?;
        loss.configure_mesh().x_desc("epoch").y_desc("train loss").draw()?;
        let losses: Vec<(f64, f64)> = self.points.iter().filter(|p| p.loss.is_finite()).map(|p| (p.epoch as f64, p.loss)).collect();
        loss.draw_series(LineSeries::new(losses.clone(), &BLACK))?;
        loss.draw_series(losses.iter().map(|&p| Circle::new(p, 3, BLACK.filled())))?;
        let mut acc =
            ChartBuilder::on(&right).margin(12).x_label_area_size(34).y_label_area_size(48).build_cartesian_2d(0f64..last, 0f64..100f64)?;
        acc.configure_mesh().x_desc("epoch").y_desc("test accuracy (%)").draw()?;
        let blue = RGBColor(31, 119, 180);
        let red = RGBColor(214, 39, 40);
        for (name, colour, pick) in
            [("natural", blue, (|p: &CurvePoint| p.natural) as fn(&CurvePoint) -> Option<f64>), ("PGD-20", red, |p: &CurvePoint| p.robust)]
        {
            let pts: Vec<(f64, f64)> = self.points.iter().filter_map(|p| pick(p).map(|a| (p.epoch as f64, 100.0 * a))).collect();
            acc.draw_series(LineSeries::new(pts.clone(), &colour))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
            acc.draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
        }
        if let Some(x) = at_start {
            let grey = RGBColor(128, 128, 128);
            acc.draw_series(DashedLineSeries::new(vec![(x, 0.0), (x, 100.0)], 5, 4, grey.into()))?;
            loss.draw_series(DashedLineSeries::new(vec![(x, 0.0), (x, max_loss)], 5, 4, grey.into()))?;
        }
        acc.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }
}

/// The paper's channel figure: two series over channels sorted by relevance (top panel, scaled
/// to [0, 1] by their common maximum) and the relevance itself (bottom panel).
pub struct Channels<'a> {
    pub title: String,
    /// What the top panel shows (e.g. "mean GAP activation").
    pub quantity: String,
    /// Per sorted channel: (natural, adversarial) values already normalised, and the relevance.
    pub natural: &'a [f64],
    pub adversarial: &'a [f64],
    pub relevance: &'a [f64],
}

impl Figure for Channels<'_> {
    fn size(&self) -> (u32, u32) {
        (900, 560)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        area.fill(&WHITE)?;
        let area = area.titled(&self.title, ("sans-serif", 18))?;
        let (top, bottom) = area.split_vertically(330);
        let n = self.relevance.len().max(1) as f64;
        let blue = RGBColor(31, 119, 180);
        let red = RGBColor(214, 39, 40);
        let mut chart =
            ChartBuilder::on(&top).margin(10).x_label_area_size(20).y_label_area_size(48).build_cartesian_2d(0f64..n, 0f64..1.05)?;
        chart.configure_mesh().y_desc(self.quantity.as_str()).draw()?;
        let line = |v: &[f64]| v.iter().enumerate().map(|(i, &y)| (i as f64 + 0.5, y)).collect::<Vec<_>>();
        chart
            .draw_series(LineSeries::new(line(self.natural), &blue))?
            .label("natural")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], blue));
        chart
            .draw_series(LineSeries::new(line(self.adversarial), &red))?
            .label("adversarial")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], red));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        let mut rel =
            ChartBuilder::on(&bottom).margin(10).x_label_area_size(34).y_label_area_size(48).build_cartesian_2d(0f64..n, -1.05f64..1.05)?;
        rel.configure_mesh().x_desc("channel, sorted by relevance to the class").y_desc("relevance").draw()?;
        rel.draw_series(self.relevance.iter().enumerate().map(|(i, &r)| {
            let colour = if r < 0.0 { red } else { blue };
            Rectangle::new([(i as f64 + 0.1, 0.0), (i as f64 + 0.9, r)], colour.filled())
        }))?;
        Ok(())
    }
}

/// Natural and robust accuracy per class, as grouped bars.
pub struct ClassBars<'a> {
    pub title: String,
    pub classes: &'a [String],
    /// Per class, in [0, 1].
    pub natural: &'a [f64],
    pub robust: &'a [f64],
    pub robust_label: String,
}

impl Figure for ClassBars<'_> {
    fn size(&self) -> (u32, u32) {
        ((160 + 70 * self.classes.len()).max(480) as u32, 420)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        area.fill(&WHITE)?;
        let area = area.titled(&self.title, ("sans-serif", 18))?;
        let n = self.classes.len().max(1) as f64;
        let blue = RGBColor(31, 119, 180);
        let red = RGBColor(214, 39, 40);
        // Class names are written under their bars inside the plot (a numeric axis would label
        // "nice" positions, not every class); the negative strip of the y axis holds them.
        let mut chart =
            ChartBuilder::on(&area).margin(12).x_label_area_size(10).y_label_area_size(48).build_cartesian_2d(0f64..n, -9f64..100f64)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&|y| if *y < 0.0 { String::new() } else { format!("{y:.0}") })
            .y_desc("accuracy (%)")
            .draw()?;
        let label = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        chart
            .draw_series(self.classes.iter().enumerate().map(|(i, name)| Text::new(name.clone(), (i as f64 + 0.5, -4.5), label.clone())))?;
        let bar = |i: usize, offset: f64, v: f64, c: RGBColor| {
            Rectangle::new([(i as f64 + offset, 0.0), (i as f64 + offset + 0.38, 100.0 * v)], c.filled())
        };
        chart
            .draw_series(self.natural.iter().enumerate().map(|(i, &v)| bar(i, 0.1, v, blue)))?
            .label("natural")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], blue.filled()));
        chart
            .draw_series(self.robust.iter().enumerate().map(|(i, &v)| bar(i, 0.52, v, red)))?
            .label(self.robust_label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], red.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }
}
