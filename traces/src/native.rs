//! The native trace format (`.moetrace`): compact, versioned, self-describing and streamable.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic    8 bytes  "MOETRACE"
//! version  u32      FORMAT_VERSION (readers refuse other versions)
//! hlen     u32      length of the header
//! header   hlen     JSON TraceMeta (model shape, kind, layer ids, experts, top-k, ranks, gates, provenance)
//! hsum     u32      FNV-1a 32 checksum of the header
//! records  …        each: tag u8, plen u64, payload (plen bytes), FNV-1a 32 checksum of the payload u32
//!   'S' sequence    varint name length, name (UTF-8), varint tokens, then per row (layer-major):
//!                   varint n, n × varint expert id, and when the trace has gates n × f32
//!   'I' iteration   layers × ranks × experts varint counts
//!   'E' end         varint number of data records, varint number of rows (token-layer rows or cells)
//! ```
//!
//! A reader holds one record in memory at a time ([`NativeReader::next_record`]), so a multi-GB trace can be
//! scanned with bounded memory. A missing end record, a short record or a bad checksum is reported as a
//! truncated or corrupt file with the record number and byte offset. Writers write to a temporary name in the
//! target directory and rename it into place only when complete.

use crate::error::{TraceError, TraceResult};
use crate::trace::{
    CountsTrace, FORMAT_VERSION, Sequence, TokenTrace, Trace, TraceKind, TraceMeta,
};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// File magic of the native format.
pub const MAGIC: &[u8; 8] = b"MOETRACE";

/// One data record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Sequence(Sequence),
    /// One iteration's counts, `[layer][rank][expert]`.
    Iteration(Vec<u64>),
}

