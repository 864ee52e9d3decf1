//! Checks that rendered files are what they claim to be: SVG that parses as XML with an `<svg>` root of
//! positive size, PNG that decodes. CI runs these over a freshly generated report (`moesim report --check`).

/// Parses `text` as SVG; returns its (width, height) in pixels.
pub fn check_svg(text: &str) -> Result<(f64, f64), String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "svg" {
        return Err(format!(
            "root element is <{}>, not <svg>",
            root.tag_name().name()
        ));
    }
    let dim = |a: &str| {
        root.attribute(a)
            .and_then(|v| v.trim_end_matches("px").parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .ok_or_else(|| format!("<svg> has no positive `{a}`"))
    };
    let size = (dim("width")?, dim("height")?);
    if root.descendants().filter(|n| n.is_element()).count() < 2 {
        return Err("<svg> is empty".into());
    }
    Ok(size)
}

/// Decodes `bytes` as PNG; returns its (width, height).
pub fn check_png(bytes: &[u8]) -> Result<(u32, u32), String> {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .map_err(|e| format!("not a decodable PNG: {e}"))?;
    if img.width() == 0 || img.height() == 0 {
        return Err("PNG has no pixels".into());
    }
    Ok((img.width(), img.height()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_checks() {
        assert_eq!(
            check_svg(
                r#"<svg width="10" height="5" xmlns="http://www.w3.org/2000/svg"><rect/></svg>"#
            ),
            Ok((10.0, 5.0))
        );
        assert!(check_svg("<svg width=\"10\" height=\"5\"><rect></svg>").is_err());
        assert!(check_svg("<html/>").unwrap_err().contains("<html>"));
        assert!(check_svg("<svg width=\"0\" height=\"5\"><g/></svg>").is_err());
        assert!(
            check_svg("<svg width=\"3\" height=\"5\"></svg>")
                .unwrap_err()
                .contains("empty")
        );
    }

    #[test]
    fn png_checks() {
        assert!(check_png(b"\x89PNG\r\n\x1a\nnot really").is_err());
        assert!(check_png(b"").is_err());
    }
}
