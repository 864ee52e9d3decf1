//! A report as a list of blocks, and its two renderings: Markdown (images linked) and one self-contained
//! HTML page (SVG inlined, no network).

/// One piece of a report page.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Heading {
        level: u8,
        text: String,
    },
    Paragraph(String),
    Table {
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    /// A figure stored as `{dir}/{name}.svg` and `.png`; `svg` is inlined into the HTML page.
    Figure {
        dir: String,
        name: String,
        caption: String,
        svg: String,
    },
    Code {
        lang: String,
        text: String,
    },
    /// A paragraph that links a file of the report: `before [text](href) after`.
    Link {
        before: String,
        text: String,
        href: String,
        after: String,
    },
}

/// A titled page.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub title: String,
    pub blocks: Vec<Block>,
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// GitHub-flavoured Markdown; figures link their SVG, with the PNG beside it.
pub fn markdown(doc: &Document) -> String {
    let mut out = format!("# {}\n\n", doc.title);
    for b in &doc.blocks {
        match b {
            Block::Heading { level, text } => {
                out.push_str(&format!("{} {}\n\n", "#".repeat(*level as usize + 1), text));
            }
            Block::Paragraph(p) => out.push_str(&format!("{p}\n\n")),
            Block::Table { header, rows } => {
                let line = |cells: &[String]| {
                    format!(
                        "| {} |\n",
                        cells
                            .iter()
                            .map(|c| md_cell(c))
                            .collect::<Vec<_>>()
                            .join(" | ")
                    )
                };
                out.push_str(&line(header));
                out.push_str(&format!("|{}\n", " --- |".repeat(header.len())));
                for r in rows {
                    out.push_str(&line(r));
                }
                out.push('\n');
            }
            Block::Figure {
                dir, name, caption, ..
            } => {
                out.push_str(&format!(
                    "![{caption}]({dir}/{name}.svg)\n\n*{caption}* ([PNG]({dir}/{name}.png))\n\n"
                ));
            }
            Block::Code { lang, text } => {
                out.push_str(&format!("```{lang}\n{}\n```\n\n", text.trim_end()));
            }
            Block::Link {
                before,
                text,
                href,
                after,
            } => {
                out.push_str(&format!("{before}[{text}]({href}){after}\n\n"));
            }
        }
    }
    out
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}\
td.n{text-align:right}th{background:#f3f3f3}figure{margin:1.5em 0}\
figure svg{max-width:100%;height:auto}figcaption{color:#555;font-style:italic}\
pre{background:#f6f6f6;padding:1em;overflow-x:auto}";

/// One HTML file with everything inside: styles inline, SVG figures inline, PNGs linked.
pub fn html(doc: &Document) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{t}</h1>\n",
        t = escape(&doc.title)
    );
    for b in &doc.blocks {
        match b {
            Block::Heading { level, text } => {
                let h = (*level as usize + 1).min(6);
                out.push_str(&format!("<h{h}>{}</h{h}>\n", escape(text)));
            }
            Block::Paragraph(p) => out.push_str(&format!("<p>{}</p>\n", escape(p))),
            Block::Table { header, rows } => {
                out.push_str("<table>\n<tr>");
                for h in header {
                    out.push_str(&format!("<th>{}</th>", escape(h)));
                }
                out.push_str("</tr>\n");
                for r in rows {
                    out.push_str("<tr>");
                    for c in r {
                        // Numbers align right so their digits line up; words align left.
                        let number = c.trim_end_matches('%').parse::<f64>().is_ok();
                        let class = if number { " class=\"n\"" } else { "" };
                        out.push_str(&format!("<td{class}>{}</td>", escape(c)));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n");
            }
            Block::Figure {
                dir,
                name,
                caption,
                svg,
            } => {
                let svg = svg.trim_start_matches(|c| c != '<');
                let svg = match svg.strip_prefix("<?xml") {
                    Some(rest) => rest.split_once("?>").map_or(svg, |(_, s)| s.trim_start()),
                    None => svg,
                };
                out.push_str(&format!(
                    "<figure>\n{svg}\n<figcaption>{} (<a href=\"{dir}/{name}.svg\">SVG</a>, <a href=\"{dir}/{name}.png\">PNG</a>)</figcaption>\n</figure>\n",
                    escape(caption)
                ));
            }
            Block::Link {
                before,
                text,
                href,
                after,
            } => {
                out.push_str(&format!(
                    "<p>{}<a href=\"{}\">{}</a>{}</p>\n",
                    escape(before),
                    escape(href),
                    escape(text),
                    escape(after)
                ));
            }
            Block::Code { text, .. } => {
                out.push_str(&format!(
                    "<pre><code>{}</code></pre>\n",
                    escape(text.trim_end())
                ));
            }
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Document {
        Document {
            title: "R & D".into(),
            blocks: vec![
                Block::Heading {
                    level: 1,
                    text: "quick".into(),
                },
                Block::Table {
                    header: vec!["a".into(), "b|c".into()],
                    rows: vec![vec!["1".into(), "<2>".into()]],
                },
                Block::Figure {
                    dir: "quick".into(),
                    name: "cdf".into(),
                    caption: "CDF".into(),
                    svg: "<svg width=\"1\" height=\"1\"><rect/></svg>".into(),
                },
                Block::Code {
                    lang: "toml".into(),
                    text: "a = 1\n".into(),
                },
                Block::Link {
                    before: "see ".into(),
                    text: "the trace".into(),
                    href: "q/t.json".into(),
                    after: ".".into(),
                },
            ],
        }
    }

    #[test]
    fn markdown_links_figures_and_escapes_cells() {
        let md = markdown(&doc());
        assert!(md.starts_with("# R & D\n"));
        assert!(md.contains("## quick\n"));
        assert!(md.contains("| a | b\\|c |\n| --- | --- |\n| 1 | <2> |\n"));
        assert!(md.contains("![CDF](quick/cdf.svg)"));
        assert!(md.contains("[PNG](quick/cdf.png)"));
        assert!(md.contains("```toml\na = 1\n```"));
        assert!(md.contains("see [the trace](q/t.json).\n"));
    }

    #[test]
    fn html_inlines_svg_and_escapes_text() {
        let h = html(&doc());
        assert!(h.contains("<title>R &amp; D</title>"));
        assert!(h.contains("<td class=\"n\">1</td><td>&lt;2&gt;</td>"));
        assert!(h.contains("<p>see <a href=\"q/t.json\">the trace</a>.</p>"));
        assert!(h.contains("<figure>\n<svg width=\"1\" height=\"1\"><rect/></svg>"));
        assert!(
            !h.contains("http://") && !h.contains("https://"),
            "no network references"
        );
        let parsed = roxmltree::Document::parse(h.trim_start_matches("<!DOCTYPE html>\n"));
        assert!(parsed.is_ok(), "well-formed: {parsed:?}");
    }
}