fn fnv1a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in data {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .data
                .get(self.pos)
                .ok_or("record ends inside a number")?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("number longer than 64 bits".into())
    }
    fn bytes(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or("record ends early")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

/// Streaming writer of a native trace. Call [`NativeWriter::finish`] to complete the file.
pub struct NativeWriter {
    out: crate::atomic::AtomicFile,
    tmp: PathBuf,
    path: PathBuf,
    meta: TraceMeta,
    records: u64,
    rows: u64,
    buf: Vec<u8>,
}

impl NativeWriter {
    /// Starts writing `path` (through a temporary file next to it).
    pub fn create(path: &Path, meta: &TraceMeta) -> TraceResult<Self> {
        meta.check().map_err(|why| TraceError::file(path, why))?;
        let out = crate::atomic::AtomicFile::create(path).map_err(|e| TraceError::io(path, e))?;
        let mut w = NativeWriter {
            tmp: out.temp_path().to_path_buf(),
            out,
            path: path.to_path_buf(),
            meta: meta.clone(),
            records: 0,
            rows: 0,
            buf: Vec::new(),
        };
        let header = serde_json::to_vec(meta).expect("metadata serialises");
        let mut head = Vec::with_capacity(16 + header.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        head.extend_from_slice(&(header.len() as u32).to_le_bytes());
        head.extend_from_slice(&header);
        head.extend_from_slice(&fnv1a(&header).to_le_bytes());
        w.raw(&head)?;
        Ok(w)
    }

    fn raw(&mut self, b: &[u8]) -> TraceResult<()> {
        self.out
            .write_all(b)
            .map_err(|e| TraceError::io(&self.tmp, e))
    }

    fn record(&mut self, tag: u8) -> TraceResult<()> {
        let payload = std::mem::take(&mut self.buf);
        let mut head = [0u8; 9];
        head[0] = tag;
        head[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        self.raw(&head)?;
        self.raw(&payload)?;
        self.raw(&fnv1a(&payload).to_le_bytes())?;
        self.buf = payload;
        self.buf.clear();
        Ok(())
    }

    /// Appends one sequence (token traces).
    pub fn write_sequence(&mut self, s: &Sequence) -> TraceResult<()> {
        if self.meta.kind != TraceKind::Tokens {
            return Err(TraceError::file(
                &self.path,
                "a counts trace cannot hold sequences",
            ));
        }
        let rows = s.offsets.len() - 1;
        if rows != self.meta.layers * s.tokens {
            return Err(TraceError::file(
                &self.path,
                format!(
                    "sequence `{}` has {rows} rows, expected layers × tokens = {}",
                    s.name,
                    self.meta.layers * s.tokens
                ),
            ));
        }
        self.buf.clear();
        put_varint(&mut self.buf, s.name.len() as u64);
        self.buf.extend_from_slice(s.name.as_bytes());
        put_varint(&mut self.buf, s.tokens as u64);
        for r in 0..rows {
            let (lo, hi) = (s.offsets[r] as usize, s.offsets[r + 1] as usize);
            put_varint(&mut self.buf, (hi - lo) as u64);
            for &e in &s.experts[lo..hi] {
                put_varint(&mut self.buf, e as u64);
            }
            if self.meta.has_gates {
                for j in lo..hi {
                    let g = s.gates.as_ref().map_or(0.0, |g| g[j]);
                    self.buf.extend_from_slice(&g.to_le_bytes());
                }
            }
        }
        self.records += 1;
        self.rows += rows as u64;
        self.record(b'S')
    }

    /// Appends one iteration of counts (`[layer][rank][expert]`).
    pub fn write_iteration(&mut self, counts: &[u64]) -> TraceResult<()> {
        let m = &self.meta;
        let cells = m.layers * m.ranks * m.experts;
        if m.kind != TraceKind::Counts || counts.len() != cells {
            return Err(TraceError::file(
                &self.path,
                format!(
                    "iteration has {} cells, expected {cells} (counts trace)",
                    counts.len()
                ),
            ));
        }
        self.buf.clear();
        for &c in counts {
            put_varint(&mut self.buf, c);
        }
        self.records += 1;
        self.rows += cells as u64;
        self.record(b'I')
    }

    /// Writes the end record and renames the file into place.
    pub fn finish(mut self) -> TraceResult<()> {
        self.buf.clear();
        let (r, n) = (self.records, self.rows);
        put_varint(&mut self.buf, r);
        put_varint(&mut self.buf, n);
        self.record(b'E')?;
        let path = self.path.clone();
        self.out.commit().map_err(|e| TraceError::io(&path, e))
    }
}

/// Writes a whole trace.
pub fn write_native(path: &Path, trace: &Trace) -> TraceResult<()> {
    let mut w = NativeWriter::create(path, trace.meta())?;
    match trace {
        Trace::Tokens(t) => {
            for s in &t.sequences {
                w.write_sequence(s)?;
            }
        }
        Trace::Counts(c) => {
            for chunk in c.counts.chunks_exact(c.cells_per_iteration().max(1)) {
                w.write_iteration(chunk)?;
            }
        }
    }
    w.finish()
}

/// Streaming reader of a native trace.
pub struct NativeReader<R: Read> {
    input: R,
    path: PathBuf,
    meta: TraceMeta,
    pos: u64,
    records: u64,
    rows: u64,
    ended: bool,
    buf: Vec<u8>,
}

impl NativeReader<BufReader<std::fs::File>> {
    /// Opens a file and reads its header.
    pub fn open(path: &Path) -> TraceResult<Self> {
        let f = std::fs::File::open(path).map_err(|e| TraceError::io(path, e))?;
        NativeReader::new(BufReader::with_capacity(1 << 20, f), path)
    }
}

/// Whether a file starts with the native magic.
pub fn is_native(path: &Path) -> bool {
    let mut m = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut m))
        .is_ok()
        && &m == MAGIC
}

impl<R: Read> NativeReader<R> {
    /// Reads the header from `input`; `path` names it in errors.
    pub fn new(mut input: R, path: &Path) -> TraceResult<Self> {
        let mut head = [0u8; 16];
        read_full(&mut input, &mut head).map_err(|got| {
            TraceError::at(
                path,
                "header",
                format!("truncated: {got} of 16 header bytes present (not a moesim trace?)"),
            )
        })?;
        if &head[..8] != MAGIC {
            return Err(TraceError::at(
                path,
                "byte 0",
                "not a moesim native trace (expected magic `MOETRACE`)",
            ));
        }
        let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(TraceError::at(
                path,
                "byte 8",
                format!(
                    "unknown format version {version} (this moesim reads version {FORMAT_VERSION})"
                ),
            ));
        }
        let hlen = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as usize;
        if hlen > 64 << 20 {
            return Err(TraceError::at(
                path,
                "byte 12",
                format!("header length {hlen} is implausible (corrupt file)"),
            ));
        }
        let mut header = vec![0u8; hlen];
        read_full(&mut input, &mut header).map_err(|got| {
            TraceError::at(
                path,
                "header",
                format!("truncated: {got} of {hlen} header bytes present"),
            )
        })?;
        let mut sum = [0u8; 4];
        read_full(&mut input, &mut sum).map_err(|got| {
            TraceError::at(
                path,
                "header",
                format!("truncated: {got} of 4 header checksum bytes present"),
            )
        })?;
        if u32::from_le_bytes(sum) != fnv1a(&header) {
            return Err(TraceError::at(
                path,
                "header",
                "header checksum mismatch (corrupt file)",
            ));
        }
        let meta: TraceMeta = serde_json::from_slice(&header)
            .map_err(|e| TraceError::at(path, "header", format!("invalid metadata: {e}")))?;
        if let Err(why) = meta.check() {
            return Err(TraceError::at(
                path,
                "header",
                format!("invalid metadata: {why}"),
            ));
        }
        Ok(NativeReader {
            input,
            path: path.to_path_buf(),
            meta,
            pos: 20 + hlen as u64,
            records: 0,
            rows: 0,
            ended: false,
            buf: Vec::new(),
        })
    }

    pub fn meta(&self) -> &TraceMeta {
        &self.meta
    }

    /// The file this reader reads (as named in its errors).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, msg: impl Into<String>) -> TraceError {
        TraceError::at(
            &self.path,
            format!("record {}, byte {}", self.records + 1, self.pos),
            msg,
        )
    }

    /// The next data record, or `None` after the end record.
    pub fn next_record(&mut self) -> TraceResult<Option<Record>> {
        if self.ended {
            return Ok(None);
        }
        let mut head = [0u8; 9];
        if let Err(got) = read_full(&mut self.input, &mut head) {
            return Err(self.err(if got == 0 {
                "truncated file: the end record is missing".to_string()
            } else {
                format!("truncated file: record header cut after {got} of 9 bytes")
            }));
        }
        let tag = head[0];
        let plen = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
        if plen > 1 << 40 {
            return Err(self.err(format!(
                "record length {plen} is implausible (corrupt file)"
            )));
        }
        // Grow the buffer only as data arrives: a corrupt length cannot make us allocate it up front.
        self.buf.clear();
        let got = (&mut self.input)
            .take(plen + 4)
            .read_to_end(&mut self.buf)
            .map_err(|e| self.err(format!("cannot read: {e}")))?;
        if (got as u64) < plen + 4 {
            return Err(self.err(format!(
                "truncated file: record has {got} of {} bytes",
                plen + 4
            )));
        }
        let sum = u32::from_le_bytes(self.buf[plen as usize..].try_into().expect("4 bytes"));
        let payload = std::mem::take(&mut self.buf);
        let data = &payload[..plen as usize];
        let result = if fnv1a(data) != sum {
            Err(self.err("checksum mismatch (corrupt file)"))
        } else {
            self.decode(tag, data)
        };
        self.buf = payload;
        self.pos += 13 + plen;
        let rec = result?;
        if rec.is_some() {
            self.records += 1;
        }
        Ok(rec)
    }

    fn decode(&mut self, tag: u8, data: &[u8]) -> TraceResult<Option<Record>> {
        let mut c = Cursor { data, pos: 0 };
        let m = &self.meta;
        match tag {
            b'S' if m.kind == TraceKind::Tokens => {
                let s = decode_sequence(&mut c, m).map_err(|e| self.err(e))?;
                self.rows += (s.offsets.len() - 1) as u64;
                Ok(Some(Record::Sequence(s)))
            }
            b'I' if m.kind == TraceKind::Counts => {
                let cells = m.layers * m.ranks * m.experts;
                if cells > data.len() {
                    return Err(self.err(format!(
                        "iteration record of {} bytes cannot hold {cells} cells (corrupt file)",
                        data.len()
                    )));
                }
                let mut v = Vec::with_capacity(cells);
                for _ in 0..cells {
                    v.push(c.varint().map_err(|e| self.err(e))?);
                }
                if c.pos != data.len() {
                    return Err(self.err(format!("iteration record longer than its {cells} cells")));
                }
                self.rows += cells as u64;
                Ok(Some(Record::Iteration(v)))
            }
            b'E' => {
                let r = c.varint().map_err(|e| self.err(e))?;
                let n = c.varint().map_err(|e| self.err(e))?;
                if r != self.records || n != self.rows {
                    return Err(self.err(format!(
                        "end record says {r} records / {n} rows, read {} / {}",
                        self.records, self.rows
                    )));
                }
                self.ended = true;
                Ok(None)
            }
            t => Err(self.err(format!(
                "unexpected record tag {:?} in a {:?} trace (expected 'S', 'I' or 'E')",
                t as char, m.kind
            ))),
        }
    }
}

