//! The one write path for every file moesim writes: a uniquely named temporary file beside the destination
//! (`tempfile`), fsync'd and renamed over it (`NamedTempFile::persist`), so a reader sees the old file or
//! the whole new one, never a part. Temporary files are removed on error and on drop, and are listed in a
//! registry that an interrupted process (Ctrl-C, SIGTERM) removes before it exits ([`remove_pending`]).
//!
//! Destinations that are not regular files (devices, FIFOs, directories) or are symbolic links are refused:
//! renaming over them would replace the node itself. A folder of outputs is replaced as a whole
//! ([`replace_dir`]).

use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temporary files and folders in progress, removed by [`remove_pending`] when the process is interrupted.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn register(p: &Path) {
    if let Ok(mut v) = PENDING.lock() {
        v.push(p.to_path_buf());
    }
}

/// A registry entry, cleared on drop.
struct Registered(PathBuf);

impl Registered {
    fn new(p: &Path) -> Registered {
        register(p);
        Registered(p.to_path_buf())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        unregister(&self.0);
    }
}

fn unregister(p: &Path) {
    if let Ok(mut v) = PENDING.lock()
        && let Some(i) = v.iter().position(|x| x == p)
    {
        v.swap_remove(i);
    }
}

/// Removes every temporary file and folder still in progress (call from a signal handler thread before
/// exiting). Destinations are untouched: they keep their old contents.
pub fn remove_pending() {
    let pending = match PENDING.lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(_) => return,
    };
    for p in pending {
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

fn invalid(path: &Path, why: String) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{}: {why}", path.display()),
    )
}

/// Refuses a destination that exists and is not a regular file (a symbolic link, device, FIFO or folder).
pub fn check_destination(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.file_type().is_symlink() => Err(invalid(
            path,
            "is a symbolic link; refusing to replace it (write to its target instead)".into(),
        )),
        Ok(m) if m.is_dir() => Err(invalid(path, "is a folder, expected a file name".into())),
        Ok(m) if !m.is_file() => Err(invalid(
            path,
            "is not a regular file (a device, FIFO or socket); refusing to replace it".into(),
        )),
        Ok(_) => Ok(()),
    }
}

/// Refuses to write `output` when it is the same file as `input` (it would be replaced while read).
pub fn refuse_same_file(input: &Path, output: &Path) -> std::io::Result<()> {
    let same = match (std::fs::canonicalize(input), std::fs::canonicalize(output)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(invalid(
            output,
            format!(
                "is the input {}; refusing to overwrite it (choose another output)",
                input.display()
            ),
        ));
    }
    Ok(())
}

