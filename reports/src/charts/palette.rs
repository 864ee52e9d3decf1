//! Colours: a categorical palette for series and a sequential one for heatmaps.

use plotters::style::RGBColor;

/// Tableau 10: distinguishable series colours.
const SERIES: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of series `i` (repeats after ten).
pub fn series(i: usize) -> RGBColor {
    SERIES[i % SERIES.len()]
}

/// Limits and targets: black, so they never look like a series.
pub const LIMIT: RGBColor = RGBColor(0, 0, 0);

/// Viridis, sampled at five stops: perceptually even and readable in grey.
const VIRIDIS: [(f64, f64, f64); 5] = [
    (68.0, 1.0, 84.0),
    (59.0, 82.0, 139.0),
    (33.0, 145.0, 140.0),
    (94.0, 201.0, 98.0),
    (253.0, 231.0, 37.0),
];

/// The sequential colour of `t` in `[0, 1]` (clamped).
pub fn sequential(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (VIRIDIS.len() - 1) as f64;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |p: f64, q: f64| (p + f * (q - p)).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_runs_from_dark_to_light_and_clamps() {
        assert_eq!(sequential(0.0), RGBColor(68, 1, 84));
        assert_eq!(sequential(1.0), RGBColor(253, 231, 37));
        assert_eq!(sequential(-3.0), sequential(0.0));
        assert_eq!(sequential(f64::NAN), sequential(0.0));
        let luma = |c: RGBColor| 0.3 * c.0 as f64 + 0.59 * c.1 as f64 + 0.11 * c.2 as f64;
        let steps: Vec<f64> = (0..=10)
            .map(|i| luma(sequential(i as f64 / 10.0)))
            .collect();
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    }
}