fn decode_sequence(c: &mut Cursor<'_>, m: &TraceMeta) -> Result<Sequence, String> {
    let nlen = c.varint()? as usize;
    let name =
        String::from_utf8(c.bytes(nlen)?.to_vec()).map_err(|_| "sequence name is not UTF-8")?;
    let tokens = c.varint()? as usize;
    let rows = tokens
        .checked_mul(m.layers)
        .filter(|&r| r <= c.data.len())
        .ok_or("token count larger than the record")?;
    let k = m.top_k.min(c.data.len() / rows.max(1) + 1);
    let mut s = Sequence::with_capacity(name, tokens, m.layers, k);
    if m.has_gates {
        s.gates = Some(Vec::with_capacity(rows * k));
    }
    for r in 0..rows {
        let n = c.varint()? as usize;
        if n > m.top_k {
            return Err(format!(
                "row {r} lists {n} experts, more than top-k {}",
                m.top_k
            ));
        }
        for _ in 0..n {
            let e = c.varint()?;
            if e >= m.experts as u64 {
                return Err(format!(
                    "row {r}: expert id {e} out of range (expected < {})",
                    m.experts
                ));
            }
            s.experts.push(e as u32);
        }
        if let Some(g) = s.gates.as_mut() {
            for _ in 0..n {
                let b = c.bytes(4)?;
                g.push(f32::from_le_bytes(b.try_into().expect("4 bytes")));
            }
        }
        s.offsets.push(s.experts.len() as u32);
    }
    if c.pos != c.data.len() {
        return Err("sequence record has trailing bytes".into());
    }
    Ok(s)
}

