//! A log file rotated by size.
//!
//! Invariants of a log file ([`RotatingFile`]):
//! - it is opened for append and never truncated, so a restart continues it;
//! - it is created mode 0600: lines carry addresses, routes and targets, nobody else's
//!   business on a shared machine (an existing file keeps the mode it has, so an operator
//!   may open it to a log reader's group);
//! - before a write would take it past `max_bytes`, it is renamed `<file>.1` (older ones
//!   move up to `<file>.2` ... `<file>.<keep>`, the oldest is deleted) and a new file is
//!   opened; at most `keep` rotated files exist;
//! - each log event is one `write` of one whole line, and rotation happens only between
//!   writes, so no line is ever split across two files. A single line longer than
//!   `max_bytes` is written whole into a fresh file.
//!
//! Writes are synchronous and unbuffered: a line is in the file when the event returns, so
//! a crash loses nothing already logged.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use tracing_subscriber::fmt::MakeWriter;

/// A log file rotated by size, shared by every thread that logs (a [`MakeWriter`]).
#[derive(Debug)]
pub(crate) struct RotatingFile {
    state: Mutex<FileState>,
}

#[derive(Debug)]
struct FileState {
    path: PathBuf,
    file: File,
    /// Bytes counted toward the next rotation: the file's length, unless a rotation failed.
    len: u64,
    max_bytes: u64,
    keep: u32,
}

impl RotatingFile {
    /// Opens `path` for append (created if missing, never truncated). Before a write
    /// would take it past `max_bytes` it is rotated, keeping `keep` old files (at least 1).
    pub(crate) fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<RotatingFile> {
        let file = open_append(path)?;
        let len = file.metadata()?.len();
        let state = FileState { path: path.to_path_buf(), file, len, max_bytes, keep: keep.max(1) };
        Ok(RotatingFile { state: Mutex::new(state) })
    }

    fn lock(&self) -> MutexGuard<'_, FileState> {
        // A panic while writing a line leaves nothing half-updated that matters here.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<'a> MakeWriter<'a> for RotatingFile {
    type Writer = RotatingWriter<'a>;

    fn make_writer(&'a self) -> RotatingWriter<'a> {
        RotatingWriter { state: self.lock() }
    }
}

/// One holder of the [`RotatingFile`]'s lock: each `write` is written whole, after a
/// rotation if the file would otherwise pass its size.
#[derive(Debug)]
pub(crate) struct RotatingWriter<'a> {
    state: MutexGuard<'a, FileState>,
}

impl Write for RotatingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.state.write_whole(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.state.file.flush()
    }
}

impl FileState {
    fn write_whole(&mut self, buf: &[u8]) -> io::Result<()> {
        let size = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        if self.len > 0
            && self.len.saturating_add(size) > self.max_bytes
            && let Err(e) = self.rotate()
        {
            // Logging goes on in the current file; the next attempt comes after another
            // `max_bytes`, not on every line.
            eprintln!("proxy: cannot rotate log file `{}`: {e}", self.path.display());
            self.len = 0;
        }
        self.file.write_all(buf)?;
        self.len = self.len.saturating_add(size);
        Ok(())
    }

