//! The chart kinds every figure is drawn with: lines, stacked bars and heatmaps.

pub mod heatmap;
pub mod line;
pub mod palette;
pub mod scatter;
pub mod stacked;

pub use heatmap::Heatmap;
pub use line::{LineChart, Series};
pub use scatter::{LabelledPoint, Scatter};
pub use stacked::StackedBars;

/// Font sizes: captions, axis descriptions and tick labels, chosen to read well at [`crate::figure::SIZE`].
pub(crate) const CAPTION: u32 = 26;
pub(crate) const AXIS: u32 = 20;
pub(crate) const TICKS: u32 = 17;