/// Reads until `buf` is full; on EOF returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<(), usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err(got),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(got),
        }
    }
    Ok(())
}

/// Reads a whole native trace into memory.
pub fn read_native(path: &Path) -> TraceResult<Trace> {
    let mut r = NativeReader::open(path)?;
    let meta = r.meta().clone();
    match meta.kind {
        TraceKind::Tokens => {
            let mut sequences = Vec::new();
            while let Some(rec) = r.next_record()? {
                if let Record::Sequence(s) = rec {
                    sequences.push(s);
                }
            }
            Ok(Trace::Tokens(TokenTrace { meta, sequences }))
        }
        TraceKind::Counts => {
            let mut counts = Vec::new();
            let mut iterations = 0;
            while let Some(rec) = r.next_record()? {
                if let Record::Iteration(v) = rec {
                    counts.extend_from_slice(&v);
                    iterations += 1;
                }
            }
            Ok(Trace::Counts(CountsTrace {
                meta,
                iterations,
                counts,
            }))
        }
    }
}

/// What [`read_native_prefix`] kept of a native trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Prefix {
    /// The first records of the file (all of them when `complete`).
    pub trace: Trace,
    /// Whether `trace` holds the whole file.
    pub complete: bool,
    /// Tokens (per-token trace) or iterations (counts trace) the whole file holds.
    pub total: u64,
}

/// Reads the start of a native trace: whole sequences until at least `tokens` tokens are kept (a per-token
/// trace), or the first `iterations` iterations (a counts trace); then reads the rest of the file one record
/// at a time, checking it (checksums, ids, end record) without keeping it. Memory: the kept records and one
/// more, never the file. A damaged file is reported as [`read_native`] reports it, wherever the damage is.
pub fn read_native_prefix(path: &Path, tokens: u64, iterations: u64) -> TraceResult<Prefix> {
    let mut r = NativeReader::open(path)?;
    let meta = r.meta().clone();
    let mut total = 0u64;
    match meta.kind {
        TraceKind::Tokens => {
            let mut sequences = Vec::new();
            let (mut kept, mut all) = (0u64, 0usize);
            while let Some(rec) = r.next_record()? {
                if let Record::Sequence(s) = rec {
                    total += s.tokens as u64;
                    all += 1;
                    if kept < tokens {
                        kept += s.tokens as u64;
                        sequences.push(s);
                    }
                }
            }
            Ok(Prefix {
                complete: sequences.len() == all,
                total,
                trace: Trace::Tokens(TokenTrace { meta, sequences }),
            })
        }
        TraceKind::Counts => {
            let mut counts = Vec::new();
            let mut kept = 0usize;
            while let Some(rec) = r.next_record()? {
                if let Record::Iteration(v) = rec {
                    total += 1;
                    if (kept as u64) < iterations {
                        counts.extend_from_slice(&v);
                        kept += 1;
                    }
                }
            }
            Ok(Prefix {
                complete: kept as u64 == total,
                total,
                trace: Trace::Counts(CountsTrace {
                    meta,
                    iterations: kept,
                    counts,
                }),
            })
        }
    }
}
