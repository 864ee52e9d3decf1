//! A rendered chart: the same drawing as SVG text and as PNG bytes.

use crate::font;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::error::Error;

/// What drawing a chart can fail with (plotters' backend errors, as text).
pub type DrawResult = Result<(), Box<dyn Error>>;

/// Something that draws itself onto any plotters backend.
pub trait Chart {
    /// Draws onto `root` (already cleared to white).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static;
}

/// One figure of a report, in both formats.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem, unique within its scenario (`step_time_cdf`).
    pub name: String,
    /// One sentence shown under the figure.
    pub caption: String,
    pub svg: String,
    pub png: Vec<u8>,
}

/// Pixel size of every figure: large enough that 16 px labels stay readable in the PNG.
pub const SIZE: (u32, u32) = (1000, 560);

/// Renders `chart` to SVG and PNG.
pub fn render(
    chart: &impl Chart,
    name: &str,
    caption: &str,
    size: (u32, u32),
) -> Result<Figure, String> {
    font::ensure_registered();
    let fail = |e: Box<dyn Error>| format!("cannot draw figure {name}: {e}");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.into()))?;
        chart.draw(&root).map_err(fail)?;
        root.present().map_err(|e| fail(e.into()))?;
    }
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.into()))?;
        chart.draw(&root).map_err(fail)?;
        root.present().map_err(|e| fail(e.into()))?;
    }
    let png = encode_png(&rgb, size).map_err(|e| format!("cannot encode {name}.png: {e}"))?;
    Ok(Figure {
        name: name.to_string(),
        caption: caption.to_string(),
        svg,
        png,
    })
}

fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>, image::ImageError> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(rgb, w, h, image::ColorType::Rgb8)?;
    Ok(out)
}
