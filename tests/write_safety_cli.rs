//! Issue 18, data safety: a command killed at any point, or stopped by a file-size limit, leaves each
//! output either as it was or complete, never half-written or mixed, and (unless SIGKILLed) no temporary
//! files.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin!("moesim").to_path_buf()
}

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/quickstart.toml")
}

/// Names in `dir` other than `keep`.
fn strays(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

fn gen_args(out: &Path, sequences: &str) -> Vec<String> {
    let mut a: Vec<String> = ["-q", "trace", "gen"].map(String::from).to_vec();
    a.push(out.display().to_string());
    a.extend(
        [
            "--layers",
            "8",
            "--experts",
            "64",
            "--top-k",
            "8",
            "--tokens-per-sequence",
            "256",
            "--sequences",
        ]
        .map(String::from),
    );
    a.push(sequences.into());
    a
}

/// A small deterministic sequence of delays (ms) spread over a run.
fn delays(n: usize, max_ms: u64) -> Vec<u64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % max_ms
        })
        .collect()
}

fn trace_is_whole(p: &Path) -> bool {
    Command::new(bin())
        .args(["-q", "trace", "stats"])
        .arg(p)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn trace_gen_killed_at_random_points_leaves_the_old_file_or_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.moetrace");
    let old = Command::new(bin())
        .args(gen_args(&out, "2"))
        .output()
        .unwrap();
    assert!(old.status.success());
    let old_bytes = std::fs::read(&out).unwrap();
    for (i, ms) in delays(8, 400).into_iter().enumerate() {
        let mut child = Command::new(bin())
            .args(gen_args(&out, "400"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        // Alternate SIGTERM (cleans up) and SIGKILL (cannot).
        let sig = if i % 2 == 0 { "TERM" } else { "KILL" };
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(
            trace_is_whole(&out),
            "kill -{sig} after {ms} ms ({status:?}) left a damaged trace"
        );
        let now = std::fs::read(&out).unwrap();
        if now != old_bytes {
            assert!(
                now.len() > old_bytes.len(),
                "the new trace is the larger one"
            );
        }
        if sig == "TERM" && status.code() == Some(128 + 15) {
            // A process that handled the signal left no temporary file.
            assert_eq!(strays(dir.path(), &["t.moetrace"]), Vec::<String>::new());
        }
        // Clean what a SIGKILL could not, before the next round.
        for n in strays(dir.path(), &["t.moetrace"]) {
            let _ = std::fs::remove_file(dir.path().join(n));
        }
    }
}

#[test]
fn sigterm_during_trace_gen_removes_its_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.moetrace");
    let mut child = Command::new(bin())
        .args(gen_args(&out, "100000"))
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the temporary file exists, then interrupt.
    for _ in 0..200 {
        if !strays(dir.path(), &[]).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !strays(dir.path(), &[]).is_empty(),
        "the temporary file never appeared"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15), "{status:?}");
    assert_eq!(
        strays(dir.path(), &[]),
        Vec::<String>::new(),
        "no output and no temporary file"
    );
}

#[test]
fn a_file_size_limit_is_an_error_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.moetrace");
    std::fs::write(&out, b"old").unwrap();
    let script = format!(
        "ulimit -f 64; exec '{}' {}",
        bin().display(),
        gen_args(&out, "200")
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let o = Command::new("sh")
        .args(["-c", &script])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("t.moetrace"), "{err}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"old",
        "the old file is untouched"
    );
    assert_eq!(strays(dir.path(), &["t.moetrace"]), Vec::<String>::new());
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn a_report_killed_part_way_is_the_old_report_or_the_new_one_never_a_mix() {
    let dir = tempfile::tempdir().unwrap();
    let report = |iterations: &str, out: &Path| {
        let mut c = Command::new(bin());
        c.args(["-q", "report"])
            .arg(quickstart())
            .args([
                "--no-capacity",
                "--set",
                &format!("workload.iterations={iterations}"),
                "--out",
            ])
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    // The new report, written elsewhere first, to compare against.
    let reference = dir.path().join("reference");
    assert!(report("3", &reference).status().unwrap().success());
    let new = snapshot(&reference);
    let out = dir.path().join("report");
    assert!(report("2", &out).status().unwrap().success());
    let old = snapshot(&out);
    assert_ne!(old, new);
    for ms in delays(5, 2000) {
        let mut child = report("3", &out).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
        let now = snapshot(&out);
        assert!(
            now == old || now == new,
            "after {ms} ms the report mixes two runs"
        );
        let check = Command::new(bin())
            .args(["report", "--check"])
            .arg(&out)
            .output()
            .unwrap();
        common::assert_ok(&check);
        if now == new {
            // Start again from the old report so later kills can catch the swap.
            std::fs::remove_dir_all(&out).unwrap();
            assert!(report("2", &out).status().unwrap().success());
        }
    }
}
