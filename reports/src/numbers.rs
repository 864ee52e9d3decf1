//! How numbers are written wherever results are shown (the CLI's tables, the reports, the terminal
//! explorer): rates with about four significant digits, fractions as percentages.

/// A rate with about four significant digits: offloading runs a few tokens/s, EP clusters millions.
pub fn rate(v: f64) -> String {
    match v.abs() {
        a if a >= 1000.0 => format!("{v:.0}"),
        a if a >= 100.0 => format!("{v:.1}"),
        a if a >= 10.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

/// A fraction as a percentage: `0` exactly as "0%", else one decimal ("70.3%"), two below 1 %
/// ("0.25%") and "<0.01%" for what is left.
pub fn percent(fraction: f64) -> String {
    let p = 100.0 * fraction;
    match p.abs() {
        0.0 => "0%".into(),
        a if a >= 1.0 => format!("{p:.1}%"),
        a if a >= 0.01 => format!("{p:.2}%"),
        _ => "<0.01%".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_keep_about_four_significant_digits() {
        assert_eq!(rate(584208.4), "584208");
        assert_eq!(rate(1234.4), "1234");
        assert_eq!(rate(123.46), "123.5");
        assert_eq!(rate(27.264), "27.26");
        assert_eq!(rate(3.4567), "3.457");
        assert_eq!(rate(0.0), "0.000");
    }

    #[test]
    fn fractions_read_as_percentages() {
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(90.0 / 128.0), "70.3%");
        assert_eq!(percent(0.0025), "0.25%");
        assert_eq!(percent(0.00001), "<0.01%");
        assert_eq!(percent(1.0), "100.0%");
    }
}
