//! NumPy `.npy` arrays of expert ids: `[tokens, k]` (one layer) or `[layers, tokens, k]`, one sequence per
//! file. Integer dtypes of any width and either byte order; C order. Negative ids (padding) mean "no expert".

use super::ImportOptions;
use super::tokens::Assembler;
use crate::error::{TraceError, TraceResult};
use crate::trace::TokenTrace;
use std::path::{Path, PathBuf};

/// A decoded integer array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<i64>,
}

/// Reads an integer `.npy` file.
pub fn read_npy(f: &Path) -> TraceResult<NpyArray> {
    let bytes = std::fs::read(f).map_err(|e| TraceError::io(f, e))?;
    parse_npy(&bytes).map_err(|m| TraceError::at(f, "header", m))
}

fn parse_npy(b: &[u8]) -> Result<NpyArray, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a NumPy .npy file (magic \\x93NUMPY missing)".into());
    }
    let major = b[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => {
            if b.len() < 12 {
                return Err("truncated header".into());
            }
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy version {v} (expected 1, 2 or 3)")),
    };
    let header = b.get(start..start + hlen).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let field = |key: &str| -> Result<&str, String> {
        let i = header
            .find(&format!("'{key}'"))
            .ok_or(format!("header lacks '{key}'"))?;
        let rest = &header[i + key.len() + 2..];
        Ok(rest.trim_start().trim_start_matches(':').trim_start())
    };
    let descr = field("descr")?;
    let descr = descr.trim_start_matches(['\'', '"']);
    let descr = &descr[..descr.find(['\'', '"']).ok_or("bad descr")?];
    if field("fortran_order")?.starts_with("True") {
        return Err(
            "Fortran-order arrays are not supported (save with np.ascontiguousarray)".into(),
        );
    }
    let shape_s = field("shape")?;
    let shape_s = shape_s
        .get(1..shape_s.find(')').ok_or("bad shape")?)
        .ok_or("bad shape")?;
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad shape entry `{s}`")))
        .collect::<Result<_, _>>()?;
    let (order, kind, width) = {
        let mut c = descr.chars();
        let o = c.next().ok_or("empty descr")?;
        let k = c.next().ok_or("bad descr")?;
        let w: usize = c
            .as_str()
            .parse()
            .map_err(|_| format!("bad descr `{descr}`"))?;
        (o, k, w)
    };
    if !matches!(kind, 'i' | 'u') || ![1, 2, 4, 8].contains(&width) {
        return Err(format!(
            "dtype `{descr}`: expected an integer array (int8..int64, uint8..uint64)"
        ));
    }
    let big = order == '>';
    let data = &b[start + hlen..];
    // Sizes come from the file: checked, and bounded by the data actually present.
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|n| n.checked_mul(width).is_some())
        .ok_or_else(|| format!("shape {shape:?} has more elements than any file can hold"))?;
    if data.len() < n * width {
        return Err(format!(
            "truncated data: {} bytes for {n} elements of {width} bytes",
            data.len()
        ));
    }
    let mut out = Vec::with_capacity(n);
    for ch in data[..n * width].chunks_exact(width) {
        let mut buf = [0u8; 8];
        if big {
            buf[8 - width..].copy_from_slice(ch);
            buf.reverse();
        } else {
            buf[..width].copy_from_slice(ch);
        }
        let raw = u64::from_le_bytes(buf);
        let v = if kind == 'i' && width < 8 {
            let shift = 64 - 8 * width;
            ((raw << shift) as i64) >> shift
        } else {
            raw as i64
        };
        out.push(v);
    }
    Ok(NpyArray { shape, data: out })
}

/// Writes an `int32` C-order `.npy` (version 1.0) array.
pub fn write_npy<W: std::io::Write + ?Sized>(
    w: &mut W,
    shape: &[usize],
    data: &[i32],
) -> std::io::Result<()> {
    let shape_s = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<i4', 'fortran_order': False, 'shape': {shape_s}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for v in data {
        w.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

/// `npy`: each file one sequence.
pub(crate) fn import_npy(
    files: &[PathBuf],
    input: &Path,
    opts: &ImportOptions,
) -> TraceResult<TokenTrace> {
    let mut asm = Assembler::new(opts);
    let mut experts = Vec::new();
    for f in files {
        let a = read_npy(f)?;
        let (layers, tokens, k) = match a.shape[..] {
            [t, k] => (1, t, k),
            [l, t, k] => (l, t, k),
            _ => {
                return Err(TraceError::at(
                    f,
                    "header",
                    format!(
                        "shape {:?}: expected [tokens, k] or [layers, tokens, k]",
                        a.shape
                    ),
                ));
            }
        };
        use crate::limits::{MAX_LAYERS, MAX_TOP_K};
        if layers > MAX_LAYERS || k > MAX_TOP_K || tokens == 0 || k == 0 {
            return Err(TraceError::at(
                f,
                "header",
                format!(
                    "shape {:?}: expected 1..={MAX_LAYERS} layers, at least one token and 1..={MAX_TOP_K} experts per token",
                    a.shape
                ),
            ));
        }
        let fi = asm.add_file(f);
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let seq = asm.sequence(&name);
        for l in 0..layers {
            for t in 0..tokens {
                let row = &a.data[(l * tokens + t) * k..(l * tokens + t + 1) * k];
                experts.clear();
                for &v in row {
                    if v > u32::MAX as i64 {
                        return Err(TraceError::at(
                            f,
                            format!("element [{l}, {t}]"),
                            format!("expert id {v} out of range"),
                        ));
                    }
                    if v >= 0 {
                        experts.push(v as u32);
                    }
                }
                // record index as "line" for error messages: element row number
                asm.row(
                    fi,
                    (l * tokens + t) as u64,
                    seq,
                    t as u64,
                    l as u32,
                    &experts,
                    None,
                )
                .map_err(|mut e| {
                    e.location = Some(format!("array row [{l}, {t}]"));
                    e
                })?;
            }
        }
    }
    asm.finish(input)
}