/// The mode a new output gets: the replaced file's, else 0o666 less the umask, as `File::create` would
/// give (a temporary file alone would be private, 0o600).
fn file_mode(path: &Path) -> std::fs::Permissions {
    std::fs::metadata(path)
        .map(|m| m.permissions())
        .unwrap_or_else(|_| std::fs::Permissions::from_mode(0o666))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A file being written: buffered writes into a temporary file that [`AtomicFile::commit`] renames over
/// the destination. Dropped uncommitted, it is removed and the destination is untouched.
pub struct AtomicFile {
    out: BufWriter<tempfile::NamedTempFile>,
    tmp: PathBuf,
    path: PathBuf,
    _pending: Registered,
}

impl AtomicFile {
    /// Starts writing `path` (creating its folder).
    pub fn create(path: &Path) -> std::io::Result<AtomicFile> {
        check_destination(path)?;
        let dir = parent_of(path);
        std::fs::create_dir_all(dir)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(file_mode(path))
            .tempfile_in(dir)?;
        let tmp_path = tmp.path().to_path_buf();
        Ok(AtomicFile {
            out: BufWriter::with_capacity(1 << 20, tmp),
            _pending: Registered::new(&tmp_path),
            tmp: tmp_path,
            path: path.to_path_buf(),
        })
    }

    /// The temporary file's path (for error messages).
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(self) -> std::io::Result<()> {
        let AtomicFile {
            out,
            path,
            _pending,
            ..
        } = self;
        let result = (|| {
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.as_file().sync_all()?;
            // The destination may have become a special file since `create`.
            check_destination(&path)?;
            file.persist(&path).map_err(|e| e.error)?;
            // Make the rename itself durable.
            if let Ok(d) = std::fs::File::open(parent_of(&path)) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        drop(_pending);
        result
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.out.write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Writes `path` as a whole from `body`'s output.
pub fn write_with(
    path: &Path,
    body: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut f = AtomicFile::create(path)?;
    body(&mut f)?;
    f.commit()
}

/// Writes `contents` to `path` as a whole.
pub fn write(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_with(path, |w| w.write_all(contents))
}

/// Replaces the folder `dir` as a whole with what `fill` writes into a fresh temporary folder beside it:
/// readers see the old folder or the new one, never a mix. An existing `dir` must be empty or hold `marker`
/// (a file that only this kind of output writes), so that an unrelated folder is never deleted.
pub fn replace_dir(
    dir: &Path,
    marker: &str,
    fill: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
            return Err(invalid(
                dir,
                "exists and is not a folder (or is a symbolic link); refusing to replace it".into(),
            ));
        }
        Ok(_) => {
            let empty = std::fs::read_dir(dir)?.next().is_none();
            if !empty && !dir.join(marker).exists() {
                return Err(invalid(
                    dir,
                    format!(
                        "exists and holds no {marker}: not an output of this command; refusing to \
                         replace it (choose another folder)"
                    ),
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let parent = parent_of(dir);
    std::fs::create_dir_all(parent)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let fresh = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".new")
        .permissions(std::fs::Permissions::from_mode(0o777))
        .tempdir_in(parent)?;
    let pending = Registered::new(fresh.path());
    let result = (|| {
        fill(fresh.path())?;
        swap_in(fresh.path(), dir)
    })();
    drop(pending);
    // On success `fresh` now names the old folder (or nothing); either way it is removed here.
    drop(fresh);
    result
}

/// Moves `fresh` to `dir`, exchanging atomically with an existing `dir` where the OS allows it; the old
/// folder is left at `fresh`'s path for the caller to remove.
fn swap_in(fresh: &Path, dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return std::fs::rename(fresh, dir);
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let a = std::ffi::CString::new(fresh.as_os_str().as_bytes())?;
        let b = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
        // SAFETY: both are valid NUL-terminated paths; renameat2 only reads them.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
    }
    // Elsewhere (or on a file system without exchange): move the old folder aside, then the new one in.
    let aside = fresh.with_extension("old");
    std::fs::rename(dir, &aside)?;
    let r = std::fs::rename(fresh, dir);
    if r.is_err() {
        let _ = std::fs::rename(&aside, dir);
    } else {
        let _ = std::fs::remove_dir_all(&aside);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write(&p, b"old").unwrap();
        let r = write_with(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only a.json is left");
    }

    #[test]
    fn outputs_get_the_usual_mode_not_a_private_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write(&p, b"x").unwrap();
        let reference = dir.path().join("b.json");
        std::fs::write(&reference, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), mode(&reference));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write(&p, b"y").unwrap();
        assert_eq!(mode(&p), 0o640, "a replaced file keeps its mode");
    }

    #[test]
    fn symlinks_and_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write(&link, b"x").is_err());
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(write(Path::new("/dev/null"), b"x").is_err());
        assert!(write(dir.path(), b"x").is_err());
    }

    #[test]
    fn a_folder_is_replaced_as_a_whole_and_a_foreign_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("report");
        replace_dir(&out, "index.md", |d| {
            std::fs::write(d.join("index.md"), "1")?;
            std::fs::write(d.join("old-only.svg"), "x")
        })
        .unwrap();
        replace_dir(&out, "index.md", |d| {
            std::fs::write(d.join("index.md"), "2")
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(out.join("index.md")).unwrap(), "2");
        assert!(
            !out.join("old-only.svg").exists(),
            "nothing of the old folder is mixed in"
        );
        let failed = replace_dir(&out, "index.md", |d| {
            std::fs::write(d.join("index.md"), "3")?;
            Err(std::io::Error::other("killed"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(out.join("index.md")).unwrap(), "2");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary folder left"
        );
        let foreign = dir.path().join("home");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
        assert!(replace_dir(&foreign, "index.md", |_| Ok(())).is_err());
        assert!(foreign.join("notes.txt").exists());
    }

    #[test]
    fn the_same_file_is_refused_as_output() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        std::fs::write(&a, "x").unwrap();
        assert!(refuse_same_file(&a, &a).is_err());
        assert!(refuse_same_file(&a, &dir.path().join("./a.csv")).is_err());
        assert!(refuse_same_file(&a, &dir.path().join("b.csv")).is_ok());
    }
}