    /// `<file>.<keep>` is deleted, `<file>.<n>` becomes `<file>.<n+1>`, `<file>` becomes
    /// `<file>.1`, and a new `<file>` is opened. A missing file anywhere in the chain (an
    /// operator deleted it) is skipped.
    fn rotate(&mut self) -> io::Result<()> {
        ignore_missing(fs::remove_file(numbered(&self.path, self.keep)))?;
        for n in (1..self.keep).rev() {
            ignore_missing(fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1)))?;
        }
        ignore_missing(fs::rename(&self.path, numbered(&self.path, 1)))?;
        match open_append(&self.path) {
            Ok(file) => {
                self.file = file;
                self.len = self.file.metadata()?.len();
                Ok(())
            }
            Err(e) => {
                // Keep writing where the open handle points, under the log's own name, so
                // a later rotation does not move it up the chain and delete it while in use.
                let _ = fs::rename(numbered(&self.path, 1), &self.path);
                Err(e)
            }
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// `<path>.<n>`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::tests::{read, temp};

    /// Writes `line` as one event would: one writer from the MakeWriter, one `write_all`.
    fn log(file: &RotatingFile, line: &str) {
        file.make_writer().write_all(line.as_bytes()).expect("write");
    }

    /// Line `i`, `width` bytes long with its newline.
    fn line(i: usize, width: usize) -> String {
        let head = format!("line {i:04} ");
        format!("{head}{}\n", "x".repeat(width - head.len() - 1))
    }

    #[test]
    fn a_write_that_would_pass_max_bytes_goes_to_a_new_file() {
        let dir = temp("rotate");
        let path = dir.join("node.log");
        let file = RotatingFile::open(&path, 100, 3).expect("open");
        for i in 0..4 {
            log(&file, &line(i, 30));
        }
        // 3 lines are 90 bytes; the 4th would make 120, so it starts a new file.
        assert_eq!(read(&numbered(&path, 1)), [0, 1, 2].map(|i| line(i, 30)).concat());
        assert_eq!(read(&path), line(3, 30));
        assert!(!numbered(&path, 2).exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn at_most_keep_old_files_remain_and_the_newest_lines_survive_in_order() {
        let dir = temp("keep");
        let path = dir.join("node.log");
        let file = RotatingFile::open(&path, 100, 3).expect("open");
        let lines: Vec<String> = (0..40).map(|i| line(i, 25 + i % 20)).collect();
        for l in &lines {
            log(&file, l);
        }
        for n in 1..=3 {
            assert!(numbered(&path, n).is_file(), "{n} missing");
        }
        assert!(!numbered(&path, 4).exists(), "more than `keep` old files");
        let files: Vec<PathBuf> =
            [3, 2, 1].map(|n| numbered(&path, n)).into_iter().chain([path.clone()]).collect();
        let mut kept = String::new();
        for f in &files {
            let text = read(f);
            assert!(text.len() as u64 <= 100, "{} holds {} bytes", f.display(), text.len());
            assert!(text.ends_with('\n'), "{} ends inside a line", f.display());
            kept.push_str(&text);
        }
        // What is kept is exactly the last lines written, each whole, in order.
        let all = lines.concat();
        assert!(!kept.is_empty() && all.ends_with(&kept), "kept:\n{kept}");
        assert!(kept.starts_with("line "), "the oldest kept file starts inside a line");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_line_is_split_even_when_longer_than_max_bytes() {
        let dir = temp("split");
        let path = dir.join("node.log");
        let file = RotatingFile::open(&path, 100, 5).expect("open");
        log(&file, &line(0, 60));
        let long = line(1, 250);
        log(&file, &long);
        log(&file, &line(2, 20));
        assert_eq!(read(&numbered(&path, 2)), line(0, 60));
        assert_eq!(read(&numbered(&path, 1)), long);
        assert_eq!(read(&path), line(2, 20));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn opening_appends_and_a_full_file_rotates_on_the_first_write() {
        let dir = temp("append");
        let path = dir.join("node.log");
        fs::write(&path, "from before\n").expect("write");
        let file = RotatingFile::open(&path, 100, 2).expect("open");
        log(&file, "after a restart\n");
        drop(file);
        assert_eq!(read(&path), "from before\nafter a restart\n");
        fs::write(&path, "y".repeat(99) + "\n").expect("write");
        let file = RotatingFile::open(&path, 100, 2).expect("open");
        log(&file, "fresh\n");
        assert_eq!(read(&path), "fresh\n");
        assert_eq!(read(&numbered(&path, 1)).len(), 100);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn log_files_are_created_private_and_an_existing_file_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        let dir = temp("modes");
        let path = dir.join("node.log");
        let file = RotatingFile::open(&path, 50, 2).expect("open");
        assert_eq!(mode(&path), 0o600, "a new log file");
        log(&file, &line(0, 40));
        log(&file, &line(1, 40));
        assert_eq!((mode(&path), mode(&numbered(&path, 1))), (0o600, 0o600), "after a rotation");
        drop(file);

        let chosen = dir.join("shared.log");
        fs::write(&chosen, "").expect("write");
        fs::set_permissions(&chosen, fs::Permissions::from_mode(0o640)).expect("chmod");
        let file = RotatingFile::open(&chosen, 50, 2).expect("open");
        log(&file, "kept\n");
        assert_eq!(mode(&chosen), 0o640, "the operator's choice is kept");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_deleted_log_file_comes_back_at_the_next_rotation() {
        let dir = temp("deleted");
        let path = dir.join("node.log");
        let file = RotatingFile::open(&path, 50, 2).expect("open");
        log(&file, &line(0, 40));
        fs::remove_file(&path).expect("rm");
        log(&file, &line(1, 40));
        assert_eq!(read(&path), line(1, 40));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn threads_logging_at_once_never_interleave_inside_a_line() {
        let dir = temp("threads");
        let path = dir.join("node.log");
        let file = RotatingFile::open(&path, 4096, 100).expect("open");
        std::thread::scope(|s| {
            for t in 0..4 {
                let file = &file;
                s.spawn(move || {
                    for i in 0..200 {
                        log(file, &format!("thread {t} line {i:03} {}\n", "z".repeat(30)));
                    }
                });
            }
        });
        let mut count = 0;
        for n in (1..=100).rev().map(|n| numbered(&path, n)).chain([path.clone()]) {
            for l in read(&n).lines() {
                assert!(l.starts_with("thread ") && l.ends_with(&"z".repeat(30)), "torn line `{l}`");
                count += 1;
            }
        }
        assert_eq!(count, 800);
        let _ = fs::remove_dir_all(&dir);
    }
}
